/* SPDX-License-Identifier: Apache-2.0 */
/* otlp_json.c - decodes an OTLP/JSON ExportTraceServiceRequest. */
#include "o2l/otlp_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "o2l/common.h"

/*
 * Integers with this many digits or more may not survive a double (2^53
 * has 16 digits), so the preparation pass below turns them into strings
 * before cJSON sees them; every integer field accepts a decimal string.
 */
#define EXACT_DIGITS_MAX 15

/* A growable output buffer for the preparation pass. */
struct text {
    char *p;
    size_t len;
    size_t cap;
};

static int text_put(struct text *t, const char *s, size_t n)
{
    if (!t) {
        return O2L_OK; /* scanning only */
    }
    if (t->cap - t->len < n + 1) {
        size_t cap = t->cap * 2;
        char *grown;

        if (cap < t->len + n + 1) {
            cap = t->len + n + 1;
        }
        grown = o2l_realloc(t->p, cap);
        if (!grown) {
            return O2L_ENOMEM;
        }
        t->p = grown;
        t->cap = cap;
    }
    memcpy(t->p + t->len, s, n);
    t->len += n;
    t->p[t->len] = '\0';
    return O2L_OK;
}

static int hex4(const char *s, unsigned *out)
{
    unsigned v = 0;

    for (int i = 0; i < 4; i++) {
        char c = s[i];

        v <<= 4;
        if (c >= '0' && c <= '9') {
            v |= (unsigned)(c - '0');
        } else if (c >= 'a' && c <= 'f') {
            v |= (unsigned)(c - 'a' + 10);
        } else if (c >= 'A' && c <= 'F') {
            v |= (unsigned)(c - 'A' + 10);
        } else {
            return 0;
        }
    }
    *out = v;
    return 1;
}

/*
 * Length of the escape at s[0] == '\\' to copy unchanged, or 0 when it
 * must become \ufffd: an escaped NUL (C strings end there) or a lone
 * UTF-16 surrogate (cJSON rejects the whole document for one). In that
 * case *skip is the number of input bytes replaced.
 */
static size_t escape_len(const char *s, size_t n, size_t *skip)
{
    unsigned hi;
    unsigned lo;

    if (n < 2) {
        return n;
    }
    if (s[1] != 'u' || n < 6 || !hex4(s + 2, &hi)) {
        return 2; /* anything malformed is left for cJSON to refuse */
    }
    *skip = 6;
    if (hi == 0 || (hi >= 0xdc00 && hi <= 0xdfff)) {
        return 0;
    }
    if (hi < 0xd800 || hi > 0xdbff) {
        return 6;
    }
    if (n >= 12 && s[6] == '\\' && s[7] == 'u' && hex4(s + 8, &lo) &&
        lo >= 0xdc00 && lo <= 0xdfff) {
        return 12;
    }
    return 0;
}

/* Length of the number token at |s| and whether it is a long integer. */
static size_t number_len(const char *s, size_t n, int *long_int)
{
    size_t i = 0;
    size_t digits = 0;
    int integral = 1;

    if (s[0] == '-') {
        i++;
    }
    for (; i < n; i++) {
        char c = s[i];

        if (c >= '0' && c <= '9') {
            digits++;
        } else if (c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-') {
            integral = 0;
        } else {
            break;
        }
    }
    *long_int = integral && digits > EXACT_DIGITS_MAX;
    return i;
}

/* Bytes the preparation pass stops at, inside strings and outside. */
#define STOP_IN_STRING 1
#define STOP_OUTSIDE   2
#define STOP_BOTH      3

static const unsigned char stop[256] = {
    [0] = STOP_BOTH,      ['"'] = STOP_BOTH,    ['\\'] = STOP_BOTH,
    ['-'] = STOP_OUTSIDE, ['0'] = STOP_OUTSIDE, ['1'] = STOP_OUTSIDE,
    ['2'] = STOP_OUTSIDE, ['3'] = STOP_OUTSIDE, ['4'] = STOP_OUTSIDE,
    ['5'] = STOP_OUTSIDE, ['6'] = STOP_OUTSIDE, ['7'] = STOP_OUTSIDE,
    ['8'] = STOP_OUTSIDE, ['9'] = STOP_OUTSIDE};

