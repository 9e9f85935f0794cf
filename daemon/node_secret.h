/*
 * node_secret.h — the node's secret: NODE_SECRET_BYTES random bytes in
 * <state-dir>/node.secret (mode 0600, owned by the node's uid). ptd node
 * passes the file to every SMP it spawns (--secret-file) and sends its bytes
 * in SUBSCRIBE; an SMP takes a SUBSCRIBE as its node's only with them.
 */
#ifndef PT_NODE_SECRET_H
#define PT_NODE_SECRET_H

#include <stddef.h>
#include <stdint.h>

#define NODE_SECRET_BYTES 32

/* Reads a secret file: a regular file, not a symlink (O_NOFOLLOW), owned by
 * our effective uid, mode 0600 exactly, of exactly NODE_SECRET_BYTES bytes.
 * OUT: out; on failure err says why. 0, -ENOENT, -ELOOP (a symlink), -EPERM
 * (owner or mode), PT_EFORMAT (size or type), or another negated errno. */
int node_secret_read(const char *path, uint8_t out[NODE_SECRET_BYTES],
                     char *err, size_t errlen);

/* <state_dir>/node.secret: read when it exists, else made (random bytes,
 * O_CREAT|O_EXCL|O_NOFOLLOW, mode 0600). OUT: path (the file's path), out.
 * Failures as node_secret_read, logged. */
int node_secret_load_or_create(const char *state_dir, char *path,
                               size_t path_cap, uint8_t out[NODE_SECRET_BYTES]);

#endif /* PT_NODE_SECRET_H */
