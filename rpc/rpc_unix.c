/*
 * rpc_unix.c — rpc conns over Unix sockets (rpc.h: rpc_listen_unix,
 * rpc_conn_connect_unix): the listener's socket file, dialling, and the
 * SO_PEERCRED check that stands in for authentication on a local socket.
 *
 * Invariants:
 *   - an accepted peer whose uid is neither ours nor root is closed before
 *     a byte of it is read, with one RPC_LOG_REFUSE line;
 *   - the listener unlinks only the socket file it bound (dev and inode
 *     checked), never a successor's;
 *   - a Unix conn is ready as soon as it is connected: no key, no
 *     handshake.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <uv.h>

#include "pt.h"
#include "rpc/rpc.h"
#include "rpc/rpc_int.h"

static bool path_fits(const char *path)
{
  struct sockaddr_un sa;
  return strlen(path) < sizeof(sa.sun_path);
}

/* Peer credentials of a connected pipe. 0 or a negated errno. */
static int conn_peer_cred(struct rpc_conn *c, struct ucred *cred)
{
  uv_os_fd_t fd;
  socklen_t len = sizeof(*cred);
  int rc = uv_fileno(&c->io.handle, &fd);

  if (rc < 0)
    return rc;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, cred, &len) < 0)
    return -errno;
  return PT_OK;
}

static void take_cred(struct rpc_conn *c, const struct ucred *cred)
{
  c->peer_pid = cred->pid;
  c->peer_uid = (int)cred->uid;
  snprintf(c->peer_name, sizeof(c->peer_name), "pid %d", (int)cred->pid);
}

static void connect_cb(uv_connect_t *req, int status)
{
  struct rpc_conn *c = req->data;
  struct ucred cred;

  if (!rpci_connected(c, status))
    return;
  if (conn_peer_cred(c, &cred) == 0)
    take_cred(c, &cred);
  if (rpci_read_start(c) < 0)
    return;
  rpci_conn_ready(c);
}

int rpc_conn_connect_unix(struct uv_loop_s *loop, const char *path,
                          const struct rpc_conn_ops *ops, void *data,
                          struct rpc_conn **out)
{
  *out = NULL;
  if (!path_fits(path)) /* libuv 1.44 would truncate it silently */
    return -ENAMETOOLONG;
  struct rpc_conn *c = rpci_conn_new(loop, false, ops, data);
  if (c == NULL)
    return -ENOMEM;
  c->announced = true;
  c->dialled = true;
  c->connect_req.data = c;
  uv_pipe_connect(&c->connect_req, &c->io.pipe, path, connect_cb);
  *out = c;
  return PT_OK;
}

/* ---- listener -------------------------------------------------------------- */

static void connection_cb(uv_stream_t *server, int status)
{
  struct rpc_listener *l = server->data;
  char where[RPCI_NAME_MAX + 2]; /* a socket path fits sun_path */
  struct ucred cred;
  int rc;

  snprintf(where, sizeof(where), "'%s'", l->path);
  struct rpc_conn *c = rpci_accept(server, status, false, where);
  if (c == NULL)
    return;
  rc = conn_peer_cred(c, &cred);
  if (rc < 0) {
    rpci_log(RPC_LOG_REFUSE, RPC_LOG_WARN,
             "rpc: refusing connection on '%s': no peer credentials: %s",
             l->path, pt_strerror(rc));
    rpc_conn_close(c, rc);
    return;
  }
  if (cred.uid != geteuid() && cred.uid != 0) {
    rpci_log(RPC_LOG_REFUSE, RPC_LOG_WARN,
             "rpc: refusing connection on '%s' from pid %d: uid %u is not "
             "ours", l->path, (int)cred.pid, (unsigned)cred.uid);
    rpc_conn_close(c, -EPERM);
    return;
  }
  take_cred(c, &cred);
  rpci_conn_attach(l, c);
  rpci_conn_accepted(l, c);
  if (!c->closing)
    rpci_read_start(c);
}

/* Makes room for a new socket at path: nothing there, or a socket file
 * nobody listens on any more (removed). A live listener: -EADDRINUSE; a file
 * that is not a socket is left alone: -EEXIST. */
static int clear_stale(const char *path)
{
  struct stat st;
  int fd;

  if (lstat(path, &st) < 0)
    return errno == ENOENT ? PT_OK : -errno;
  if (!S_ISSOCK(st.st_mode))
    return -EEXIST;
  int rc = rpc_sock_connect_unix(path, &fd);
  if (rc == PT_OK) {
    close(fd);
    return -EADDRINUSE;
  }
  if (rc == -EAGAIN) /* alive, its backlog full */
    return -EADDRINUSE;
  if (unlink(path) < 0 && errno != ENOENT)
    return -errno;
  return PT_OK;
}

int rpc_listen_unix(struct uv_loop_s *loop, const char *path,
                    const struct rpc_conn_ops *ops, rpc_accept_cb on_accept,
                    void *data, struct rpc_listener **out)
{
  struct stat st;
  int rc;

  *out = NULL;
  if (!path_fits(path)) /* libuv 1.44 would truncate it silently */
    return -ENAMETOOLONG;
  rc = clear_stale(path);
  if (rc < 0)
    return rc;

  struct rpc_listener *l = calloc(1, sizeof(*l));
  if (l == NULL)
    return -ENOMEM;
  l->path = strdup(path);
  if (l->path == NULL) {
    rc = -ENOMEM;
    goto out_free;
  }
  snprintf(l->name, sizeof(l->name), "%s", path);
  rpci_ops_fill(&l->ops, ops);
  l->on_accept = on_accept;
  l->data = data;
  rc = uv_pipe_init(loop, &l->io.pipe, 0);
  if (rc < 0)
    goto out_free;
  l->io.handle.data = l;

  rc = uv_pipe_bind(&l->io.pipe, path);
  if (rc < 0)
    goto out_close;
  /* Between bind and chmod the mode follows the umask; SO_PEERCRED on
   * accept covers that window. */
  if (chmod(path, 0600) < 0 || stat(path, &st) < 0) {
    rc = -errno;
    goto out_unlink;
  }
  l->dev = st.st_dev;
  l->ino = st.st_ino;
  rc = uv_listen(&l->io.stream, RPCI_LISTEN_BACKLOG, connection_cb);
  if (rc < 0)
    goto out_unlink;
  *out = l;
  return PT_OK;

out_unlink:
  unlink(path);
out_close:
  uv_close(&l->io.handle, rpci_listener_free_cb);
  return rc;
out_free:
  free(l->path);
  free(l);
  return rc;
}