/* Nonzero when one of the 8 bytes of |w| is zero. */
#define WORD_HAS_ZERO(w)                                                       \
    (((w)-0x0101010101010101ULL) & ~(w)&0x8080808080808080ULL)

/* Skips whole words inside a string that hold no '"', '\\' or NUL. */
static size_t skip_plain_string(const char *in, size_t len, size_t i)
{
    uint64_t w;

    while (len - i >= 8) {
        memcpy(&w, in + i, 8);
        if (WORD_HAS_ZERO(w) | WORD_HAS_ZERO(w ^ 0x2222222222222222ULL) |
            WORD_HAS_ZERO(w ^ 0x5c5c5c5c5c5c5c5cULL)) {
            break;
        }
        i += 8;
    }
    return i;
}

/*
 * One pass over the raw text that fixes what cJSON would get wrong: long
 * integers are quoted (cJSON keeps only a double), \u0000 and lone
 * surrogates become \ufffd, raw NUL bytes inside strings become U+FFFD.
 * With |out| NULL it only looks and returns 1 when a rewrite is needed.
 * Returns O2L_EPARSE for a NUL byte outside strings, O2L_ENOMEM.
 */
static int prepare(const char *in, size_t len, struct text *out)
{
    static const char fffd_escape[] = "\\ufffd";
    static const char fffd_utf8[] = "\xef\xbf\xbd";
    size_t i = 0;
    int in_string = 0;
    unsigned char mask = STOP_OUTSIDE;
    int rc = O2L_OK;

    while (i < len && rc == O2L_OK) {
        size_t run = i;
        size_t k;
        size_t skip = 0;
        int long_int = 0;

        /*
         * Copy the plain stretch up to the next byte of interest. Long
         * strings (prompts, completions) are skipped 8 bytes at a time.
         */
        if (in_string) {
            run = skip_plain_string(in, len, run);
        }
        while (run < len && !(stop[(unsigned char)in[run]] & mask)) {
            run++;
        }
        rc = text_put(out, in + i, run - i);
        i = run;
        if (rc != O2L_OK || i >= len) {
            break;
        }

        switch (in[i]) {
        case '"':
            in_string = !in_string;
            mask = in_string ? STOP_IN_STRING : STOP_OUTSIDE;
            rc = text_put(out, in + i, 1);
            i++;
            break;
        case '\0':
            if (!in_string) {
                return O2L_EPARSE;
            }
            if (!out) {
                return 1;
            }
            rc = text_put(out, fffd_utf8, 3);
            i++;
            break;
        case '\\':
            k = escape_len(in + i, len - i, &skip);
            if (k > 0) {
                rc = text_put(out, in + i, k);
                i += k;
                break;
            }
            if (!out) {
                return 1;
            }
            rc = text_put(out, fffd_escape, 6);
            i += skip;
            break;
        default:
            k = number_len(in + i, len - i, &long_int);
            if (long_int && !out) {
                return 1;
            }
            if (long_int) {
                rc = text_put(out, "\"", 1);
            }
            if (rc == O2L_OK) {
                rc = text_put(out, in + i, k);
            }
            if (rc == O2L_OK && long_int) {
                rc = text_put(out, "\"", 1);
            }
            i += k;
            break;
        }
    }
    return rc;
}

/* The member named |camel| or |snake|; a JSON null counts as absent. */
static cJSON *member(const cJSON *obj, const char *camel, const char *snake)
{
    for (cJSON *it = obj ? obj->child : NULL; it; it = it->next) {
        if (it->string && (strcmp(it->string, camel) == 0 ||
                           strcmp(it->string, snake) == 0)) {
            return cJSON_IsNull(it) ? NULL : it;
        }
    }
    return NULL;
}

/* A structural member: absent is fine, any other type than |type| is not. */
static int member_typed(const cJSON *obj, const char *camel, const char *snake,
                        int type, cJSON **out)
{
    *out = member(obj, camel, snake);
    if (*out && ((*out)->type & 0xff) != type) {
        *out = NULL;
        return O2L_EPARSE;
    }
    return O2L_OK;
}

/* A string member's text and length, or NULL/0 for any other type. */
static const char *member_text(const cJSON *obj, const char *camel,
                               const char *snake, size_t *len)
{
    cJSON *v = member(obj, camel, snake);

    if (!cJSON_IsString(v)) {
        *len = 0;
        return NULL;
    }
    *len = strlen(v->valuestring);
    return v->valuestring;
}

