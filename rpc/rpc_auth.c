/*
 * rpc_auth.c — the cluster key and the TCP handshake of rpc.h, without
 * libuv: key files (rpc_key_load, rpc_key_write), the handshake as a state
 * machine (rpc_handshake_*), and its blocking dialler (rpc_sock_handshake).
 * rpc_tcp.c drives the same machine from the event loop.
 *
 * MAC input (the same bytes on both sides; 'C' for the dialler's MAC, 'S'
 * for the acceptor's):
 *
 *   bytes      field
 *   13         "pt-rpc-auth-1"
 *   1          'C' or 'S'
 *   32         dialler's nonce
 *   32         acceptor's nonce
 *   4          dialler's role, little-endian
 *   1 + n      dialler's node id: its length n (<= 255), then its bytes
 *   4          acceptor's role, little-endian
 *   1 + n      acceptor's node id
 *
 * MAC = crypto_auth (HMAC-SHA512-256) of that under the cluster key,
 * checked with crypto_auth_verify (constant time).
 *
 * Invariants:
 *   - a side proves the key only over a nonce the other side chose fresh
 *     for this handshake, so a recorded MAC is worth nothing later;
 *   - the label byte differs by direction, so the acceptor's MAC can never
 *     serve as a dialler's proof (reflection);
 *   - a failed handshake stays failed; keys and nonces are wiped on release.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "pt.h"
#include "rpc/rpc.h"

#define LABEL "pt-rpc-auth-1"
#define LABEL_BYTES (sizeof(LABEL) - 1)
#define MAC_INPUT_MAX                                                          \
  (LABEL_BYTES + 1 + 2 * RPC_AUTH_NONCE_BYTES + 2 * (4 + 1 + RPC_NODE_ID_MAX))

enum step { STEP_START, STEP_WAIT_CHALLENGE, STEP_WAIT_HELLO, STEP_WAIT_PROOF,
            STEP_DONE, STEP_FAILED };

/* ---- key files ----------------------------------------------------------- */

__attribute__((format(printf, 4, 5))) static int
key_err(char *errbuf, size_t errlen, int err, const char *fmt, ...)
{
  va_list ap;

  if (errbuf != NULL && errlen > 0) {
    va_start(ap, fmt);
    vsnprintf(errbuf, errlen, fmt, ap);
    va_end(ap);
  }
  return err;
}

