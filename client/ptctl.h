/*
 * ptctl.h — ptctl's parts (ptctl's own; nothing of it is in libpt).
 *
 *   ptctl.c         main(): ptctl_main
 *   ptctl_main.c    the command line: global options, which daemon a
 *                   command asks, the help texts
 *   ptctl_args.c    checks of what the operator typed: numbers, sizes, the
 *                   code K+M, job names; the default job name
 *   ptctl_out.c     output: JSON strings, human sizes and ages, aligned
 *                   tables
 *   ptctl_node.c    a standalone ptd node over its control socket: status,
 *                   stop
 *   ptctl_ctl.c     the controller over authenticated TCP: the call, nodes
 *   ptctl_jobs.c    the controller's jobs: start, stop, restore
 *   ptctl_jobs_show.c  what it says of them: status, jobs
 *   ptctl_fault.c   fault injection: one injection, a seeded campaign
 *   ptctl_fault_plan.c  its pure parts: classes, the picker, the figures
 *
 * Exit status, the same for every command (PTCTL_EXIT_*): 0 success; 1 the
 * daemon refused or the command failed (its message on stderr; a wrong
 * cluster key is a refusal); 2 usage (nothing was sent); 3 the daemon
 * cannot be reached or did not answer within --timeout.
 */
#ifndef PT_PTCTL_H
#define PT_PTCTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "rpc/rpc.h"

enum {
  PTCTL_EXIT_OK = 0,
  PTCTL_EXIT_FAILED = 1,
  PTCTL_EXIT_USAGE = 2,
  PTCTL_EXIT_UNREACHABLE = 3,
};

#define PTCTL_DEFAULT_TIMEOUT_MS 5000
#define PTCTL_JOB_MAX 255 /* bytes of a job name */

/* What the global options said. */
struct ptctl_opts {
  const char *controller; /* HOST:PORT (--controller or PT_CONTROLLER) */
  const char *key;        /* the cluster key file (--key or PT_KEY) */
  const char *sock;       /* a standalone node's control socket */
  int timeout_ms;
  bool json;
};

/* The whole command line; returns the exit status. */
int ptctl_main(int argc, char **argv);

/* ---- ptctl_help.c ---- */

void ptctl_help_usage(FILE *f);
/* The help of one command; false when there is no such command. */
bool ptctl_help_cmd(FILE *f, const char *cmd);

/* ---- ptctl_args.c ---- */

/* Each parser takes the option's name for its message: on a bad value it
 * prints "ptctl: FLAG 'VALUE': expected ..." on stderr and returns -EINVAL.
 * Numbers are decimal digits only: no sign, no spaces, no junk, no
 * overflow. */
int ptctl_args_u32(const char *flag, const char *s, uint32_t lo, uint32_t hi,
                   uint32_t *out);
int ptctl_args_u64(const char *flag, const char *s, uint64_t lo, uint64_t hi,
                   uint64_t *out);
/* Bytes with an optional K, M, G or T suffix (powers of 1024; "KiB" and
 * "KB" read as K). */
int ptctl_args_bytes(const char *flag, const char *s, uint64_t *out);
/* The erasure code "K+M": 1 <= K, 1 <= M, K + M <= RS_MAX_MEMBERS (32,
 * what ec/ codes); "none" (or "0+0") is none. */
int ptctl_args_code(const char *flag, const char *s, uint32_t *k, uint32_t *m);
/* 1..PTCTL_JOB_MAX characters of [A-Za-z0-9._-], not starting with '.'
 * or '-'. */
bool ptctl_args_job_ok(const char *s);
int ptctl_args_job(const char *flag, const char *s);
/* A readable job name that is likely unique: the command's name (the
 * script's for an interpreter such as python3), cut to 40 characters of
 * the job charset, '-', and 6 random characters: "train-k3x9q2".
 * OUT: out (at least 48 bytes). */
