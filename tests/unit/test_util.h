/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_util.h - small helpers shared by the unit tests (include after
 * cmocka.h). Header-only: each test is a program of its own.
 */
#ifndef O2L_TEST_UTIL_H
#define O2L_TEST_UTIL_H

#include <stdio.h>
#include <stdlib.h>

/*
 * Reads the whole file at |path| into a NUL-terminated buffer from
 * calloc (free it with free or o2l_free); *len gets its size. Fails the
 * test when the file cannot be read. Never goes through o2l_malloc, so
 * it is safe while allocation failures are being injected.
 */
static inline char *test_read_file(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    char *buf;
    long size;

    assert_non_null(fp);
    assert_int_equal(fseek(fp, 0, SEEK_END), 0);
    size = ftell(fp);
    assert_true(size >= 0);
    rewind(fp);
    buf = calloc(1, (size_t)size + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)size, fp), (size_t)size);
    fclose(fp);
    *len = (size_t)size;
    return buf;
}

/* The same for |name| under the directory |sub| of the test data. */
static inline char *test_read_data(const char *sub, const char *name,
                                   size_t *len)
{
    char path[512];

    snprintf(path, sizeof(path), "%s/%s/%s", O2L_TEST_DATA, sub, name);
    return test_read_file(path, len);
}

#endif /* O2L_TEST_UTIL_H */
