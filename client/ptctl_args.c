/*
 * ptctl_args.c — checks of what the operator typed, before anything is
 * sent: a bad value never reaches the controller, and the message names the
 * option and what it expects.
 */
#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "client/ptctl.h"
#include "pt.h"
#include "common/conf.h"
#include "ec/rs.h"

/* Decimal digits only, without overflow. */
static bool digits_u64(const char *s, const char **end, uint64_t *out)
{
  uint64_t v = 0;
  const char *p = s;

  if (*p < '0' || *p > '9')
    return false;
  for (; *p >= '0' && *p <= '9'; p++) {
    uint64_t d = (uint64_t)(*p - '0');
    if (v > (UINT64_MAX - d) / 10)
      return false;
    v = v * 10 + d;
  }
  *end = p;
  *out = v;
  return true;
}

int ptctl_args_u64(const char *flag, const char *s, uint64_t lo, uint64_t hi,
                   uint64_t *out)
{
  const char *end;
  uint64_t v;

  if (s == NULL || !digits_u64(s, &end, &v) || *end != '\0' || v < lo ||
      v > hi) {
    fprintf(stderr,
            "ptctl: %s '%s': expected a whole number %" PRIu64 "..%" PRIu64
            "\n",
            flag, s != NULL ? s : "", lo, hi);
    return -EINVAL;
  }
  *out = v;
  return PT_OK;
}

int ptctl_args_u32(const char *flag, const char *s, uint32_t lo, uint32_t hi,
                   uint32_t *out)
{
  uint64_t v;
  int rc = ptctl_args_u64(flag, s, lo, hi, &v);

  if (rc == PT_OK)
    *out = (uint32_t)v;
  return rc;
}

int ptctl_args_bytes(const char *flag, const char *s, uint64_t *out)
{
  if (conf_parse_bytes(s, out) == PT_OK)
    return PT_OK;
  fprintf(stderr,
          "ptctl: %s '%s': expected bytes, a whole number with an optional "
          "K, M, G or T (e.g. 64G, 512M)\n",
          flag, s != NULL ? s : "");
  return -EINVAL;
}

int ptctl_args_code(const char *flag, const char *s, uint32_t *k, uint32_t *m)
{
  const char *end, *p;
  uint64_t kv, mv;

  if (s != NULL && strcmp(s, "none") == 0) {
    *k = *m = 0;
    return PT_OK;
  }
  if (s == NULL || !digits_u64(s, &end, &kv) || *end != '+')
    goto bad;
  p = end + 1;
  if (!digits_u64(p, &end, &mv) || *end != '\0')
    goto bad;
  if (kv == 0 && mv == 0) {
    *k = *m = 0;
    return PT_OK;
  }
  if (kv < 1 || mv < 1 || kv > RS_MAX_MEMBERS || mv > RS_MAX_MEMBERS ||
      kv + mv > RS_MAX_MEMBERS)
    goto bad;
  *k = (uint32_t)kv;
  *m = (uint32_t)mv;
  return PT_OK;
bad:
  fprintf(stderr,
          "ptctl: %s '%s': expected K+M, data and parity members, K >= 1, "
          "M >= 1, K + M <= %u (e.g. 4+2), or none\n",
          flag, s != NULL ? s : "", RS_MAX_MEMBERS);
  return -EINVAL;
}

static bool job_char_ok(unsigned char c)
{
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
}

bool ptctl_args_job_ok(const char *s)
{
  size_t n = s != NULL ? strlen(s) : 0;

  if (n == 0 || n > PTCTL_JOB_MAX || s[0] == '.' || s[0] == '-')
    return false;
  for (size_t i = 0; i < n; i++)
    if (!job_char_ok((unsigned char)s[i]))
      return false;
  return true;
}

int ptctl_args_job(const char *flag, const char *s)
{
  if (ptctl_args_job_ok(s))
    return PT_OK;
  fprintf(stderr,
          "ptctl: %s '%s': expected a job name, 1..%d characters of "
          "[A-Za-z0-9._-], not starting with '.' or '-'\n",
          flag, s != NULL ? s : "", PTCTL_JOB_MAX);
  return -EINVAL;
}

/* Interpreters and launchers whose first operand names the job better. */
static bool is_launcher(const char *b)
{
  static const char *const L[] = {"python", "python3", "python2", "sh",
                                  "bash", "env", "uv", "node", "ruby",
                                  "perl", "torchrun", "nohup", "exec"};

  for (size_t i = 0; i < sizeof(L) / sizeof(L[0]); i++)
    if (strcmp(b, L[i]) == 0)
      return true;
  /* python3.11 and the like */
  return strncmp(b, "python", 6) == 0 &&
         strspn(b + 6, "0123456789.") == strlen(b + 6);
}

static const char *base(const char *s)
{
  const char *slash = strrchr(s, '/');

  return slash != NULL ? slash + 1 : s;
}

void ptctl_args_default_job(char *out, size_t len, char *const *argv,
                            size_t argc)
{
  static const char ALPHA[] = "abcdefghijklmnopqrstuvwxyz0123456789";
  const char *name = argc > 0 ? base(argv[0]) : "job";
  char stem[41];
  size_t n = 0;

  /* "python3 -u train.py": the script. */
  if (argc > 0 && is_launcher(name))
    for (size_t i = 1; i < argc; i++)
      if (argv[i][0] != '-' && strchr(argv[i], '=') == NULL) {
        name = base(argv[i]);
        break;
      }
  for (const char *p = name; *p != '\0' && n < sizeof(stem) - 1; p++) {
    unsigned char c = (unsigned char)*p;
    if (c == '.' && n > 0 && strchr(p + 1, '.') == NULL)
      break; /* the extension: train.py -> train */
    if (job_char_ok(c))
      stem[n++] = (char)c;
    else if (n > 0 && stem[n - 1] != '-')
      stem[n++] = '-';
  }
  while (n > 0 && (stem[n - 1] == '-' || stem[n - 1] == '.'))
    n--;
  stem[n] = '\0';
  /* A name must not start with '.' or '-'. */
  size_t skip = strspn(stem, ".-_");
  const char *st = stem[skip] != '\0' ? stem + skip : "job";

  uint8_t rnd[6];
  if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd)) {
    uint64_t x = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 20) ^
                 (uint64_t)clock();
    for (size_t i = 0; i < sizeof(rnd); i++, x >>= 7)
      rnd[i] = (uint8_t)(x * 2654435761u >> 3);
  }
  char suf[sizeof(rnd) + 1];
  for (size_t i = 0; i < sizeof(rnd); i++)
    suf[i] = ALPHA[rnd[i] % (sizeof(ALPHA) - 1)];
  suf[sizeof(rnd)] = '\0';
  snprintf(out, len, "%s-%s", st, suf);
}
