/* SPDX-License-Identifier: Apache-2.0 */
/* otlp_out.c - mapped observations as enriched OTLP ResourceSpans. */
#include "o2l/encode_otlp.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "o2l/common.h"
#include "o2l/map_conv.h"
#include "o2l/map_util.h"
#include "o2l/mapper.h"
#include "o2l/otlp_util.h"
#include "opentelemetry/proto/trace/v1/trace.pb-c.h"

/* Short names for the generated message types. */
typedef Opentelemetry__Proto__Common__V1__AnyValue pb_any;
typedef Opentelemetry__Proto__Common__V1__ArrayValue pb_array;
typedef Opentelemetry__Proto__Common__V1__KeyValueList pb_kvlist;
typedef Opentelemetry__Proto__Common__V1__KeyValue pb_kv;
typedef Opentelemetry__Proto__Common__V1__InstrumentationScope pb_scope;
typedef Opentelemetry__Proto__Resource__V1__Resource pb_resource;
typedef Opentelemetry__Proto__Trace__V1__ResourceSpans pb_resource_spans;
typedef Opentelemetry__Proto__Trace__V1__ScopeSpans pb_scope_spans;
typedef Opentelemetry__Proto__Trace__V1__Span pb_span;
typedef Opentelemetry__Proto__Trace__V1__Span__Event pb_event;
typedef Opentelemetry__Proto__Trace__V1__Span__Link pb_link;
typedef Opentelemetry__Proto__Trace__V1__Status pb_status;

/* Room for the langfuse.* attributes of one span. */
#define LF_ATTRS_MAX 32

#define ANY_STRING                                                             \
    OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE
#define ANY_ARRAY OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_ARRAY_VALUE
#define ANY_KVLIST                                                             \
    OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_KVLIST_VALUE

/* OTLP SpanKind of the child spans made from span events. */
#define SPAN_KIND_INTERNAL                                                     \
    OPENTELEMETRY__PROTO__TRACE__V1__SPAN__SPAN_KIND__SPAN_KIND_INTERNAL

/* OTLP protobuf field 1, wire type 2: ExportTraceServiceRequest's
 * resource_spans. */
#define REQUEST_ITEM_TAG 0x0a

/* ---- arena ------------------------------------------------------------- */

/*
 * protobuf-c packs from a tree of separately allocated messages. They live
 * in a bump arena released at once; strings printed by cJSON are recorded
 * in it and freed with it.
 */
#define ARENA_ALIGN 16
#define ARENA_BLOCK (32 * 1024)

struct arena_block {
    struct arena_block *next;
    size_t used;
    size_t cap;
};

struct arena {
    struct arena_block *head;
    void **owned; /* cJSON-allocated texts */
    size_t n_owned;
    size_t cap_owned;
    cJSON **trees; /* redacted copies of attribute objects */
    size_t n_trees;
    size_t cap_trees;
};