int rpc_key_load(const char *path, uint8_t key[RPC_KEY_BYTES], char *errbuf,
                 size_t errlen)
{
  struct stat st;
  /* O_NONBLOCK: a FIFO (or a device) at path must not hold the caller in
   * open; it is refused below as not a regular file. It changes nothing
   * for a regular file. */
  int fd = open(path,
                O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  int rc;

  if (fd < 0) {
    rc = -errno;
    if (rc == -ELOOP)
      return key_err(errbuf, errlen, rc,
                     "cannot use key '%s': it is a symlink; name the file "
                     "itself", path);
    return key_err(errbuf, errlen, rc, "cannot open key '%s': %s", path,
                   pt_strerror(rc));
  }
  if (fstat(fd, &st) < 0) {
    rc = key_err(errbuf, errlen, -errno, "cannot stat key '%s': %s", path,
                 pt_strerror(-errno));
    goto out_close;
  }
  if (!S_ISREG(st.st_mode)) {
    rc = key_err(errbuf, errlen, -EINVAL,
                 "cannot use key '%s': not a regular file", path);
    goto out_close;
  }
  if ((st.st_mode & 077) != 0) {
    rc = key_err(errbuf, errlen, -EPERM,
                 "cannot use key '%s': mode %04o lets group or others at "
                 "it; chmod 600 it", path, (unsigned)(st.st_mode & 07777));
    goto out_close;
  }
  if (st.st_uid != geteuid()) {
    rc = key_err(errbuf, errlen, -EPERM,
                 "cannot use key '%s': owned by uid %u, not by us (uid %u)",
                 path, (unsigned)st.st_uid, (unsigned)geteuid());
    goto out_close;
  }
  if (st.st_size != (off_t)RPC_KEY_BYTES) {
    rc = key_err(errbuf, errlen, -EINVAL,
                 "cannot use key '%s': %lld bytes, a key is %u (write one "
                 "with 'ptd keygen')", path, (long long)st.st_size,
                 RPC_KEY_BYTES);
    goto out_close;
  }
  ssize_t n = pread(fd, key, RPC_KEY_BYTES, 0);
  if (n != (ssize_t)RPC_KEY_BYTES) {
    rc = n < 0 ? -errno : -EIO;
    rc = key_err(errbuf, errlen, rc, "cannot read key '%s': %s", path,
                 pt_strerror(rc));
    sodium_memzero(key, RPC_KEY_BYTES);
    goto out_close;
  }
  rc = PT_OK;
out_close:
  close(fd);
  return rc;
}

int rpc_key_write(const char *path, char *errbuf, size_t errlen)
{
  uint8_t key[RPC_KEY_BYTES];
  int rc;

  if (sodium_init() < 0)
    return key_err(errbuf, errlen, -ENOSYS, "cannot write key '%s': "
                   "libsodium does not start", path);
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                0600);
  if (fd < 0) {
    struct stat st;
    rc = -errno;
    if (rc == -EEXIST && lstat(path, &st) == 0 && S_ISLNK(st.st_mode))
      return key_err(errbuf, errlen, rc, "cannot create key '%s': a symlink "
                     "is there, and keygen never writes through one", path);
    if (rc == -EEXIST)
      return key_err(errbuf, errlen, rc, "cannot create key '%s': it exists, "
                     "and keygen never overwrites a key (remove it first to "
                     "replace it)", path);
    return key_err(errbuf, errlen, rc, "cannot create key '%s': %s", path,
                   pt_strerror(rc));
  }
  randombytes_buf(key, sizeof(key));
  /* The umask may only have taken bits away; make it exactly 0600. */
  errno = 0; /* a short write sets none */
  if (fchmod(fd, 0600) < 0 ||
      write(fd, key, sizeof(key)) != (ssize_t)sizeof(key) || fsync(fd) < 0) {
    rc = errno != 0 ? -errno : -EIO;
    sodium_memzero(key, sizeof(key));
    close(fd);
    unlink(path);
    return key_err(errbuf, errlen, rc, "cannot write key '%s': %s", path,
                   pt_strerror(rc));
  }
  sodium_memzero(key, sizeof(key));
  if (close(fd) < 0) {
    rc = -errno;
    unlink(path);
    return key_err(errbuf, errlen, rc, "cannot write key '%s': %s", path,
                   pt_strerror(rc));
  }
  return PT_OK;
}

/* ---- the handshake --------------------------------------------------------- */

static size_t put_id(uint8_t *p, uint32_t role, const char *id)
{
  size_t n = strlen(id);

  for (int i = 0; i < 4; i++)
    p[i] = (uint8_t)(role >> (8 * i));
  p[4] = (uint8_t)n;
  memcpy(p + 5, id, n);
  return 5 + n;
}

/* Writes the MAC input of direction dir ('C' or 'S') into in
 * (MAC_INPUT_MAX bytes); returns its length. */
static size_t mac_input(const struct rpc_handshake *hs, char dir, uint8_t *in)
{
  size_t n = 0;
  uint32_t role_c = hs->dialler ? hs->self.role : hs->peer_role;
  uint32_t role_s = hs->dialler ? hs->peer_role : hs->self.role;
  const char *id_c = hs->dialler ? hs->self.node_id : hs->peer_node;
  const char *id_s = hs->dialler ? hs->peer_node : hs->self.node_id;

  memcpy(in, LABEL, LABEL_BYTES);
  n += LABEL_BYTES;
  in[n++] = (uint8_t)dir;
  memcpy(in + n, hs->nonce_c, RPC_AUTH_NONCE_BYTES);
  n += RPC_AUTH_NONCE_BYTES;
  memcpy(in + n, hs->nonce_s, RPC_AUTH_NONCE_BYTES);
  n += RPC_AUTH_NONCE_BYTES;
  n += put_id(in + n, role_c, id_c);
  n += put_id(in + n, role_s, id_s);
  return n;
}

