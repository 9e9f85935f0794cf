/*
 * ptctl_out.c — what ptctl prints: JSON strings that are always valid
 * JSON, human sizes and ages, tables whose columns line up whatever the
 * width of their cells, and the steps of a persist dir.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "client/ptctl.h"

void ptctl_out_json_str(FILE *f, const char *s)
{
  const unsigned char *p = (const unsigned char *)s;

  if (s == NULL) {
    fputs("null", f);
    return;
  }
  fputc('"', f);
  while (*p != '\0') {
    unsigned char c = *p;
    if (c == '"' || c == '\\') {
      fputc('\\', f);
      fputc(c, f);
      p++;
    } else if (c == '\n') {
      fputs("\\n", f);
      p++;
    } else if (c == '\t') {
      fputs("\\t", f);
      p++;
    } else if (c == '\r') {
      fputs("\\r", f);
      p++;
    } else if (c < 0x20 || c == 0x7f) {
      fprintf(f, "\\u%04x", c);
      p++;
    } else if (c < 0x80) {
      fputc(c, f);
      p++;
    } else {
      /* A UTF-8 sequence: its length from the lead byte, then each
       * continuation byte checked (overlong and surrogate forms refused). */
      size_t len = c >= 0xf0 && c <= 0xf4 ? 4 : c >= 0xe0 && c < 0xf0 ? 3
                   : c >= 0xc2 && c <= 0xdf ? 2 : 0;
      bool ok = len > 0;
      for (size_t i = 1; ok && i < len; i++)
        ok = (p[i] & 0xc0) == 0x80;
      if (ok && len == 3)
        ok = !(c == 0xe0 && p[1] < 0xa0) && !(c == 0xed && p[1] >= 0xa0);
      if (ok && len == 4)
        ok = !(c == 0xf0 && p[1] < 0x90) && !(c == 0xf4 && p[1] >= 0x90);
      if (ok) {
        fwrite(p, 1, len, f);
        p += len;
      } else {
        fputs("\\ufffd", f);
        p++;
      }
    }
  }
  fputc('"', f);
}

void ptctl_out_json_u64(FILE *f, bool has, uint64_t v)
{
  if (has)
    fprintf(f, "%" PRIu64, v);
  else
    fputs("null", f);
}

