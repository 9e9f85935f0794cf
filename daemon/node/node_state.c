/*
 * node_state.c — <state-dir>/node.state, what a restarted `ptd node` needs
 * to re-adopt the processes of the job it was running.
 *
 * Format: text, one "key value" per line, keys in this order, '\n' line
 * ends, nothing else (no '\r', no NUL, no blank lines; a line starting with
 * '#' is a comment and may appear anywhere after the first line):
 *
 *   ptd-node-state 2                 format name and version (first line)
 *   job NAME                         --job
 *   instance HEX                     the job instance id, 32 hex digits
 *   status running | ended           ended: the node ended the instance
 *                                    (stopped, failed, or completed with
 *                                    --keep); no process of it runs and only
 *                                    `ptd node --resume` continues it
 *   ranks N                          --ranks, 1..NODE_MAX_RANKS
 *   node_pid PID                     the node that wrote the file
 *   committed STEP | none            the newest committed step
 *   committed_unix_ms MS             when it was committed (0: unknown)
 *   restarts K                       job restarts so far
 *   commits K                        steps committed so far
 *   restores K                       restores so far
 *   cmd ARG                          the trainer command, one line per
 *                                    argument in order (at least one); ARG
 *                                    is %-escaped: every byte outside
 *                                    0x21..0x7e, and '%' itself, is %XX
 *   smp R PID START RESTARTS         one per rank, R ascending from 0
 *   trainer R PID START RESTARTS     one per rank, after the smp lines;
 *                                    PID 0: none; START is field 22 of
 *                                    /proc/PID/stat (clock ticks since boot)
 *                                    read when the process was spawned
 *   end                              the file is complete
 *
 * The file is written and read through common/state_file.h: replaced
 * atomically (a reader sees the old file or the new one, before and after a
 * crash), never through a planted link, read only when this user owns it
 * and nobody else may write it; the directory itself must pass
 * node_state_dir_check(). The parser rejects anything else with PT_EFORMAT
 * and a sentence; the node then ignores the file (it adopts nothing) rather
 * than guessing.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pt.h"
#include "common/hex.h"
#include "common/state_file.h"
#include "daemon/node/node.h"

#define STATE_MAGIC "ptd-node-state 2"
#define STATE_MAX_BYTES (4u << 20)
#define STATE_MAX_ARGS 4096u

void node_state_saved_release(struct node_saved *s)
{
  if (s == NULL)
    return;
  for (uint32_t i = 0; i < s->ncmd; i++)
    free(s->cmd[i]);
  free(s->cmd);
  free(s->rank);
  memset(s, 0, sizeof(*s));
}

/* ---- writing ---- */

struct buf {
  char *p;
  size_t len, cap;
  bool oom;
};

__attribute__((format(printf, 2, 3))) static void put(struct buf *b,
                                                      const char *fmt, ...)
{
  va_list ap;

  if (b->oom)
    return;
  for (;;) {
    va_start(ap, fmt);
    int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n < 0) {
      b->oom = true;
      return;
    }
    if ((size_t)n < b->cap - b->len) {
      b->len += (size_t)n;
      return;
    }
    size_t cap = b->cap * 2 + (size_t)n + 64;
    char *p = realloc(b->p, cap);
    if (p == NULL) {
      b->oom = true;
      return;
    }
    b->p = p;
    b->cap = cap;
  }
}

static void put_escaped(struct buf *b, const char *s)
{
  for (const unsigned char *c = (const unsigned char *)s; *c != '\0'; c++) {
    if (*c < 0x21 || *c > 0x7e || *c == '%')
      put(b, "%%%02X", *c);
    else
      put(b, "%c", *c);
  }
}