static size_t round_up(size_t n)
{
    return (n + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
}

/* Zeroed memory for |n| bytes, or NULL when out of memory. */
static void *arena_alloc(struct arena *a, size_t n)
{
    struct arena_block *blk = a->head;
    size_t need = round_up(n ? n : 1);
    unsigned char *p;

    if (n > SIZE_MAX / 4) {
        return NULL;
    }
    if (!blk || blk->cap - blk->used < need) {
        size_t cap = need > ARENA_BLOCK ? need : ARENA_BLOCK;

        blk = o2l_malloc(round_up(sizeof(*blk)) + cap);
        if (!blk) {
            return NULL;
        }
        blk->cap = cap;
        blk->used = 0;
        blk->next = a->head;
        a->head = blk;
    }
    p = (unsigned char *)blk + round_up(sizeof(*blk)) + blk->used;
    blk->used += need;
    memset(p, 0, n);
    return p;
}

/* Takes |p| (from cJSON's allocator) into the arena; frees it on failure. */
static int arena_own(struct arena *a, void *p)
{
    if (o2l_grow(&a->owned, &a->cap_owned, a->n_owned, sizeof(*a->owned), 16) !=
        O2L_OK) {
        cJSON_free(p);
        return O2L_ENOMEM;
    }
    a->owned[a->n_owned++] = p;
    return O2L_OK;
}

/* Takes the tree |t| into the arena; deletes it on failure. */
static int arena_own_tree(struct arena *a, cJSON *t)
{
    if (o2l_grow(&a->trees, &a->cap_trees, a->n_trees, sizeof(*a->trees), 8) !=
        O2L_OK) {
        cJSON_Delete(t);
        return O2L_ENOMEM;
    }
    a->trees[a->n_trees++] = t;
    return O2L_OK;
}

/* Empties the arena for the next item, keeping one standard block. */
static void arena_reset(struct arena *a)
{
    struct arena_block *keep = NULL;

    for (size_t i = 0; i < a->n_owned; i++) {
        cJSON_free(a->owned[i]);
    }
    a->n_owned = 0;
    for (size_t i = 0; i < a->n_trees; i++) {
        cJSON_Delete(a->trees[i]);
    }
    a->n_trees = 0;
    while (a->head) {
        struct arena_block *next = a->head->next;

        if (!keep && a->head->cap == ARENA_BLOCK) {
            keep = a->head;
            keep->next = NULL;
            keep->used = 0;
        } else {
            o2l_free(a->head);
        }
        a->head = next;
    }
    a->head = keep;
}

static void arena_release(struct arena *a)
{
    arena_reset(a);
    o2l_free(a->head);
    o2l_free(a->owned);
    o2l_free(a->trees);
    memset(a, 0, sizeof(*a));
}

/* ---- id lookup --------------------------------------------------------- */

/* Key of element |i| of the array behind |ctx|. */
typedef const char *(*key_fn)(const void *ctx, size_t i);

/* Open addressing from a text key to every element holding it. */
struct id_table {
    size_t *slots; /* element index + 1; 0 is empty */
    size_t mask;
};

static size_t hash_text(const char *s)
{
    uint64_t h = 1469598103934665603ULL;

    while (*s) {
        h = (h ^ (unsigned char)*s++) * 1099511628211ULL;
    }
    return (size_t)h;
}

static int table_build(struct id_table *t, size_t n, const void *ctx,
                       key_fn key_at)
{
    size_t cap = 16;

    while (cap < n * 2) {
        cap *= 2;
    }
    t->slots = o2l_calloc(cap, sizeof(*t->slots));
    if (!t->slots) {
        return O2L_ENOMEM;
    }
    t->mask = cap - 1;
    for (size_t i = 0; i < n; i++) {
        size_t h = hash_text(key_at(ctx, i)) & t->mask;

        while (t->slots[h]) {
            h = (h + 1) & t->mask;
        }
        t->slots[h] = i + 1;
    }
    return O2L_OK;
}

/*
 * The next element whose key is |key|, or SIZE_MAX. Start with *pos =
 * SIZE_MAX; each call continues where the previous one stopped.
 */
static size_t table_next(const struct id_table *t, const void *ctx,
                         key_fn key_at, const char *key, size_t *pos)
{
    if (*pos == SIZE_MAX) {
        *pos = hash_text(key) & t->mask;
    }
    while (t->slots[*pos]) {
        size_t i = t->slots[*pos] - 1;

        *pos = (*pos + 1) & t->mask;
        if (strcmp(key_at(ctx, i), key) == 0) {
            return i;
        }
    }
    return SIZE_MAX;
}

static const char *span_key(const void *ctx, size_t i)
{
    return ((const struct o2l_export *)ctx)->spans[i].span_id;
}

static const char *trace_key(const void *ctx, size_t i)
{
    return ((const struct o2l_mapped *)ctx)->traces[i].id;
}

/* ---- the encoder's state ----------------------------------------------- */

/* Per-observation marks for the OTLP-only attribute rules. */
enum {
    OBS_USAGE_DROPPED = 1, /* the agent rule removed model, usage, cost */
    OBS_MOVE_OPERATION = 2 /* gen_ai.operation.name goes to metadata */
};

struct trace_info {
    size_t root;         /* index of the true root's observation, or
                            SIZE_MAX */
    char *metadata_text; /* langfuse.trace.metadata, printed once */
    bool metadata_done;
};

/* Resource and scope messages, built once per o2l_scope. */
struct scope_msgs {
    pb_resource *resource;
    pb_scope *scope;
};

struct enc {
    const struct o2l_export *ex;
    const struct o2l_mapped *m;
    bool keep_original;
    size_t max_item_bytes;
    const struct o2l_map_config *map; /* redaction; NULL: none */
    const struct o2l_span **obs_span; /* per observation; its parent span
                                         for a span event */
    size_t *obs_trace;                /* per observation, or SIZE_MAX */
    unsigned char *obs_flags;
    struct trace_info *traces;
    struct scope_msgs *scopes;
    struct arena shared; /* the scope messages */
    struct arena item;   /* one ResourceSpans at a time */
    size_t item_mapped;  /* the item's langfuse.* attributes, which come
                            before those forwarded as received */
};

/* An observation made from a span event: "<spanId>-event-<n>". */
static bool is_span_event(const struct o2l_observation *o)
{
    return strlen(o->id) > 16;
}

/*
 * How well span |s| fits observation |o|: span ids may repeat across
 * traces, so the same trace id counts most (it differs only where a custom
 * trace id applied), then the same start time.
 */
static int span_fit(const struct o2l_span *s, const struct o2l_observation *o)
{
    return (strcmp(s->trace_id, o->trace_id) == 0 ? 2 : 0) +
           (!is_span_event(o) && s->start_ns == o->start_ns ? 1 : 0);
}

static int find_spans(struct enc *e)
{
    struct id_table t = {NULL, 0};
    int rc;

    rc = table_build(&t, e->ex->n_spans, e->ex, span_key);
    if (rc != O2L_OK) {
        return rc;
    }
    for (size_t i = 0; i < e->m->n_obs; i++) {
        const struct o2l_observation *o = &e->m->obs[i];
        char id[17];
        size_t pos = SIZE_MAX;
        size_t k;
        int best = -1;

        snprintf(id, sizeof(id), "%.16s", o->id);
        while ((k = table_next(&t, e->ex, span_key, id, &pos)) != SIZE_MAX) {
            int fit = span_fit(&e->ex->spans[k], o);

            if (fit > best) {
                best = fit;
                e->obs_span[i] = &e->ex->spans[k];
            }
        }
    }
    o2l_free(t.slots);
    return O2L_OK;
}

/* The true root: a parentless span observation; of several, the earliest
 * start, then the lower span id (as the map stage chooses it). */
static int find_traces(struct enc *e)
{
    struct id_table t = {NULL, 0};
    int rc;

    rc = table_build(&t, e->m->n_traces, e->m, trace_key);
    if (rc != O2L_OK) {
        return rc;
    }
    for (size_t i = 0; i < e->m->n_traces; i++) {
        e->traces[i].root = SIZE_MAX;
    }
    for (size_t i = 0; i < e->m->n_obs; i++) {
        const struct o2l_observation *o = &e->m->obs[i];
        size_t pos = SIZE_MAX;
        size_t k = table_next(&t, e->m, trace_key, o->trace_id, &pos);
        const struct o2l_observation *r;

        e->obs_trace[i] = k;
        if (k == SIZE_MAX || o->parent_id[0] || is_span_event(o)) {
            continue;
        }
        r = e->traces[k].root == SIZE_MAX ? NULL
                                          : &e->m->obs[e->traces[k].root];
        if (!r || o->start_ns < r->start_ns ||
            (o->start_ns == r->start_ns && strcmp(o->id, r->id) < 0)) {
            e->traces[k].root = i;
        }
    }
    o2l_free(t.slots);
    return O2L_OK;
}

/*
 * Where the map stage's agent rule applied: an agent span above a
 * GENERATION or EMBEDDING with usage lost its model, usage and cost, and
 * gets an explicit empty usage so that Langfuse does not infer them again
 * from the original keys. An invoke_agent or agent_step span that kept
 * them hides its operation name, for which Langfuse would discard them.
 */
static void mark_agents(struct enc *e)
{
    const struct o2l_mapped *m = e->m;

    for (size_t i = 0; i < m->n_obs; i++) {
        const struct o2l_observation *o = &m->obs[i];

        if (is_span_event(o)) {
            continue;
        }
        if (o->usage_dropped) {
            e->obs_flags[i] |= OBS_USAGE_DROPPED;
        } else if (o->agent_operation &&
                   (o->model || o->usage_details || o->cost_details)) {
            e->obs_flags[i] |= OBS_MOVE_OPERATION;
        }
    }
}

static int enc_init(struct enc *e, const struct o2l_export *ex,
                    const struct o2l_mapped *m,
                    const struct o2l_otlp_out_config *cfg)
{
    size_t n_obs = m->n_obs ? m->n_obs : 1;
    int rc;

    memset(e, 0, sizeof(*e));
    e->ex = ex;
    e->m = m;
    e->keep_original = cfg ? cfg->keep_original : true;
    e->map = cfg ? cfg->map : NULL;
    e->max_item_bytes =
        cfg && cfg->max_item_bytes ? cfg->max_item_bytes : O2L_EVENT_MAX_BYTES;
    e->obs_span = o2l_calloc(n_obs, sizeof(*e->obs_span));
    e->obs_trace = o2l_calloc(n_obs, sizeof(*e->obs_trace));
    e->obs_flags = o2l_calloc(n_obs, sizeof(*e->obs_flags));
    e->traces = o2l_calloc(m->n_traces ? m->n_traces : 1, sizeof(*e->traces));
    e->scopes = o2l_calloc(ex->n_scopes ? ex->n_scopes : 1, sizeof(*e->scopes));
    if (!e->obs_span || !e->obs_trace || !e->obs_flags || !e->traces ||
        !e->scopes) {
        return O2L_ENOMEM;
    }
    rc = find_spans(e);
    if (rc == O2L_OK) {
        rc = find_traces(e);
    }
    if (rc == O2L_OK) {
        mark_agents(e);
    }
    return rc;
}

static void enc_free(struct enc *e)
{
    for (size_t i = 0; e->traces && i < e->m->n_traces; i++) {
        cJSON_free(e->traces[i].metadata_text);
    }
    arena_release(&e->item);
    arena_release(&e->shared);
    o2l_free(e->obs_span);
    o2l_free(e->obs_trace);
    o2l_free(e->obs_flags);
    o2l_free(e->traces);
    o2l_free(e->scopes);
}

/* ---- attribute values -------------------------------------------------- */

static pb_any *any_new(struct arena *a)
{
    static const pb_any init =
        OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__INIT;
    pb_any *v = arena_alloc(a, sizeof(*v));

    if (v) {
        *v = init;
    }
    return v;
}

static pb_kv *kv_new(struct arena *a, const char *key, pb_any *value)
{
    static const pb_kv init = OPENTELEMETRY__PROTO__COMMON__V1__KEY_VALUE__INIT;
    pb_kv *kv;

    if (!value) {
        return NULL;
    }
    kv = arena_alloc(a, sizeof(*kv));
    if (kv) {
        *kv = init;
        kv->key = (char *)key;
        kv->value = value;
    }
    return kv;
}

static pb_any *any_string(struct arena *a, const char *s)
{
    pb_any *v = any_new(a);

    if (v) {
        v->value_case =
            OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE;
        v->string_value = (char *)s;
    }
    return v;
}

static pb_any *any_int(struct arena *a, int64_t n)
{
    pb_any *v = any_new(a);

    if (v) {
        v->value_case =
            OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_INT_VALUE;
        v->int_value = n;
    }
    return v;
}

static pb_any *any_bool(struct arena *a, bool b)
{
    pb_any *v = any_new(a);

    if (v) {
        v->value_case =
            OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_BOOL_VALUE;
        v->bool_value = b;
    }
    return v;
}

static pb_any *any_double(struct arena *a, double d)
{
    pb_any *v = any_new(a);

    if (v) {
        v->value_case =
            OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_DOUBLE_VALUE;
        v->double_value = d;
    }
    return v;
}

/* True when |d| is integral and fits int64 (NaN fails the range test). */
static bool double_to_int64(double d, int64_t *out)
{
    if (!(d >= -9223372036854775808.0 && d < 9223372036854775808.0)) {
        return false;
    }
    if ((double)(int64_t)d != d) {
        return false;
    }
    *out = (int64_t)d;
    return true;
}

static pb_any *any_from_json(struct arena *a, const cJSON *j);

/* A kvlist of the members of |obj|; JSON null members are left out. */
static int kvs_from_json(struct arena *a, const cJSON *obj, pb_kv ***out,
                         size_t *n_out)
{
    size_t n = 0;
    pb_kv **kvs;

    *out = NULL;
    *n_out = 0;
    for (const cJSON *c = obj->child; c; c = c->next) {
        n++;
    }
    if (n == 0) {
        return O2L_OK;
    }
    kvs = arena_alloc(a, n * sizeof(*kvs));
    if (!kvs) {
        return O2L_ENOMEM;
    }
    n = 0;
    for (const cJSON *c = obj->child; c; c = c->next) {
        if (cJSON_IsNull(c) || !c->string) {
            continue;
        }
        kvs[n] = kv_new(a, c->string, any_from_json(a, c));
        if (!kvs[n]) {
            return O2L_ENOMEM;
        }
        n++;
    }
    *out = kvs;
    *n_out = n;
    return O2L_OK;
}

static pb_any *array_from_json(struct arena *a, const cJSON *arr)
{
    static const pb_array init =
        OPENTELEMETRY__PROTO__COMMON__V1__ARRAY_VALUE__INIT;
    pb_any *v = any_new(a);
    pb_array *av = arena_alloc(a, sizeof(*av));
    size_t n = 0;

    if (!v || !av) {
        return NULL;
    }
    *av = init;
    for (const cJSON *c = arr->child; c; c = c->next) {
        n++;
    }
    if (n > 0) {
        av->values = arena_alloc(a, n * sizeof(*av->values));
        if (!av->values) {
            return NULL;
        }
    }
    /* A null element keeps its place as an empty value. */
    for (const cJSON *c = arr->child; c; c = c->next) {
        av->values[av->n_values] = any_from_json(a, c);
        if (!av->values[av->n_values]) {
            return NULL;
        }
        av->n_values++;
    }
    v->value_case =
        OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_ARRAY_VALUE;
    v->array_value = av;
    return v;
}

static pb_any *kvlist_from_json(struct arena *a, const cJSON *obj)
{
    static const pb_kvlist init =
        OPENTELEMETRY__PROTO__COMMON__V1__KEY_VALUE_LIST__INIT;
    pb_any *v = any_new(a);
    pb_kvlist *kl = arena_alloc(a, sizeof(*kl));

    if (!v || !kl) {
        return NULL;
    }
    *kl = init;
    if (kvs_from_json(a, obj, &kl->values, &kl->n_values) != O2L_OK) {
        return NULL;
    }
    v->value_case =
        OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_KVLIST_VALUE;
    v->kvlist_value = kl;
    return v;
}

/* A raw item holds an integer too large for a cJSON number. */
static pb_any *raw_from_json(struct arena *a, const cJSON *j)
{
    const char *s = j->valuestring ? j->valuestring : "";
    char *end = NULL;
    long long n;

    errno = 0;
    n = strtoll(s, &end, 10);
    if (errno == 0 && end != s && *end == '\0') {
        return any_int(a, (int64_t)n);
    }
    return any_string(a, s);
}

/* The decoder's cJSON form of a value back as an AnyValue (span.h).
 * Returns NULL when out of memory. */
static pb_any *any_from_json(struct arena *a, const cJSON *j)
{
    int64_t n;

    if (cJSON_IsString(j)) {
        return any_string(a, j->valuestring);
    }
    if (cJSON_IsBool(j)) {
        return any_bool(a, cJSON_IsTrue(j));
    }
    if (cJSON_IsNumber(j)) {
        return double_to_int64(j->valuedouble, &n)
                   ? any_int(a, n)
                   : any_double(a, j->valuedouble);
    }
    if (cJSON_IsRaw(j)) {
        return raw_from_json(a, j);
    }
    if (cJSON_IsArray(j)) {
        return array_from_json(a, j);
    }
    if (cJSON_IsObject(j)) {
        return kvlist_from_json(a, j);
    }
    return any_new(a);
}

/* ---- redaction of what is forwarded --------------------------------- */

/*
 * The attribute object |attrs| as it is forwarded: with mapping.redact
 * set and something in it to redact, a redacted copy owned by |a|.
 */
static int redact_attrs(struct arena *a, const struct o2l_map_config *map,
                        const cJSON *attrs, const cJSON **out)
{
    cJSON *copy;

    *out = attrs;
    if (!o2l_map_redact_needed(map, attrs)) {
        return O2L_OK;
    }
    copy = cJSON_Duplicate(attrs, true);
    if (!copy || arena_own_tree(a, copy) != O2L_OK) {
        return O2L_ENOMEM;
    }
    *out = copy;
    return o2l_map_redact(map, &copy);
}

/* The kvlist of the attribute object |attrs| as forwarded (NULL: none),
 * with mapping.redact applied. */
static int forwarded_kvs(struct arena *a, const struct o2l_map_config *map,
                         const cJSON *attrs, pb_kv ***out, size_t *n_out)
{
    const cJSON *fwd;
    int rc;

    if (!attrs) {
        return O2L_OK;
    }
    rc = redact_attrs(a, map, attrs, &fwd);
    return rc == O2L_OK ? kvs_from_json(a, fwd, out, n_out) : rc;
}

/* ---- resource and scope ------------------------------------------------ */

static int build_scope(struct enc *e, size_t index)
{
    static const pb_resource res_init =
        OPENTELEMETRY__PROTO__RESOURCE__V1__RESOURCE__INIT;
    static const pb_scope scope_init =
        OPENTELEMETRY__PROTO__COMMON__V1__INSTRUMENTATION_SCOPE__INIT;
    const struct o2l_scope *sc = &e->ex->scopes[index];
    struct scope_msgs *out = &e->scopes[index];
    pb_resource *res = arena_alloc(&e->shared, sizeof(*res));
    pb_scope *scope = arena_alloc(&e->shared, sizeof(*scope));
    int rc;

    if (!res || !scope) {
        return O2L_ENOMEM;
    }
    *res = res_init;
    *scope = scope_init;
    rc = forwarded_kvs(&e->shared, e->map, sc->resource_attrs, &res->attributes,
                       &res->n_attributes);
    if (rc == O2L_OK) {
        rc = forwarded_kvs(&e->shared, e->map, sc->attrs, &scope->attributes,
                           &scope->n_attributes);
    }
    if (rc != O2L_OK) {
        return rc;
    }
    scope->name = sc->name ? sc->name : "";
    scope->version = sc->version ? sc->version : "";
    out->resource = res;
    out->scope = scope;
    return O2L_OK;
}

/* ---- one span's attributes --------------------------------------------- */

struct attr_list {
    struct arena *a;
    pb_kv **kv;
    size_t n;
    size_t cap;
};

static int put_any(struct attr_list *l, const char *key, pb_any *v)
{
    pb_kv *kv = kv_new(l->a, key, v);

    if (!kv) {
        return O2L_ENOMEM;
    }
    if (l->n < l->cap) {
        l->kv[l->n++] = kv;
    }
    return O2L_OK;
}

/* |s| NULL: nothing to write. */
static int put_str(struct attr_list *l, const char *key, const char *s)
{
    return s ? put_any(l, key, any_string(l->a, s)) : O2L_OK;
}

/* Writes |text| (from cJSON's allocator, NULL when that failed), taking
 * it. */
static int put_printed(struct attr_list *l, const char *key, char *text)
{
    if (!text || arena_own(l->a, text) != O2L_OK) {
        return O2L_ENOMEM;
    }
    return put_str(l, key, text);
}

/* A string as it is, anything else as compact JSON text. */
static int put_value(struct attr_list *l, const char *key, const cJSON *v)
{
    if (!v || cJSON_IsNull(v)) {
        return O2L_OK;
    }
    if (cJSON_IsString(v)) {
        return put_str(l, key, v->valuestring);
    }
    return put_printed(l, key, cJSON_PrintUnformatted(v));
}

/* An object as JSON text when it has members. */
static int put_object(struct attr_list *l, const char *key, const cJSON *v)
{
    if (!v || !v->child) {
        return O2L_OK;
    }
    return put_printed(l, key, cJSON_PrintUnformatted(v));
}

static int put_time(struct attr_list *l, const char *key, uint64_t ns)
{
    char *iso;

    if (ns == 0) {
        return O2L_OK;
    }
    iso = arena_alloc(l->a, O2L_ISO_LEN);
    if (!iso) {
        return O2L_ENOMEM;
    }
    return put_str(l, key, o2l_iso_time(ns, iso));
}

/* The mapped tags are strings, so their array converts to a string
 * array as it is. */
static int put_tags(struct attr_list *l, const cJSON *tags)
{
    if (!tags || !tags->child) {
        return O2L_OK;
    }
    return put_any(l, "langfuse.trace.tags", array_from_json(l->a, tags));
}

/* Keys Langfuse reads from the span first; the bridge writes its own
 * answer for each, so an original value under one never passes. */
static const char *const owned_keys[] = {
    "langfuse.observation.type",
    "langfuse.observation.level",
    "langfuse.observation.status_message",
    "langfuse.observation.input",
    "langfuse.observation.output",
    "langfuse.observation.metadata",
    "langfuse.observation.model.name",
    "langfuse.observation.model.parameters",
    "langfuse.observation.usage_details",
    "langfuse.observation.cost_details",
    "langfuse.observation.completion_start_time",
    "langfuse.observation.prompt.name",
    "langfuse.observation.prompt.version",
    "langfuse.version",
    "langfuse.environment",
    "langfuse.trace.name",
    "langfuse.user.id",
    "langfuse.session.id",
    "langfuse.trace.tags",
    "langfuse.release",
    "langfuse.trace.public",
    "langfuse.trace.metadata",
    /* Written on the true root only: no other span may
     * carry an original one. */
    "langfuse.trace.input",
    "langfuse.trace.output",
};

/* The raw model and cost keys the map stage reads (besides the explicit
 * langfuse.* ones); genkit:name counts only on model spans. */
static const char *const model_cost_keys[] = {
    "gen_ai.response.model",   "ai.model.id",
    "gen_ai.request.model",    "llm.response.model",
    "llm.model_name",          "model",
    "llm.response.model_name", "llm.request.model_name",
    "embedding.model_name",    "ai.response.model",
    "mlflow.llm.model",        "gen_ai.usage.cost",
    "mlflow.llm.cost",
};

static bool in_list(const char *key, const char *const *list, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(key, list[i]) == 0) {
            return true;
        }
    }
    return false;
}