/*
 * Moves the text of a string node into a new value, without a copy when
 * it is already clean UTF-8. Returns NULL when out of memory.
 */
static char *take_text(cJSON *node)
{
    char *s = node->valuestring;
    size_t n = strlen(s);

    if (o2l_otlp_utf8_is_clean(s, n)) {
        node->valuestring = NULL;
        return s;
    }
    return o2l_otlp_utf8_dup(s, n);
}

/* A string member as a clean new string, "" when absent. */
static char *member_string(const cJSON *obj, const char *camel,
                           const char *snake)
{
    cJSON *v = member(obj, camel, snake);

    if (!cJSON_IsString(v)) {
        return o2l_strdup("");
    }
    return take_text(v);
}

/*
 * Reads an unsigned 64-bit integer: a decimal string exactly, or a number.
 * Numbers reach here only with up to 15 digits (see prepare) or in
 * exponent form, which goes through a double and may lose nanoseconds.
 */
static int read_u64(const cJSON *v, uint64_t *out)
{
    double d;

    if (cJSON_IsString(v)) {
        return o2l_otlp_parse_u64(v->valuestring, strlen(v->valuestring), out);
    }
    if (!cJSON_IsNumber(v)) {
        return 0;
    }
    d = v->valuedouble;
    if (!(d >= 0 && d < 18446744073709551616.0) || d != floor(d)) {
        return 0;
    }
    *out = (uint64_t)d;
    return 1;
}

static int read_i64(const cJSON *v, int64_t *out)
{
    double d;

    if (cJSON_IsString(v)) {
        return o2l_otlp_parse_i64(v->valuestring, strlen(v->valuestring), out);
    }
    if (!cJSON_IsNumber(v)) {
        return 0;
    }
    d = v->valuedouble;
    if (!(d >= -9223372036854775808.0 && d < 9223372036854775808.0) ||
        d != floor(d)) {
        return 0;
    }
    *out = (int64_t)d;
    return 1;
}

/* A time member; anything unreadable counts as unset (0). */
static uint64_t member_time(const cJSON *obj, const char *camel,
                            const char *snake)
{
    uint64_t t = 0;

    if (!read_u64(member(obj, camel, snake), &t)) {
        return 0;
    }
    return t;
}

/* An enum member given as a number, a decimal string or one of |names|. */
static int member_enum(const cJSON *obj, const char *camel, const char *snake,
                       const char *const *names, int n_names)
{
    cJSON *v = member(obj, camel, snake);
    int64_t i;

    if (cJSON_IsString(v)) {
        for (int k = 0; k < n_names; k++) {
            if (strcmp(v->valuestring, names[k]) == 0) {
                return k;
            }
        }
    }
    if (read_i64(v, &i) && i >= 0 && i <= 0x7fffffff) {
        return (int)i;
    }
    return 0;
}

static int any_to_json(cJSON *v, cJSON **out);

/* Fills |obj| from an OTLP/JSON key/value array; repeated keys: last. */
static int kvs_to_json(const cJSON *arr, cJSON *obj)
{
    int rc;

    for (cJSON *kv = arr ? arr->child : NULL; kv; kv = kv->next) {
        cJSON *key;
        cJSON *val = NULL;

        if (!cJSON_IsObject(kv)) {
            return O2L_EPARSE;
        }
        key = member(kv, "key", "key");
        if (!cJSON_IsString(key)) {
            continue;
        }
        rc = any_to_json(member(kv, "value", "value"), &val);
        if (rc != O2L_OK) {
            return rc;
        }
        if (!val) {
            continue;
        }
        rc = o2l_otlp_attrs_add(obj, take_text(key), val);
        if (rc != O2L_OK) {
            return rc;
        }
    }
    return o2l_otlp_attrs_finish(obj);
}

