/* SPDX-License-Identifier: Apache-2.0 */
/*
 * mapper.c - the map stage's driver: groups spans by trace (after custom
 * trace ids), maps each span and its events, then applies the rules that
 * look at the whole trace: agent usage, trace facts, environment and
 * envelope ids.
 */
#include "o2l/mapper.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "o2l/common.h"
#include "o2l/map_conv.h"
#include "o2l/map_util.h"

/* Longest trace name Langfuse accepts, in code points. */
#define TRACE_NAME_MAX 1000

static const char *const default_control_flow[] = {
    "GraphInterrupt", "NodeInterrupt", "GraphBubbleUp",
    "ParentCommand",  "Command",       NULL};

static const char *const default_thread_id_keys[] = {"thread_id", NULL};

/*
 * Instrumentation scopes of the conventions in the mapping reference.
 * The bare "opentelemetry.instrumentation." is left out on purpose: the
 * HTTP and database instrumentations of OpenTelemetry Python share it.
 * Other LLM instrumentations are still recognised by their keys.
 */
static const char *const default_llm_scopes[] = {
    "langfuse-sdk",
    "ai",
    "@ai-sdk/",
    "pydantic-ai",
    "logfire",
    "gcp.vertex.agent",
    "livekit-agents",
    "genkit-tracer",
    "@flue/opentelemetry",
    "openinference",
    "@arizeai/openinference",
    "@traceloop/",
    "traceloop",
    "opentelemetry.instrumentation.openai",
    "opentelemetry.instrumentation.anthropic",
    "opentelemetry.instrumentation.bedrock",
    "opentelemetry.instrumentation.vertexai",
    "opentelemetry.instrumentation.google_generativeai",
    "opentelemetry.instrumentation.google_genai",
    "opentelemetry.instrumentation.cohere",
    "opentelemetry.instrumentation.mistralai",
    "opentelemetry.instrumentation.ollama",
    "opentelemetry.instrumentation.groq",
    "opentelemetry.instrumentation.langchain",
    "opentelemetry.instrumentation.llamaindex",
    "opentelemetry.instrumentation.crewai",
    "strands",
    "mlflow",
    "semantic_kernel",
    "Microsoft.SemanticKernel",
    "langsmith",
    NULL};

static const char *const default_llm_key_prefixes[] = {
    "langfuse.",    "gen_ai.", "llm.",        "openinference.",
    "traceloop.",   "ai.",     "input.value", "output.value",
    "mlflow.",      "genkit:", "lk.",         "gcp.vertex.agent.",
    "pydantic_ai.", "flue.",   "langsmith.",  "embedding.",
    "retrieval.",   "tool.",   NULL};

void o2l_map_config_defaults(struct o2l_map_config *cfg)
{
    cfg->session_from_thread_id = true;
    cfg->control_flow_exceptions = default_control_flow;
    cfg->trace_id_attribute = "langfuse.trace.id";
    cfg->max_flattened_slots = 10000;
    cfg->thread_id_keys = default_thread_id_keys;
    cfg->drop_non_llm_spans = false;
    cfg->llm_scopes = default_llm_scopes;
    cfg->llm_key_prefixes = default_llm_key_prefixes;
    cfg->redact = NULL;
    cfg->redact_marker = O2L_MAP_REDACT_MARKER;
}

/* One span on its way through the driver. */
struct sref {
    const struct o2l_span *s;
    const struct o2l_scope *scope;
    char eff[33]; /* trace id after custom trace ids */
    bool dropped; /* mapping.non_llm_spans = drop: no observation */
    struct o2l_observation *obs; /* NULL for a dropped span */
};

/* The spans of one trace: a range of the sorted array, with the true
 * root (if any) first in the order trace facts are collected. */
struct group {
    struct sref *refs;
    size_t n;
    size_t root; /* index of the true root, or n when there is none */
    const struct o2l_map_config *cfg;
};

static int cmp_orig(const void *a, const void *b)
{
    const struct sref *x = a;
    const struct sref *y = b;
    int c = strcmp(x->s->trace_id, y->s->trace_id);

    if (c != 0) {
        return c;
    }
    if (x->s->start_ns != y->s->start_ns) {
        return x->s->start_ns < y->s->start_ns ? -1 : 1;
    }
    return strcmp(x->s->span_id, y->s->span_id);
}

static int cmp_eff(const void *a, const void *b)
{
    const struct sref *x = a;
    const struct sref *y = b;
    int c = strcmp(x->eff, y->eff);

    if (c != 0) {
        return c;
    }
    if (x->s->start_ns != y->s->start_ns) {
        return x->s->start_ns < y->s->start_ns ? -1 : 1;
    }
    c = strcmp(x->s->span_id, y->s->span_id);
    return c != 0 ? c : strcmp(x->s->trace_id, y->s->trace_id);
}