/* What one observation's span needs to decide about its attributes. */
struct item_ctx {
    const struct o2l_observation *o;
    const struct o2l_span *span;
    const struct o2l_trace *trace;
    struct trace_info *ti;
    bool root;
    bool prompt;
    unsigned flags;
};

static bool is_model_cost_key(const struct item_ctx *c, const char *key)
{
    const char *subtype;

    if (in_list(key, model_cost_keys, O2L_ARRAY_LEN(model_cost_keys)) ||
        o2l_mu_starts(key, "llm.cost.")) {
        return true;
    }
    if (strcmp(key, "genkit:name") == 0) {
        subtype = o2l_mu_str(c->span->attrs, "genkit:metadata:subtype");
        return subtype && strcmp(subtype, "model") == 0;
    }
    return false;
}

/* An original attribute that goes to observation metadata instead. */
static bool moves_to_metadata(const struct item_ctx *c, const char *key)
{
    if ((c->flags & OBS_USAGE_DROPPED) && is_model_cost_key(c, key)) {
        return true;
    }
    return (c->flags & OBS_MOVE_OPERATION) &&
           strcmp(key, "gen_ai.operation.name") == 0;
}

/* Whether an original attribute is forwarded as it came. */
static bool keeps_original(const struct item_ctx *c, const char *key)
{
    if (o2l_mu_starts(key, "langfuse.")) {
        if (in_list(key, owned_keys, O2L_ARRAY_LEN(owned_keys))) {
            return false;
        }
        /* Only the true root may act as a root. */
        if (c->o->parent_id[0] &&
            strcmp(key, "langfuse.internal.as_root") == 0) {
            return false;
        }
        /* Langfuse drops an observation with a broken prompt pair. */
        if (!c->prompt && o2l_mu_starts(key, "langfuse.prompt.")) {
            return false;
        }
    }
    if (!c->prompt &&
        strcmp(key, "ai.telemetry.metadata.langfusePrompt") == 0) {
        return false;
    }
    return !moves_to_metadata(c, key);
}

