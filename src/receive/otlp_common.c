/* SPDX-License-Identifier: Apache-2.0 */
/* otlp_common.c - decoding rules shared by the OTLP protobuf and JSON paths. */
#include "o2l/otlp_util.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "o2l/common.h"
#include "o2l/otlp.h"

/* Longest span name quoted in a rejection message, in bytes. */
#define REJECT_NAME_MAX 64

/*
 * Integers from 10^15 up stay raw decimal text: a double holds them
 * exactly only up to 2^53, and cJSON prints numbers with 15 significant
 * digits whenever that is within one unit in the last place, so e.g.
 * 5000000000000001 would be written as 5e+15.
 */
#define EXACT_JSON_INT 999999999999999LL

static const char hex_digits[] = "0123456789abcdef";

static const char b64_std[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

void o2l_otlp_hex_encode(const uint8_t *in, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex_digits[in[i] >> 4];
        out[2 * i + 1] = hex_digits[in[i] & 0x0f];
    }
    out[2 * n] = '\0';
}

static int hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

int o2l_otlp_hex_decode(const char *in, size_t len, uint8_t *out, size_t cap,
                        size_t *out_len)
{
    if (len % 2 != 0 || len / 2 > cap) {
        return 0;
    }
    for (size_t i = 0; i < len; i += 2) {
        int hi = hex_value((unsigned char)in[i]);
        int lo = hex_value((unsigned char)in[i + 1]);

        if (hi < 0 || lo < 0) {
            return 0;
        }
        out[i / 2] = (uint8_t)(hi << 4 | lo);
    }
    *out_len = len / 2;
    return 1;
}

/* Both alphabets at once: '+' and '-' are 62, '/' and '_' are 63. */
static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') {
        return c - 'A';
    }
    if (c >= 'a' && c <= 'z') {
        return c - 'a' + 26;
    }
    if (c >= '0' && c <= '9') {
        return c - '0' + 52;
    }
    if (c == '+' || c == '-') {
        return 62;
    }
    if (c == '/' || c == '_') {
        return 63;
    }
    return -1;
}

int o2l_otlp_base64_decode(const char *in, size_t len, uint8_t *out, size_t cap,
                           size_t *out_len)
{
    uint32_t acc = 0;
    int bits = 0;
    size_t n = 0;

    /* Padding is optional, but when present it must complete a quantum. */
    if (len > 0 && in[len - 1] == '=') {
        if (len % 4 != 0) {
            return 0;
        }
        len--;
        if (len > 0 && in[len - 1] == '=') {
            len--;
        }
    }
    if (len % 4 == 1) {
        return 0;
    }
    if (len / 4 * 3 + (len % 4 ? len % 4 - 1 : 0) > cap) {
        return 0;
    }
    for (size_t i = 0; i < len; i++) {
        int v = b64_value((unsigned char)in[i]);

        if (v < 0) {
            return 0;
        }
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[n++] = (uint8_t)(acc >> bits);
        }
    }
    *out_len = n;
    return 1;
}

char *o2l_otlp_base64_encode(const uint8_t *in, size_t n)
{
    size_t out_len = (n + 2) / 3 * 4;
    char *out;
    size_t o = 0;
    size_t i = 0;

    out = o2l_malloc(out_len + 1);
    if (!out) {
        return NULL;
    }
    for (; i + 2 < n; i += 3) {
        uint32_t v =
            (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];

        out[o++] = b64_std[v >> 18];
        out[o++] = b64_std[(v >> 12) & 63];
        out[o++] = b64_std[(v >> 6) & 63];
        out[o++] = b64_std[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)in[i] << 16;

        if (i + 1 < n) {
            v |= (uint32_t)in[i + 1] << 8;
        }
        out[o++] = b64_std[v >> 18];
        out[o++] = b64_std[(v >> 12) & 63];
        out[o++] = i + 1 < n ? b64_std[(v >> 6) & 63] : '=';
        out[o++] = '=';
    }
    out[o] = '\0';
    return out;
}

