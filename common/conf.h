/*
 * conf.h — parsing shared by the command lines of ptd's roles and of
 * ptctl.
 */
#ifndef PT_CONF_H
#define PT_CONF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* "123", "64K", "2m", "3GiB", "1T", "512MB" -> bytes (binary multiples).
 * -EINVAL for anything else, including overflow. OUT: *out. */
int conf_parse_bytes(const char *s, uint64_t *out);

/* Whether s is an absolute path shorter than max bytes without "." or
 * ".." parts (a persist dir: the same path on every node, never one that
 * walks out of where it names). */
bool conf_path_plain(const char *s, size_t max);

#endif /* PT_CONF_H */
