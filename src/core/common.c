/* SPDX-License-Identifier: Apache-2.0 */
/* common.c - error names, allocation wrappers and time helpers. */
#include "o2l/common.h"

#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <time.h>

#include <cjson/cJSON.h>

/*
 * The allocation-failure hook is the one piece of process-wide state
 * outside main.c: it exists for tests, which set it from a single thread.
 */
static long fail_countdown = -1;

const char *o2l_strerror(int rc)
{
    switch (rc) {
    case O2L_OK:
        return "ok";
    case O2L_ENOMEM:
        return "out of memory";
    case O2L_EINVAL:
        return "invalid value";
    case O2L_EPARSE:
        return "undecodable input";
    case O2L_ETOOBIG:
        return "over the size limit";
    case O2L_EFULL:
        return "queue full";
    case O2L_EIO:
        return "i/o error";
    case O2L_EHTTP:
        return "http error";
    case O2L_ESTOPPED:
        return "stopped";
    case O2L_EUNSUPP:
        return "unsupported";
    case O2L_ETIMEDOUT:
        return "timed out";
    default:
        return "unknown error";
    }
}

static int should_fail(void)
{
    if (fail_countdown < 0) {
        return 0;
    }
    if (fail_countdown == 0) {
        return 1;
    }
    fail_countdown--;
    return 0;
}

void *o2l_malloc(size_t n)
{
    if (should_fail()) {
        return NULL;
    }
    return malloc(n ? n : 1);
}

void *o2l_calloc(size_t count, size_t n)
{
    if (should_fail()) {
        return NULL;
    }
    return calloc(count ? count : 1, n ? n : 1);
}

void *o2l_realloc(void *p, size_t n)
{
    if (should_fail()) {
        return NULL;
    }
    return realloc(p, n ? n : 1);
}

void o2l_free(void *p)
{
    free(p);
}

char *o2l_strndup(const char *s, size_t n)
{
    char *copy;

    copy = o2l_malloc(n + 1);
    if (!copy) {
        return NULL;
    }
    memcpy(copy, s, n);
    copy[n] = '\0';
    return copy;
}

int o2l_grow(void *items, size_t *cap, size_t n, size_t size, size_t first)
{
    void *old;
    void *grown;
    size_t want;

    if (n < *cap) {
        return O2L_OK;
    }
    want = *cap ? *cap * 2 : first;
    if (want <= *cap || want > SIZE_MAX / size) {
        return O2L_ENOMEM;
    }
    /* Through memcpy: |items| points at a pointer of another type. */
    memcpy(&old, items, sizeof(old));
    grown = o2l_realloc(old, want * size);
    if (!grown) {
        return O2L_ENOMEM;
    }
    memcpy(items, &grown, sizeof(grown));
    *cap = want;
    return O2L_OK;
}

char *o2l_strdup(const char *s)
{
    return o2l_strndup(s, strlen(s));
}

static void *cjson_malloc(size_t n)
{
    return o2l_malloc(n);
}

void o2l_mem_init(void)
{
    cJSON_Hooks hooks = {cjson_malloc, o2l_free};

    cJSON_InitHooks(&hooks);
}

void o2l_mem_fail_after(long n)
{
    fail_countdown = n;
}

uint64_t o2l_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t o2l_mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/*
 * Days since 1970-01-01 to a civil date (proleptic Gregorian), integer
 * arithmetic only, valid for every date a uint64_t of nanoseconds holds.
 */
static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    int64_t era;
    unsigned doe, yoe, doy, mp;

    z += 719468;
    era = (z >= 0 ? z : z - 146096) / 146097;
    doe = (unsigned)(z - era * 146097);
    yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

/* Writes |v| as exactly |width| decimal digits at |p|. */
static void put_digits(char *p, unsigned v, int width)
{
    for (int i = width - 1; i >= 0; i--) {
        p[i] = (char)('0' + v % 10);
        v /= 10;
    }
}

char *o2l_iso_time(uint64_t ns, char *out)
{
    uint64_t secs = ns / 1000000000u;
    unsigned micros = (unsigned)((ns % 1000000000u) / 1000u);
    unsigned sod = (unsigned)(secs % 86400u);
    int64_t year;
    unsigned month, day;

    /*
     * By hand rather than with snprintf: every event carries several
     * timestamps. A uint64_t of nanoseconds ends in the year 2554, so
     * four digits hold every year.
     */
    civil_from_days((int64_t)(secs / 86400u), &year, &month, &day);
    memcpy(out, "0000-00-00T00:00:00.000000Z", 28);
    put_digits(out, (unsigned)year, 4);
    put_digits(out + 5, month, 2);
    put_digits(out + 8, day, 2);
    put_digits(out + 11, sod / 3600, 2);
    put_digits(out + 14, (sod / 60) % 60, 2);
    put_digits(out + 17, sod % 60, 2);
    put_digits(out + 20, micros, 6);
    return out;
}
