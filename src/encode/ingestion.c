/* SPDX-License-Identifier: Apache-2.0 */
/* ingestion.c - Langfuse's model as ingestion events (compact JSON). */
#include "o2l/encode.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "o2l/common.h"

/*
 * The events are printed straight into one growing buffer instead of
 * building a cJSON tree per event and printing that: the model's JSON
 * values (input, output, metadata, ...) are walked once, and nothing is
 * allocated per field. A writer that ran out of memory stays failed and
 * ignores further writes, so callers check once at the end.
 */
struct jbuf {
    char *p;
    size_t len;
    size_t cap;
    int oom;
};

/* Byte range of one value in the buffer, for trimming oversized events. */
struct span_ref {
    const char *what; /* "input", "output" or "metadata" */
    size_t start;
    size_t len;
};

enum {
    REF_INPUT = 0,
    REF_OUTPUT,
    REF_METADATA,
    REF_COUNT
};

static int jb_reserve(struct jbuf *b, size_t more)
{
    size_t want;
    size_t cap;
    char *p;

    if (b->oom) {
        return -1;
    }
    want = b->len + more + 1;
    if (want <= b->cap) {
        return 0;
    }
    cap = b->cap ? b->cap : 1024;
    while (cap < want) {
        cap *= 2;
    }
    p = o2l_realloc(b->p, cap);
    if (!p) {
        b->oom = 1;
        return -1;
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

static void jb_raw(struct jbuf *b, const char *s, size_t n)
{
    if (jb_reserve(b, n) != 0) {
        return;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void jb_lit(struct jbuf *b, const char *s)
{
    jb_raw(b, s, strlen(s));
}

static void jb_char(struct jbuf *b, char c)
{
    jb_raw(b, &c, 1);
}

static int needs_escape(unsigned char c)
{
    return c < 0x20 || c == '"' || c == '\\';
}

#define ONES  0x0101010101010101ull
#define HIGHS 0x8080808080808080ull

/*
 * True when one of the eight bytes of |w| needs escaping: below 0x20, a
 * quote or a backslash. Each test sets a byte's high bit where it hits
 * (the usual zero-byte trick applied to w, w ^ '"' and w ^ '\\').
 */
static int word_needs_escape(uint64_t w)
{
    uint64_t q = w ^ (ONES * '"');
    uint64_t bs = w ^ (ONES * '\\');
    uint64_t low = (w - ONES * 0x20) & ~w;
    uint64_t quote = (q - ONES) & ~q;
    uint64_t slash = (bs - ONES) & ~bs;

    return ((low | quote | slash) & HIGHS) != 0;
}

static void jb_escape(struct jbuf *b, unsigned char c)
{
    static const char hex[] = "0123456789abcdef";
    char esc[6];
    size_t esc_len = 2;

    esc[0] = '\\';
    switch (c) {
    case '"':
        esc[1] = '"';
        break;
    case '\\':
        esc[1] = '\\';
        break;
    case '\n':
        esc[1] = 'n';
        break;
    case '\r':
        esc[1] = 'r';
        break;
    case '\t':
        esc[1] = 't';
        break;
    case '\b':
        esc[1] = 'b';
        break;
    case '\f':
        esc[1] = 'f';
        break;
    default:
        esc[1] = 'u';
        esc[2] = '0';
        esc[3] = '0';
        esc[4] = hex[c >> 4];
        esc[5] = hex[c & 15];
        esc_len = 6;
        break;
    }
    jb_raw(b, esc, esc_len);
}

/*
 * Writes |s| as a JSON string. Bytes from 0x80 up pass through: strings
 * reach the encoder as valid UTF-8 (the receive stage repairs them).
 * Prompts and completions make this the hot loop, so clean stretches are
 * skipped eight bytes at a time and copied in one piece.
 */
static void jb_str(struct jbuf *b, const char *s)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t n = strlen(s);
    size_t done = 0;
    size_t i = 0;

    jb_reserve(b, n + 2);
    jb_char(b, '"');
    while (i < n) {
        uint64_t w;

        if (n - i >= 8) {
            memcpy(&w, u + i, 8);
            if (!word_needs_escape(w)) {
                i += 8;
                continue;
            }
        }
        if (!needs_escape(u[i])) {
            i++;
            continue;
        }
        jb_raw(b, s + done, i - done);
        jb_escape(b, u[i]);
        i++;
        done = i;
    }
    jb_raw(b, s + done, n - done);
    jb_char(b, '"');
}

static void jb_i64(struct jbuf *b, long long v)
{
    char tmp[24];
    size_t pos = sizeof(tmp);
    unsigned long long u;

    /* By hand: snprintf showed up in profiles of usage-heavy events. */
    u = v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v;
    do {
        tmp[--pos] = (char)('0' + u % 10);
        u /= 10;
    } while (u > 0);
    if (v < 0) {
        tmp[--pos] = '-';
    }
    jb_raw(b, tmp + pos, sizeof(tmp) - pos);
}

/*
 * Numbers: integral values up to 2^53 print as integers (token counts
 * must stay integers for Langfuse), others with the shortest of 15 or 17
 * significant digits that reads back the same. JSON has no NaN or
 * infinity; the decode stage keeps those as strings, so a stray one here
 * is written the same way rather than as null.
 */
static void jb_number(struct jbuf *b, double d)
{
    char tmp[40];
    int n;

    if (isnan(d)) {
        jb_lit(b, "\"NaN\"");
        return;
    }
    if (isinf(d)) {
        jb_lit(b, d > 0 ? "\"Infinity\"" : "\"-Infinity\"");
        return;
    }
    if (d == floor(d) && fabs(d) <= 9007199254740992.0) {
        jb_i64(b, (long long)d);
        return;
    }
    n = snprintf(tmp, sizeof(tmp), "%.15g", d);
    if (n > 0 && (size_t)n < sizeof(tmp) && strtod(tmp, NULL) != d) {
        n = snprintf(tmp, sizeof(tmp), "%.17g", d);
    }
    if (n > 0 && (size_t)n < sizeof(tmp)) {
        jb_raw(b, tmp, (size_t)n);
    }
}

static void jb_value(struct jbuf *b, const cJSON *v)
{
    const cJSON *c;

    if (cJSON_IsString(v)) {
        jb_str(b, v->valuestring ? v->valuestring : "");
    } else if (cJSON_IsNumber(v)) {
        jb_number(b, v->valuedouble);
    } else if (cJSON_IsTrue(v)) {
        jb_lit(b, "true");
    } else if (cJSON_IsFalse(v)) {
        jb_lit(b, "false");
    } else if (cJSON_IsArray(v)) {
        jb_char(b, '[');
        for (c = v->child; c; c = c->next) {
            jb_value(b, c);
            if (c->next) {
                jb_char(b, ',');
            }
        }
        jb_char(b, ']');
    } else if (cJSON_IsObject(v)) {
        jb_char(b, '{');
        for (c = v->child; c; c = c->next) {
            jb_str(b, c->string ? c->string : "");
            jb_char(b, ':');
            jb_value(b, c);
            if (c->next) {
                jb_char(b, ',');
            }
        }
        jb_char(b, '}');
    } else if (cJSON_IsRaw(v) && v->valuestring) {
        jb_lit(b, v->valuestring);
    } else {
        /* A null inside user data (a message's null content) stays. */
        jb_lit(b, "null");
    }
}

/* True when |v| carries something: not NULL, null, "{}" or "[]". */
static int json_usable(const cJSON *v)
{
    if (!v || cJSON_IsNull(v) || cJSON_IsInvalid(v)) {
        return 0;
    }
    if ((cJSON_IsObject(v) || cJSON_IsArray(v)) && !v->child) {
        return 0;
    }
    return 1;
}

static void field_key(struct jbuf *b, const char *key)
{
    jb_char(b, ',');
    jb_char(b, '"');
    jb_lit(b, key);
    jb_lit(b, "\":");
}

static void field_str(struct jbuf *b, const char *key, const char *s)
{
    if (!s) {
        return;
    }
    field_key(b, key);
    jb_str(b, s);
}

static void field_time(struct jbuf *b, const char *key, uint64_t ns)
{
    char iso[O2L_ISO_LEN];

    if (ns == 0) {
        return;
    }
    field_key(b, key);
    jb_char(b, '"');
    jb_lit(b, o2l_iso_time(ns, iso));
    jb_char(b, '"');
}

static void field_json(struct jbuf *b, const char *key, const cJSON *v,
                       struct span_ref *ref)
{
    if (!json_usable(v)) {
        return;
    }
    field_key(b, key);
    if (ref) {
        ref->start = b->len;
    }
    jb_value(b, v);
    if (ref) {
        ref->len = b->len - ref->start;
    }
}

/*
 * Writes metadata with the ingestion-only keys of |extra| merged in: an
 * observation's attributes, resourceAttributes and scope, or the true
 * root's observation metadata under a trace's. |md| wins on a shared key.
 */
static void field_metadata(struct jbuf *b, const cJSON *md, const cJSON *extra,
                           struct span_ref *ref)
{
    const cJSON *c;
    int first = 1;

    if (!json_usable(extra) || !cJSON_IsObject(extra)) {
        field_json(b, "metadata", md, ref);
        return;
    }
    if (!json_usable(md) || !cJSON_IsObject(md)) {
        field_json(b, "metadata", extra, ref);
        return;
    }
    field_key(b, "metadata");
    ref->start = b->len;
    jb_char(b, '{');
    for (c = md->child; c; c = c->next) {
        if (!first) {
            jb_char(b, ',');
        }
        jb_str(b, c->string ? c->string : "");
        jb_char(b, ':');
        jb_value(b, c);
        first = 0;
    }
    for (c = extra->child; c; c = c->next) {
        if (!c->string || cJSON_GetObjectItemCaseSensitive(md, c->string)) {
            continue;
        }
        jb_char(b, ',');
        jb_str(b, c->string);
        jb_char(b, ':');
        jb_value(b, c);
    }
    jb_char(b, '}');
    ref->len = b->len - ref->start;
}

/* {"id":..,"type":..,"timestamp":..,"body":{"id":..  (body left open). */
static void envelope_open(struct jbuf *b, const char *env_id, const char *type,
                          uint64_t env_ns, const char *body_id)
{
    char iso[O2L_ISO_LEN];

    if (env_ns == 0) {
        env_ns = o2l_now_ns();
    }
    jb_lit(b, "{\"id\":");
    jb_str(b, env_id);
    jb_lit(b, ",\"type\":\"");
    jb_lit(b, type);
    jb_lit(b, "\",\"timestamp\":\"");
    jb_lit(b, o2l_iso_time(env_ns, iso));
    jb_lit(b, "\",\"body\":{\"id\":");
    jb_str(b, body_id);
}

static void write_trace(struct jbuf *b, const struct o2l_trace *t,
                        struct span_ref *refs)
{
    envelope_open(b, t->envelope_id, "trace-create", t->envelope_ns, t->id);
    field_time(b, "timestamp", t->timestamp_ns);
    field_str(b, "name", t->name);
    field_str(b, "userId", t->user_id);
    field_str(b, "sessionId", t->session_id);
    field_str(b, "release", t->release);
    field_str(b, "version", t->version);
    field_str(b, "environment", t->environment);
    if (t->public_flag >= 0) {
        field_key(b, "public");
        jb_lit(b, t->public_flag ? "true" : "false");
    }
    field_json(b, "tags", t->tags, NULL);
    field_json(b, "input", t->input, &refs[REF_INPUT]);
    field_json(b, "output", t->output, &refs[REF_OUTPUT]);
    field_metadata(b, t->metadata, t->ingest_metadata, &refs[REF_METADATA]);
    jb_lit(b, "}}");
}

static void write_observation(struct jbuf *b, const struct o2l_observation *o,
                              struct span_ref *refs)
{
    char env_id[sizeof(o->trace_id) + sizeof(o->id) + 2];
    char type[32];
    int gen_like = o2l_obs_type_is_generation_like(o->type);

    snprintf(env_id, sizeof(env_id), "%s-%s", o->trace_id, o->id);
    snprintf(type, sizeof(type), "%s-create", o2l_obs_type_name(o->type));

    envelope_open(b, env_id, type, o->envelope_ns, o->id);
    field_str(b, "traceId", o->trace_id);
    if (o->parent_id[0]) {
        field_str(b, "parentObservationId", o->parent_id);
    }
    field_str(b, "name", o->name);
    field_time(b, "startTime", o->start_ns);
    if (o->type != O2L_OBS_EVENT) {
        field_time(b, "endTime", o->end_ns);
    }
    field_str(b, "level", o2l_level_name(o->level));
    field_str(b, "statusMessage", o->status_message);
    field_str(b, "version", o->version);
    field_str(b, "environment", o->environment);
    if (gen_like) {
        field_time(b, "completionStartTime", o->completion_start_ns);
        field_str(b, "model", o->model);
        field_json(b, "modelParameters", o->model_parameters, NULL);
        field_json(b, "usageDetails", o->usage_details, NULL);
        field_json(b, "costDetails", o->cost_details, NULL);
    }
    /* Langfuse links prompts to generations only. */
    if (o->type == O2L_OBS_GENERATION && o->prompt_name) {
        field_str(b, "promptName", o->prompt_name);
        field_key(b, "promptVersion");
        jb_i64(b, (long long)o->prompt_version);
    }
    field_json(b, "input", o->input, &refs[REF_INPUT]);
    field_json(b, "output", o->output, &refs[REF_OUTPUT]);
    field_metadata(b, o->metadata, o->ingest_metadata, &refs[REF_METADATA]);
    jb_lit(b, "}}");
}

/*
 * Replaces the largest of input, output and metadata with a marker string
 * (inside an object for metadata) until the event fits in |max| bytes, editing
 * the printed text in place. Values shorter than their marker are left alone;
 * an event that is still too big after that is sent as it is and Langfuse
 * decides.
 */
static void trim_event(struct jbuf *b, struct span_ref *refs, size_t max)
{
    while (b->len > max && !b->oom) {
        char marker[O2L_TRIM_MARKER_MAX];
        struct jbuf m = {0};
        struct span_ref *big = NULL;
        size_t start;
        size_t old_len;

        for (int i = 0; i < REF_COUNT; i++) {
            if (refs[i].len > sizeof(marker) + 64 &&
                (!big || refs[i].len > big->len)) {
                big = &refs[i];
            }
        }
        if (!big) {
            return;
        }
        snprintf(marker, sizeof(marker), O2L_TRIM_MARKER_FMT, big->what,
                 big->len, max);
        if (big == &refs[REF_METADATA]) {
            /* Langfuse wants metadata to stay an object. */
            jb_lit(&m, "{\"" O2L_TRIM_METADATA_KEY "\":");
            jb_str(&m, marker);
            jb_char(&m, '}');
        } else {
            jb_str(&m, marker);
        }
        if (m.oom) {
            b->oom = 1;
            return;
        }

        /* m.len < big->len, so the text only shrinks. */
        start = big->start;
        old_len = big->len;
        memcpy(b->p + start, m.p, m.len);
        memmove(b->p + start + m.len, b->p + start + old_len,
                b->len - start - old_len + 1);
        b->len -= old_len - m.len;
        for (int i = 0; i < REF_COUNT; i++) {
            if (refs[i].start > start) {
                refs[i].start -= old_len - m.len;
            }
        }
        big->len = 0;
        o2l_free(m.p);
    }
}

int o2l_event_list_reserve(struct o2l_event_list *l, size_t more)
{
    struct o2l_event *items;
    size_t cap;

    if (l->len + more <= l->cap) {
        return O2L_OK;
    }
    cap = l->cap ? l->cap : 16;
    while (cap < l->len + more) {
        cap *= 2;
    }
    items = o2l_realloc(l->items, cap * sizeof(*items));
    if (!items) {
        return O2L_ENOMEM;
    }
    l->items = items;
    l->cap = cap;
    return O2L_OK;
}

/*
 * Takes the printed event from |b| (shrunk to fit) and appends it with a
 * copy of its envelope id. Leaves |b| empty for the next event.
 */
static int list_take(struct o2l_event_list *out, struct jbuf *b,
                     const char *env_id, const char *span_id)
{
    struct o2l_event *ev;
    char *json;
    int rc;

    if (b->oom) {
        return O2L_ENOMEM;
    }
    rc = o2l_event_list_reserve(out, 1);
    if (rc != O2L_OK) {
        return rc;
    }
    json = o2l_realloc(b->p, b->len + 1);
    if (!json) {
        json = b->p;
    }
    ev = &out->items[out->len];
    memset(ev, 0, sizeof(*ev));
    snprintf(ev->span_id, sizeof(ev->span_id), "%.16s", span_id);
    ev->id = o2l_strdup(env_id);
    if (!ev->id) {
        b->p = json;
        return O2L_ENOMEM;
    }
    ev->json = json;
    ev->len = b->len;
    out->len++;
    memset(b, 0, sizeof(*b));
    return O2L_OK;
}

static void refs_init(struct span_ref *refs)
{
    memset(refs, 0, REF_COUNT * sizeof(*refs));
    refs[REF_INPUT].what = "input";
    refs[REF_OUTPUT].what = "output";
    refs[REF_METADATA].what = "metadata";
}

static int encode_trace(const struct o2l_trace *t, size_t max,
                        struct o2l_event_list *out)
{
    struct span_ref refs[REF_COUNT];
    struct jbuf b = {0};
    const char *span;
    int rc;

    refs_init(refs);
    write_trace(&b, t, refs);
    trim_event(&b, refs, max);
    /* The envelope id ends with the span whose values the trace takes. */
    span = strstr(t->envelope_id, "-trace-");
    rc = list_take(out, &b, t->envelope_id, span ? span + 7 : "");
    o2l_free(b.p);
    return rc;
}

static int encode_observation(const struct o2l_observation *o, size_t max,
                              struct o2l_event_list *out)
{
    struct span_ref refs[REF_COUNT];
    char env_id[sizeof(o->trace_id) + sizeof(o->id) + 2];
    struct jbuf b = {0};
    int rc;

    refs_init(refs);
    write_observation(&b, o, refs);
    trim_event(&b, refs, max);
    snprintf(env_id, sizeof(env_id), "%s-%s", o->trace_id, o->id);
    rc = list_take(out, &b, env_id, o->id);
    o2l_free(b.p);
    return rc;
}

int o2l_encode_ingestion(const struct o2l_mapped *m, size_t max_event_bytes,
                         struct o2l_event_list *out)
{
    size_t j = 0;
    int rc = O2L_OK;

    rc = o2l_event_list_reserve(out, m->n_traces + m->n_obs);
    if (rc != O2L_OK) {
        goto out;
    }

    /*
     * Each trace goes ahead of its own observations: Langfuse v2/v3 needs
     * the trace row before the observations that hang on it. The mapper
     * lists observations grouped in trace order, so one cursor suffices;
     * whatever it passes over goes out after the last trace.
     */
    for (size_t t = 0; t < m->n_traces; t++) {
        const struct o2l_trace *tr = &m->traces[t];

        rc = encode_trace(tr, max_event_bytes, out);
        if (rc != O2L_OK) {
            goto out;
        }
        while (j < m->n_obs && strcmp(m->obs[j].trace_id, tr->id) == 0) {
            rc = encode_observation(&m->obs[j++], max_event_bytes, out);
            if (rc != O2L_OK) {
                goto out;
            }
        }
    }
    for (; j < m->n_obs; j++) {
        rc = encode_observation(&m->obs[j], max_event_bytes, out);
        if (rc != O2L_OK) {
            goto out;
        }
    }

out:
    return rc;
}

int o2l_event_list_move(struct o2l_event_list *dst, struct o2l_event_list *src)
{
    int rc;

    if (src->len == 0) {
        return O2L_OK;
    }
    if (dst->len == 0 && !dst->items) {
        *dst = *src;
        memset(src, 0, sizeof(*src));
        return O2L_OK;
    }
    rc = o2l_event_list_reserve(dst, src->len);
    if (rc != O2L_OK) {
        return rc;
    }
    memcpy(dst->items + dst->len, src->items, src->len * sizeof(*src->items));
    dst->len += src->len;
    src->len = 0;
    return O2L_OK;
}

void o2l_event_free(struct o2l_event *ev)
{
    if (!ev) {
        return;
    }
    o2l_free(ev->json);
    o2l_free(ev->id);
    ev->json = NULL;
    ev->id = NULL;
    ev->len = 0;
}

void o2l_event_list_clear(struct o2l_event_list *l)
{
    if (!l) {
        return;
    }
    for (size_t i = 0; i < l->len; i++) {
        o2l_event_free(&l->items[i]);
    }
    o2l_free(l->items);
    memset(l, 0, sizeof(*l));
}

int o2l_encode_batch(const struct o2l_event *evs, size_t n, char **out,
                     size_t *out_len)
{
    static const char head[] = "{\"batch\":[";
    static const char tail[] = "]}";
    size_t total = sizeof(head) - 1 + sizeof(tail) - 1;
    size_t pos;
    char *p;

    for (size_t i = 0; i < n; i++) {
        total += evs[i].len + (i > 0);
    }
    p = o2l_malloc(total + 1);
    if (!p) {
        return O2L_ENOMEM;
    }
    memcpy(p, head, sizeof(head) - 1);
    pos = sizeof(head) - 1;
    for (size_t i = 0; i < n; i++) {
        if (i > 0) {
            p[pos++] = ',';
        }
        memcpy(p + pos, evs[i].json, evs[i].len);
        pos += evs[i].len;
    }
    memcpy(p + pos, tail, sizeof(tail) - 1);
    pos += sizeof(tail) - 1;
    p[pos] = '\0';
    *out = p;
    *out_len = pos;
    return O2L_OK;
}