/* A new attribute object from the member |camel|/|snake| of |parent|. */
static int attrs_member(const cJSON *parent, const char *camel,
                        const char *snake, cJSON **out)
{
    cJSON *arr = NULL;
    int rc;

    *out = NULL;
    rc = member_typed(parent, camel, snake, cJSON_Array, &arr);
    if (rc != O2L_OK) {
        return rc;
    }
    *out = cJSON_CreateObject();
    if (!*out) {
        return O2L_ENOMEM;
    }
    rc = kvs_to_json(arr, *out);
    if (rc != O2L_OK) {
        cJSON_Delete(*out);
        *out = NULL;
    }
    return rc;
}

/* A number, "NaN", "Infinity", "-Infinity" or a numeric string. */
static int double_value(const cJSON *v, cJSON **out)
{
    char *end = NULL;
    double d;

    if (cJSON_IsNumber(v)) {
        d = v->valuedouble;
    } else if (!cJSON_IsString(v) || !v->valuestring[0]) {
        return O2L_OK;
    } else if (strcmp(v->valuestring, "NaN") == 0) {
        d = NAN;
    } else if (strcmp(v->valuestring, "Infinity") == 0) {
        d = INFINITY;
    } else if (strcmp(v->valuestring, "-Infinity") == 0) {
        d = -INFINITY;
    } else {
        d = strtod(v->valuestring, &end);
        if (!end || *end != '\0') {
            return O2L_OK; /* unreadable: treated as absent */
        }
    }
    *out = o2l_otlp_json_double(d);
    return *out ? O2L_OK : O2L_ENOMEM;
}

/* Base64 in either alphabet, re-encoded as standard padded base64. */
static int bytes_value(const cJSON *v, cJSON **out)
{
    size_t n;
    size_t raw_len = 0;
    uint8_t *raw;
    int rc = O2L_OK;

    if (!cJSON_IsString(v)) {
        return O2L_OK;
    }
    n = strlen(v->valuestring);
    raw = o2l_malloc(n / 4 * 3 + 3);
    if (!raw) {
        return O2L_ENOMEM;
    }
    if (o2l_otlp_base64_decode(v->valuestring, n, raw, n / 4 * 3 + 3,
                               &raw_len)) {
        *out = o2l_otlp_json_take_string(o2l_otlp_base64_encode(raw, raw_len));
        rc = *out ? O2L_OK : O2L_ENOMEM;
    }
    o2l_free(raw);
    return rc;
}

static int array_value(const cJSON *v, cJSON **out)
{
    cJSON *values = member(v, "values", "values");
    cJSON *arr;
    int rc = O2L_OK;

    if (values && !cJSON_IsArray(values)) {
        return O2L_OK;
    }
    arr = cJSON_CreateArray();
    if (!arr) {
        return O2L_ENOMEM;
    }
    for (cJSON *it = values ? values->child : NULL; it; it = it->next) {
        cJSON *el = NULL;

        rc = any_to_json(it, &el);
        if (rc != O2L_OK) {
            break;
        }
        /* An empty element keeps its place as null. */
        if (!el) {
            el = cJSON_CreateNull();
        }
        if (!el || !cJSON_AddItemToArray(arr, el)) {
            cJSON_Delete(el);
            rc = O2L_ENOMEM;
            break;
        }
    }
    if (rc != O2L_OK) {
        cJSON_Delete(arr);
        return rc;
    }
    *out = arr;
    return O2L_OK;
}

static int kvlist_value(const cJSON *v, cJSON **out)
{
    cJSON *values = member(v, "values", "values");
    cJSON *obj;
    int rc;

    if (values && !cJSON_IsArray(values)) {
        return O2L_OK;
    }
    obj = cJSON_CreateObject();
    if (!obj) {
        return O2L_ENOMEM;
    }
    rc = kvs_to_json(values, obj);
    if (rc != O2L_OK) {
        cJSON_Delete(obj);
        return rc;
    }
    *out = obj;
    return O2L_OK;
}

/*
 * Reuses the parsed member |f| of |v| as a decoded value, which saves an
 * allocation per attribute: it is detached and loses its member name.
 */
static cJSON *adopt(cJSON *v, cJSON *f)
{
    cJSON_DetachItemViaPointer(v, f);
    if (!(f->type & cJSON_StringIsConst)) {
        cJSON_free(f->string);
    }
    f->string = NULL;
    f->type &= ~cJSON_StringIsConst;
    return f;
}