/*
 * Length of the well-formed UTF-8 character at |s| (at most |n| bytes), or
 * 0 when it is ill-formed; then *bad is set to the length of the maximal
 * subpart to replace (at least 1), as Unicode recommends.
 */
static size_t utf8_char(const unsigned char *s, size_t n, size_t *bad)
{
    unsigned char c = s[0];
    unsigned char lo = 0x80;
    unsigned char hi = 0xbf;
    size_t need;
    size_t i;

    if (c >= 0x01 && c <= 0x7f) {
        return 1;
    }
    if (c >= 0xc2 && c <= 0xdf) {
        need = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        need = 3;
        lo = c == 0xe0 ? 0xa0 : 0x80;
        hi = c == 0xed ? 0x9f : 0xbf;
    } else if (c >= 0xf0 && c <= 0xf4) {
        need = 4;
        lo = c == 0xf0 ? 0x90 : 0x80;
        hi = c == 0xf4 ? 0x8f : 0xbf;
    } else {
        *bad = 1; /* NUL, a stray continuation byte or an invalid lead */
        return 0;
    }
    for (i = 1; i < need; i++) {
        if (i >= n || s[i] < lo || s[i] > hi) {
            *bad = i;
            return 0;
        }
        lo = 0x80;
        hi = 0xbf;
    }
    return need;
}

int o2l_otlp_utf8_is_clean(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    size_t bad;

    while (i < n) {
        size_t k;
        uint64_t w;

        /* ASCII runs are the common case in keys and prompts. */
        if (n - i >= 8) {
            memcpy(&w, p + i, 8);
            if (!(w & 0x8080808080808080ULL) &&
                !((w - 0x0101010101010101ULL) & ~w & 0x8080808080808080ULL)) {
                i += 8;
                continue;
            }
        }
        if (p[i] >= 0x01 && p[i] <= 0x7f) {
            i++;
            continue;
        }
        k = utf8_char(p + i, n - i, &bad);
        if (k == 0) {
            return 0;
        }
        i += k;
    }
    return 1;
}

char *o2l_otlp_utf8_dup(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    char *out;
    size_t o = 0;
    size_t i = 0;
    size_t bad;

    if (o2l_otlp_utf8_is_clean(s, n)) {
        return o2l_strndup(s, n);
    }

    /* Each replaced byte grows to at most three. */
    if (n > (SIZE_MAX - 1) / 3) {
        return NULL;
    }
    out = o2l_malloc(n * 3 + 1);
    if (!out) {
        return NULL;
    }
    while (i < n) {
        size_t k = utf8_char(p + i, n - i, &bad);

        if (k > 0) {
            memcpy(out + o, p + i, k);
            o += k;
            i += k;
            continue;
        }
        out[o++] = (char)0xef;
        out[o++] = (char)0xbf;
        out[o++] = (char)0xbd;
        i += bad;
    }
    out[o] = '\0';
    return out;
}

static int all_zero(const uint8_t *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (b[i] != 0) {
            return 0;
        }
    }
    return 1;
}

enum o2l_otlp_id o2l_otlp_id_from_bytes(const uint8_t *b, size_t n, size_t want,
                                        char *hex)
{
    if (!b || n == 0) {
        return O2L_OTLP_ID_EMPTY;
    }
    if (n != want) {
        return O2L_OTLP_ID_BAD;
    }
    if (all_zero(b, n)) {
        return O2L_OTLP_ID_ZERO;
    }
    o2l_otlp_hex_encode(b, n, hex);
    return O2L_OTLP_ID_OK;
}

