/* SPDX-License-Identifier: Apache-2.0 */
/* json_util.c - value, text and time helpers for the map stage. */
#include "o2l/map_util.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "o2l/common.h"
#include "o2l/span.h"

const cJSON *o2l_mu_get(const cJSON *obj, const char *key)
{
    if (!obj) {
        return NULL;
    }
    return cJSON_GetObjectItemCaseSensitive(obj, key);
}

bool o2l_mu_usable(const cJSON *v)
{
    if (!v || cJSON_IsNull(v) || cJSON_IsInvalid(v)) {
        return false;
    }
    if (cJSON_IsString(v)) {
        return v->valuestring && v->valuestring[0] != '\0';
    }
    if (cJSON_IsArray(v) || cJSON_IsObject(v)) {
        return v->child != NULL;
    }
    return true;
}

const char *o2l_mu_str(const cJSON *obj, const char *key)
{
    const cJSON *v = o2l_mu_get(obj, key);

    if (!cJSON_IsString(v) || !o2l_mu_usable(v)) {
        return NULL;
    }
    return v->valuestring;
}

static int lower(int c)
{
    return (c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c;
}

bool o2l_mu_ieq(const char *a, const char *b)
{
    while (*a && *b) {
        if (lower((unsigned char)*a) != lower((unsigned char)*b)) {
            return false;
        }
        a++;
        b++;
    }
    return *a == *b;
}

bool o2l_mu_starts(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* Parses the whole of |s| as JSON, or returns NULL. */
static cJSON *parse_whole(const char *s)
{
    return cJSON_ParseWithOpts(s, NULL, 1);
}

/*
 * A checker and compactor for JSON text (RFC 8259): copies |j->p| to
 * |j->out| without the whitespace between tokens, and fails on anything
 * that is not JSON. Strings are copied as they are, escapes included.
 */
struct jscan {
    const unsigned char *p;
    char *out;
    unsigned depth;
};

/* As deep as cJSON goes, so both paths accept the same documents. */
#define JSCAN_MAX_DEPTH 1000

static void jscan_ws(struct jscan *j)
{
    while (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r') {
        j->p++;
    }
}

static bool jscan_hex(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
           (c >= 'A' && c <= 'F');
}

static bool jscan_string(struct jscan *j)
{
    const unsigned char *start = j->p;

    j->p++;
    for (;;) {
        unsigned char c = *j->p;

        if (c == '"') {
            break;
        }
        if (c < 0x20) {
            return false; /* control characters, and the end of the text */
        }
        if (c == '\\') {
            c = j->p[1];
            if (c == 'u') {
                for (int i = 2; i < 6; i++) {
                    if (!jscan_hex(j->p[i])) {
                        return false;
                    }
                }
                j->p += 6;
                continue;
            }
            if (!c || !strchr("\"\\/bfnrt", c)) {
                return false;
            }
            j->p += 2;
            continue;
        }
        j->p++;
    }
    j->p++;
    memcpy(j->out, start, (size_t)(j->p - start));
    j->out += j->p - start;
    return true;
}

static bool jscan_digits(struct jscan *j)
{
    const unsigned char *start = j->p;

    while (*j->p >= '0' && *j->p <= '9') {
        j->p++;
    }
    return j->p > start;
}

static bool jscan_number(struct jscan *j)
{
    const unsigned char *start = j->p;

    if (*j->p == '-') {
        j->p++;
    }
    if (*j->p == '0') {
        j->p++;
    } else if (!jscan_digits(j)) {
        return false;
    }
    if (*j->p == '.') {
        j->p++;
        if (!jscan_digits(j)) {
            return false;
        }
    }
    if (*j->p == 'e' || *j->p == 'E') {
        j->p++;
        if (*j->p == '+' || *j->p == '-') {
            j->p++;
        }
        if (!jscan_digits(j)) {
            return false;
        }
    }
    memcpy(j->out, start, (size_t)(j->p - start));
    j->out += j->p - start;
    return true;
}

static bool jscan_literal(struct jscan *j, const char *word)
{
    size_t n = strlen(word);

    if (strncmp((const char *)j->p, word, n) != 0) {
        return false;
    }
    memcpy(j->out, word, n);
    j->out += n;
    j->p += n;
    return true;
}

static bool jscan_value(struct jscan *j);

/* An object or an array; |close| is '}' or ']'. */
static bool jscan_container(struct jscan *j, char close)
{
    bool ok = true;

    if (++j->depth > JSCAN_MAX_DEPTH) {
        return false;
    }
    *j->out++ = (char)*j->p++;
    jscan_ws(j);
    if (*j->p == (unsigned char)close) {
        *j->out++ = (char)*j->p++;
        j->depth--;
        return true;
    }
    for (;;) {
        if (close == '}') {
            if (*j->p != '"' || !jscan_string(j)) {
                return false;
            }
            jscan_ws(j);
            if (*j->p != ':') {
                return false;
            }
            *j->out++ = (char)*j->p++;
            jscan_ws(j);
        }
        if (!jscan_value(j)) {
            return false;
        }
        jscan_ws(j);
        if (*j->p == ',') {
            *j->out++ = (char)*j->p++;
            jscan_ws(j);
            continue;
        }
        ok = *j->p == (unsigned char)close;
        break;
    }
    if (ok) {
        *j->out++ = (char)*j->p++;
        j->depth--;
    }
    return ok;
}

static bool jscan_value(struct jscan *j)
{
    switch (*j->p) {
    case '{':
        return jscan_container(j, '}');
    case '[':
        return jscan_container(j, ']');
    case '"':
        return jscan_string(j);
    case 't':
        return jscan_literal(j, "true");
    case 'f':
        return jscan_literal(j, "false");
    case 'n':
        return jscan_literal(j, "null");
    default:
        return jscan_number(j);
    }
}

int o2l_mu_passthrough(const cJSON *v, bool unquote, cJSON **out)
{
    const char *s;
    struct jscan j;
    char *text;
    cJSON *raw;

    *out = NULL;
    if (!cJSON_IsString(v) || !o2l_mu_usable(v)) {
        return o2l_mu_value(v, unquote, out);
    }
    s = v->valuestring;
    while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r') {
        s++;
    }
    if (*s != '{' && *s != '[') {
        return o2l_mu_value(v, unquote, out);
    }
    text = o2l_malloc(strlen(s) + 1);
    if (!text) {
        return O2L_ENOMEM;
    }
    j.p = (const unsigned char *)s;
    j.out = text;
    j.depth = 0;
    if (!jscan_value(&j) || (jscan_ws(&j), *j.p != '\0')) {
        /* Not JSON (or cut short by its producer): kept as text. */
        o2l_free(text);
        *out = cJSON_Duplicate(v, 1);
        return *out ? O2L_OK : O2L_ENOMEM;
    }
    *j.out = '\0';
    if (strcmp(text, "{}") == 0 || strcmp(text, "[]") == 0) {
        o2l_free(text); /* empty: not usable */
        return O2L_OK;
    }
    raw = cJSON_CreateRaw("");
    if (!raw) {
        o2l_free(text);
        return O2L_ENOMEM;
    }
    /* cJSON frees valuestring with the same allocator as o2l_free. */
    o2l_free(raw->valuestring);
    raw->valuestring = text;
    *out = raw;
    return O2L_OK;
}

int o2l_mu_tree(cJSON **v)
{
    cJSON *parsed;

    if (!*v || !cJSON_IsRaw(*v)) {
        return O2L_OK;
    }
    /* The text was checked when it was made: only memory can fail. */
    parsed = parse_whole((*v)->valuestring);
    if (!parsed) {
        return O2L_ENOMEM;
    }
    cJSON_Delete(*v);
    *v = parsed;
    return O2L_OK;
}

bool o2l_mu_is_list(const cJSON *v)
{
    return cJSON_IsArray(v) ||
           (cJSON_IsRaw(v) && v->valuestring && v->valuestring[0] == '[');
}

int o2l_mu_value(const cJSON *v, bool unquote, cJSON **out)
{
    const char *s;
    cJSON *parsed = NULL;

    *out = NULL;
    if (!o2l_mu_usable(v)) {
        return O2L_OK;
    }
    if (cJSON_IsString(v)) {
        s = v->valuestring;
        while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r') {
            s++;
        }
        /*
         * A failed parse may also be an allocation failure inside cJSON;
         * the string is then kept as text, which loses structure but no
         * data.
         */
        if (*s == '{' || *s == '[' || unquote) {
            parsed = parse_whole(s);
        }
        if (parsed) {
            if (!o2l_mu_usable(parsed)) {
                cJSON_Delete(parsed);
                return O2L_OK;
            }
            *out = parsed;
            return O2L_OK;
        }
    }
    *out = cJSON_Duplicate(v, 1);
    return *out ? O2L_OK : O2L_ENOMEM;
}