int node_state_format(const struct node_saved *s, char **text, size_t *len)
{
  struct buf b = {.p = malloc(1024), .cap = 1024};

  if (b.p == NULL)
    return -ENOMEM;
  b.p[0] = '\0';
  put(&b, "%s\n", STATE_MAGIC);
  put(&b, "# written by ptd node; see daemon/node/node_state.c\n");
  put(&b, "job %s\n", s->job);
  char hex[33];
  snap_store_instance_hex(s->instance, hex);
  put(&b, "instance %s\n", hex);
  put(&b, "status %s\n", s->ended ? "ended" : "running");
  put(&b, "ranks %" PRIu32 "\n", s->ranks);
  put(&b, "node_pid %d\n", s->node_pid);
  if (s->has_committed)
    put(&b, "committed %" PRIu64 "\n", s->committed);
  else
    put(&b, "committed none\n");
  put(&b, "committed_unix_ms %" PRIu64 "\n", s->committed_unix_ms);
  put(&b, "restarts %" PRIu32 "\n", s->restarts);
  put(&b, "commits %" PRIu64 "\n", s->commits);
  put(&b, "restores %" PRIu64 "\n", s->restores);
  for (uint32_t i = 0; i < s->ncmd; i++) {
    put(&b, "cmd ");
    put_escaped(&b, s->cmd[i]);
    put(&b, "\n");
  }
  for (uint32_t r = 0; r < s->ranks; r++) {
    const struct node_saved_proc *p = &s->rank[r].smp;
    put(&b, "smp %" PRIu32 " %d %" PRIu64 " %" PRIu32 "\n", r, p->pid,
        p->start_ticks, p->restarts);
  }
  for (uint32_t r = 0; r < s->ranks; r++) {
    const struct node_saved_proc *p = &s->rank[r].trainer;
    put(&b, "trainer %" PRIu32 " %d %" PRIu64 " %" PRIu32 "\n", r, p->pid,
        p->start_ticks, p->restarts);
  }
  put(&b, "end\n");
  if (b.oom) {
    free(b.p);
    return -ENOMEM;
  }
  *text = b.p;
  *len = b.len;
  return PT_OK;
}

int node_state_write(const char *path, const struct node_saved *s)
{
  char *text = NULL;
  size_t len = 0;
  int rc = node_state_format(s, &text, &len);

  if (rc != PT_OK)
    return rc;
  rc = state_file_write(path, text, len);
  free(text);
  return rc;
}

/* ---- reading ---- */

struct lines {
  const char *p, *end;
  unsigned lineno;
  char err[200];
};

/* The next non-comment line. OUT: *key (NUL-terminated copy in keybuf),
 * *val and *vlen (not terminated). False at the end of the text. */
static bool next_line(struct lines *L, char *keybuf, size_t keycap,
                      const char **val, size_t *vlen)
{
  while (L->p < L->end) {
    const char *nl = memchr(L->p, '\n', (size_t)(L->end - L->p));
    const char *line = L->p;
    size_t n;

    if (nl == NULL) {
      snprintf(L->err, sizeof(L->err), "line %u has no end", L->lineno + 1);
      L->p = L->end;
      return false;
    }
    n = (size_t)(nl - line);
    L->p = nl + 1;
    L->lineno++;
    if (n > 0 && line[0] == '#' && L->lineno > 1)
      continue;
    const char *sp = memchr(line, ' ', n);
    size_t klen = sp != NULL ? (size_t)(sp - line) : n;
    if (klen == 0 || klen >= keycap) {
      snprintf(L->err, sizeof(L->err), "line %u has no key", L->lineno);
      return false;
    }
    memcpy(keybuf, line, klen);
    keybuf[klen] = '\0';
    *val = sp != NULL ? sp + 1 : line + n;
    *vlen = sp != NULL ? n - klen - 1 : 0;
    return true;
  }
  return false;
}

static int expect(struct lines *L, const char *want, char *vbuf, size_t vcap)
{
  char key[32];
  const char *val;
  size_t vlen;

  if (!next_line(L, key, sizeof(key), &val, &vlen)) {
    if (L->err[0] == '\0')
      snprintf(L->err, sizeof(L->err), "it ends before '%s'", want);
    return PT_EFORMAT;
  }
  if (strcmp(key, want) != 0) {
    snprintf(L->err, sizeof(L->err), "line %u: expected '%s', found '%.20s'",
             L->lineno, want, key);
    return PT_EFORMAT;
  }
  if (vlen >= vcap) {
    snprintf(L->err, sizeof(L->err), "line %u: value of '%s' is too long",
             L->lineno, want);
    return PT_EFORMAT;
  }
  memcpy(vbuf, val, vlen);
  vbuf[vlen] = '\0';
  return PT_OK;
}