enum o2l_otlp_id o2l_otlp_id_from_text(const char *s, size_t n, size_t want,
                                       char *hex)
{
    uint8_t raw[O2L_OTLP_TRACE_ID_BYTES];
    size_t raw_len = 0;

    if (!s || n == 0) {
        return O2L_OTLP_ID_EMPTY;
    }
    if (want > sizeof(raw)) {
        return O2L_OTLP_ID_BAD;
    }
    /* 2 * want hex digits and base64 of want bytes never share a length. */
    if (n == 2 * want && o2l_otlp_hex_decode(s, n, raw, want, &raw_len)) {
        return o2l_otlp_id_from_bytes(raw, raw_len, want, hex);
    }
    if (!o2l_otlp_base64_decode(s, n, raw, sizeof(raw), &raw_len)) {
        return O2L_OTLP_ID_BAD;
    }
    if (raw_len == 0) {
        return O2L_OTLP_ID_BAD;
    }
    return o2l_otlp_id_from_bytes(raw, raw_len, want, hex);
}

int o2l_otlp_parse_u64(const char *s, size_t n, uint64_t *out)
{
    uint64_t v = 0;

    if (n == 0) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned d;

        if (s[i] < '0' || s[i] > '9') {
            return 0;
        }
        d = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10) {
            return 0;
        }
        v = v * 10 + d;
    }
    *out = v;
    return 1;
}

int o2l_otlp_parse_i64(const char *s, size_t n, int64_t *out)
{
    uint64_t mag;
    int neg = 0;

    if (n > 0 && s[0] == '-') {
        neg = 1;
        s++;
        n--;
    }
    if (!o2l_otlp_parse_u64(s, n, &mag)) {
        return 0;
    }
    if (neg) {
        if (mag > (uint64_t)INT64_MAX + 1) {
            return 0;
        }
        /* Negate in unsigned arithmetic so INT64_MIN does not overflow. */
        *out = mag == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)mag;
        return 1;
    }
    if (mag > (uint64_t)INT64_MAX) {
        return 0;
    }
    *out = (int64_t)mag;
    return 1;
}

cJSON *o2l_otlp_json_int(int64_t v)
{
    char text[24];

    if (v >= -EXACT_JSON_INT && v <= EXACT_JSON_INT) {
        return cJSON_CreateNumber((double)v);
    }
    /* Larger magnitudes keep their exact digits as raw JSON text. */
    snprintf(text, sizeof(text), "%" PRId64, v);
    return cJSON_CreateRaw(text);
}

cJSON *o2l_otlp_json_double(double v)
{
    if (isnan(v)) {
        return cJSON_CreateString("NaN");
    }
    if (isinf(v)) {
        return cJSON_CreateString(v > 0 ? "Infinity" : "-Infinity");
    }
    return cJSON_CreateNumber(v);
}

cJSON *o2l_otlp_json_take_string(char *s)
{
    cJSON *item;

    if (!s) {
        return NULL;
    }
    /*
     * A null item turned into a string adopts |s| without a second copy;
     * cJSON frees valuestring with its hooks, which o2l_mem_init points
     * at the same allocator.
     */
    item = cJSON_CreateNull();
    if (!item) {
        o2l_free(s);
        return NULL;
    }
    item->type = cJSON_String;
    item->valuestring = s;
    return item;
}

int o2l_otlp_attrs_add(cJSON *obj, char *key, cJSON *val)
{
    if (!key || !val) {
        o2l_free(key);
        cJSON_Delete(val);
        return O2L_ENOMEM;
    }
    /* The key is adopted as is; cJSON frees it with the item. */
    val->string = key;
    val->type &= ~cJSON_StringIsConst;
    if (!cJSON_AddItemToArray(obj, val)) {
        cJSON_Delete(val);
        return O2L_ENOMEM;
    }
    return O2L_OK;
}

struct keyed {
    cJSON *item;
    size_t pos;
};

static int keyed_cmp(const void *a, const void *b)
{
    const struct keyed *x = a;
    const struct keyed *y = b;
    int c = strcmp(x->item->string, y->item->string);

    if (c != 0) {
        return c;
    }
    return x->pos < y->pos ? -1 : (x->pos > y->pos ? 1 : 0);
}

/* Few members: compare each with the ones after it, no allocation. */
static void attrs_dedupe_small(cJSON *obj)
{
    cJSON *it = obj->child;

    while (it) {
        cJSON *next = it->next;

        for (cJSON *later = next; later; later = later->next) {
            if (strcmp(it->string, later->string) == 0) {
                cJSON_Delete(cJSON_DetachItemViaPointer(obj, it));
                break;
            }
        }
        it = next;
    }
}