int o2l_mu_object(const cJSON *v, cJSON **out)
{
    int rc;

    *out = NULL;
    if (cJSON_IsObject(v)) {
        if (!v->child) {
            return O2L_OK;
        }
        *out = cJSON_Duplicate(v, 1);
        return *out ? O2L_OK : O2L_ENOMEM;
    }
    if (!cJSON_IsString(v)) {
        return O2L_OK;
    }
    rc = o2l_mu_value(v, false, out);
    if (rc == O2L_OK && *out && !cJSON_IsObject(*out)) {
        cJSON_Delete(*out);
        *out = NULL;
    }
    return rc;
}

int o2l_mu_text(const cJSON *v, char **out)
{
    char buf[64];
    int64_t i;

    *out = NULL;
    if (!v || cJSON_IsNull(v) || cJSON_IsInvalid(v)) {
        return O2L_OK;
    }
    if (cJSON_IsString(v) || cJSON_IsRaw(v)) {
        *out = o2l_strdup(v->valuestring ? v->valuestring : "");
    } else if (cJSON_IsBool(v)) {
        *out = o2l_strdup(cJSON_IsTrue(v) ? "true" : "false");
    } else if (cJSON_IsNumber(v)) {
        if (o2l_json_get_int64(v, 0, &i)) {
            snprintf(buf, sizeof(buf), "%lld", (long long)i);
        } else {
            /* The shortest of 15 or 17 digits that reads back exactly. */
            snprintf(buf, sizeof(buf), "%.15g", v->valuedouble);
            if (strtod(buf, NULL) != v->valuedouble) {
                snprintf(buf, sizeof(buf), "%.17g", v->valuedouble);
            }
        }
        *out = o2l_strdup(buf);
    } else {
        *out = cJSON_PrintUnformatted(v);
    }
    return *out ? O2L_OK : O2L_ENOMEM;
}

