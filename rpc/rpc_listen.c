/*
 * rpc_listen.c — what the Unix and TCP listeners share (rpc_unix.c,
 * rpc_tcp.c): accepting a conn, its place in its listener's list, and the
 * listener's close; the conns themselves are rpc_conn.c's.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "pt.h"
#include "rpc/rpc.h"
#include "rpc/rpc_int.h"

/* ---- listeners --------------------------------------------------------------- */

void rpci_listener_unlink(struct rpc_conn *c)
{
  struct rpc_listener *l = c->listener;

  if (l == NULL)
    return;
  if (c->prev != NULL)
    c->prev->next = c->next;
  else
    l->conns = c->next;
  if (c->next != NULL)
    c->next->prev = c->prev;
  c->prev = c->next = NULL;
  c->listener = NULL;
}

struct rpc_conn *rpci_accept(uv_stream_t *server, int status, bool tcp,
                             const char *where)
{
  struct rpc_listener *l = server->data;

  if (status < 0) {
    rpci_log(RPC_LOG_ACCEPT, RPC_LOG_WARN, "rpc: cannot accept on %s: %s",
             where, pt_strerror(status));
    return NULL;
  }
  struct rpc_conn *c = rpci_conn_new(server->loop, tcp, &l->ops, l->data);
  if (c == NULL) {
    rpci_log(RPC_LOG_ACCEPT, RPC_LOG_ERR, "rpc: cannot accept on %s: %s",
             where, pt_strerror(-ENOMEM));
    return NULL;
  }
  c->connected = true;
  int rc = uv_accept(server, &c->io.stream);
  if (rc < 0) {
    rpci_log(RPC_LOG_ACCEPT, RPC_LOG_WARN, "rpc: cannot accept on %s: %s",
             where, pt_strerror(rc));
    rpc_conn_close(c, rc); /* never announced: no on_close */
    return NULL;
  }
  return c;
}

void rpci_conn_attach(struct rpc_listener *l, struct rpc_conn *c)
{
  c->listener = l;
  c->next = l->conns;
  if (l->conns != NULL)
    l->conns->prev = c;
  l->conns = c;
}

void rpci_conn_accepted(struct rpc_listener *l, struct rpc_conn *c)
{
  int rc;

  if (l->on_accept != NULL) {
    /* on_accept may close c, or even the listener: touch neither after. */
    rc = l->on_accept(l, c);
    if (rc != 0) {
      rpc_conn_close(c, rc); /* refused: the user never owned it */
      return;
    }
  }
  c->announced = true;
  if (c->closing)
    return;
  rpci_conn_ready(c);
}

void rpci_listener_free_cb(uv_handle_t *h)
{
  struct rpc_listener *l = h->data;

  if (l->auth != NULL) {
    memset(l->auth, 0, sizeof(*l->auth));
    free(l->auth);
  }
  free(l->path);
  free(l);
}

int rpc_listener_port(struct rpc_listener *l)
{
  return l->port;
}

void rpc_listener_close(struct rpc_listener *l)
{
  struct stat st;

  if (l->closing)
    return;
  l->closing = true;
  if (l->path != NULL && lstat(l->path, &st) == 0 && st.st_dev == l->dev &&
      st.st_ino == l->ino)
    unlink(l->path);
  /* Accepted conns stay open, no longer tied to the listener. */
  while (l->conns != NULL)
    rpci_listener_unlink(l->conns);
  uv_close(&l->io.handle, rpci_listener_free_cb);
}

void *rpc_listener_data(struct rpc_listener *l)
{
  return l->data;
}