/* The observation metadata, with the attributes that move into it. */
static int put_metadata(struct attr_list *l, const struct item_ctx *c)
{
    const char *key = "langfuse.observation.metadata";
    cJSON *md;
    char *text;

    if (!c->span || !(c->flags & (OBS_USAGE_DROPPED | OBS_MOVE_OPERATION))) {
        return put_object(l, key, c->o->metadata);
    }
    md = c->o->metadata ? cJSON_Duplicate(c->o->metadata, 1)
                        : cJSON_CreateObject();
    if (!md) {
        return O2L_ENOMEM;
    }
    for (const cJSON *a = c->span->attrs->child; a; a = a->next) {
        cJSON *dup;

        if (!a->string || !moves_to_metadata(c, a->string) ||
            cJSON_GetObjectItemCaseSensitive(md, a->string)) {
            continue;
        }
        dup = cJSON_Duplicate(a, 1);
        if (!dup) {
            cJSON_Delete(md);
            return O2L_ENOMEM;
        }
        cJSON_AddItemToObject(md, a->string, dup);
    }
    text = md->child ? cJSON_PrintUnformatted(md) : NULL;
    if (md->child && !text) {
        cJSON_Delete(md);
        return O2L_ENOMEM;
    }
    cJSON_Delete(md);
    return text ? put_printed(l, key, text) : O2L_OK;
}