/* A stringValue member, cleaned in place when it is not valid UTF-8. */
static int string_value(cJSON *v, cJSON *f, cJSON **out)
{
    char *clean;

    if (!cJSON_IsString(f)) {
        return O2L_OK;
    }
    if (!o2l_otlp_utf8_is_clean(f->valuestring, strlen(f->valuestring))) {
        clean = o2l_otlp_utf8_dup(f->valuestring, strlen(f->valuestring));
        if (!clean) {
            return O2L_ENOMEM;
        }
        cJSON_free(f->valuestring);
        f->valuestring = clean;
    }
    *out = adopt(v, f);
    return O2L_OK;
}

/* An intValue member: small numbers are reused, the rest rebuilt. */
static int int_value(cJSON *v, cJSON *f, cJSON **out)
{
    int64_t i;

    if (!read_i64(f, &i)) {
        return O2L_OK;
    }
    if (cJSON_IsNumber(f) && i >= -999999999999999LL &&
        i <= 999999999999999LL) {
        cJSON_SetNumberValue(f, (double)i);
        *out = adopt(v, f);
        return O2L_OK;
    }
    *out = o2l_otlp_json_int(i);
    return *out ? O2L_OK : O2L_ENOMEM;
}

/*
 * Decodes an OTLP/JSON AnyValue, taking parsed nodes out of |v| where it
 * can. *out stays NULL for an empty value or one of the wrong type, which
 * the caller treats as absent. Recursion is bounded by cJSON's nesting
 * limit.
 */
static int any_to_json(cJSON *v, cJSON **out)
{
    *out = NULL;
    if (!cJSON_IsObject(v)) {
        return O2L_OK;
    }
    for (cJSON *f = v->child; f; f = f->next) {
        const char *k = f->string ? f->string : "";

        if (cJSON_IsNull(f)) {
            continue;
        }
        if (strcmp(k, "stringValue") == 0 || strcmp(k, "string_value") == 0) {
            return string_value(v, f, out);
        }
        if (strcmp(k, "boolValue") == 0 || strcmp(k, "bool_value") == 0) {
            if (cJSON_IsBool(f)) {
                *out = adopt(v, f);
            }
            return O2L_OK;
        }
        if (strcmp(k, "intValue") == 0 || strcmp(k, "int_value") == 0) {
            return int_value(v, f, out);
        }
        if (strcmp(k, "doubleValue") == 0 || strcmp(k, "double_value") == 0) {
            if (cJSON_IsNumber(f) && isfinite(f->valuedouble)) {
                *out = adopt(v, f);
                return O2L_OK;
            }
            return double_value(f, out);
        }
        if (strcmp(k, "arrayValue") == 0 || strcmp(k, "array_value") == 0) {
            return cJSON_IsObject(f) ? array_value(f, out) : O2L_OK;
        }
        if (strcmp(k, "kvlistValue") == 0 || strcmp(k, "kvlist_value") == 0) {
            return cJSON_IsObject(f) ? kvlist_value(f, out) : O2L_OK;
        }
        if (strcmp(k, "bytesValue") == 0 || strcmp(k, "bytes_value") == 0) {
            return bytes_value(f, out);
        }
    }
    return O2L_OK;
}

static const char *const span_kinds[] = {
    "SPAN_KIND_UNSPECIFIED", "SPAN_KIND_INTERNAL", "SPAN_KIND_SERVER",
    "SPAN_KIND_CLIENT",      "SPAN_KIND_PRODUCER", "SPAN_KIND_CONSUMER"};

static const char *const status_codes[] = {
    "STATUS_CODE_UNSET", "STATUS_CODE_OK", "STATUS_CODE_ERROR"};

static int decode_events(const cJSON *span, struct o2l_span *s)
{
    cJSON *events = NULL;
    int n = 0;
    int rc;

    rc = member_typed(span, "events", "events", cJSON_Array, &events);
    if (rc != O2L_OK) {
        return rc;
    }
    n = cJSON_GetArraySize(events);
    if (n <= 0) {
        return O2L_OK;
    }
    s->events = o2l_calloc((size_t)n, sizeof(*s->events));
    if (!s->events) {
        return O2L_ENOMEM;
    }
    for (cJSON *e = events->child; e; e = e->next) {
        struct o2l_span_event *ev = &s->events[s->n_events];

        if (!cJSON_IsObject(e)) {
            return O2L_EPARSE;
        }
        s->n_events++;
        ev->time_ns = member_time(e, "timeUnixNano", "time_unix_nano");
        ev->name = member_string(e, "name", "name");
        if (!ev->name) {
            return O2L_ENOMEM;
        }
        rc = attrs_member(e, "attributes", "attributes", &ev->attrs);
        if (rc != O2L_OK) {
            return rc;
        }
    }
    return O2L_OK;
}