static void mac_of(const struct rpc_handshake *hs, char dir,
                   uint8_t mac[RPC_AUTH_MAC_BYTES])
{
  uint8_t in[MAC_INPUT_MAX];
  size_t n = mac_input(hs, dir, in);

  crypto_auth(mac, in, n, hs->self.key);
  sodium_memzero(in, n);
}

/* Constant-time: crypto_auth_verify. */
static bool mac_ok(const struct rpc_handshake *hs, char dir,
                   const ProtobufCBinaryData *got)
{
  uint8_t in[MAC_INPUT_MAX];
  size_t n;

  if (got->len != RPC_AUTH_MAC_BYTES)
    return false;
  n = mac_input(hs, dir, in);
  bool ok = crypto_auth_verify(got->data, in, n, hs->self.key) == 0;
  sodium_memzero(in, n);
  return ok;
}

int rpc_handshake_init(struct rpc_handshake *hs, const struct rpc_auth *self,
                       bool dialler)
{
  memset(hs, 0, sizeof(*hs));
  hs->step = STEP_FAILED;
  if (memchr(self->node_id, '\0', sizeof(self->node_id)) == NULL)
    return -EINVAL;
  if (sodium_init() < 0)
    return -ENOSYS;
  hs->self = *self;
  hs->dialler = dialler;
  hs->step = dialler ? STEP_START : STEP_WAIT_HELLO;
  return PT_OK;
}

static void take_peer(struct rpc_handshake *hs, uint32_t role, const char *id)
{
  hs->peer_role = role;
  snprintf(hs->peer_node, sizeof(hs->peer_node), "%s", id);
  hs->peer_said = true;
}

int rpc_handshake_next(struct rpc_handshake *hs, uint32_t in_type,
                       const ProtobufCMessage *in, uint32_t *out_type,
                       const ProtobufCMessage **out)
{
  int step = hs->step;

  *out_type = 0;
  *out = NULL;
  hs->step = STEP_FAILED; /* until this call succeeds */
  if (step == STEP_START) {
    if (in != NULL)
      return PT_EPROTO;
    randombytes_buf(hs->nonce_c, sizeof(hs->nonce_c));
    pt__auth_hello__init(&hs->out.hello);
    hs->out.hello.version = RPC_AUTH_VERSION;
    hs->out.hello.role = hs->self.role;
    hs->out.hello.node_id = hs->self.node_id;
    hs->out.hello.nonce.data = hs->nonce_c;
    hs->out.hello.nonce.len = sizeof(hs->nonce_c);
    *out_type = RPC_AUTH_HELLO;
    *out = &hs->out.hello.base;
    hs->step = STEP_WAIT_CHALLENGE;
    return PT_OK;
  }
  if (rpc_auth_msg_check(in_type, in) != PT_OK)
    return PT_EPROTO;

  switch (step) {
  case STEP_WAIT_HELLO: {
    if (in_type != RPC_AUTH_HELLO)
      return PT_EPROTO;
    const Pt__AuthHello *m = (const Pt__AuthHello *)in;
    take_peer(hs, m->role, m->node_id);
    memcpy(hs->nonce_c, m->nonce.data, RPC_AUTH_NONCE_BYTES);
    randombytes_buf(hs->nonce_s, sizeof(hs->nonce_s));
    mac_of(hs, 'S', hs->mac);
    pt__auth_challenge__init(&hs->out.challenge);
    hs->out.challenge.role = hs->self.role;
    hs->out.challenge.node_id = hs->self.node_id;
    hs->out.challenge.nonce.data = hs->nonce_s;
    hs->out.challenge.nonce.len = sizeof(hs->nonce_s);
    hs->out.challenge.mac.data = hs->mac;
    hs->out.challenge.mac.len = sizeof(hs->mac);
    *out_type = RPC_AUTH_CHALLENGE;
    *out = &hs->out.challenge.base;
    hs->step = STEP_WAIT_PROOF;
    return PT_OK;
  }
  case STEP_WAIT_CHALLENGE: {
    if (in_type != RPC_AUTH_CHALLENGE)
      return PT_EPROTO;
    const Pt__AuthChallenge *m = (const Pt__AuthChallenge *)in;
    take_peer(hs, m->role, m->node_id);
    memcpy(hs->nonce_s, m->nonce.data, RPC_AUTH_NONCE_BYTES);
    if (!mac_ok(hs, 'S', &m->mac))
      return -EACCES;
    mac_of(hs, 'C', hs->mac);
    pt__auth_proof__init(&hs->out.proof);
    hs->out.proof.mac.data = hs->mac;
    hs->out.proof.mac.len = sizeof(hs->mac);
    *out_type = RPC_AUTH_PROOF;
    *out = &hs->out.proof.base;
    hs->step = STEP_DONE;
    return RPC_HANDSHAKE_DONE;
  }
  case STEP_WAIT_PROOF: {
    if (in_type != RPC_AUTH_PROOF)
      return PT_EPROTO;
    const Pt__AuthProof *m = (const Pt__AuthProof *)in;
    if (!mac_ok(hs, 'C', &m->mac))
      return -EACCES;
    hs->step = STEP_DONE;
    return RPC_HANDSHAKE_DONE;
  }
  default: /* done or failed: nothing more is expected */
    return PT_EPROTO;
  }
}

