/*
 * log.h — ptd's logging: one line per event on stderr, prefixed with a syslog
 * priority ("<4>") that journald understands, then the role and the message,
 * git-style: lowercase, failure first, subject quoted.
 *
 *   log_error("smp: cannot map '%s': %s", name, pt_strerror(rc));
 *
 * Messages above the configured level return before anything is formatted.
 */
#ifndef PT_LOG_H
#define PT_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum log_level { LOG_LVL_ERR = 3, LOG_LVL_WARN = 4, LOG_LVL_NOTICE = 5,
                 LOG_LVL_INFO = 6, LOG_LVL_DEBUG = 7 };

extern int log_max_level;

/* Names the process in every line ("ptd node", "ptd smp 3"). */
void log_set_role(const char *role);
void log_line(int level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Text that came from a client (job, region and node names, messages) is
 * logged through log_escape, so that it cannot forge lines or fields:
 * control bytes (below 0x20, 0x7f), every byte from 0x80 up and the
 * backslash are written as \xNN (the backslash as \\). The result is
 * NUL-terminated in buf; one that does not fit in cap bytes ends in "...".
 * NULL is "(null)". Returns buf. */
const char *log_escape(char *buf, size_t cap, const char *s);

/* log_escape into a buffer of the enclosing call's lifetime:
 *   log_info("node '%s' subscribed", LOG_ESC(m->node_id)); */
#define LOG_ESC_MAX 256
#define LOG_ESC(s) log_escape((char[LOG_ESC_MAX]){0}, LOG_ESC_MAX, (s))

#define log_at_(lvl, ...)                                                      \
  do {                                                                         \
    if ((lvl) <= log_max_level)                                                \
      log_line((lvl), __VA_ARGS__);                                            \
  } while (0)
#define log_error(...) log_at_(LOG_LVL_ERR, __VA_ARGS__)
#define log_warn(...) log_at_(LOG_LVL_WARN, __VA_ARGS__)
#define log_notice(...) log_at_(LOG_LVL_NOTICE, __VA_ARGS__)
#define log_info(...) log_at_(LOG_LVL_INFO, __VA_ARGS__)
#define log_debug(...) log_at_(LOG_LVL_DEBUG, __VA_ARGS__)

/* A line a peer can make the daemon write at will (a connection flood) is
 * rate-limited: the first one is written, then at most one per
 * LOG_LIMIT_MS, each saying how many were dropped since the last written.
 * One struct log_limit per kind of line, zero-initialised:
 *
 *   static struct log_limit lim;
 *   log_limited(&lim, LOG_LVL_WARN, "%u connections without a role", n);
 */
#define LOG_LIMIT_MS 10000u

struct log_limit {
  uint64_t last_ms; /* when the last line was written (CLOCK_MONOTONIC) */
  uint64_t dropped; /* lines not written since */
  bool any;         /* a line was written */
};

/* The decision alone, at time now_ms: true when a line may be written now,
 * with *dropped the number held back since the previous one (then reset);
 * false counts one more dropped. */
bool log_limit_pass(struct log_limit *l, uint64_t now_ms, uint64_t *dropped);

/* The count a window left behind: when l holds dropped lines and its
 * window has passed at now_ms, true, with *dropped their number and *secs
 * the seconds since the last line written (then reset, as a written line
 * would); false otherwise. Called from a timer, so that a burst's count is
 * written within LOG_LIMIT_MS even when no line of the kind follows. */
bool log_limit_flush(struct log_limit *l, uint64_t now_ms, uint64_t *dropped,
                     uint64_t *secs);

/* log_line through l: a line above log_max_level is neither written nor
 * counted; a written one after drops ends in "(N more like it dropped in
 * the last S s)". */
void log_limited(struct log_limit *l, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif /* PT_LOG_H */