static bool to_u64(const char *s, uint64_t *out)
{
  char *end;

  if (s[0] < '0' || s[0] > '9')
    return false;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno != 0 || *end != '\0' || (s[0] == '0' && s[1] != '\0'))
    return false;
  *out = v;
  return true;
}

static int num(struct lines *L, const char *key, uint64_t max, uint64_t *out)
{
  char v[32];
  int rc = expect(L, key, v, sizeof(v));

  if (rc != PT_OK)
    return rc;
  if (!to_u64(v, out) || *out > max) {
    snprintf(L->err, sizeof(L->err), "line %u: bad number for '%s'",
             L->lineno, key);
    return PT_EFORMAT;
  }
  return PT_OK;
}

/* Undoes put_escaped. OUT: *out (malloc'd). */
static int unescape(const char *v, size_t len, char **out)
{
  char *s = malloc(len + 1), *o = s;

  if (s == NULL)
    return -ENOMEM;
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)v[i];
    if (c == '%') {
      int hi = i + 2 < len ? hex_value(v[i + 1]) : -1;
      int lo = hi >= 0 ? hex_value(v[i + 2]) : -1;
      if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
        free(s);
        return PT_EFORMAT;
      }
      *o++ = (char)(hi * 16 + lo);
      i += 2;
    } else if (c < 0x21 || c > 0x7e) {
      free(s);
      return PT_EFORMAT;
    } else {
      *o++ = (char)c;
    }
  }
  *o = '\0';
  *out = s;
  return PT_OK;
}

static int proc_line(struct lines *L, const char *role, uint32_t rank,
                     struct node_saved_proc *p)
{
  char v[96], extra;
  unsigned r;
  int pid;
  unsigned long long start;
  unsigned restarts;
  int rc = expect(L, role, v, sizeof(v));

  if (rc != PT_OK)
    return rc;
  if (sscanf(v, "%u %d %llu %u%c", &r, &pid, &start, &restarts, &extra) != 4 ||
      r != rank || pid < 0 || strchr(v, '-') != NULL || strchr(v, '+') != NULL) {
    snprintf(L->err, sizeof(L->err), "line %u: bad '%s' entry for rank %u",
             L->lineno, role, rank);
    return PT_EFORMAT;
  }
  p->pid = pid;
  p->start_ticks = start;
  p->restarts = restarts;
  return PT_OK;
}

