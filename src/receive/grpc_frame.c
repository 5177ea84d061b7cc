/* SPDX-License-Identifier: Apache-2.0 */
/* grpc_frame.c - gRPC message framing, gzip and trailer encodings. */
#include "o2l/grpc_frame.h"

#include <string.h>

#include "o2l/common.h"
#include "o2l/otlp_util.h"
#include "google/rpc/status.pb-c.h"

/* The compressed-flag values of the prefix's first byte. */
enum frame_flag {
    FRAME_FLAG_IDENTITY = 0,
    FRAME_FLAG_COMPRESSED = 1
};

/* The first allocation for a message; it doubles as data arrives. */
#define FIRST_BUFFER_BYTES (64u * 1024u)

#define RETRY_INFO_TYPE_URL "type.googleapis.com/google.rpc.RetryInfo"

void o2l_grpc_frame_reader_init(struct o2l_grpc_frame_reader *r,
                                size_t max_message_bytes)
{
    memset(r, 0, sizeof(*r));
    r->max_message_bytes = max_message_bytes;
}

/* Reads the prefix once its five bytes are in. */
static int parse_prefix(struct o2l_grpc_frame_reader *r)
{
    uint32_t n = ((uint32_t)r->prefix[1] << 24) |
                 ((uint32_t)r->prefix[2] << 16) |
                 ((uint32_t)r->prefix[3] << 8) | (uint32_t)r->prefix[4];

    if (r->prefix[0] != FRAME_FLAG_IDENTITY &&
        r->prefix[0] != FRAME_FLAG_COMPRESSED) {
        return O2L_EPARSE;
    }
    /*
     * The wire length is bounded too: a compressed message is refused
     * when even its compressed form is over the limit.
     */
    if ((uint64_t)n > (uint64_t)r->max_message_bytes) {
        return O2L_ETOOBIG;
    }
    r->compressed = r->prefix[0] == FRAME_FLAG_COMPRESSED;
    r->message_len = n;
    r->complete = n == 0;
    return O2L_OK;
}

/* Makes room for |need| bytes of message, never more than announced. */
static int reserve(struct o2l_grpc_frame_reader *r, size_t need)
{
    size_t cap = r->buf_cap ? r->buf_cap : FIRST_BUFFER_BYTES;
    unsigned char *grown;

    if (need <= r->buf_cap) {
        return O2L_OK;
    }
    while (cap < need) {
        cap *= 2;
    }
    if (cap > r->message_len) {
        cap = r->message_len;
    }
    grown = o2l_realloc(r->buf, cap);
    if (!grown) {
        return O2L_ENOMEM;
    }
    r->buf = grown;
    r->buf_cap = cap;
    return O2L_OK;
}

int o2l_grpc_frame_reader_feed(struct o2l_grpc_frame_reader *r,
                               const void *data, size_t len)
{
    const unsigned char *p = data;
    int rc;

    while (len > 0) {
        size_t n;

        if (r->complete) {
            /* A unary call carries exactly one message. */
            return O2L_EPARSE;
        }
        if (r->prefix_len < O2L_GRPC_FRAME_PREFIX_LEN) {
            n = O2L_GRPC_FRAME_PREFIX_LEN - r->prefix_len;
            n = n < len ? n : len;
            memcpy(r->prefix + r->prefix_len, p, n);
            r->prefix_len += n;
            p += n;
            len -= n;
            if (r->prefix_len == O2L_GRPC_FRAME_PREFIX_LEN) {
                rc = parse_prefix(r);
                if (rc != O2L_OK) {
                    return rc;
                }
            }
            continue;
        }
        n = r->message_len - r->buf_len;
        n = n < len ? n : len;
        rc = reserve(r, r->buf_len + n);
        if (rc != O2L_OK) {
            return rc;
        }
        memcpy(r->buf + r->buf_len, p, n);
        r->buf_len += n;
        p += n;
        len -= n;
        r->complete = r->buf_len == r->message_len;
    }
    return O2L_OK;
}

int o2l_grpc_frame_reader_finish(struct o2l_grpc_frame_reader *r,
                                 const unsigned char **msg, size_t *len,
                                 bool *compressed)
{
    if (r->prefix_len < O2L_GRPC_FRAME_PREFIX_LEN || !r->complete) {
        return O2L_EPARSE;
    }
    *msg = r->buf ? r->buf : (const unsigned char *)"";
    *len = r->buf_len;
    *compressed = r->compressed;
    return O2L_OK;
}