static int put_observation(struct attr_list *l, const struct item_ctx *c)
{
    const struct o2l_observation *o = c->o;
    int rc;

    rc = put_str(l, "langfuse.observation.type", o2l_obs_type_name(o->type));
    if (rc == O2L_OK) {
        rc = put_str(l, "langfuse.observation.level", o2l_level_name(o->level));
    }
    if (rc == O2L_OK) {
        rc = put_str(l, "langfuse.observation.status_message",
                     o->status_message);
    }
    if (rc == O2L_OK) {
        rc = put_value(l, "langfuse.observation.input", o->input);
    }
    if (rc == O2L_OK) {
        rc = put_value(l, "langfuse.observation.output", o->output);
    }
    if (rc == O2L_OK) {
        rc = put_metadata(l, c);
    }
    if (rc == O2L_OK) {
        rc = put_str(l, "langfuse.observation.model.name", o->model);
    }
    if (rc == O2L_OK) {
        rc = put_object(l, "langfuse.observation.model.parameters",
                        o->model_parameters);
    }
    if (rc == O2L_OK && o->usage_details) {
        rc = put_printed(l, "langfuse.observation.usage_details",
                         cJSON_PrintUnformatted(o->usage_details));
    } else if (rc == O2L_OK && (c->flags & OBS_USAGE_DROPPED)) {
        rc = put_str(l, "langfuse.observation.usage_details", "{}");
    }
    if (rc == O2L_OK) {
        rc =
            put_object(l, "langfuse.observation.cost_details", o->cost_details);
    }
    if (rc == O2L_OK) {
        rc = put_time(l, "langfuse.observation.completion_start_time",
                      o->completion_start_ns);
    }
    if (rc == O2L_OK && c->prompt) {
        rc = put_str(l, "langfuse.observation.prompt.name", o->prompt_name);
        if (rc == O2L_OK) {
            rc = put_any(l, "langfuse.observation.prompt.version",
                         any_int(l->a, o->prompt_version));
        }
    }
    if (rc == O2L_OK) {
        rc = put_str(l, "langfuse.version", o->version);
    }
    if (rc == O2L_OK) {
        rc = put_str(l, "langfuse.environment",
                     o->environment ? o->environment
                     : c->trace     ? c->trace->environment
                                    : NULL);
    }
    return rc;
}

static int put_trace(struct attr_list *l, const struct item_ctx *c)
{
    const struct o2l_trace *t = c->trace;
    struct trace_info *ti = c->ti;
    int rc;

    if (!t) {
        return O2L_OK;
    }
    if (!ti->metadata_done && t->metadata && t->metadata->child) {
        ti->metadata_text = cJSON_PrintUnformatted(t->metadata);
        if (!ti->metadata_text) {
            return O2L_ENOMEM;
        }
    }
    ti->metadata_done = true;

    rc = put_str(l, "langfuse.trace.name", t->name);
    if (rc == O2L_OK) {
        rc = put_str(l, "langfuse.user.id", t->user_id);
    }
    if (rc == O2L_OK) {
        rc = put_str(l, "langfuse.session.id", t->session_id);
    }
    if (rc == O2L_OK) {
        rc = put_tags(l, t->tags);
    }
    if (rc == O2L_OK) {
        rc = put_str(l, "langfuse.release", t->release);
    }
    if (rc == O2L_OK && t->public_flag >= 0) {
        rc = put_any(l, "langfuse.trace.public",
                     any_bool(l->a, t->public_flag == 1));
    }
    if (rc == O2L_OK) {
        rc = put_str(l, "langfuse.trace.metadata", ti->metadata_text);
    }
    if (rc == O2L_OK && c->root) {
        rc = put_value(l, "langfuse.trace.input", t->input);
        if (rc == O2L_OK) {
            rc = put_value(l, "langfuse.trace.output", t->output);
        }
    }
    return rc;
}

static int put_originals(struct attr_list *l, const struct item_ctx *c,
                         const struct o2l_map_config *map)
{
    const cJSON *attrs;
    int rc = redact_attrs(l->a, map, c->span->attrs, &attrs);

    for (const cJSON *a = attrs->child; a && rc == O2L_OK; a = a->next) {
        if (!a->string || cJSON_IsNull(a) || !keeps_original(c, a->string)) {
            continue;
        }
        rc = put_any(l, a->string, any_from_json(l->a, a));
    }
    return rc;
}