static int decode_status(const cJSON *span, struct o2l_span *s)
{
    cJSON *status = NULL;
    cJSON *msg;
    int code;
    int rc;

    rc = member_typed(span, "status", "status", cJSON_Object, &status);
    if (rc != O2L_OK || !status) {
        return rc;
    }
    code = member_enum(status, "code", "code", status_codes,
                       (int)O2L_ARRAY_LEN(status_codes));
    if (code == O2L_STATUS_OK || code == O2L_STATUS_ERROR) {
        s->status_code = (enum o2l_status_code)code;
    }
    msg = member(status, "message", "message");
    if (cJSON_IsString(msg) && msg->valuestring[0]) {
        s->status_message = take_text(msg);
        if (!s->status_message) {
            return O2L_ENOMEM;
        }
    }
    return O2L_OK;
}

/* A fixed32 or uint32 member; anything unreadable or too large is 0. */
static uint32_t member_u32(const cJSON *obj, const char *camel,
                           const char *snake)
{
    uint64_t v = 0;

    if (!read_u64(member(obj, camel, snake), &v) || v > UINT32_MAX) {
        return 0;
    }
    return (uint32_t)v;
}

/* A tracestate member as a clean new string; NULL when absent or empty
 * (*rc O2L_ENOMEM when a copy failed). */
static char *member_trace_state(const cJSON *obj, int *rc)
{
    cJSON *v = member(obj, "traceState", "trace_state");
    char *out;

    if (!cJSON_IsString(v) || !v->valuestring[0]) {
        return NULL;
    }
    out = take_text(v);
    if (!out) {
        *rc = O2L_ENOMEM;
    }
    return out;
}

/* Links whose ids are not both valid are left out (span.h). */
static int decode_links(const cJSON *in, struct o2l_span *s)
{
    cJSON *links = NULL;
    int n;
    int rc;

    rc = member_typed(in, "links", "links", cJSON_Array, &links);
    if (rc != O2L_OK) {
        return rc;
    }
    n = cJSON_GetArraySize(links);
    if (n <= 0) {
        return O2L_OK;
    }
    s->links = o2l_calloc((size_t)n, sizeof(*s->links));
    if (!s->links) {
        return O2L_ENOMEM;
    }
    for (cJSON *l = links->child; l; l = l->next) {
        struct o2l_span_link *out = &s->links[s->n_links];
        const char *trace;
        const char *span;
        size_t trace_len;
        size_t span_len;

        if (!cJSON_IsObject(l)) {
            return O2L_EPARSE;
        }
        trace = member_text(l, "traceId", "trace_id", &trace_len);
        span = member_text(l, "spanId", "span_id", &span_len);
        if (o2l_otlp_id_from_text(trace, trace_len, O2L_OTLP_TRACE_ID_BYTES,
                                  out->trace_id) != O2L_OTLP_ID_OK ||
            o2l_otlp_id_from_text(span, span_len, O2L_OTLP_SPAN_ID_BYTES,
                                  out->span_id) != O2L_OTLP_ID_OK) {
            memset(out, 0, sizeof(*out));
            continue;
        }
        s->n_links++;
        out->dropped_attributes_count =
            member_u32(l, "droppedAttributesCount", "dropped_attributes_count");
        out->flags = member_u32(l, "flags", "flags");
        out->trace_state = member_trace_state(l, &rc);
        if (rc == O2L_OK) {
            rc = attrs_member(l, "attributes", "attributes", &out->attrs);
        }
        if (rc != O2L_OK) {
            return rc;
        }
    }
    return O2L_OK;
}