int o2l_otlp_attrs_finish(cJSON *obj)
{
    struct keyed *all;
    size_t n = 0;
    size_t i = 0;

    for (cJSON *it = obj->child; it; it = it->next) {
        n++;
    }
    if (n < 2) {
        return O2L_OK;
    }
    if (n <= 16) {
        attrs_dedupe_small(obj);
        return O2L_OK;
    }

    all = o2l_malloc(n * sizeof(*all));
    if (!all) {
        return O2L_ENOMEM;
    }
    for (cJSON *it = obj->child; it; it = it->next) {
        all[i].item = it;
        all[i].pos = i;
        i++;
    }
    qsort(all, n, sizeof(*all), keyed_cmp);
    for (i = 0; i + 1 < n; i++) {
        if (strcmp(all[i].item->string, all[i + 1].item->string) == 0) {
            cJSON_Delete(cJSON_DetachItemViaPointer(obj, all[i].item));
        }
    }
    o2l_free(all);
    return O2L_OK;
}

int o2l_otlp_builder_init(struct o2l_otlp_builder *b, uint64_t now_ns)
{
    memset(b, 0, sizeof(*b));
    b->now_ns = now_ns;
    b->ex = o2l_calloc(1, sizeof(*b->ex));
    return b->ex ? O2L_OK : O2L_ENOMEM;
}

static int ensure_object(cJSON **obj)
{
    if (!*obj) {
        *obj = cJSON_CreateObject();
    }
    return *obj ? O2L_OK : O2L_ENOMEM;
}

static int ensure_string(char **s)
{
    if (!*s) {
        *s = o2l_strdup("");
    }
    return *s ? O2L_OK : O2L_ENOMEM;
}

int o2l_otlp_builder_add_scope(struct o2l_otlp_builder *b, cJSON *res_attrs,
                               char *name, char *version, cJSON *attrs)
{
    struct o2l_export *ex = b->ex;
    struct o2l_scope *sc;
    int rc;

    rc = ensure_object(&res_attrs);
    if (rc == O2L_OK) {
        rc = ensure_object(&attrs);
    }
    if (rc == O2L_OK) {
        rc = ensure_string(&name);
    }
    if (rc == O2L_OK) {
        rc = ensure_string(&version);
    }
    if (rc == O2L_OK) {
        rc = o2l_grow(&ex->scopes, &b->cap_scopes, ex->n_scopes,
                      sizeof(*ex->scopes), 4);
    }
    if (rc != O2L_OK) {
        cJSON_Delete(res_attrs);
        cJSON_Delete(attrs);
        o2l_free(name);
        o2l_free(version);
        return rc;
    }

    sc = &ex->scopes[ex->n_scopes++];
    sc->resource_attrs = res_attrs;
    sc->name = name;
    sc->version = version;
    sc->attrs = attrs;
    return O2L_OK;
}

struct o2l_span *o2l_otlp_builder_new_span(struct o2l_otlp_builder *b)
{
    struct o2l_export *ex = b->ex;
    struct o2l_span *s;

    if (o2l_grow(&ex->spans, &b->cap_spans, ex->n_spans, sizeof(*ex->spans),
                 16) != O2L_OK) {
        return NULL;
    }
    s = &ex->spans[ex->n_spans++];
    memset(s, 0, sizeof(*s));
    return s;
}