/* ---- one ResourceSpans ------------------------------------------------- */

/* |n| bytes from 2n hex digits at |s|; false when they are not hex. */
static bool hex_bytes(const char *s, uint8_t *out, size_t n)
{
    size_t got = 0;

    return o2l_otlp_hex_decode(s, 2 * n, out, n, &got) && got == n;
}

/* The ids of one output span, in bytes. */
struct span_ids {
    uint8_t trace[16];
    uint8_t span[8];
    uint8_t parent[8];
    bool has_parent;
};

static void fill_ids(const struct item_ctx *c, bool child, struct span_ids *ids)
{
    const struct o2l_observation *o = c->o;
    uint8_t digest[32];

    memset(ids, 0, sizeof(*ids));
    if (!hex_bytes(o->trace_id, ids->trace, sizeof(ids->trace)) && c->span) {
        hex_bytes(c->span->trace_id, ids->trace, sizeof(ids->trace));
    }
    if (child) {
        /* The first 8 bytes of SHA-256 over the id text. */
        o2l_mu_sha256(o->id, strlen(o->id), digest);
        memcpy(ids->span, digest, sizeof(ids->span));
    } else {
        hex_bytes(o->id, ids->span, sizeof(ids->span));
    }
    ids->has_parent = strlen(o->parent_id) == 16 &&
                      hex_bytes(o->parent_id, ids->parent, sizeof(ids->parent));
}

static int build_events(struct arena *a, const struct o2l_map_config *map,
                        const struct o2l_span *s, pb_span *sp)
{
    static const pb_event init =
        OPENTELEMETRY__PROTO__TRACE__V1__SPAN__EVENT__INIT;
    int rc;

    if (s->n_events == 0) {
        return O2L_OK;
    }
    sp->events = arena_alloc(a, s->n_events * sizeof(*sp->events));
    if (!sp->events) {
        return O2L_ENOMEM;
    }
    for (size_t i = 0; i < s->n_events; i++) {
        const struct o2l_span_event *ev = &s->events[i];
        pb_event *pe = arena_alloc(a, sizeof(*pe));

        if (!pe) {
            return O2L_ENOMEM;
        }
        *pe = init;
        pe->time_unix_nano = ev->time_ns;
        pe->name = ev->name ? ev->name : "";
        rc = forwarded_kvs(a, map, ev->attrs, &pe->attributes,
                           &pe->n_attributes);
        if (rc != O2L_OK) {
            return rc;
        }
        sp->events[sp->n_events++] = pe;
    }
    return O2L_OK;
}

/* The links as received: their ids are never rewritten. */
static int build_links(struct arena *a, const struct o2l_map_config *map,
                       const struct o2l_span *s, pb_span *sp)
{
    static const pb_link init =
        OPENTELEMETRY__PROTO__TRACE__V1__SPAN__LINK__INIT;
    int rc;

    if (s->n_links == 0) {
        return O2L_OK;
    }
    sp->links = arena_alloc(a, s->n_links * sizeof(*sp->links));
    if (!sp->links) {
        return O2L_ENOMEM;
    }
    for (size_t i = 0; i < s->n_links; i++) {
        const struct o2l_span_link *l = &s->links[i];
        pb_link *pl = arena_alloc(a, sizeof(*pl));
        uint8_t *ids = arena_alloc(a, 16 + 8);

        if (!pl || !ids) {
            return O2L_ENOMEM;
        }
        *pl = init;
        if (!hex_bytes(l->trace_id, ids, 16) ||
            !hex_bytes(l->span_id, ids + 16, 8)) {
            continue; /* the decoder never keeps such a link */
        }
        pl->trace_id.data = ids;
        pl->trace_id.len = 16;
        pl->span_id.data = ids + 16;
        pl->span_id.len = 8;
        pl->trace_state = l->trace_state ? l->trace_state : "";
        pl->dropped_attributes_count = l->dropped_attributes_count;
        pl->flags = l->flags;
        rc =
            forwarded_kvs(a, map, l->attrs, &pl->attributes, &pl->n_attributes);
        if (rc != O2L_OK) {
            return rc;
        }
        sp->links[sp->n_links++] = pl;
    }
    return O2L_OK;
}

static int build_attrs(struct enc *e, const struct item_ctx *c, bool child,
                       pb_span *sp)
{
    struct attr_list l = {&e->item, NULL, 0, LF_ATTRS_MAX};
    bool originals = !child && c->span && e->keep_original;
    int rc;

    if (originals) {
        for (const cJSON *a = c->span->attrs->child; a; a = a->next) {
            l.cap++;
        }
    }
    l.kv = arena_alloc(&e->item, l.cap * sizeof(*l.kv));
    if (!l.kv) {
        return O2L_ENOMEM;
    }
    rc = put_observation(&l, c);
    if (rc == O2L_OK) {
        rc = put_trace(&l, c);
    }
    e->item_mapped = l.n;
    if (rc == O2L_OK && originals) {
        rc = put_originals(&l, c, e->map);
    }
    sp->attributes = l.kv;
    sp->n_attributes = l.n;
    return rc;
}

static int build_span(struct enc *e, const struct item_ctx *c, bool child,
                      const struct span_ids *ids, pb_span *sp)
{
    static const pb_status status_init =
        OPENTELEMETRY__PROTO__TRACE__V1__STATUS__INIT;
    const struct o2l_observation *o = c->o;
    const struct o2l_span *s = c->span;
    pb_status *st;

    sp->trace_id.data = (uint8_t *)ids->trace;
    sp->trace_id.len = sizeof(ids->trace);
    sp->span_id.data = (uint8_t *)ids->span;
    sp->span_id.len = sizeof(ids->span);
    if (ids->has_parent) {
        sp->parent_span_id.data = (uint8_t *)ids->parent;
        sp->parent_span_id.len = sizeof(ids->parent);
    }
    sp->name = o->name ? o->name : (!child && s) ? s->name : "";
    if (child) {
        /* A zero-length span at the event's time. */
        sp->kind = SPAN_KIND_INTERNAL;
        sp->start_time_unix_nano = o->start_ns;
        sp->end_time_unix_nano = o->start_ns;
    } else if (s) {
        sp->kind = (Opentelemetry__Proto__Trace__V1__Span__SpanKind)s->kind;
        sp->start_time_unix_nano = s->start_ns;
        sp->end_time_unix_nano = s->end_ns;
        sp->trace_state = s->trace_state ? s->trace_state : "";
        sp->flags = s->flags;
    } else {
        sp->start_time_unix_nano = o->start_ns;
        sp->end_time_unix_nano = o->end_ns ? o->end_ns : o->start_ns;
    }
    if (!child && s &&
        (s->status_code != O2L_STATUS_UNSET || s->status_message)) {
        st = arena_alloc(&e->item, sizeof(*st));
        if (!st) {
            return O2L_ENOMEM;
        }
        *st = status_init;
        st->code =
            (Opentelemetry__Proto__Trace__V1__Status__StatusCode)s->status_code;
        st->message = s->status_message ? s->status_message : "";
        sp->status = st;
    }
    if (!child && s && build_events(&e->item, e->map, s, sp) != O2L_OK) {
        return O2L_ENOMEM;
    }
    if (!child && s && build_links(&e->item, e->map, s, sp) != O2L_OK) {
        return O2L_ENOMEM;
    }
    return build_attrs(e, c, child, sp);
}