const char *ptctl_out_bytes(char *buf, size_t len, uint64_t b)
{
  static const char *const unit[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  double v = (double)b;
  int u = 0;

  while (v >= 1024.0 && u < 5) {
    v /= 1024.0;
    u++;
  }
  if (u == 0)
    snprintf(buf, len, "%" PRIu64 " B", b);
  else
    snprintf(buf, len, "%.1f %s", v, unit[u]);
  return buf;
}

const char *ptctl_out_age(char *buf, size_t len, uint64_t ms)
{
  if (ms < 10000)
    snprintf(buf, len, "%.1f s ago", (double)ms / 1000.0);
  else if (ms < 120000)
    snprintf(buf, len, "%" PRIu64 " s ago", ms / 1000);
  else if (ms < 7200000)
    snprintf(buf, len, "%" PRIu64 " min ago", ms / 60000);
  else if (ms < 172800000)
    snprintf(buf, len, "%" PRIu64 " h ago", ms / 3600000);
  else
    snprintf(buf, len, "%" PRIu64 " d ago", ms / 86400000);
  return buf;
}

void ptctl_out_line(FILE *f, const char *s)
{
  for (const unsigned char *p = (const unsigned char *)(s != NULL ? s : "");
       *p != '\0'; p++)
    fputc(*p < 0x20 || *p == 0x7f ? ' ' : *p, f);
}

/* ---- tables ---- */

void ptctl_table_init(struct ptctl_table *t, size_t ncols)
{
  memset(t, 0, sizeof(*t));
  t->ncols = ncols < PTCTL_TABLE_COLS ? ncols : PTCTL_TABLE_COLS;
}

static char *dup_cell(const char *s)
{
  if (s == NULL || s[0] == '\0')
    s = "-";
  char *d = strdup(s);
  if (d == NULL) {
    fputs("ptctl: out of memory\n", stderr);
    exit(PTCTL_EXIT_FAILED);
  }
  /* A cell is one line: a newline or tab in a daemon's text would break
   * the columns. */
  for (char *p = d; *p != '\0'; p++)
    if (*p == '\n' || *p == '\t' || *p == '\r')
      *p = ' ';
  return d;
}

void ptctl_table_row(struct ptctl_table *t, const char *const *cells)
{
  if (t->nrows == t->cap) {
    size_t cap = t->cap != 0 ? t->cap * 2 : 16;
    char **c = realloc(t->cells, cap * t->ncols * sizeof(*c));
    if (c == NULL) {
      fputs("ptctl: out of memory\n", stderr);
      exit(PTCTL_EXIT_FAILED);
    }
    t->cells = c;
    t->cap = cap;
  }
  for (size_t i = 0; i < t->ncols; i++)
    t->cells[t->nrows * t->ncols + i] = dup_cell(cells[i]);
  t->nrows++;
}

/* Display width: UTF-8 continuation bytes take no column. */
static size_t width(const char *s)
{
  size_t w = 0;

  for (; *s != '\0'; s++)
    if (((unsigned char)*s & 0xc0) != 0x80)
      w++;
  return w;
}

void ptctl_table_print(struct ptctl_table *t, FILE *f)
{
  size_t w[PTCTL_TABLE_COLS] = {0};

  for (size_t r = 0; r < t->nrows; r++)
    for (size_t c = 0; c < t->ncols; c++) {
      size_t n = width(t->cells[r * t->ncols + c]);
      if (n > w[c])
        w[c] = n;
    }
  for (size_t r = 0; r < t->nrows; r++) {
    for (size_t c = 0; c < t->ncols; c++) {
      const char *s = t->cells[r * t->ncols + c];
      if (c + 1 == t->ncols) {
        fputs(s, f);
        break;
      }
      fputs(s, f);
      for (size_t n = width(s); n < w[c] + 2; n++)
        fputc(' ', f);
    }
    fputc('\n', f);
  }
  for (size_t i = 0; i < t->nrows * t->ncols; i++)
    free(t->cells[i]);
  free(t->cells);
  memset(t, 0, sizeof(*t));
}

void ptctl_out_disk_json(FILE *f, Pt__DiskStep *const *disk, size_t n)
{
  fputc('[', f);
  for (size_t i = 0; i < n; i++) {
    const Pt__DiskStep *d = disk[i];
    fprintf(f, "%s{\"step\":%" PRIu64 ",\"complete\":%s,\"files\":",
            i > 0 ? "," : "", d->step, d->complete ? "true" : "false");
    ptctl_out_json_u64(f, d->has_files, d->files);
    fputs(",\"bytes\":", f);
    ptctl_out_json_u64(f, d->has_bytes, d->bytes);
    fputs(",\"age_ms\":", f);
    ptctl_out_json_u64(f, d->has_age_ms, d->age_ms);
    fputs(",\"ours\":", f);
    fputs(!d->has_ours ? "null" : d->ours ? "true" : "false", f);
    fputs(",\"why\":", f);
    ptctl_out_json_str(f, d->why);
    fputc('}', f);
  }
  fputc(']', f);
}

void ptctl_out_disk_table(FILE *f, Pt__DiskStep *const *disk, size_t n)
{
  char b1[32], b2[32];

  fprintf(f, "%-12s %-10s %-7s %-10s %s\n", "STEP", "COMPLETE", "FILES",
          "SIZE", "AGE");
  for (size_t i = 0; i < n; i++) {
    const Pt__DiskStep *d = disk[i];
    /* ("other run": a standalone node's files of another instance) */
    fprintf(f, "%-12" PRIu64 " %-10s %-7" PRIu32 " %-10s %s%s", d->step,
            d->complete ? (d->has_ours && !d->ours ? "other run" : "yes")
                        : "no",
            d->files,
            d->has_bytes ? ptctl_out_bytes(b1, sizeof(b1), d->bytes) : "-",
            d->has_age_ms ? ptctl_out_age(b2, sizeof(b2), d->age_ms) : "-",
            d->why != NULL ? "  " : "");
    if (d->why != NULL)
      ptctl_out_line(f, d->why);
    fputc('\n', f);
  }
}