int o2l_otlp_builder_end_span(struct o2l_otlp_builder *b)
{
    struct o2l_span *s = &b->ex->spans[b->ex->n_spans - 1];
    int rc;

    rc = ensure_object(&s->attrs);
    if (rc != O2L_OK) {
        return rc;
    }
    rc = ensure_string(&s->name);
    if (rc != O2L_OK) {
        return rc;
    }

    /* One unset edge takes the other; none set takes the receive time. */
    if (s->start_ns == 0 && s->end_ns == 0) {
        s->start_ns = b->now_ns;
        s->end_ns = b->now_ns;
    } else if (s->start_ns == 0) {
        s->start_ns = s->end_ns;
    } else if (s->end_ns == 0) {
        s->end_ns = s->start_ns;
    }

    for (size_t i = 0; i < s->n_events; i++) {
        struct o2l_span_event *ev = &s->events[i];

        if (ev->time_ns == 0) {
            ev->time_ns = s->start_ns;
        }
        rc = ensure_object(&ev->attrs);
        if (rc == O2L_OK) {
            rc = ensure_string(&ev->name);
        }
        if (rc != O2L_OK) {
            return rc;
        }
    }
    return O2L_OK;
}

/* Longest prefix of |s| up to |max| bytes that ends on a character edge. */
static size_t utf8_prefix(const char *s, size_t n, size_t max)
{
    if (n <= max) {
        return n;
    }
    while (max > 0 && ((unsigned char)s[max] & 0xc0) == 0x80) {
        max--;
    }
    return max;
}

int o2l_otlp_builder_reject(struct o2l_otlp_builder *b, size_t ordinal,
                            const char *name, size_t name_len,
                            const char *reason)
{
    char *clean = NULL;
    char *msg = NULL;
    size_t cut;
    size_t msg_len;
    int rc = O2L_OK;

    b->ex->rejected++;
    if (b->ex->error_message) {
        goto out;
    }

    clean = o2l_otlp_utf8_dup(name ? name : "", name ? name_len : 0);
    if (!clean) {
        rc = O2L_ENOMEM;
        goto out;
    }
    cut = utf8_prefix(clean, strlen(clean), REJECT_NAME_MAX);
    msg_len = cut + strlen(reason) + 64;
    msg = o2l_malloc(msg_len);
    if (!msg) {
        rc = O2L_ENOMEM;
        goto out;
    }
    snprintf(msg, msg_len, "span %zu (name \"%.*s%s\"): %s", ordinal, (int)cut,
             clean, cut < strlen(clean) ? "..." : "", reason);
    b->ex->error_message = msg;
    msg = NULL;

out:
    o2l_free(clean);
    o2l_free(msg);
    return rc;
}

static enum o2l_otlp_id check_one(int binary, const void *raw, size_t len,
                                  size_t want, char *hex)
{
    if (binary) {
        return o2l_otlp_id_from_bytes(raw, len, want, hex);
    }
    return o2l_otlp_id_from_text(raw, len, want, hex);
}

int o2l_otlp_builder_check_ids(struct o2l_otlp_builder *b, int binary,
                               const void *trace, size_t trace_len,
                               const void *span, size_t span_len,
                               const void *parent, size_t parent_len,
                               const char *name, size_t name_len,
                               char *trace_hex, char *span_hex,
                               char *parent_hex)
{
    size_t ordinal = b->seen++;
    const char *reason = NULL;
    enum o2l_otlp_id r;
    int rc;

    r = check_one(binary, trace, trace_len, O2L_OTLP_TRACE_ID_BYTES, trace_hex);
    if (r == O2L_OTLP_ID_ZERO) {
        reason = "all-zero trace id";
    } else if (r != O2L_OTLP_ID_OK) {
        reason = "invalid trace id";
    }
    if (!reason) {
        r = check_one(binary, span, span_len, O2L_OTLP_SPAN_ID_BYTES, span_hex);
        if (r == O2L_OTLP_ID_ZERO) {
            reason = "all-zero span id";
        } else if (r != O2L_OTLP_ID_OK) {
            reason = "invalid span id";
        }
    }
    if (!reason) {
        /* Absent, empty or all zeros: a root span. */
        r = check_one(binary, parent, parent_len, O2L_OTLP_SPAN_ID_BYTES,
                      parent_hex);
        if (r == O2L_OTLP_ID_BAD) {
            reason = "invalid parent span id";
        } else if (r != O2L_OTLP_ID_OK) {
            parent_hex[0] = '\0';
        }
    }
    if (!reason) {
        return 0;
    }
    rc = o2l_otlp_builder_reject(b, ordinal, name, name_len, reason);
    return rc != O2L_OK ? rc : 1;
}

