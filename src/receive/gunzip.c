/* SPDX-License-Identifier: Apache-2.0 */
/* gunzip.c - bounded gzip decompression for request bodies and messages. */
#include "o2l/gunzip.h"

#include <stdint.h>
#include <string.h>

#include <zlib.h>

#include "o2l/common.h"

/* Grows the inflate output; fails once it would pass |limit|. */
static int grow_output(unsigned char **buf, size_t *cap, size_t in_len,
                       size_t limit)
{
    size_t next = *cap ? *cap * 2 : in_len * 4 + 4096;
    unsigned char *grown;

    if (*cap > limit) {
        return O2L_ETOOBIG;
    }
    /* One byte past the limit tells "exactly at" from "over". */
    if (next > limit + 1) {
        next = limit + 1;
    }
    grown = o2l_realloc(*buf, next);
    if (!grown) {
        return O2L_ENOMEM;
    }
    *buf = grown;
    *cap = next;
    return O2L_OK;
}

int o2l_gunzip(const void *in, size_t in_len, size_t limit, unsigned char **out,
               size_t *out_len)
{
    z_stream zs;
    unsigned char *buf = NULL;
    size_t cap = 0, used = 0;
    int zrc = Z_OK, rc = O2L_OK;

    if (in_len > UINT32_MAX) {
        return O2L_ETOOBIG;
    }
    memset(&zs, 0, sizeof(zs));
    /* 15 + 32: gzip or zlib header, detected. */
    if (inflateInit2(&zs, 15 + 32) != Z_OK) {
        return O2L_ENOMEM;
    }
    zs.next_in = (unsigned char *)in;
    zs.avail_in = (uInt)in_len;
    for (;;) {
        if (used == cap) {
            rc = grow_output(&buf, &cap, in_len, limit);
            if (rc != O2L_OK) {
                goto out;
            }
        }
        zs.next_out = buf + used;
        zs.avail_out = (uInt)(cap - used);
        zrc = inflate(&zs, Z_NO_FLUSH);
        used = cap - zs.avail_out;
        if (zrc == Z_STREAM_END && zs.avail_in == 0) {
            break;
        }
        if (zrc == Z_STREAM_END) {
            /* Another gzip member may follow (RFC 1952); nothing else. */
            if (zs.avail_in < 2 || zs.next_in[0] != 0x1f ||
                zs.next_in[1] != 0x8b || inflateReset(&zs) != Z_OK) {
                rc = O2L_EPARSE;
                goto out;
            }
            continue;
        }
        if (zrc != Z_OK || (zs.avail_in == 0 && zs.avail_out != 0)) {
            rc = O2L_EPARSE;
            goto out;
        }
    }
    if (used > limit) {
        rc = O2L_ETOOBIG;
        goto out;
    }
    *out = buf;
    *out_len = used;
    buf = NULL;

out:
    inflateEnd(&zs);
    o2l_free(buf);
    return rc;
}