int node_state_parse(const char *text, size_t len, struct node_saved *s,
                     char *err, size_t errlen)
{
  struct lines L = {.p = text, .end = text + len};
  char v[SNAP_JOB_MAX + 8], key[32];
  const char *val;
  size_t vlen;
  uint64_t x;
  int rc = PT_EFORMAT;

  memset(s, 0, sizeof(*s));
  if (len > STATE_MAX_BYTES || memchr(text, '\0', len) != NULL ||
      memchr(text, '\r', len) != NULL) {
    snprintf(L.err, sizeof(L.err), "it is too large or holds NUL/CR bytes");
    goto out_fail;
  }
  if (len < sizeof(STATE_MAGIC) ||
      memcmp(text, STATE_MAGIC "\n", sizeof(STATE_MAGIC)) != 0) {
    snprintf(L.err, sizeof(L.err), "it does not start with '%s'", STATE_MAGIC);
    goto out_fail;
  }
  L.p += sizeof(STATE_MAGIC);
  L.lineno = 1;

  if ((rc = expect(&L, "job", v, sizeof(v))) != PT_OK)
    goto out_fail;
  if (v[0] == '\0' || strlen(v) >= SNAP_JOB_MAX || strchr(v, '/') != NULL) {
    snprintf(L.err, sizeof(L.err), "line %u: bad job name", L.lineno);
    rc = PT_EFORMAT;
    goto out_fail;
  }
  memcpy(s->job, v, strlen(v) + 1); /* fits: checked above */
  if ((rc = expect(&L, "instance", v, sizeof(v))) != PT_OK)
    goto out_fail;
  if (!snap_store_instance_parse(v, s->instance)) {
    snprintf(L.err, sizeof(L.err), "line %u: bad instance id", L.lineno);
    rc = PT_EFORMAT;
    goto out_fail;
  }
  if ((rc = expect(&L, "status", v, sizeof(v))) != PT_OK)
    goto out_fail;
  if (strcmp(v, "ended") == 0) {
    s->ended = true;
  } else if (strcmp(v, "running") != 0) {
    snprintf(L.err, sizeof(L.err), "line %u: bad status", L.lineno);
    rc = PT_EFORMAT;
    goto out_fail;
  }
  if ((rc = num(&L, "ranks", NODE_MAX_RANKS, &x)) != PT_OK)
    goto out_fail;
  if (x == 0) {
    snprintf(L.err, sizeof(L.err), "line %u: zero ranks", L.lineno);
    rc = PT_EFORMAT;
    goto out_fail;
  }
  s->ranks = (uint32_t)x;
  if ((rc = num(&L, "node_pid", INT32_MAX, &x)) != PT_OK)
    goto out_fail;
  s->node_pid = (int)x;
  if ((rc = expect(&L, "committed", v, sizeof(v))) != PT_OK)
    goto out_fail;
  if (strcmp(v, "none") != 0) {
    if (!to_u64(v, &s->committed)) {
      snprintf(L.err, sizeof(L.err), "line %u: bad committed step", L.lineno);
      rc = PT_EFORMAT;
      goto out_fail;
    }
    s->has_committed = true;
  }
  if ((rc = num(&L, "committed_unix_ms", UINT64_MAX,
                &s->committed_unix_ms)) != PT_OK)
    goto out_fail;
  if ((rc = num(&L, "restarts", UINT32_MAX, &x)) != PT_OK)
    goto out_fail;
  s->restarts = (uint32_t)x;
  if ((rc = num(&L, "commits", UINT64_MAX, &s->commits)) != PT_OK ||
      (rc = num(&L, "restores", UINT64_MAX, &s->restores)) != PT_OK)
    goto out_fail;

  /* cmd lines, then the first smp line. */
  s->rank = calloc(s->ranks, sizeof(*s->rank));
  s->cmd = calloc(STATE_MAX_ARGS, sizeof(*s->cmd));
  if (s->rank == NULL || s->cmd == NULL) {
    rc = -ENOMEM;
    goto out_fail;
  }
  for (;;) {
    const char *save = L.p;
    unsigned save_no = L.lineno;
    if (!next_line(&L, key, sizeof(key), &val, &vlen)) {
      if (L.err[0] == '\0')
        snprintf(L.err, sizeof(L.err), "it ends inside the command");
      rc = PT_EFORMAT;
      goto out_fail;
    }
    if (strcmp(key, "cmd") != 0) {
      L.p = save;
      L.lineno = save_no;
      break;
    }
    if (s->ncmd == STATE_MAX_ARGS) {
      snprintf(L.err, sizeof(L.err), "more than %u command arguments",
               STATE_MAX_ARGS);
      rc = PT_EFORMAT;
      goto out_fail;
    }
    rc = unescape(val, vlen, &s->cmd[s->ncmd]);
    if (rc != PT_OK) {
      snprintf(L.err, sizeof(L.err), "line %u: bad escape in 'cmd'", L.lineno);
      goto out_fail;
    }
    s->ncmd++;
  }
  if (s->ncmd == 0) {
    snprintf(L.err, sizeof(L.err), "line %u: no 'cmd' line", L.lineno + 1);
    rc = PT_EFORMAT;
    goto out_fail;
  }
  for (uint32_t r = 0; r < s->ranks; r++)
    if ((rc = proc_line(&L, "smp", r, &s->rank[r].smp)) != PT_OK)
      goto out_fail;
  for (uint32_t r = 0; r < s->ranks; r++)
    if ((rc = proc_line(&L, "trainer", r, &s->rank[r].trainer)) != PT_OK)
      goto out_fail;
  if ((rc = expect(&L, "end", v, sizeof(v))) != PT_OK)
    goto out_fail;
  if (v[0] != '\0' || next_line(&L, key, sizeof(key), &val, &vlen)) {
    snprintf(L.err, sizeof(L.err), "line %u: text after 'end'", L.lineno);
    rc = PT_EFORMAT;
    goto out_fail;
  }
  return PT_OK;

out_fail:
  if (err != NULL && errlen > 0)
    snprintf(err, errlen, "%s", L.err[0] != '\0' ? L.err : pt_strerror(rc));
  node_state_saved_release(s);
  return rc;
}

