/*
 * conf.h — parsing shared by the command lines of ptd's roles and of
 * ptctl.
 */
#ifndef PT_CONF_H
#define PT_CONF_H

#include <stdint.h>

/* "123", "64K", "2m", "3GiB", "1T", "512MB" -> bytes (binary multiples).
 * -EINVAL for anything else, including overflow. OUT: *out. */
int conf_parse_bytes(const char *s, uint64_t *out);

#endif /* PT_CONF_H */