static void group_init(struct group *g, struct sref *refs, size_t n,
                       const struct o2l_map_config *cfg)
{
    g->refs = refs;
    g->n = n;
    g->cfg = cfg;
    g->root = n;
    for (size_t i = 0; i < n; i++) {
        if (!refs[i].s->parent_id[0]) {
            g->root = i; /* sorted: earliest start, then lowest id */
            break;
        }
    }
}

/* The k-th span in collection order: the true root, then the others by
 * start time and span id. */
static struct sref *group_at(const struct group *g, size_t k)
{
    if (g->root == g->n) {
        return &g->refs[k];
    }
    if (k == 0) {
        return &g->refs[g->root];
    }
    return &g->refs[k - 1 < g->root ? k - 1 : k];
}

/* ---- non-LLM spans ----------------------------------------------------- */

static bool starts_with_any(const char *s, const char *const *prefixes)
{
    for (size_t i = 0; prefixes && prefixes[i]; i++) {
        if (o2l_mu_starts(s, prefixes[i])) {
            return true;
        }
    }
    return false;
}

/* mapping.llm_scopes and mapping.llm_key_prefixes. */
static bool is_llm_span(const struct sref *r, const struct o2l_map_config *cfg)
{
    if (starts_with_any(r->scope->name, cfg->llm_scopes)) {
        return true;
    }
    for (const cJSON *a = r->s->attrs->child; a; a = a->next) {
        if (a->string && starts_with_any(a->string, cfg->llm_key_prefixes)) {
            return true;
        }
    }
    return false;
}

/* ---- custom trace ids -------------------------------------------------- */

static bool is_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char c = s[i];

        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
              (c >= 'A' && c <= 'F'))) {
            return false;
        }
    }
    return true;
}

static bool is_uuid(const char *s)
{
    if (strlen(s) != 36) {
        return false;
    }
    for (size_t i = 0; i < 36; i++) {
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;

        if (dash ? s[i] != '-' : !is_hex(s + i, 1)) {
            return false;
        }
    }
    return true;
}

/* The trace id a seed value stands for; false when it gives none. */
static bool derive_trace_id(const char *seed, char out[33])
{
    static const char hex[] = "0123456789abcdef";
    uint8_t digest[32];
    size_t n = 0;

    if (!seed[0]) {
        return false;
    }
    if (is_uuid(seed) || (strlen(seed) == 32 && is_hex(seed, 32))) {
        for (const char *p = seed; *p; p++) {
            if (*p != '-') {
                char c = *p;

                out[n++] = (c >= 'A' && c <= 'F') ? (char)(c + 32) : c;
            }
        }
    } else {
        o2l_mu_sha256(seed, strlen(seed), digest);
        for (size_t i = 0; i < 16; i++) {
            out[n++] = hex[digest[i] >> 4];
            out[n++] = hex[digest[i] & 15];
        }
    }
    out[32] = '\0';
    return strspn(out, "0") != 32;
}

/* Finds the custom trace id of one original trace and sets eff. */
static int custom_trace_id(const struct group *g)
{
    const char *key = g->cfg->trace_id_attribute;
    char id[33];
    char *text = NULL;
    bool found = false;
    int rc;

    for (size_t k = 0; key && key[0] && k < g->n && !found; k++) {
        const cJSON *v = o2l_mu_get(group_at(g, k)->s->attrs, key);

        if (!o2l_mu_usable(v) ||
            !(cJSON_IsString(v) || cJSON_IsNumber(v) || cJSON_IsRaw(v))) {
            continue;
        }
        rc = o2l_mu_text(v, &text);
        if (rc != O2L_OK) {
            return rc;
        }
        found = derive_trace_id(text, id);
        o2l_free(text);
        text = NULL;
    }
    for (size_t i = 0; i < g->n; i++) {
        snprintf(g->refs[i].eff, sizeof(g->refs[i].eff), "%s",
                 found ? id : g->refs[i].s->trace_id);
    }
    return O2L_OK;
}

/* ---- agent spans do not double count ---------------------------------- */

static uint64_t hash_id(const char *s)
{
    uint64_t h = 1469598103934665603ULL;

    while (*s) {
        h = (h ^ (unsigned char)*s++) * 1099511628211ULL;
    }
    return h;
}

/* Open addressing table from span id to group index + 1. */
struct id_index {
    size_t *slots;
    size_t mask;
};

