/*
 * monotime.h — the one clock of the project: CLOCK_MONOTONIC, which neither
 * the wall clock's steps nor NTP's slewing move. Every deadline and every
 * rate is measured on it.
 */
#ifndef PT_MONOTIME_H
#define PT_MONOTIME_H

#include <stdint.h>

uint64_t monotime_ns(void);
uint64_t monotime_ms(void);

#endif /* PT_MONOTIME_H */