/* ---- the size guard --------------------------------------------------- */

/* The mapped values that may be replaced with a marker, and the word for
 * each. */
static const struct {
    const char *key;
    const char *what;
    bool object; /* JSON text of an object: the marker stays an object */
} trim_keys[] = {
    {"langfuse.observation.input", "input", false},
    {"langfuse.observation.output", "output", false},
    {"langfuse.observation.metadata", "metadata", true},
    {"langfuse.trace.input", "trace input", false},
    {"langfuse.trace.output", "trace output", false},
    {"langfuse.trace.metadata", "trace metadata", true},
};

/* Values no longer than this are never replaced (encode.h). */
#define TRIM_MIN_LEN (O2L_TRIM_MARKER_MAX + 64)

/* A key named in a marker is cut to this many bytes. */
#define TRIM_KEY_MAX 64

/* One string value the size guard may replace. */
struct trim_cand {
    pb_any *v;        /* a string value of this item's own messages */
    size_t len;       /* its length */
    const char *what; /* a trim_keys word, or the attribute's key */
    bool object;      /* the marker goes inside an object */
    bool original;    /* forwarded as received, not a langfuse.* value */
    size_t order;     /* position in the item, for a stable order */
};

struct trim_list {
    struct trim_cand *c;
    size_t n;
    size_t cap;
};

static int trim_add(struct trim_list *l, pb_any *v, const char *what,
                    bool object, bool original)
{
    size_t len;

    if (!v || v->value_case != ANY_STRING || !v->string_value) {
        return O2L_OK;
    }
    len = strlen(v->string_value);
    if (len <= TRIM_MIN_LEN) {
        return O2L_OK;
    }
    if (o2l_grow(&l->c, &l->cap, l->n, sizeof(*l->c), 16) != O2L_OK) {
        return O2L_ENOMEM;
    }
    l->c[l->n] = (struct trim_cand){v, len, what, object, original, l->n};
    l->n++;
    return O2L_OK;
}

/* Deeper strings stay: no item nests that far in practice. */
#define TRIM_MAX_DEPTH 64

/* Every string inside the forwarded value |v| of attribute |key|. */
static int trim_add_value(struct trim_list *l, pb_any *v, const char *key,
                          unsigned depth)
{
    int rc = O2L_OK;

    if (!v || depth > TRIM_MAX_DEPTH) {
        return O2L_OK;
    }
    if (v->value_case == ANY_STRING) {
        return trim_add(l, v, key, false, true);
    }
    if (v->value_case == ANY_ARRAY && v->array_value) {
        for (size_t i = 0; i < v->array_value->n_values && rc == O2L_OK; i++) {
            rc = trim_add_value(l, v->array_value->values[i], key, depth + 1);
        }
    } else if (v->value_case == ANY_KVLIST && v->kvlist_value) {
        for (size_t i = 0; i < v->kvlist_value->n_values && rc == O2L_OK; i++) {
            rc = trim_add_value(l, v->kvlist_value->values[i]->value, key,
                                depth + 1);
        }
    }
    return rc;
}

static int trim_add_kvs(struct trim_list *l, pb_kv **kvs, size_t n)
{
    int rc = O2L_OK;

    for (size_t i = 0; i < n && rc == O2L_OK; i++) {
        rc = trim_add_value(l, kvs[i]->value, kvs[i]->key, 0);
    }
    return rc;
}

/*
 * The values of span |sp| the guard may replace: the mapped input, output
 * and metadata values among its first |n_mapped| attributes, and every
 * string of what it forwards as received (its other attributes, those of
 * its events and links). The resource and scope are shared by the
 * items of a request and are left alone.
 */
static int trim_collect(pb_span *sp, size_t n_mapped, struct trim_list *l)
{
    int rc = O2L_OK;

    for (size_t i = 0; i < sp->n_attributes && rc == O2L_OK; i++) {
        pb_kv *kv = sp->attributes[i];

        if (i >= n_mapped) {
            rc = trim_add_value(l, kv->value, kv->key, 0);
            continue;
        }
        for (size_t k = 0; k < O2L_ARRAY_LEN(trim_keys); k++) {
            if (strcmp(kv->key, trim_keys[k].key) == 0) {
                rc = trim_add(l, kv->value, trim_keys[k].what,
                              trim_keys[k].object, false);
                break;
            }
        }
    }
    for (size_t i = 0; i < sp->n_events && rc == O2L_OK; i++) {
        rc = trim_add_kvs(l, sp->events[i]->attributes,
                          sp->events[i]->n_attributes);
    }
    for (size_t i = 0; i < sp->n_links && rc == O2L_OK; i++) {
        rc = trim_add_kvs(l, sp->links[i]->attributes,
                          sp->links[i]->n_attributes);
    }
    return rc;
}

/* Largest first; of equal ones the forwarded copy before the mapped
 * value Langfuse shows; then in item order. */
static int trim_cmp(const void *pa, const void *pb)
{
    const struct trim_cand *a = pa;
    const struct trim_cand *b = pb;

    if (a->len != b->len) {
        return a->len > b->len ? -1 : 1;
    }
    if (a->original != b->original) {
        return a->original ? -1 : 1;
    }
    return a->order < b->order ? -1 : a->order > b->order;
}

/* Replaces candidate |c| with the marker. Returns the new length, or
 * SIZE_MAX when out of memory. */
static size_t trim_one(struct arena *a, const struct trim_cand *c, size_t max)
{
    char marker[O2L_TRIM_MARKER_MAX];
    char what[TRIM_KEY_MAX + 1];
    size_t cap = sizeof(marker) + sizeof(O2L_TRIM_METADATA_KEY) + 8;
    size_t n = strlen(c->what);
    char *text;

    /* A long key is cut where no UTF-8 sequence is split. */
    if (n > TRIM_KEY_MAX) {
        n = TRIM_KEY_MAX;
        while (n > 0 && ((unsigned char)c->what[n] & 0xc0) == 0x80) {
            n--;
        }
    }
    memcpy(what, c->what, n);
    what[n] = '\0';
    snprintf(marker, sizeof(marker), O2L_TRIM_MARKER_FMT, what, c->len, max);
    text = arena_alloc(a, cap);
    if (!text) {
        return SIZE_MAX;
    }
    if (c->object) {
        /* The words of a mapped value hold nothing JSON would escape. */
        snprintf(text, cap, "{\"%s\":\"%s\"}", O2L_TRIM_METADATA_KEY, marker);
    } else {
        snprintf(text, cap, "%s", marker);
    }
    c->v->string_value = text;
    return strlen(text);
}