void ptctl_args_default_job(char *out, size_t len, char *const *argv,
                            size_t argc);

/* ---- ptctl_out.c ---- */

/* s as a JSON string: quotes, backslash and control characters escaped;
 * bytes that are not UTF-8 become U+FFFD, so the output is always valid
 * JSON. NULL is written as null. */
void ptctl_out_json_str(FILE *f, const char *s);
/* v, or null when !has. */
void ptctl_out_json_u64(FILE *f, bool has, uint64_t v);
/* s on one line: control characters (a newline in a daemon's text) as
 * spaces. */
void ptctl_out_line(FILE *f, const char *s);
/* "512 B", "1.5 GiB". OUT: buf. */
const char *ptctl_out_bytes(char *buf, size_t len, uint64_t b);
/* "3.2 s ago", "14 min ago". OUT: buf. */
const char *ptctl_out_age(char *buf, size_t len, uint64_t ms);
/* The steps of a persist dir (a standalone node's or a cluster job's) as
 * a JSON array, and as a table (STEP COMPLETE FILES SIZE AGE, each step's
 * why after it). */
void ptctl_out_disk_json(FILE *f, Pt__DiskStep *const *d, size_t n);
void ptctl_out_disk_table(FILE *f, Pt__DiskStep *const *d, size_t n);

/* A table printed with its columns aligned to the widest cell; the last
 * column is not padded. Cells are copied. */
#define PTCTL_TABLE_COLS 12
struct ptctl_table {
  size_t ncols, nrows, cap;
  char **cells; /* nrows x ncols */
};
void ptctl_table_init(struct ptctl_table *t, size_t ncols);
/* Adds one row of t->ncols cells (NULL or "" print as "-"). */
void ptctl_table_row(struct ptctl_table *t, const char *const *cells);
/* Prints every row (the first is the header), then frees the cells. */
void ptctl_table_print(struct ptctl_table *t, FILE *f);

/* ---- ptctl_node.c ---- */

int ptctl_node_status(const struct ptctl_opts *o);
int ptctl_node_stop(const struct ptctl_opts *o);
/* ptctl snapshots: a standalone node's steps in memory and on disk. */
int ptctl_node_snapshots(const struct ptctl_opts *o);

/* ---- ptctl_ctl.c ---- */

/* One request to the controller and its reply: connects to o->controller
 * within o->timeout_ms, authenticates as PEER_ROLE_CTL with o->key, sends
 * req and waits for reply_type, all within o->timeout_ms. On failure one
 * line on stderr. Returns PTCTL_EXIT_OK (OUT: *reply, free with
 * protobuf_c_message_free_unpacked), PTCTL_EXIT_UNREACHABLE (no
 * connection, no answer in time, the connection lost),
 * PTCTL_EXIT_FAILED (a wrong key, not a controller, an unreadable key
 * file, a protocol error) or PTCTL_EXIT_USAGE (a malformed address). */
int ptctl_ctl_call(const struct ptctl_opts *o, uint32_t type,
                   const ProtobufCMessage *req, uint32_t reply_type,
                   ProtobufCMessage **reply);
/* A non-zero status in a reply: "ptctl: ptd controller at ADDR WHAT:
 * MESSAGE (NAME: TEXT)" on stderr. Returns PTCTL_EXIT_FAILED. */
int ptctl_ctl_refused(const struct ptctl_opts *o, const char *what,
                      int32_t status, const char *message);
/* Flushes stdout: PTCTL_EXIT_FAILED when that fails, else code. */
int ptctl_ctl_flush(int code);

int ptctl_ctl_nodes(const struct ptctl_opts *o, int argc, char **argv);

/* ---- ptctl_jobs.c ---- */

/* argv holds the command's own arguments (argv[0] the command). */
/* "refused to VERB job 'JOB'" (verb as given), or just VERB when the
 * controller's message msg names the job already. OUT: buf. */
