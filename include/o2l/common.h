/* SPDX-License-Identifier: Apache-2.0 */
/* common.h - error codes and allocation wrappers shared by every module. */
#ifndef O2L_COMMON_H
#define O2L_COMMON_H

#include <stddef.h>
#include <stdint.h>

enum o2l_err {
    O2L_OK = 0,
    O2L_ENOMEM = -1,    /* allocation failed */
    O2L_EINVAL = -2,    /* bad argument or bad configuration value */
    O2L_EPARSE = -3,    /* input could not be decoded */
    O2L_ETOOBIG = -4,   /* input over a configured size limit */
    O2L_EFULL = -5,     /* a bounded queue is full; try again later */
    O2L_EIO = -6,       /* file or socket error */
    O2L_EHTTP = -7,     /* the peer answered with an HTTP error */
    O2L_ESTOPPED = -8,  /* the component is shutting down */
    O2L_EUNSUPP = -9,   /* unsupported content type or encoding */
    O2L_ETIMEDOUT = -10 /* nothing happened within the time allowed */
};

/* Returns a static, lower-case name for |rc| (e.g. "out of memory"). */
const char *o2l_strerror(int rc);

/*
 * Allocation wrappers. Every allocation in the project goes through these
 * so that tests can make the n-th one fail (o2l_mem_fail_after). They
 * behave like malloc/calloc/realloc/free/strdup; o2l_free accepts NULL.
 * o2l_mem_init() also routes cJSON's allocations through them; call it
 * once at start-up, before any other thread exists.
 */
void *o2l_malloc(size_t n);
void *o2l_calloc(size_t count, size_t n);
void *o2l_realloc(void *p, size_t n);
void o2l_free(void *p);
char *o2l_strdup(const char *s);
char *o2l_strndup(const char *s, size_t n);
void o2l_mem_init(void);

/*
 * Makes room for one more element in the array *|items| (a T ** passed as
 * void *) of *|cap| elements of |size| bytes, |n| of them in use: doubles
 * the capacity, starting at |first|. Returns O2L_OK (also when there was
 * room already) or O2L_ENOMEM, leaving the array as it was.
 */
int o2l_grow(void *items, size_t *cap, size_t n, size_t size, size_t first);

/*
 * Test hook: the allocation after |n| more successful ones fails; a
 * negative |n| turns failures off. Not thread-safe; tests only.
 */
void o2l_mem_fail_after(long n);

/* Wall-clock time in nanoseconds since the Unix epoch. */
uint64_t o2l_now_ns(void);

/* Monotonic time in milliseconds, for timeouts and backoff. */
uint64_t o2l_mono_ms(void);

/*
 * Writes |ns| (nanoseconds since the epoch) as ISO-8601 UTC with
 * microseconds and a Z, e.g. 2025-01-31T08:15:02.123456Z, using integer
 * arithmetic only. |out| must hold O2L_ISO_LEN bytes. Returns |out|.
 */
#define O2L_ISO_LEN 32
char *o2l_iso_time(uint64_t ns, char *out);

#define O2L_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#endif /* O2L_COMMON_H */
