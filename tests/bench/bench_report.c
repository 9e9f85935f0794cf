/*
 * bench_report.c — what ptbench's reports share: the targets' lookup and
 * verdict, the JSON object printer, and the table's rows (ptbench.c prints
 * the main report, bench_cluster_report.c the --cluster one).
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pt.h"
#include "tests/bench/bench.h"

/* The target named key (every key is filled by targets_fill). */
const struct target *bench_target_find(const struct target *t, size_t n,
                                        const char *key)
{
  for (size_t i = 0; i < n; i++)
    if (strcmp(t[i].key, key) == 0)
      return &t[i];
  return NULL;
}

bool bench_target_ok(const struct target *t)
{
  if (!isfinite(t->value))
    return false;
  return t->at_least ? t->value >= t->bound : t->value <= t->bound;
}

/* ---- JSON ---- */

void bench_json_key(struct bench_json *j, const char *k)
{
  fprintf(j->f, "%s\n  \"%s\": ", j->first ? "" : ",", k);
  j->first = false;
}

void bench_json_num(struct bench_json *j, const char *k, double v)
{
  bench_json_key(j, k);
  if (isfinite(v))
    fprintf(j->f, "%.6g", v);
  else
    fputs("null", j->f);
}

void bench_json_u64(struct bench_json *j, const char *k, uint64_t v)
{
  bench_json_key(j, k);
  fprintf(j->f, "%llu", (unsigned long long)v);
}

void bench_json_bool(struct bench_json *j, const char *k, bool v)
{
  bench_json_key(j, k);
  fputs(v ? "true" : "false", j->f);
}

void bench_json_str_val(FILE *f, const char *s)
{
  fputc('"', f);
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (*p == '"' || *p == '\\')
      fprintf(f, "\\%c", *p);
    else if (*p < 0x20)
      fprintf(f, "\\u%04x", *p);
    else
      fputc(*p, f);
  }
  fputc('"', f);
}

void bench_json_str(struct bench_json *j, const char *k, const char *s)
{
  bench_json_key(j, k);
  bench_json_str_val(j->f, s);
}

void bench_json_targets(struct bench_json *j, const struct target *t, size_t n)
{
  bool all_ok = true;
  bench_json_key(j, "targets");
  fputc('{', j->f);
  for (size_t i = 0; i < n; i++) {
    fprintf(j->f, "%s\n    \"%s\": ", i ? "," : "", t[i].key);
    if (isfinite(t[i].value))
      fprintf(j->f, "%.6g", t[i].value);
    else
      fputs("null", j->f);
    fprintf(j->f, ",\n    \"%s_target\": \"%s %g\"", t[i].key, t[i].at_least ? ">=" : "<=",
            t[i].bound);
    fprintf(j->f, ",\n    \"%s_ok\": %s", t[i].key, bench_target_ok(&t[i]) ? "true" : "false");
    all_ok = all_ok && bench_target_ok(&t[i]);
  }
  fputs("\n  }", j->f);
  bench_json_bool(j, "targets_all_ok", all_ok);
}

/* ---- the table ---- */

void bench_row(const char *label, const char *measured, const char *limit, double ratio,
                const char *target, const char *result)
{
  char r[32];
  if (isfinite(ratio))
    snprintf(r, sizeof(r), ratio >= 100 ? "%.0fx" : "%.2f", ratio);
  else
    snprintf(r, sizeof(r), "-");
  printf("%-30s %-15s %-26s %8s  %-9s %s\n", label, measured, limit, r, target, result);
}

const char *bench_fmt(char *buf, size_t len, const char *f, double v)
{
  if (isfinite(v))
    snprintf(buf, len, f, v);
  else
    snprintf(buf, len, "-");
  return buf;
}

void bench_target_row(const struct target *t, const char *label, const char *measured,
                       const char *limit)
{
  char tg[32];
  bool is_ms = strstr(t->note, ", ms") != NULL; /* a time, not a ratio */
  snprintf(tg, sizeof(tg), "%s %g%s", t->at_least ? ">=" : "<=", t->bound, is_ms ? " ms" : "");
  bench_row(label, measured, limit, is_ms ? NAN : t->value, tg,
      !isfinite(t->value) ? "not measured" : bench_target_ok(t) ? "ok" : "MISS");
}