bool o2l_mu_number(const cJSON *v, double *out)
{
    char *end = NULL;
    double d;

    if (cJSON_IsNumber(v)) {
        *out = v->valuedouble;
        return true;
    }
    if (cJSON_IsRaw(v) && v->valuestring) {
        d = strtod(v->valuestring, &end);
        if (end && *end == '\0') {
            *out = d;
            return true;
        }
        return false;
    }
    if (!cJSON_IsString(v) || !v->valuestring || !v->valuestring[0]) {
        return false;
    }
    /* Digits, sign, point and exponent only: no hex, no inf, no nan. */
    for (const char *p = v->valuestring; *p; p++) {
        if (!strchr("0123456789+-.eE", *p)) {
            return false;
        }
    }
    errno = 0;
    d = strtod(v->valuestring, &end);
    if (errno != 0 || !end || *end != '\0' || !isfinite(d)) {
        return false;
    }
    *out = d;
    return true;
}

int o2l_mu_add(cJSON *obj, const char *key, cJSON *item, bool first_wins)
{
    if (!item) {
        return O2L_ENOMEM;
    }
    if (cJSON_GetObjectItemCaseSensitive(obj, key)) {
        if (first_wins) {
            cJSON_Delete(item);
            return O2L_OK;
        }
        cJSON_DeleteItemFromObjectCaseSensitive(obj, key);
    }
    if (!cJSON_AddItemToObject(obj, key, item)) {
        cJSON_Delete(item);
        return O2L_ENOMEM;
    }
    return O2L_OK;
}

int o2l_mu_merge(cJSON *dst, cJSON *src)
{
    cJSON *m;
    int rc = O2L_OK;

    while (src && src->child && rc == O2L_OK) {
        m = cJSON_DetachItemViaPointer(src, src->child);
        if (cJSON_IsNull(m) || !m->string) {
            cJSON_Delete(m);
            continue;
        }
        rc = o2l_mu_add(dst, m->string, m, true);
    }
    cJSON_Delete(src);
    return rc;
}

int o2l_mu_add_str(cJSON *obj, const char *key, const char *s, bool first_wins)
{
    if (first_wins && cJSON_GetObjectItemCaseSensitive(obj, key)) {
        return O2L_OK;
    }
    return o2l_mu_add(obj, key, cJSON_CreateString(s), first_wins);
}