size_t o2l_grpc_frame_reader_buffered(const struct o2l_grpc_frame_reader *r)
{
    return r->prefix_len + r->buf_len;
}

void o2l_grpc_frame_reader_clear(struct o2l_grpc_frame_reader *r)
{
    size_t max = r->max_message_bytes;

    o2l_free(r->buf);
    memset(r, 0, sizeof(*r));
    r->max_message_bytes = max;
}

int o2l_grpc_frame_encode(const void *msg, size_t len, unsigned char **out,
                          size_t *out_len)
{
    unsigned char *buf;

    if ((uint64_t)len > UINT32_MAX) {
        return O2L_ETOOBIG;
    }
    buf = o2l_malloc(len + O2L_GRPC_FRAME_PREFIX_LEN);
    if (!buf) {
        return O2L_ENOMEM;
    }
    buf[0] = FRAME_FLAG_IDENTITY;
    buf[1] = (unsigned char)(len >> 24);
    buf[2] = (unsigned char)(len >> 16);
    buf[3] = (unsigned char)(len >> 8);
    buf[4] = (unsigned char)len;
    if (len > 0) {
        memcpy(buf + O2L_GRPC_FRAME_PREFIX_LEN, msg, len);
    }
    *out = buf;
    *out_len = len + O2L_GRPC_FRAME_PREFIX_LEN;
    return O2L_OK;
}

char *o2l_grpc_frame_percent_encode(const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = 0;
    char *out, *w;

    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        n += (*p < 0x20 || *p > 0x7e || *p == '%') ? 3 : 1;
    }
    out = o2l_malloc(n + 1);
    if (!out) {
        return NULL;
    }
    w = out;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p < 0x20 || *p > 0x7e || *p == '%') {
            *w++ = '%';
            *w++ = hex[*p >> 4];
            *w++ = hex[*p & 0x0f];
        } else {
            *w++ = (char)*p;
        }
    }
    *w = '\0';
    return out;
}

/* Packs |msg| into a new o2l_malloc buffer. */
static uint8_t *pack(const ProtobufCMessage *msg, size_t *len)
{
    uint8_t *buf = o2l_malloc(protobuf_c_message_get_packed_size(msg) + 1);

    if (buf) {
        *len = protobuf_c_message_pack(msg, buf);
    }
    return buf;
}

int o2l_grpc_frame_status_details(int code, const char *message,
                                  int64_t retry_delay_s, char **out)
{
    Google__Rpc__Status st = GOOGLE__RPC__STATUS__INIT;
    Google__Rpc__Detail detail = GOOGLE__RPC__DETAIL__INIT;
    Google__Rpc__Detail *details[1] = {&detail};
    Google__Rpc__RetryInfo info = GOOGLE__RPC__RETRY_INFO__INIT;
    Google__Rpc__RetryDelay delay = GOOGLE__RPC__RETRY_DELAY__INIT;
    uint8_t *info_buf = NULL, *st_buf = NULL;
    size_t info_len = 0, st_len = 0, n;
    char *clean = NULL;
    char *b64 = NULL;
    int rc = O2L_ENOMEM;

    *out = NULL;
    clean = o2l_otlp_utf8_dup(message ? message : "",
                              message ? strlen(message) : 0);
    if (!clean) {
        goto out;
    }
    st.code = code;
    st.message = clean;
    if (retry_delay_s > 0) {
        delay.seconds = retry_delay_s;
        info.retry_delay = &delay;
        info_buf = pack(&info.base, &info_len);
        if (!info_buf) {
            goto out;
        }
        detail.type_url = (char *)RETRY_INFO_TYPE_URL;
        detail.value.data = info_buf;
        detail.value.len = info_len;
        st.n_details = 1;
        st.details = details;
    }
    st_buf = pack(&st.base, &st_len);
    if (!st_buf) {
        goto out;
    }
    b64 = o2l_otlp_base64_encode(st_buf, st_len);
    if (!b64) {
        goto out;
    }
    /* gRPC binary headers are sent without base64 padding. */
    n = strlen(b64);
    while (n > 0 && b64[n - 1] == '=') {
        b64[--n] = '\0';
    }
    *out = b64;
    rc = O2L_OK;

out:
    o2l_free(clean);
    o2l_free(info_buf);
    o2l_free(st_buf);
    return rc;
}
