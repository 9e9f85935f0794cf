/*
 * tsess.h — the frame-tag sessions of the TCP fds a test holds as plain
 * ints (rpc.h, rpc_sock_session_*): tsess(fd) is fd's session, tagged once
 * tsess_handshake (the dialler) or tsess_start (an acceptor driven by
 * hand, its handshake done) ran on that socket, untagged otherwise (the
 * plain rpc_sock_* calls). A session is tied to the socket's inode, so an
 * fd number reused after close() starts untagged. Header-only: include it
 * in the test files that use it (they share one table).
 */
#ifndef PT_TESTS_TSESS_H
#define PT_TESTS_TSESS_H

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "pt.h"
#include "rpc/rpc.h"

#define TSESS_MAX 1024

/* One table per test binary: weak, so that every file including this
 * shares it (the fixture dials, the test file talks). */
struct tsess_ent {
  struct rpc_sock_session s;
  ino_t ino;
};
__attribute__((weak)) struct tsess_ent tsess_tab[TSESS_MAX];

static inline ino_t tsess_ino(int fd)
{
  struct stat st;

  return fstat(fd, &st) == 0 ? st.st_ino : 0;
}

static inline struct rpc_sock_session *tsess(int fd)
{
  if (fd < 0 || fd >= TSESS_MAX) {
    static struct rpc_sock_session plain;
    memset(&plain, 0, sizeof(plain));
    plain.fd = fd;
    return &plain;
  }
  if (!tsess_tab[fd].s.tagged || tsess_tab[fd].ino != tsess_ino(fd)) {
    memset(&tsess_tab[fd], 0, sizeof(tsess_tab[fd]));
    tsess_tab[fd].s.fd = fd;
  }
  return &tsess_tab[fd].s;
}

static inline int tsess_handshake(int fd, const struct rpc_auth *self,
                                  int timeout_ms, uint32_t *peer_role,
                                  char *peer_node)
{
  struct rpc_sock_session s;
  int rc = rpc_sock_session_handshake(&s, fd, self, timeout_ms, peer_role,
                                      peer_node);

  if (rc == PT_OK && fd >= 0 && fd < TSESS_MAX) {
    tsess_tab[fd].s = s;
    tsess_tab[fd].ino = tsess_ino(fd);
  }
  return rc;
}

static inline int tsess_start(int fd, const struct rpc_handshake *hs)
{
  struct rpc_sock_session s;
  int rc = rpc_sock_session_start(&s, fd, hs);

  if (rc == PT_OK && fd >= 0 && fd < TSESS_MAX) {
    tsess_tab[fd].s = s;
    tsess_tab[fd].ino = tsess_ino(fd);
  }
  return rc;
}

/* The tag of a unit made by hand, in two pieces (a frame's header and
 * body, or a bulk payload and nothing), as fd's next unit out. OUT: tag.
 * Returns its length: RPC_TAG_BYTES, or 0 on an untagged fd. */
static inline size_t tsess_tag2(int fd, const void *a, size_t alen,
                                const void *b, size_t blen,
                                uint8_t tag[RPC_TAG_BYTES])
{
  struct rpc_sock_session *s = tsess(fd);
  struct rpc_tag_ctx t;

  if (!s->tagged)
    return 0;
  rpc_tag_begin(&t, s->keys.tx_key, s->keys.tx_seq++);
  rpc_tag_update(&t, a, alen);
  rpc_tag_update(&t, b, blen);
  rpc_tag_final(&t, tag);
  return RPC_TAG_BYTES;
}

/* A frame packed as rpc_frame_pack does, with fd's tag after it (*len
 * counts it). */
static inline int tsess_pack(int fd, uint8_t **f, size_t *len, uint32_t type,
                             uint64_t request_id, const ProtobufCMessage *msg)
{
  uint8_t tag[RPC_TAG_BYTES];
  int rc = rpc_frame_pack(f, len, type, request_id, msg);

  if (rc != PT_OK)
    return rc;
  size_t n = tsess_tag2(fd, *f, *len, NULL, 0, tag);
  if (n == 0)
    return PT_OK;
  uint8_t *g = realloc(*f, *len + n);
  if (g == NULL) {
    free(*f);
    *f = NULL;
    return -ENOMEM;
  }
  memcpy(g + *len, tag, n);
  *f = g;
  *len += n;
  return PT_OK;
}

#endif /* PT_TESTS_TSESS_H */