static int index_build(struct id_index *ix, const struct group *g)
{
    size_t cap = 16;

    while (cap < g->n * 2) {
        cap *= 2;
    }
    ix->slots = o2l_calloc(cap, sizeof(*ix->slots));
    if (!ix->slots) {
        return O2L_ENOMEM;
    }
    ix->mask = cap - 1;
    for (size_t i = 0; i < g->n; i++) {
        size_t h = (size_t)hash_id(g->refs[i].s->span_id) & ix->mask;

        while (ix->slots[h] && strcmp(g->refs[ix->slots[h] - 1].s->span_id,
                                      g->refs[i].s->span_id) != 0) {
            h = (h + 1) & ix->mask;
        }
        if (!ix->slots[h]) {
            ix->slots[h] = i + 1;
        }
    }
    return O2L_OK;
}

static size_t index_find(const struct id_index *ix, const struct group *g,
                         const char *id)
{
    size_t h;

    if (!id[0]) {
        return SIZE_MAX;
    }
    h = (size_t)hash_id(id) & ix->mask;
    while (ix->slots[h]) {
        if (strcmp(g->refs[ix->slots[h] - 1].s->span_id, id) == 0) {
            return ix->slots[h] - 1;
        }
        h = (h + 1) & ix->mask;
    }
    return SIZE_MAX;
}

/* Marks agent operations; true for spans the agent rule applies to. */
static bool is_agent_span(const struct sref *r)
{
    const char *op = o2l_mu_str(r->s->attrs, "gen_ai.operation.name");

    r->obs->agent_operation = op && (strcmp(op, "invoke_agent") == 0 ||
                                     strcmp(op, "agent_step") == 0);
    return r->obs->type == O2L_OBS_AGENT || r->obs->agent_operation;
}

static int agent_rule(const struct group *g)
{
    struct id_index ix = {NULL, 0};
    bool *below = NULL; /* has a descendant that carries usage */
    int rc;

    rc = index_build(&ix, g);
    if (rc != O2L_OK) {
        goto out;
    }
    below = o2l_calloc(g->n, sizeof(*below));
    if (!below) {
        rc = O2L_ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < g->n; i++) {
        const struct o2l_observation *o = g->refs[i].obs;
        size_t p;

        /* Dropped spans still link their children to their ancestors. */
        if (!o ||
            (o->type != O2L_OBS_GENERATION && o->type != O2L_OBS_EMBEDDING) ||
            !o->usage_details) {
            continue;
        }
        /* Each ancestor is marked once: linear in the trace, and safe
         * against parent cycles. */
        p = index_find(&ix, g, g->refs[i].s->parent_id);
        while (p != SIZE_MAX && !below[p]) {
            below[p] = true;
            p = index_find(&ix, g, g->refs[p].s->parent_id);
        }
    }
    for (size_t i = 0; i < g->n; i++) {
        struct o2l_observation *o = g->refs[i].obs;

        if (o && is_agent_span(&g->refs[i]) && below[i]) {
            o->usage_dropped = true;
            cJSON_Delete(o->usage_details);
            cJSON_Delete(o->cost_details);
            o2l_free(o->model);
            o->usage_details = NULL;
            o->cost_details = NULL;
            o->model = NULL;
        }
    }

out:
    o2l_free(below);
    o2l_free(ix.slots);
    return rc;
}

/* ---- trace facts ------------------------------------------------------- */

enum fact_src {
    FS_ATTR = 0, /* span attribute */
    FS_RES,      /* resource attribute */
    FS_META,     /* flat "<json>.<sub>" key, else <sub> in the JSON <json> */
    FS_LIFTED    /* key of the span's observation metadata */
};

struct fact_key {
    enum fact_src src;
    const char *key;
    const char *json;
    const char *sub;
};

#define ATTR(k)                                                                \
    {                                                                          \
        FS_ATTR, k, NULL, NULL                                                 \
    }
#define LIFTED(k)                                                              \
    {                                                                          \
        FS_LIFTED, k, NULL, NULL                                               \
    }
#define OBS_META(s)                                                            \
    {                                                                          \
        FS_META, "langfuse.observation.metadata." s,                           \
            "langfuse.observation.metadata", s                                 \
    }
#define TRACE_META(s)                                                          \
    {                                                                          \
        FS_META, "langfuse.trace.metadata." s, "langfuse.trace.metadata", s    \
    }

static const struct fact_key user_keys[] = {
    ATTR("langfuse.user.id"),
    ATTR("user.id"),
    OBS_META("langfuse_user_id"),
    TRACE_META("langfuse_user_id"),
    ATTR("ai.telemetry.metadata.userId"),
    ATTR("ai.settings.context.userId"),
    LIFTED("langfuse_user_id"),
    LIFTED("user_id"),
    ATTR("enduser.id")};