/*
 * The ingestion path's rule for OTLP items: while |rs| packs to more than
 * |max| bytes, the largest value the guard may replace (trim_collect())
 * gives way to the shared marker. An item still too big after that (its
 * resource, say) is sent as it is.
 */
static int trim_item(struct arena *a, const pb_resource_spans *rs, pb_span *sp,
                     size_t n_mapped, size_t max)
{
    struct trim_list l = {0};
    size_t size = protobuf_c_message_get_packed_size(&rs->base);
    size_t since_packed = 0;
    int rc;

    if (size <= max) {
        return O2L_OK;
    }
    rc = trim_collect(sp, n_mapped, &l);
    if (rc == O2L_OK && l.n > 1) {
        qsort(l.c, l.n, sizeof(*l.c), trim_cmp);
    }
    for (size_t i = 0; rc == O2L_OK && i < l.n && size > max; i++) {
        size_t now = trim_one(a, &l.c[i], max);

        if (now == SIZE_MAX) {
            rc = O2L_ENOMEM;
            break;
        }
        /*
         * An upper bound: the length prefixes around the value shrink
         * too. Near the limit the item is measured again, so no more is
         * replaced than needed.
         */
        size -= l.c[i].len - now;
        since_packed++;
        if (size > max && size - max <= 64 * since_packed) {
            size = protobuf_c_message_get_packed_size(&rs->base);
            since_packed = 0;
        }
    }
    o2l_free(l.c);
    return rc;
}

/* Packs |rs| and appends it as one item of |out|. */
static int append_item(const pb_resource_spans *rs,
                       const struct o2l_observation *o,
                       struct o2l_event_list *out)
{
    char env_id[sizeof(o->trace_id) + sizeof(o->id) + 2];
    struct o2l_event *ev;
    unsigned char *buf;
    size_t len;
    int rc;

    rc = o2l_event_list_reserve(out, 1);
    if (rc != O2L_OK) {
        return rc;
    }
    len = protobuf_c_message_get_packed_size(&rs->base);
    buf = o2l_malloc(len + 1);
    if (!buf) {
        return O2L_ENOMEM;
    }
    protobuf_c_message_pack(&rs->base, buf);
    buf[len] = '\0';

    ev = &out->items[out->len];
    memset(ev, 0, sizeof(*ev));
    snprintf(env_id, sizeof(env_id), "%s-%s", o->trace_id, o->id);
    ev->id = o2l_strdup(env_id);
    if (!ev->id) {
        o2l_free(buf);
        return O2L_ENOMEM;
    }
    ev->json = (char *)buf;
    ev->len = len;
    ev->otlp = true;
    snprintf(ev->span_id, sizeof(ev->span_id), "%.16s", o->id);
    out->len++;
    return O2L_OK;
}

static int encode_one(struct enc *e, size_t i, struct o2l_event_list *out)
{
    static const pb_resource_spans rs_init =
        OPENTELEMETRY__PROTO__TRACE__V1__RESOURCE_SPANS__INIT;
    static const pb_scope_spans ss_init =
        OPENTELEMETRY__PROTO__TRACE__V1__SCOPE_SPANS__INIT;
    static const pb_span span_init =
        OPENTELEMETRY__PROTO__TRACE__V1__SPAN__INIT;
    const struct o2l_observation *o = &e->m->obs[i];
    bool child = is_span_event(o);
    struct item_ctx c;
    struct span_ids ids;
    pb_resource_spans rs = rs_init;
    pb_scope_spans ss = ss_init;
    pb_scope_spans *ss_list[1] = {&ss};
    pb_span sp = span_init;
    pb_span *sp_list[1] = {&sp};
    int rc;

    memset(&c, 0, sizeof(c));
    c.o = o;
    c.span = e->obs_span[i];
    if (e->obs_trace[i] != SIZE_MAX) {
        c.trace = &e->m->traces[e->obs_trace[i]];
        c.ti = &e->traces[e->obs_trace[i]];
        c.root = c.ti->root == i;
    }
    /* Langfuse links prompts to generations only. */
    c.prompt = o->type == O2L_OBS_GENERATION && o->prompt_name;
    c.flags = e->obs_flags[i];
    fill_ids(&c, child, &ids);

    if (c.span && c.span->scope < e->ex->n_scopes) {
        size_t k = c.span->scope;

        if (!e->scopes[k].resource) {
            rc = build_scope(e, k);
            if (rc != O2L_OK) {
                goto out;
            }
        }
        rs.resource = e->scopes[k].resource;
        ss.scope = e->scopes[k].scope;
    }
    rc = build_span(e, &c, child, &ids, &sp);
    if (rc != O2L_OK) {
        goto out;
    }
    ss.n_spans = 1;
    ss.spans = sp_list;
    rs.n_scope_spans = 1;
    rs.scope_spans = ss_list;
    rc = trim_item(&e->item, &rs, &sp, e->item_mapped, e->max_item_bytes);
    if (rc == O2L_OK) {
        rc = append_item(&rs, o, out);
    }

out:
    arena_reset(&e->item);
    return rc;
}

int o2l_encode_otlp(const struct o2l_export *ex, const struct o2l_mapped *m,
                    const struct o2l_otlp_out_config *cfg,
                    struct o2l_event_list *out)
{
    struct enc e;
    int rc;

    if (!m || m->n_obs == 0) {
        return O2L_OK;
    }
    rc = enc_init(&e, ex, m, cfg);
    if (rc == O2L_OK) {
        rc = o2l_event_list_reserve(out, m->n_obs);
    }
    for (size_t i = 0; i < m->n_obs && rc == O2L_OK; i++) {
        rc = encode_one(&e, i, out);
    }
    enc_free(&e);
    return rc;
}

/* ---- requests ---------------------------------------------------------- */

static size_t varint_len(uint64_t v)
{
    size_t n = 1;

    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static size_t varint_put(uint64_t v, unsigned char *p)
{
    size_t n = 0;

    while (v >= 0x80) {
        p[n++] = (unsigned char)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (unsigned char)v;
    return n;
}

int o2l_otlp_request(const struct o2l_event *items, size_t n,
                     unsigned char **out, size_t *out_len)
{
    size_t total = 0;
    size_t pos = 0;
    unsigned char *p;

    for (size_t i = 0; i < n; i++) {
        total += 1 + varint_len(items[i].len) + items[i].len;
    }
    p = o2l_malloc(total ? total : 1);
    if (!p) {
        return O2L_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        p[pos++] = REQUEST_ITEM_TAG;
        pos += varint_put(items[i].len, p + pos);
        if (items[i].len > 0) {
            memcpy(p + pos, items[i].json, items[i].len);
        }
        pos += items[i].len;
    }
    *out = p;
    *out_len = pos;
    return O2L_OK;
}