/* Schema URLs and the dropped counts of the span are not kept. */
static int decode_span(struct o2l_otlp_builder *b, const cJSON *in,
                       size_t scope)
{
    char trace_hex[33];
    char span_hex[17];
    char parent_hex[17];
    const char *trace;
    const char *span;
    const char *parent;
    const char *name;
    size_t trace_len;
    size_t span_len;
    size_t parent_len;
    size_t name_len;
    struct o2l_span *s;
    int rc;

    if (!cJSON_IsObject(in)) {
        return O2L_EPARSE;
    }
    trace = member_text(in, "traceId", "trace_id", &trace_len);
    span = member_text(in, "spanId", "span_id", &span_len);
    parent = member_text(in, "parentSpanId", "parent_span_id", &parent_len);
    name = member_text(in, "name", "name", &name_len);
    rc = o2l_otlp_builder_check_ids(b, 0, trace, trace_len, span, span_len,
                                    parent, parent_len, name, name_len,
                                    trace_hex, span_hex, parent_hex);
    if (rc != 0) {
        return rc > 0 ? O2L_OK : rc;
    }

    s = o2l_otlp_builder_new_span(b);
    if (!s) {
        return O2L_ENOMEM;
    }
    memcpy(s->trace_id, trace_hex, sizeof(s->trace_id));
    memcpy(s->span_id, span_hex, sizeof(s->span_id));
    memcpy(s->parent_id, parent_hex, sizeof(s->parent_id));
    s->scope = scope;
    s->kind = member_enum(in, "kind", "kind", span_kinds,
                          (int)O2L_ARRAY_LEN(span_kinds));
    s->start_ns = member_time(in, "startTimeUnixNano", "start_time_unix_nano");
    s->end_ns = member_time(in, "endTimeUnixNano", "end_time_unix_nano");
    s->flags = member_u32(in, "flags", "flags");
    s->name = member_string(in, "name", "name");
    if (!s->name) {
        return O2L_ENOMEM;
    }
    rc = decode_status(in, s);
    if (rc == O2L_OK) {
        rc = attrs_member(in, "attributes", "attributes", &s->attrs);
    }
    if (rc == O2L_OK) {
        rc = decode_events(in, s);
    }
    if (rc == O2L_OK) {
        s->trace_state = member_trace_state(in, &rc);
    }
    if (rc == O2L_OK) {
        rc = decode_links(in, s);
    }
    if (rc != O2L_OK) {
        return rc;
    }
    return o2l_otlp_builder_end_span(b);
}

/* One scopeSpans (or the older instrumentationLibrarySpans) entry. */
static int decode_scope_spans(struct o2l_otlp_builder *b, const cJSON *ss,
                              int legacy, const cJSON *res_attrs)
{
    cJSON *scope = NULL;
    cJSON *spans = NULL;
    cJSON *attrs = NULL;
    cJSON *res = NULL;
    char *name = NULL;
    char *version = NULL;
    size_t index;
    int rc;

    if (!cJSON_IsObject(ss)) {
        return O2L_EPARSE;
    }
    rc = member_typed(ss, "spans", "spans", cJSON_Array, &spans);
    if (rc != O2L_OK || cJSON_GetArraySize(spans) == 0) {
        return rc;
    }
    rc = legacy ? member_typed(ss, "instrumentationLibrary",
                               "instrumentation_library", cJSON_Object, &scope)
                : member_typed(ss, "scope", "scope", cJSON_Object, &scope);
    if (rc != O2L_OK) {
        return rc;
    }

    /* Each scope owns a copy of its resource's attributes. */
    res = cJSON_Duplicate(res_attrs, 1);
    name = member_string(scope, "name", "name");
    version = member_string(scope, "version", "version");
    rc = attrs_member(scope, "attributes", "attributes", &attrs);
    if (rc == O2L_OK && (!res || !name || !version)) {
        rc = O2L_ENOMEM;
    }
    if (rc != O2L_OK) {
        cJSON_Delete(res);
        cJSON_Delete(attrs);
        o2l_free(name);
        o2l_free(version);
        return rc;
    }
    rc = o2l_otlp_builder_add_scope(b, res, name, version, attrs);
    if (rc != O2L_OK) {
        return rc;
    }
    index = b->ex->n_scopes - 1;

    for (cJSON *sp = spans->child; sp; sp = sp->next) {
        rc = decode_span(b, sp, index);
        if (rc != O2L_OK) {
            return rc;
        }
    }
    return O2L_OK;
}