static const struct fact_key session_keys[] = {
    ATTR("langfuse.session.id"),
    ATTR("session.id"),
    ATTR("gen_ai.conversation.id"),
    OBS_META("langfuse_session_id"),
    TRACE_META("langfuse_session_id"),
    ATTR("ai.telemetry.metadata.sessionId"),
    ATTR("ai.settings.context.sessionId"),
    LIFTED("langfuse_session_id"),
    LIFTED("session_id")}; /* then mapping.thread_id_keys */

static const struct fact_key tag_keys[] = {ATTR("langfuse.trace.tags"),
                                           ATTR("langfuse.tags"),
                                           OBS_META("langfuse_tags"),
                                           TRACE_META("langfuse_tags"),
                                           ATTR("ai.telemetry.metadata.tags"),
                                           ATTR("ai.settings.context.tags"),
                                           ATTR("tag.tags"),
                                           LIFTED("langfuse_tags")};

/*
 * The value of |k| on span |r|. *tmp receives a parsed object that owns
 * the value when it came from JSON text; the caller frees it.
 */
static int fact_value(const struct sref *r, const struct fact_key *k,
                      const cJSON **out, cJSON **tmp)
{
    const cJSON *v = NULL;
    int rc = O2L_OK;

    *tmp = NULL;
    switch (k->src) {
    case FS_ATTR:
        v = o2l_mu_get(r->s->attrs, k->key);
        break;
    case FS_RES:
        v = o2l_mu_get(r->scope->resource_attrs, k->key);
        break;
    case FS_LIFTED:
        v = r->obs ? o2l_mu_get(r->obs->metadata, k->key) : NULL;
        break;
    case FS_META:
        v = o2l_mu_get(r->s->attrs, k->key);
        if (!o2l_mu_usable(v)) {
            rc = o2l_mu_object(o2l_mu_get(r->s->attrs, k->json), tmp);
            v = o2l_mu_get(*tmp, k->sub);
        }
        break;
    }
    *out = o2l_mu_usable(v) ? v : NULL;
    return rc;
}

/* The first usable scalar of |keys| (key by key, span by span) as text. */
static int fact_text(const struct group *g, const struct fact_key *keys,
                     size_t n_keys, char **out)
{
    const cJSON *v;
    cJSON *tmp = NULL;
    int rc = O2L_OK;

    *out = NULL;
    for (size_t i = 0; i < n_keys && !*out && rc == O2L_OK; i++) {
        for (size_t k = 0; k < g->n && !*out && rc == O2L_OK; k++) {
            rc = fact_value(group_at(g, k), &keys[i], &v, &tmp);
            if (rc == O2L_OK && v && !cJSON_IsArray(v) && !cJSON_IsObject(v)) {
                rc = o2l_mu_text(v, out);
            }
            cJSON_Delete(tmp);
        }
    }
    return rc;
}

struct tag_set {
    char **items;
    size_t n;
    size_t cap;
};

/* Adds |len| bytes at |s|, trimmed; empty tags are dropped. */
static int tag_add(struct tag_set *t, const char *s, size_t len)
{
    while (len > 0 && (*s == ' ' || *s == '\t' || *s == '\n')) {
        s++;
        len--;
    }
    while (len > 0 &&
           (s[len - 1] == ' ' || s[len - 1] == '\t' || s[len - 1] == '\n')) {
        len--;
    }
    if (len == 0) {
        return O2L_OK;
    }
    if (o2l_grow(&t->items, &t->cap, t->n, sizeof(*t->items), 8) != O2L_OK) {
        return O2L_ENOMEM;
    }
    t->items[t->n] = o2l_strndup(s, len);
    if (!t->items[t->n]) {
        return O2L_ENOMEM;
    }
    t->n++;
    return O2L_OK;
}

static int tag_add_element(struct tag_set *t, const cJSON *el)
{
    char *text = NULL;
    int rc;

    if (cJSON_IsString(el)) {
        return tag_add(t, el->valuestring, strlen(el->valuestring));
    }
    rc = o2l_mu_text(el, &text);
    if (rc == O2L_OK && text) {
        rc = tag_add(t, text, strlen(text));
    }
    o2l_free(text);
    return rc;
}

