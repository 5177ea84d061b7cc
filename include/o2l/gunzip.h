/* SPDX-License-Identifier: Apache-2.0 */
/* gunzip.h - bounded gzip decompression, shared by the receivers. */
#ifndef O2L_GUNZIP_H
#define O2L_GUNZIP_H

#include <stddef.h>

/*
 * Inflates gzip data (several gzip members join, RFC 1952; a zlib stream
 * is accepted too) into a new o2l_malloc buffer, stopping as soon as the
 * output would pass |limit|, so a small bomb cannot allocate much.
 * Returns O2L_OK with *out owned by the caller, O2L_ETOOBIG, O2L_EPARSE
 * (not gzip, truncated, or trailing bytes) or O2L_ENOMEM.
 */
int o2l_gunzip(const void *in, size_t in_len, size_t limit, unsigned char **out,
               size_t *out_len);

#endif /* O2L_GUNZIP_H */