static int decode_resource_spans(struct o2l_otlp_builder *b, const cJSON *rs)
{
    static const char *const lists[2][2] = {
        {"scopeSpans", "scope_spans"},
        {"instrumentationLibrarySpans", "instrumentation_library_spans"}};
    cJSON *resource = NULL;
    cJSON *res_attrs = NULL;
    int rc;

    if (!cJSON_IsObject(rs)) {
        return O2L_EPARSE;
    }
    rc = member_typed(rs, "resource", "resource", cJSON_Object, &resource);
    if (rc != O2L_OK) {
        return rc;
    }
    rc = attrs_member(resource, "attributes", "attributes", &res_attrs);
    for (int legacy = 0; legacy < 2 && rc == O2L_OK; legacy++) {
        cJSON *list = NULL;

        rc = member_typed(rs, lists[legacy][0], lists[legacy][1], cJSON_Array,
                          &list);
        for (cJSON *ss = list ? list->child : NULL; ss && rc == O2L_OK;
             ss = ss->next) {
            rc = decode_scope_spans(b, ss, legacy, res_attrs);
        }
    }
    cJSON_Delete(res_attrs);
    return rc;
}

static void set_err(char *err, size_t err_len, const char *msg)
{
    if (err && err_len > 0) {
        snprintf(err, err_len, "%s", msg);
    }
}

/* Parses |text| with cJSON; trailing bytes other than whitespace fail. */
static int parse(const char *text, size_t len, cJSON **root)
{
    const char *end = NULL;
    void *probe;

    *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!*root) {
        /*
         * cJSON reports a failed allocation like bad syntax; a small probe
         * tells the two apart well enough to answer "retry later" rather
         * than "bad request" when memory is short.
         */
        probe = o2l_malloc(64);
        if (!probe) {
            return O2L_ENOMEM;
        }
        o2l_free(probe);
        return O2L_EPARSE;
    }
    while (end && end < text + len &&
           (*end == ' ' || *end == '\t' || *end == '\r' || *end == '\n')) {
        end++;
    }
    if (!end || end != text + len) {
        cJSON_Delete(*root);
        *root = NULL;
        return O2L_EPARSE;
    }
    return O2L_OK;
}

int o2l_otlp_decode_json(const void *buf, size_t len, uint64_t now_ns,
                         struct o2l_export **out, char *err, size_t err_len)
{
    struct o2l_otlp_builder b;
    struct text fixed = {NULL, 0, 0};
    const char *text = buf;
    cJSON *root = NULL;
    cJSON *list = NULL;
    int rc;

    *out = NULL;
    rc = o2l_otlp_builder_init(&b, now_ns);
    if (rc != O2L_OK) {
        return rc;
    }
    if (len >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0) {
        text += 3; /* a UTF-8 byte order mark */
        len -= 3;
    }

    rc = prepare(text, len, NULL);
    if (rc == 1) {
        fixed.cap = len + len / 8 + 64;
        fixed.p = o2l_malloc(fixed.cap);
        if (!fixed.p) {
            rc = O2L_ENOMEM;
            goto out;
        }
        rc = prepare(text, len, &fixed);
        text = fixed.p;
        len = fixed.len;
    }
    if (rc == O2L_OK) {
        rc = parse(text, len, &root);
    }
    if (rc == O2L_EPARSE) {
        set_err(err, err_len, "invalid JSON");
    }
    if (rc != O2L_OK) {
        goto out;
    }
    if (!cJSON_IsObject(root)) {
        set_err(err, err_len, "JSON body is not an object");
        rc = O2L_EPARSE;
        goto out;
    }

    rc = member_typed(root, "resourceSpans", "resource_spans", cJSON_Array,
                      &list);
    for (cJSON *rs = list ? list->child : NULL; rs && rc == O2L_OK;
         rs = rs->next) {
        rc = decode_resource_spans(&b, rs);
    }
    if (rc == O2L_EPARSE) {
        set_err(err, err_len,
                "JSON is not an ExportTraceServiceRequest: a field has the "
                "wrong type");
    }
    if (rc == O2L_OK) {
        rc = o2l_otlp_builder_finish(&b, out);
    }

out:
    cJSON_Delete(root);
    o2l_free(fixed.p);
    o2l_otlp_builder_abort(&b);
    return rc;
}