struct span_key {
    const struct o2l_span *span;
    size_t pos;
};

static int span_key_cmp(const void *a, const void *b)
{
    const struct span_key *x = a;
    const struct span_key *y = b;
    int c =
        memcmp(x->span->trace_id, y->span->trace_id, sizeof(x->span->trace_id));

    if (c == 0) {
        c = memcmp(x->span->span_id, y->span->span_id,
                   sizeof(x->span->span_id));
    }
    if (c != 0) {
        return c;
    }
    return x->pos < y->pos ? -1 : (x->pos > y->pos ? 1 : 0);
}

/*
 * Sorting (trace id, span id, position) puts each duplicate run together
 * with its last arrival at the end; earlier ones are cleared and the
 * survivors are compacted in their original order.
 */
static int collapse_duplicates(struct o2l_export *ex)
{
    struct span_key *keys;
    unsigned char *drop;
    size_t n = ex->n_spans;
    size_t kept = 0;

    if (n < 2) {
        return O2L_OK;
    }
    keys = o2l_malloc(n * (sizeof(*keys) + 1));
    if (!keys) {
        return O2L_ENOMEM;
    }
    drop = (unsigned char *)(keys + n);
    for (size_t i = 0; i < n; i++) {
        keys[i].span = &ex->spans[i];
        keys[i].pos = i;
        drop[i] = 0;
    }
    qsort(keys, n, sizeof(*keys), span_key_cmp);
    for (size_t i = 0; i + 1 < n; i++) {
        if (memcmp(keys[i].span->trace_id, keys[i + 1].span->trace_id,
                   sizeof(keys[i].span->trace_id)) == 0 &&
            memcmp(keys[i].span->span_id, keys[i + 1].span->span_id,
                   sizeof(keys[i].span->span_id)) == 0) {
            drop[keys[i].pos] = 1;
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (drop[i]) {
            o2l_span_clear(&ex->spans[i]);
            continue;
        }
        if (kept != i) {
            ex->spans[kept] = ex->spans[i];
        }
        kept++;
    }
    ex->n_spans = kept;
    o2l_free(keys);
    return O2L_OK;
}

int o2l_otlp_builder_finish(struct o2l_otlp_builder *b, struct o2l_export **out)
{
    int rc;

    rc = collapse_duplicates(b->ex);
    if (rc != O2L_OK) {
        return rc;
    }
    *out = b->ex;
    b->ex = NULL;
    return O2L_OK;
}

void o2l_otlp_builder_abort(struct o2l_otlp_builder *b)
{
    o2l_export_free(b->ex);
    b->ex = NULL;
}

int o2l_otlp_decode(const void *buf, size_t len, enum o2l_otlp_format fmt,
                    uint64_t now_ns, struct o2l_export **out, char *err,
                    size_t err_len)
{
    *out = NULL;
    if (err && err_len > 0) {
        err[0] = '\0';
    }
    if (!buf && len > 0) {
        return O2L_EINVAL;
    }
    if (fmt == O2L_OTLP_JSON) {
        return o2l_otlp_decode_json(buf, len, now_ns, out, err, err_len);
    }
    return o2l_otlp_decode_pb(buf, len, now_ns, out, err, err_len);
}

enum o2l_otlp_format o2l_otlp_sniff(const void *buf, size_t len)
{
    const unsigned char *p = buf;
    size_t i = 0;

    if (len >= 3 && p[0] == 0xef && p[1] == 0xbb && p[2] == 0xbf) {
        i = 3; /* a UTF-8 byte order mark */
    }
    while (i < len &&
           (p[i] == ' ' || p[i] == '\t' || p[i] == '\r' || p[i] == '\n')) {
        i++;
    }
    return i < len && p[i] == '{' ? O2L_OTLP_JSON : O2L_OTLP_PROTOBUF;
}