static int tag_add_value(struct tag_set *t, const cJSON *v)
{
    cJSON *parsed = NULL;
    const cJSON *el;
    const char *s;
    const char *comma;
    int rc = O2L_OK;

    if (cJSON_IsString(v) &&
        v->valuestring[strspn(v->valuestring, " \t")] == '[') {
        rc = o2l_mu_value(v, false, &parsed);
        if (rc != O2L_OK) {
            return rc;
        }
        if (cJSON_IsArray(parsed)) {
            v = parsed;
        }
    }
    if (cJSON_IsArray(v)) {
        cJSON_ArrayForEach(el, v)
        {
            rc = tag_add_element(t, el);
            if (rc != O2L_OK) {
                break;
            }
        }
    } else if (cJSON_IsString(v)) {
        for (s = v->valuestring; rc == O2L_OK; s = comma + 1) {
            comma = strchr(s, ',');
            if (!comma) {
                rc = tag_add(t, s, strlen(s));
                break;
            }
            rc = tag_add(t, s, (size_t)(comma - s));
        }
    } else if (v) {
        rc = tag_add_element(t, v);
    }
    cJSON_Delete(parsed);
    return rc;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int trace_tags(const struct group *g, struct o2l_trace *t)
{
    struct tag_set set = {NULL, 0, 0};
    const cJSON *v;
    cJSON *tmp = NULL;
    cJSON *arr = NULL;
    int rc = O2L_OK;

    for (size_t k = 0; k < g->n && rc == O2L_OK; k++) {
        for (size_t i = 0; i < O2L_ARRAY_LEN(tag_keys) && rc == O2L_OK; i++) {
            rc = fact_value(&g->refs[k], &tag_keys[i], &v, &tmp);
            if (rc == O2L_OK && v) {
                rc = tag_add_value(&set, v);
            }
            cJSON_Delete(tmp);
        }
    }
    if (rc != O2L_OK || set.n == 0) {
        goto out;
    }
    qsort(set.items, set.n, sizeof(*set.items), cmp_str);
    arr = cJSON_CreateArray();
    if (!arr) {
        rc = O2L_ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < set.n; i++) {
        cJSON *s;

        if (i > 0 && strcmp(set.items[i], set.items[i - 1]) == 0) {
            continue;
        }
        s = cJSON_CreateString(set.items[i]);
        if (!s || !cJSON_AddItemToArray(arr, s)) {
            cJSON_Delete(s);
            rc = O2L_ENOMEM;
            goto out;
        }
    }
    t->tags = arr;
    arr = NULL;

out:
    cJSON_Delete(arr);
    for (size_t i = 0; i < set.n; i++) {
        o2l_free(set.items[i]);
    }
    o2l_free(set.items);
    return rc;
}

/* The span's own environment: each key on the span, then the resource. */
static const char *explicit_environment(const struct sref *r)
{
    static const char *const keys[] = {"langfuse.environment",
                                       "deployment.environment.name",
                                       "deployment.environment"};
    const char *v;

    for (size_t i = 0; i < O2L_ARRAY_LEN(keys); i++) {
        v = o2l_mu_str(r->s->attrs, keys[i]);
        if (!v) {
            v = o2l_mu_str(r->scope->resource_attrs, keys[i]);
        }
        if (v) {
            return v;
        }
    }
    return NULL;
}

/* A span with a parent that asks to be treated as a root. Langfuse would
 * build a whole trace from it, so none of its own values may become the
 * trace's (only true or "true" counts, as for the public flag). */
static bool flagged_as_root(const struct sref *r)
{
    const cJSON *v = o2l_mu_get(r->s->attrs, "langfuse.internal.as_root");

    return r->s->parent_id[0] &&
           (cJSON_IsTrue(v) ||
            (cJSON_IsString(v) && strcmp(v->valuestring, "true") == 0));
}

static int trace_environment(const struct group *g, struct o2l_trace *t)
{
    const char *raw = NULL;

    for (size_t k = 0; k < g->n && !raw; k++) {
        const struct sref *r = group_at(g, k);

        if (!flagged_as_root(r)) {
            raw = explicit_environment(r);
        }
    }
    return o2l_mu_environment(raw, &t->environment);
}

/* name, input, output: explicit keys, else the true root's. */
static int trace_name_io(const struct group *g, struct o2l_trace *t)
{
    static const struct fact_key name_key[] = {ATTR("langfuse.trace.name")};
    const struct o2l_observation *root =
        g->root < g->n ? g->refs[g->root].obs : NULL;
    const char *io_keys[2] = {"langfuse.trace.input", "langfuse.trace.output"};
    cJSON **io[2] = {&t->input, &t->output};
    const cJSON *root_io[2] = {root ? root->input : NULL,
                               root ? root->output : NULL};
    int rc;

    rc = fact_text(g, name_key, 1, &t->name);
    if (rc == O2L_OK && !t->name && root && root->name) {
        t->name = o2l_strdup(root->name);
        rc = t->name ? O2L_OK : O2L_ENOMEM;
    }
    if (rc == O2L_OK && t->name) {
        t->name[o2l_mu_utf8_prefix(t->name, TRACE_NAME_MAX)] = '\0';
    }
    for (size_t side = 0; side < 2 && rc == O2L_OK; side++) {
        for (size_t k = 0; k < g->n && !*io[side] && rc == O2L_OK; k++) {
            rc = o2l_mu_value(
                o2l_mu_get(group_at(g, k)->s->attrs, io_keys[side]), false,
                io[side]);
        }
        if (rc == O2L_OK && *io[side] &&
            o2l_map_is_redacted(g->cfg, io_keys[side])) {
            cJSON_Delete(*io[side]);
            rc = o2l_map_marker(g->cfg, io[side]);
        }
        if (rc == O2L_OK && !*io[side] && root_io[side]) {
            *io[side] = cJSON_Duplicate(root_io[side], 1);
            rc = *io[side] ? O2L_OK : O2L_ENOMEM;
        }
    }
    return rc;
}

/* langfuse.trace.metadata (JSON and .<key>) of the spans, the true root
 * first, then of the resources; the first value of a key wins. */
static int trace_metadata(const struct group *g, struct o2l_trace *t)
{
    cJSON *md = cJSON_CreateObject();
    cJSON *obj = NULL;
    int rc = O2L_OK;

    if (!md) {
        return O2L_ENOMEM;
    }
    for (size_t pass = 0; pass < 2 && rc == O2L_OK; pass++) {
        for (size_t k = 0; k < g->n && rc == O2L_OK; k++) {
            const struct sref *r = group_at(g, k);
            const cJSON *attrs =
                pass == 0 ? r->s->attrs : r->scope->resource_attrs;

            rc = o2l_mu_object(o2l_mu_get(attrs, "langfuse.trace.metadata"),
                               &obj);
            rc = rc == O2L_OK ? o2l_mu_merge(md, obj) : rc;
            obj = NULL;
            if (rc == O2L_OK) {
                rc = o2l_map_add_prefixed(attrs, "langfuse.trace.metadata.",
                                          NULL, md);
            }
        }
    }
    if (rc == O2L_OK && md->child) {
        t->metadata = md;
        md = NULL;
    }
    cJSON_Delete(md);
    /* trace-create also carries the root observation's metadata. */
    if (rc == O2L_OK && g->root < g->n && g->refs[g->root].obs &&
        g->refs[g->root].obs->metadata) {
        t->ingest_metadata = cJSON_Duplicate(g->refs[g->root].obs->metadata, 1);
        rc = t->ingest_metadata ? O2L_OK : O2L_ENOMEM;
    }
    return rc;
}

static int trace_misc(const struct group *g, struct o2l_trace *t)
{
    static const struct fact_key release_keys[] = {
        ATTR("langfuse.release"), {FS_RES, "langfuse.release", NULL, NULL}};
    static const struct fact_key version_key[] = {ATTR("langfuse.version")};
    static const struct fact_key public_keys[] = {ATTR("langfuse.trace.public"),
                                                  ATTR("langfuse.public")};
    const struct o2l_observation *root =
        g->root < g->n ? g->refs[g->root].obs : NULL;
    char *pub = NULL;
    int rc;

    rc = fact_text(g, release_keys, O2L_ARRAY_LEN(release_keys), &t->release);
    if (rc == O2L_OK && root && root->version) {
        t->version = o2l_strdup(root->version);
        rc = t->version ? O2L_OK : O2L_ENOMEM;
    } else if (rc == O2L_OK) {
        rc = fact_text(g, version_key, 1, &t->version);
    }
    if (rc == O2L_OK) {
        rc = fact_text(g, public_keys, O2L_ARRAY_LEN(public_keys), &pub);
    }
    t->public_flag = pub ? strcmp(pub, "true") == 0 : -1;
    o2l_free(pub);
    return rc;
}

/* The session: the fixed keys, then each of mapping.thread_id_keys in
 * the lifted metadata (when mapping.session_from_thread_id is on). */
static int trace_session(const struct group *g, struct o2l_trace *t)
{
    const char *const *thread = g->cfg->thread_id_keys;
    int rc;

    rc =
        fact_text(g, session_keys, O2L_ARRAY_LEN(session_keys), &t->session_id);
    for (size_t i = 0; g->cfg->session_from_thread_id && thread && thread[i] &&
                       rc == O2L_OK && !t->session_id;
         i++) {
        struct fact_key k = LIFTED(thread[i]);

        rc = fact_text(g, &k, 1, &t->session_id);
    }
    return rc;
}

static int trace_facts(const struct group *g, struct o2l_trace *t)
{
    const struct sref *first = g->root < g->n ? &g->refs[g->root] : g->refs;
    int rc;

    snprintf(t->id, sizeof(t->id), "%s", first->eff);
    snprintf(t->envelope_id, sizeof(t->envelope_id), "%s-trace-%s", first->eff,
             first->s->span_id);
    /* The true root's start, else the earliest (the group is sorted). */
    t->timestamp_ns = first->s->start_ns;
    t->envelope_ns = 0;
    for (size_t i = 0; i < g->n; i++) {
        if (g->refs[i].s->end_ns > t->envelope_ns) {
            t->envelope_ns = g->refs[i].s->end_ns;
        }
    }
    t->public_flag = -1;

    rc = fact_text(g, user_keys, O2L_ARRAY_LEN(user_keys), &t->user_id);
    if (rc == O2L_OK) {
        rc = trace_session(g, t);
    }
    if (rc == O2L_OK) {
        rc = trace_tags(g, t);
    }
    if (rc == O2L_OK) {
        rc = trace_name_io(g, t);
    }
    if (rc == O2L_OK) {
        rc = trace_environment(g, t);
    }
    if (rc == O2L_OK) {
        rc = trace_misc(g, t);
    }
    if (rc == O2L_OK) {
        rc = trace_metadata(g, t);
    }
    return rc;
}

/* ---- the driver -------------------------------------------------------- */

static size_t events_out(const struct o2l_span *s)
{
    size_t n = 0;

    for (size_t i = 0; i < s->n_events; i++) {
        n += !o2l_conv_genai_is_content_event(s->events[i].name);
    }
    return n;
}

/* Maps one span and its events into consecutive observations; adds the
 * flattened keys it dropped to *flat_dropped. */
static int map_span(struct sref *r, const struct o2l_map_config *cfg,
                    struct o2l_observation *obs, size_t *used,
                    size_t *flat_dropped)
{
    struct o2l_map_ctx c;
    size_t k = 1;
    int rc;

    memset(&c, 0, sizeof(c));
    c.span = r->s;
    c.scope = r->scope;
    c.attrs = r->s->attrs;
    c.res = r->scope->resource_attrs;
    c.cfg = cfg;
    c.obs = obs;
    r->obs = obs;
    rc = o2l_map_observation(&c);
    *flat_dropped += c.flat_dropped;
    for (size_t i = 0; i < r->s->n_events && rc == O2L_OK; i++) {
        if (!o2l_conv_genai_is_content_event(r->s->events[i].name)) {
            rc = o2l_map_event(&c, i, &obs[k++]);
        }
    }
    *used = k;
    return rc;
}

/* Trace id, environment and the original id on every observation of the
 * group's range [first, last). */
static int finish_observations(const struct group *g, const struct o2l_trace *t,
                               struct o2l_observation *first,
                               struct o2l_observation *last)
{
    const char *orig;
    int rc;

    for (struct o2l_observation *o = first; o < last; o++) {
        snprintf(o->trace_id, sizeof(o->trace_id), "%s", t->id);
        o->environment = o2l_strdup(t->environment);
        if (!o->environment) {
            return O2L_ENOMEM;
        }
    }
    /* With a custom trace id, each observation keeps its original id. */
    for (size_t i = 0; i < g->n; i++) {
        struct o2l_observation *o = g->refs[i].obs;
        size_t n = 1 + events_out(g->refs[i].s);

        orig = g->refs[i].s->trace_id;
        if (!o || strcmp(orig, t->id) == 0) {
            continue;
        }
        for (size_t k = 0; k < n; k++) {
            if (!o[k].metadata) {
                o[k].metadata = cJSON_CreateObject();
                if (!o[k].metadata) {
                    return O2L_ENOMEM;
                }
            }
            rc = o2l_mu_add_str(o[k].metadata, "otel_trace_id", orig, false);
            if (rc != O2L_OK) {
                return rc;
            }
        }
    }
    return O2L_OK;
}

/* mapping.redact over what the trace and its observations carry. Runs
 * last, so that trace facts still read the lifted metadata as sent. */
static int redact_group(const struct group *g, struct o2l_trace *t,
                        struct o2l_observation *first,
                        struct o2l_observation *last)
{
    int rc = O2L_OK;

    for (struct o2l_observation *o = first; o < last && rc == O2L_OK; o++) {
        rc = o2l_map_redact(g->cfg, &o->input);
        rc = rc == O2L_OK ? o2l_map_redact(g->cfg, &o->output) : rc;
        rc = rc == O2L_OK ? o2l_map_redact(g->cfg, &o->metadata) : rc;
        rc = rc == O2L_OK ? o2l_map_redact(g->cfg, &o->model_parameters) : rc;
    }
    rc = rc == O2L_OK ? o2l_map_redact(g->cfg, &t->input) : rc;
    rc = rc == O2L_OK ? o2l_map_redact(g->cfg, &t->output) : rc;
    rc = rc == O2L_OK ? o2l_map_redact(g->cfg, &t->metadata) : rc;
    rc = rc == O2L_OK ? o2l_map_redact(g->cfg, &t->ingest_metadata) : rc;
    return rc;
}

static int map_group(struct group *g, struct o2l_trace *t,
                     struct o2l_observation *obs, size_t *n_obs,
                     size_t *flat_dropped)
{
    size_t pos = 0;
    size_t used;
    int rc = O2L_OK;

    for (size_t i = 0; i < g->n && rc == O2L_OK; i++) {
        if (g->refs[i].dropped) {
            continue;
        }
        rc = map_span(&g->refs[i], g->cfg, obs + pos, &used, flat_dropped);
        pos += used;
    }
    if (rc == O2L_OK) {
        rc = agent_rule(g);
    }
    if (rc == O2L_OK) {
        rc = trace_facts(g, t);
    }
    if (rc == O2L_OK) {
        rc = finish_observations(g, t, obs, obs + pos);
    }
    if (rc == O2L_OK) {
        rc = redact_group(g, t, obs, obs + pos);
    }
    *n_obs = pos;
    return rc;
}

/* Sorts by original trace and applies custom trace ids. */
static int assign_trace_ids(struct sref *refs, size_t n,
                            const struct o2l_map_config *cfg)
{
    struct group g;
    size_t a = 0;
    int rc;

    qsort(refs, n, sizeof(*refs), cmp_orig);
    while (a < n) {
        size_t b = a + 1;

        while (b < n && strcmp(refs[b].s->trace_id, refs[a].s->trace_id) == 0) {
            b++;
        }
        group_init(&g, refs + a, b - a, cfg);
        rc = custom_trace_id(&g);
        if (rc != O2L_OK) {
            return rc;
        }
        a = b;
    }
    qsort(refs, n, sizeof(*refs), cmp_eff);
    return O2L_OK;
}

int o2l_map_export(const struct o2l_export *ex,
                   const struct o2l_map_config *cfg, struct o2l_mapped **out)
{
    struct o2l_mapped *m;
    struct sref *refs = NULL;
    size_t n = 0;
    size_t total = 0;
    size_t groups = 0;
    size_t pos = 0;
    size_t a = 0;
    int rc;

    *out = NULL;
    m = o2l_calloc(1, sizeof(*m));
    if (!m) {
        return O2L_ENOMEM;
    }
    for (size_t i = 0; i < ex->n_spans; i++) {
        n += ex->spans[i].scope < ex->n_scopes;
    }
    if (n == 0) {
        *out = m;
        return O2L_OK;
    }
    refs = o2l_calloc(n, sizeof(*refs));
    if (!refs) {
        rc = O2L_ENOMEM;
        goto out;
    }
    n = 0;
    for (size_t i = 0; i < ex->n_spans; i++) {
        if (ex->spans[i].scope >= ex->n_scopes) {
            continue; /* a decoder bug; never index past the scopes */
        }
        refs[n].s = &ex->spans[i];
        refs[n].scope = &ex->scopes[ex->spans[i].scope];
        refs[n].dropped =
            cfg->drop_non_llm_spans && !is_llm_span(&refs[n], cfg);
        if (refs[n].dropped) {
            m->spans_dropped++;
        } else {
            total += 1 + events_out(&ex->spans[i]);
        }
        n++;
    }
    rc = assign_trace_ids(refs, n, cfg);
    if (rc != O2L_OK) {
        goto out;
    }
    /* A trace counts when one of its spans is kept. */
    for (size_t i = 0, kept = 0; i < n; i++) {
        kept = (i > 0 && strcmp(refs[i].eff, refs[i - 1].eff) == 0) ? kept : 0;
        groups += !refs[i].dropped && kept++ == 0;
    }
    if (groups == 0) {
        goto out;
    }
    m->obs = o2l_calloc(total, sizeof(*m->obs));
    m->traces = o2l_calloc(groups, sizeof(*m->traces));
    if (!m->obs || !m->traces) {
        rc = O2L_ENOMEM;
        goto out;
    }
    /* Zeroed entries are safe to free, so a failure part-way through
     * leaves nothing behind. */
    m->n_obs = total;
    m->n_traces = groups;

    for (size_t t = 0; t < groups;) {
        struct group g;
        size_t b = a + 1;
        size_t used = 0;
        bool kept = !refs[a].dropped;

        while (b < n && strcmp(refs[b].eff, refs[a].eff) == 0) {
            kept |= !refs[b].dropped;
            b++;
        }
        if (kept) {
            group_init(&g, refs + a, b - a, cfg);
            rc = map_group(&g, &m->traces[t++], m->obs + pos, &used,
                           &m->flattened_keys_dropped);
            if (rc != O2L_OK) {
                goto out;
            }
            pos += used;
        }
        a = b;
    }

out:
    o2l_free(refs);
    if (rc != O2L_OK) {
        o2l_mapped_free(m);
        return rc;
    }
    *out = m;
    return O2L_OK;
}