bool rpc_handshake_has_hello(const struct rpc_handshake *hs)
{
  return !hs->dialler && hs->peer_said;
}

bool rpc_handshake_is_done(const struct rpc_handshake *hs)
{
  return hs->step == STEP_DONE;
}

bool rpc_handshake_is_waiting_proof(const struct rpc_handshake *hs)
{
  return !hs->dialler && hs->step == STEP_WAIT_PROOF;
}

void rpc_handshake_release(struct rpc_handshake *hs)
{
  sodium_memzero(hs, sizeof(*hs));
  hs->step = STEP_FAILED;
}

/* The dialler's side over a blocking socket; OUT: *keys (may be NULL). */
static int sock_handshake(int fd, const struct rpc_auth *self, int timeout_ms,
                          uint32_t *peer_role, char *peer_node,
                          struct rpc_session *keys)
{
  struct rpc_handshake hs;
  uint64_t deadline = rpc_now_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0);
  const ProtobufCMessage *out;
  ProtobufCMessage *in = NULL;
  struct rpc_hdr h = {0};
  uint32_t out_type;
  int rc = rpc_handshake_init(&hs, self, true);

  if (rc != PT_OK)
    return rc;
  for (;;) {
    rc = rpc_handshake_next(&hs, h.type, in, &out_type, &out);
    if (in != NULL)
      protobuf_c_message_free_unpacked(in, NULL);
    in = NULL;
    if (rc < 0)
      break;
    if (out != NULL) {
      int src = rpc_sock_send(fd, out_type, 0, out, deadline);
      if (src != PT_OK) {
        rc = src;
        break;
      }
    }
    if (rc == RPC_HANDSHAKE_DONE) {
      rc = PT_OK;
      if (peer_role != NULL)
        *peer_role = hs.peer_role;
      if (peer_node != NULL)
        memcpy(peer_node, hs.peer_node, sizeof(hs.peer_node));
      if (keys != NULL)
        rc = rpc_handshake_session(&hs, keys);
      break;
    }
    rc = rpc_sock_recv(fd, RPC_AUTH_MAX_BODY, deadline, &h, &in);
    if (rc != PT_OK)
      break;
  }
  rpc_handshake_release(&hs);
  return rc;
}

int rpc_sock_handshake(int fd, const struct rpc_auth *self, int timeout_ms,
                       uint32_t *peer_role, char *peer_node)
{
  return sock_handshake(fd, self, timeout_ms, peer_role, peer_node, NULL);
}

int rpc_sock_session_handshake(struct rpc_sock_session *s, int fd,
                               const struct rpc_auth *self, int timeout_ms,
                               uint32_t *peer_role, char *peer_node)
{
  memset(s, 0, sizeof(*s));
  s->fd = fd;
  int rc = sock_handshake(fd, self, timeout_ms, peer_role, peer_node,
                          &s->keys);
  if (rc == PT_OK)
    s->tagged = true;
  else
    rpc_session_wipe(&s->keys);
  return rc;
}