const char *ptctl_jobs_refusal(char *buf, size_t len, const char *verb,
                               const char *job, const char *msg);
int ptctl_jobs_start(const struct ptctl_opts *o, int argc, char **argv);
int ptctl_jobs_stop(const struct ptctl_opts *o, int argc, char **argv);
int ptctl_jobs_restore(const struct ptctl_opts *o, int argc, char **argv);
/* ptctl_jobs_show.c */
int ptctl_jobs_status(const struct ptctl_opts *o, int argc, char **argv);
int ptctl_jobs_list(const struct ptctl_opts *o, int argc, char **argv);
/* ptctl --controller ... snapshots JOB: the job's steps in memory and on
 * disk (ptctl_jobs_snapshots.c prints them). */
int ptctl_jobs_snapshots(const struct ptctl_opts *o, int argc, char **argv);
void ptctl_jobs_snapshots_print(FILE *f, const struct ptctl_opts *o,
                                const Pt__JobInfo *j);

/* ---- ptctl_fault.c ---- */

/* ptctl fault inject|campaign|classes (argv[0] "fault"). */
int ptctl_fault_main(const struct ptctl_opts *o, int argc, char **argv);
/* ptctl fault classes: needs no controller. */
int ptctl_fault_classes(FILE *f);

/* ---- ptctl_fault_plan.c ---- */

enum {
  PTCTL_FAULT_TRAINER = 0,
  PTCTL_FAULT_SMP,
  PTCTL_FAULT_PTD,
  PTCTL_FAULT_CONTROLLER,
  PTCTL_FAULT_STOP,
  PTCTL_FAULT_CORRUPT,
  /* Node loss: a coded job only (the campaign leaves them out for a job
   * without code, saying so). */
  PTCTL_FAULT_NODE,
  PTCTL_FAULT_GROUP,
  PTCTL_FAULT_PROTECTING,
  PTCTL_FAULT_REBUILDING,
  /* A parity row damaged, then another member of its group lost: a coded
   * job with m >= 2 or a persist dir only. */
  PTCTL_FAULT_PARITY,
  /* m + 1 nodes of one group: a coded job with a persist dir only. */
  PTCTL_FAULT_BEYOND,
  PTCTL_FAULT_NCLASS,
};
struct ptctl_fault_class {
  const char *name; /* as typed: "trainer" */
  bool restarts;    /* the job must restart in a new epoch */
  const char *what; /* what it does, one sentence */
};
/* NULL outside 0..PTCTL_FAULT_NCLASS-1. */
const struct ptctl_fault_class *ptctl_fault_class_get(int c);
/* The class of that name, or -ENOENT. */
int ptctl_fault_class_parse(const char *name);
/* "a,b,c" (or NULL / "all": every class) into set. -EINVAL with err for
 * an unknown or empty name. OUT: set. */
int ptctl_fault_classes_parse(const char *list, bool set[PTCTL_FAULT_NCLASS],
                              char *err, size_t len);

/* The campaign's seeded choices (see ptctl_fault_plan.c). */
struct ptctl_fault_picker {
  uint64_t state;
  int classes[PTCTL_FAULT_NCLASS]; /* the classes of the set */
  uint32_t n, picked;
};
void ptctl_fault_pick_init(struct ptctl_fault_picker *p, uint64_t seed,
                           const bool set[PTCTL_FAULT_NCLASS]);
/* The next class: the first n picks are each class once, in a seeded
 * order; then uniform. -ENOENT when the set is empty. */
int ptctl_fault_pick_class(struct ptctl_fault_picker *p);
/* Uniform in 0..n-1 (0 when n <= 1). */
uint32_t ptctl_fault_pick_below(struct ptctl_fault_picker *p, uint32_t n);
/* The median and the maximum of n values (sorted in place); 0 and 0 when
 * n is 0. */
void ptctl_fault_figures(double *v, size_t n, double *p50, double *max);

#endif /* PT_PTCTL_H */