int o2l_mu_environment(const char *raw, char **out)
{
    static const char *const prefixes[] = {"langfuse-", "langfuse_",
                                           "langfuse"};
    char buf[41];
    size_t n = 0;
    bool stripped = true;
    const char *p = raw ? raw : "";
    const char *chosen = "default";

    /* Lower-case on the fly while stripping the prefixes repeatedly. */
    while (stripped) {
        stripped = false;
        for (size_t i = 0; i < O2L_ARRAY_LEN(prefixes); i++) {
            size_t len = strlen(prefixes[i]);
            size_t j = 0;

            while (j < len && p[j] &&
                   lower((unsigned char)p[j]) ==
                       (unsigned char)prefixes[i][j]) {
                j++;
            }
            if (j == len) {
                p += len;
                stripped = true;
                break;
            }
        }
    }
    while (p[n] && n < sizeof(buf) - 1) {
        int c = lower((unsigned char)p[n]);

        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
              c == '-')) {
            n = 0;
            break;
        }
        buf[n++] = (char)c;
    }
    buf[n] = '\0';
    if (n > 0) {
        chosen = buf;
    }
    *out = o2l_strdup(chosen);
    return *out ? O2L_OK : O2L_ENOMEM;
}

size_t o2l_mu_utf8_prefix(const char *s, size_t max_cp)
{
    size_t i = 0;
    size_t cp = 0;

    while (s[i]) {
        if (((unsigned char)s[i] & 0xC0) != 0x80) {
            if (cp == max_cp) {
                break;
            }
            cp++;
        }
        i++;
    }
    return i;
}

/* Reads exactly |n| digits. */
static bool digits(const char **p, int n, int *out)
{
    int v = 0;

    for (int i = 0; i < n; i++) {
        char c = (*p)[i];

        if (c < '0' || c > '9') {
            return false;
        }
        v = v * 10 + (c - '0');
    }
    *p += n;
    *out = v;
    return true;
}

/* Days since 1970-01-01 of a proleptic Gregorian date. */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    int64_t era;
    int64_t yoe;
    int64_t doy;
    int64_t doe;

    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = y - era * 400;
    doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

bool o2l_mu_parse_iso(const char *s, uint64_t *out_ns)
{
    int y, mo, d, h, mi, sec, oh = 0, om = 0;
    int64_t frac = 0;
    int frac_digits = 0;
    int64_t secs;
    int sign = 0;

    if (!s || !digits(&s, 4, &y) || *s++ != '-' || !digits(&s, 2, &mo) ||
        *s++ != '-' || !digits(&s, 2, &d) ||
        (*s != 'T' && *s != 't' && *s != ' ')) {
        return false;
    }
    s++;
    if (!digits(&s, 2, &h) || *s++ != ':' || !digits(&s, 2, &mi) ||
        *s++ != ':' || !digits(&s, 2, &sec)) {
        return false;
    }
    if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60) {
        return false;
    }
    if (*s == '.' || *s == ',') {
        s++;
        while (*s >= '0' && *s <= '9') {
            if (frac_digits < 9) {
                frac = frac * 10 + (*s - '0');
                frac_digits++;
            }
            s++;
        }
        if (frac_digits == 0) {
            return false;
        }
        while (frac_digits < 9) {
            frac *= 10;
            frac_digits++;
        }
    }
    if (*s == 'Z' || *s == 'z') {
        s++;
    } else if (*s == '+' || *s == '-') {
        sign = *s == '-' ? -1 : 1;
        s++;
        if (!digits(&s, 2, &oh)) {
            return false;
        }
        if (*s == ':') {
            s++;
        }
        if (!digits(&s, 2, &om)) {
            return false;
        }
    } else {
        return false;
    }
    if (*s != '\0') {
        return false;
    }
    secs = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec;
    secs -= sign * (oh * 3600 + om * 60);
    if (secs < 0 || secs > 18000000000LL) {
        return false;
    }
    *out_ns = (uint64_t)secs * 1000000000u + (uint64_t)frac;
    return true;
}

int o2l_mu_parse_member(cJSON *list, const char *name)
{
    cJSON *el;
    cJSON *m;
    cJSON *parsed;
    int rc;

    cJSON_ArrayForEach(el, list)
    {
        m = cJSON_GetObjectItemCaseSensitive(el, name);
        if (!cJSON_IsString(m)) {
            continue;
        }
        rc = o2l_mu_value(m, false, &parsed);
        if (rc != O2L_OK) {
            return rc;
        }
        if (parsed && !cJSON_IsString(parsed)) {
            parsed->string = m->string;
            parsed->type |= m->type & cJSON_StringIsConst;
            m->string = NULL;
            cJSON_ReplaceItemViaPointer(el, m, parsed);
        } else {
            cJSON_Delete(parsed);
        }
    }
    return O2L_OK;
}