int node_state_read(const char *path, struct node_saved *s, char *err,
                    size_t errlen)
{
  char *text;
  size_t len;

  memset(s, 0, sizeof(*s));
  /* The file of a previous node; read whole, then parsed. Never through a
   * symlink, and only a file this user wrote. */
  int rc = state_file_read(path, STATE_MAX_BYTES, &text, &len, err, errlen);
  if (rc != PT_OK)
    return rc;
  rc = node_state_parse(text, len, s, err, errlen);
  free(text);
  return rc;
}

/* ---- the state directory and instance ids ---- */

/* The directory holding the state directory: one that another user may
 * write in (group or others, without the sticky bit), or that another
 * non-root user owns, lets them swap the state directory for their own
 * (mv dir dir.old; mkdir dir). A sticky one (/tmp) keeps them from
 * renaming ours. */
static int parent_check(const char *dir, char *err, size_t errlen)
{
  char parent[PATH_MAX];
  struct stat st;

  int len = snprintf(parent, sizeof(parent), "%s", dir);
  if (len < 0 || (size_t)len >= sizeof(parent)) {
    snprintf(err, errlen, "state directory '%s': path too long", dir);
    return -ENAMETOOLONG;
  }
  while (len > 1 && parent[len - 1] == '/')
    parent[--len] = '\0';
  char *slash = strrchr(parent, '/');
  if (slash == NULL)
    snprintf(parent, sizeof(parent), ".");
  else if (slash == parent)
    parent[1] = '\0';
  else
    *slash = '\0';
  if (stat(parent, &st) != 0) {
    int rc = -errno;
    snprintf(err, errlen, "cannot stat '%s', the parent of state directory "
             "'%s': %s", parent, dir, pt_strerror(rc));
    return rc;
  }
  if (st.st_uid != geteuid() && st.st_uid != 0) {
    snprintf(err, errlen,
             "state directory '%s' lies in '%s', owned by uid %u, neither "
             "this user (uid %u) nor root, who could swap it for another: "
             "refusing it",
             dir, parent, (unsigned)st.st_uid, (unsigned)geteuid());
    return -EPERM;
  }
  if ((st.st_mode & 022) != 0 && (st.st_mode & S_ISVTX) == 0) {
    snprintf(err, errlen,
             "state directory '%s' lies in '%s', of mode %03o: writable by "
             "group or others and not sticky, so they could swap it for "
             "another; refusing it (chmod go-w or +t '%s', or use a state "
             "directory elsewhere)",
             dir, parent, (unsigned)(st.st_mode & 0777), parent);
    return -EPERM;
  }
  return PT_OK;
}

int node_state_dir_check(const char *dir, char *err, size_t errlen)
{
  struct stat st;

  if (lstat(dir, &st) != 0) {
    int rc = -errno;
    snprintf(err, errlen, "cannot stat state directory '%s': %s", dir,
             pt_strerror(rc));
    return rc;
  }
  if (S_ISLNK(st.st_mode)) {
    snprintf(err, errlen,
             "state directory '%s' is a symbolic link: give its target", dir);
    return -EPERM;
  }
  if (!S_ISDIR(st.st_mode)) {
    snprintf(err, errlen, "state directory '%s' is not a directory", dir);
    return -ENOTDIR;
  }
  if (st.st_uid != geteuid()) {
    snprintf(err, errlen,
             "state directory '%s' is owned by uid %u, not by this user "
             "(uid %u): refusing it",
             dir, (unsigned)st.st_uid, (unsigned)geteuid());
    return -EPERM;
  }
  if ((st.st_mode & 022) != 0) {
    snprintf(err, errlen,
             "state directory '%s' has mode %03o: writable by group or "
             "others, refusing it (chmod go-w)",
             dir, (unsigned)(st.st_mode & 0777));
    return -EPERM;
  }
  return parent_check(dir, err, errlen);
}
