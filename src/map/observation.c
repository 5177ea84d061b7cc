/* SPDX-License-Identifier: Apache-2.0 */
/*
 * observation.c - one span into one observation: type, name, times,
 * input/output, model fields, level and status message, metadata; and
 * span events into EVENT observations. Trace-wide rules (agent usage,
 * trace facts, environment, custom trace ids) live in mapper.c.
 */
#include "o2l/map_conv.h"

#include <stdio.h>
#include <math.h>
#include <string.h>

#include "o2l/common.h"
#include "o2l/map_util.h"

void o2l_map_mark_used(struct o2l_map_ctx *c, const char *key)
{
    if (c->n_used < O2L_MAP_USED_MAX) {
        c->used[c->n_used++] = key;
    }
}

/* Hashes eight bytes per step: keys are long and share prefixes. */
static size_t key_hash(const char *s)
{
    size_t len = strlen(s);
    uint64_t h = 0x9e3779b97f4a7c15ULL ^ len;
    uint64_t w;

    while (len >= 8) {
        memcpy(&w, s, 8);
        h = (h ^ w) * 0xff51afd7ed558ccdULL;
        h ^= h >> 32;
        s += 8;
        len -= 8;
    }
    w = 0;
    memcpy(&w, s, len);
    h = (h ^ w) * 0xc4ceb9fe1a85ec53ULL;
    return (size_t)(h ^ (h >> 29));
}

void o2l_map_index_build(struct o2l_map_ctx *c)
{
    size_t n = 0;
    size_t cap = 16;

    c->index_mask = 0;
    for (const cJSON *a = c->attrs->child; a; a = a->next) {
        n++;
    }
    while (cap < 2 * n) {
        cap *= 2;
    }
    if (cap > O2L_MAP_INDEX_SLOTS) {
        return;
    }
    memset(c->index, 0, cap * sizeof(c->index[0]));
    c->index_mask = cap - 1;
    for (const cJSON *a = c->attrs->child; a; a = a->next) {
        size_t h;

        if (!a->string) {
            continue;
        }
        h = key_hash(a->string) & c->index_mask;
        while (c->index[h] && strcmp(c->index[h]->string, a->string) != 0) {
            h = (h + 1) & c->index_mask;
        }
        if (!c->index[h]) {
            c->index[h] = a; /* the first of repeated keys, as cJSON does */
        }
    }
}

const cJSON *o2l_map_attr(const struct o2l_map_ctx *c, const char *key)
{
    size_t h;

    if (c->index_mask == 0) {
        return o2l_mu_get(c->attrs, key);
    }
    h = key_hash(key) & c->index_mask;
    while (c->index[h]) {
        if (strcmp(c->index[h]->string, key) == 0) {
            return c->index[h];
        }
        h = (h + 1) & c->index_mask;
    }
    return NULL;
}

const char *o2l_map_attr_str(const struct o2l_map_ctx *c, const char *key)
{
    const cJSON *v = o2l_map_attr(c, key);

    if (!cJSON_IsString(v) || !o2l_mu_usable(v)) {
        return NULL;
    }
    return v->valuestring;
}

int o2l_map_io_key(struct o2l_map_ctx *c, const char *key, bool unquote,
                   cJSON **out)
{
    int rc;

    rc = o2l_mu_passthrough(o2l_map_attr(c, key), unquote, out);
    if (rc == O2L_OK && *out) {
        o2l_map_mark_used(c, key);
    }
    return rc;
}

int o2l_map_add_prefixed(const cJSON *attrs, const char *prefix,
                         const char *const *skip, cJSON *md)
{
    size_t plen = strlen(prefix);
    cJSON *v;
    int rc;

    for (const cJSON *a = attrs->child; a; a = a->next) {
        const char *key = a->string;
        bool skipped = false;

        if (!key || strncmp(key, prefix, plen) != 0 || !key[plen]) {
            continue;
        }
        for (size_t i = 0; skip && skip[i]; i++) {
            skipped |= strcmp(skip[i], key + plen) == 0;
        }
        if (skipped) {
            continue;
        }
        rc = o2l_mu_value(a, false, &v);
        if (rc == O2L_OK && v) {
            rc = o2l_mu_add(md, key + plen, v, true);
        }
        if (rc != O2L_OK) {
            return rc;
        }
    }
    return O2L_OK;
}

/* ---- type and name ---------------------------------------------------- */

static enum o2l_obs_type decide_type(const struct o2l_map_ctx *c)
{
    static const char *const model_keys[] = {
        "langfuse.observation.model.name", "gen_ai.request.model",
        "gen_ai.response.model", "llm.model_name", "model"};
    enum o2l_obs_type t = O2L_OBS_SPAN;

    if (o2l_conv_langfuse_type(c, &t) ||         /* steps 0-1 */
        o2l_conv_openinference_type(c, &t) ||    /* step 2 */
        o2l_conv_openllmetry_type(c, &t) ||      /* step 3 */
        o2l_conv_misc_kind_type(c, &t) ||        /* step 3 */
        o2l_conv_genai_type(c, &t) ||            /* step 4 */
        o2l_conv_misc_late_type(c, &t) ||        /* steps 5-7 */
        o2l_conv_genai_tool_type(c, &t) ||       /* step 8 */
        o2l_conv_misc_tail_type(c, &t) ||        /* steps 9-10 */
        o2l_conv_openllmetry_task_type(c, &t)) { /* step 11 */
        return t;
    }
    for (size_t i = 0; i < O2L_ARRAY_LEN(model_keys); i++) {
        if (o2l_mu_usable(o2l_map_attr(c, model_keys[i]))) {
            return O2L_OBS_GENERATION; /* step 12 */
        }
    }
    return O2L_OBS_SPAN;
}

static int map_name(struct o2l_map_ctx *c)
{
    static const char *const keys[] = {"gen_ai.tool.name", "genkit:name",
                                       "logfire.msg", "ai.toolCall.name"};
    const cJSON *v = NULL;
    const char *op;
    const char *fn;
    char *text = NULL;
    size_t len;
    int rc;

    for (size_t i = 0; i < O2L_ARRAY_LEN(keys) && !v; i++) {
        v = o2l_map_attr(c, keys[i]);
        v = o2l_mu_usable(v) ? v : NULL;
    }
    op = o2l_map_attr_str(c, "ai.operationId");
    fn = o2l_map_attr_str(c, "ai.telemetry.functionId");
    if (!v && op && fn) {
        len = strlen(op) + strlen(fn) + 2;
        c->obs->name = o2l_malloc(len);
        if (!c->obs->name) {
            return O2L_ENOMEM;
        }
        snprintf(c->obs->name, len, "%s:%s", fn, op);
        return O2L_OK;
    }
    if (!v && op) {
        v = o2l_map_attr(c, "ai.operationId");
    }
    if (!v) {
        v = o2l_conv_openllmetry_name(c);
    }
    if (!v) {
        c->obs->name = o2l_strdup(c->span->name);
        return c->obs->name ? O2L_OK : O2L_ENOMEM;
    }
    rc = o2l_mu_text(v, &text);
    c->obs->name = text;
    return rc;
}

/* ---- metadata ---------------------------------------------------------- */

static int map_metadata(struct o2l_map_ctx *c)
{
    cJSON *md = cJSON_CreateObject();
    int rc;

    if (!md) {
        return O2L_ENOMEM;
    }
    rc = o2l_conv_langfuse_metadata(c, md);
    if (rc == O2L_OK) {
        rc = o2l_conv_misc_metadata(c, md);
    }
    if (rc == O2L_OK) {
        rc = o2l_conv_openinference_metadata(c, md);
    }
    if (rc == O2L_OK) {
        rc = o2l_conv_openllmetry_metadata(c, md);
    }
    if (rc == O2L_OK) {
        rc = o2l_conv_misc_late_metadata(c, md);
    }
    if (rc != O2L_OK || !md->child) {
        cJSON_Delete(md);
        return rc;
    }
    c->obs->metadata = md;
    return O2L_OK;
}

/* ---- input and output -------------------------------------------------- */

static int io_step(struct o2l_map_ctx *c, int step, bool output, cJSON **out)
{
    switch (step) {
    case 1:
        return o2l_conv_langfuse_io(c, output, out);
    case 3:
        return o2l_conv_misc_io_ai_sdk(c, output, out);
    case 5:
        return o2l_conv_genai_io_details_event(c, output, out);
    case 6:
        return o2l_conv_genai_io_message_events(c, output, out);
    case 7:
        return o2l_conv_genai_io_content_events(c, output, out);
    case 13:
        return o2l_conv_openllmetry_io_entity(c, output, out);
    case 14:
        return o2l_conv_openinference_io_value(c, output, out);
    case 18:
        return o2l_conv_openllmetry_io_prompt(c, output, out);
    case 19:
        return o2l_conv_openinference_io_messages(c, output, out);
    case 20:
        return o2l_conv_genai_io_messages(c, output, out);
    case 21:
        return o2l_conv_genai_io_tool_call(c, output, out);
    default:
        return o2l_conv_misc_io_step(c, step, output, out);
    }
}

/* True when a key marked used since |from| is listed in mapping.redact. */
static bool used_redacted(const struct o2l_map_ctx *c, size_t from)
{
    for (size_t i = from; i < c->n_used; i++) {
        if (o2l_map_is_redacted(c->cfg, c->used[i])) {
            return true;
        }
    }
    return false;
}

/* Replaces *v by the marker when |key| is redacted. */
static int redact_whole(const struct o2l_map_ctx *c, const char *key, cJSON **v)
{
    if (!*v || !o2l_map_is_redacted(c->cfg, key)) {
        return O2L_OK;
    }
    cJSON_Delete(*v);
    return o2l_map_marker(c->cfg, v);
}

static int map_side(struct o2l_map_ctx *c, bool output, cJSON **out)
{
    /* GENERATION reads the message lists (18-20) before raw values. */
    static const int gen_order[] = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11,
                                    12, 18, 19, 20, 13, 14, 15, 16, 17, 21};
    static const int plain_order[] = {1,  2,  3,  4,  5,  6,  7,
                                      8,  9,  10, 11, 12, 13, 14,
                                      15, 16, 17, 18, 19, 20, 21};
    const int *order =
        c->obs->type == O2L_OBS_GENERATION ? gen_order : plain_order;
    int rc = O2L_OK;

    *out = NULL;
    for (size_t i = 0; i < O2L_ARRAY_LEN(gen_order) && !*out; i++) {
        size_t from = c->n_used;

        rc = io_step(c, order[i], output, out);
        if (rc != O2L_OK) {
            cJSON_Delete(*out);
            *out = NULL;
            return rc;
        }
        if (*out && !o2l_mu_usable(*out)) {
            cJSON_Delete(*out);
            *out = NULL;
        }
        if (*out && used_redacted(c, from)) {
            /* Taken from a redacted attribute: nothing of it is kept. */
            cJSON_Delete(*out);
            return o2l_map_marker(c->cfg, out);
        }
    }
    /* OpenInference retrievers carry their result as documents. */
    if (output && !*out && c->obs->type == O2L_OBS_RETRIEVER) {
        rc = o2l_conv_openinference_documents(c, out);
    }
    return rc;
}

/* A tool list with JSON-string elements parsed; NULL unless non-empty. */
static int tool_list(struct o2l_map_ctx *c, const char *key, cJSON *v,
                     cJSON **out)
{
    cJSON *list;
    cJSON *el;
    int rc = O2L_OK;

    *out = NULL;
    if (!cJSON_IsArray(v) || !v->child) {
        return O2L_OK;
    }
    list = cJSON_CreateArray();
    if (!list) {
        return O2L_ENOMEM;
    }
    cJSON_ArrayForEach(el, v)
    {
        cJSON *t = NULL;

        rc = o2l_mu_value(el, false, &t);
        if (rc == O2L_OK && t && !cJSON_AddItemToArray(list, t)) {
            cJSON_Delete(t);
            rc = O2L_ENOMEM;
        }
        if (rc != O2L_OK) {
            cJSON_Delete(list);
            return rc;
        }
    }
    if (key) {
        o2l_map_mark_used(c, key);
    }
    *out = list;
    return O2L_OK;
}

/* Tool definitions of a GENERATION, from the first source that has
 * them. */
static int find_tools(struct o2l_map_ctx *c, cJSON **out)
{
    static const char *const keys[] = {"ai.prompt.tools",
                                       "gen_ai.tool.definitions"};
    cJSON *v = NULL;
    cJSON *tools;
    int rc;

    *out = NULL;
    for (size_t i = 0; i < O2L_ARRAY_LEN(keys); i++) {
        rc = o2l_mu_value(o2l_map_attr(c, keys[i]), false, &v);
        if (rc == O2L_OK) {
            rc = tool_list(c, keys[i], v, out);
        }
        cJSON_Delete(v);
        if (rc == O2L_OK) {
            rc = redact_whole(c, keys[i], out);
        }
        if (rc != O2L_OK || *out) {
            return rc;
        }
    }
    rc = o2l_mu_value(o2l_map_attr(c, "model_request_parameters"), false, &v);
    if (rc == O2L_OK) {
        rc = tool_list(c, NULL, (cJSON *)o2l_mu_get(v, "function_tools"), out);
    }
    cJSON_Delete(v);
    if (rc != O2L_OK || *out) {
        return rc;
    }
    rc = o2l_conv_openinference_tools(c, out);
    if (rc == O2L_OK && !*out) {
        rc = o2l_conv_openllmetry_functions(c, out);
    }
    if (rc != O2L_OK || *out) {
        return rc;
    }
    tools = cJSON_GetObjectItemCaseSensitive(c->obs->metadata, "tools");
    if (cJSON_IsArray(tools) && tools->child) {
        /* Moved: the definitions leave the metadata for the input. */
        *out = cJSON_DetachItemViaPointer(c->obs->metadata, tools);
    }
    return O2L_OK;
}

/* {messages: list, tools} or {prompt: input, tools}. */
static int add_tools_to_input(struct o2l_map_ctx *c)
{
    cJSON *tools = NULL;
    cJSON *wrap;
    cJSON *input = c->obs->input;
    int rc;

    rc = find_tools(c, &tools);
    if (rc != O2L_OK || !tools) {
        return rc;
    }
    wrap = cJSON_CreateObject();
    if (!wrap) {
        cJSON_Delete(tools);
        return O2L_ENOMEM;
    }
    if (input) {
        rc = o2l_mu_add(wrap, o2l_mu_is_list(input) ? "messages" : "prompt",
                        input, false);
        c->obs->input = NULL;
    }
    if (rc == O2L_OK) {
        rc = o2l_mu_add(wrap, "tools", tools, false);
    } else {
        cJSON_Delete(tools);
    }
    if (rc != O2L_OK) {
        cJSON_Delete(wrap);
        return rc;
    }
    c->obs->input = wrap;
    return O2L_OK;
}

/* ---- model, parameters, usage, cost ----------------------------------- */

static int map_model(struct o2l_map_ctx *c)
{
    static const char *const keys[] = {"langfuse.observation.model.name",
                                       "gen_ai.response.model",
                                       "ai.model.id",
                                       "gen_ai.request.model",
                                       "llm.response.model",
                                       "llm.model_name",
                                       "model",
                                       "genkit:name",
                                       "llm.response.model_name",
                                       "llm.request.model_name",
                                       "embedding.model_name",
                                       "ai.response.model",
                                       "mlflow.llm.model"};
    const char *subtype = o2l_map_attr_str(c, "genkit:metadata:subtype");
    cJSON *v = NULL;
    int rc = O2L_OK;

    for (size_t i = 0; i < O2L_ARRAY_LEN(keys) && !v && rc == O2L_OK; i++) {
        if (strcmp(keys[i], "genkit:name") == 0 &&
            (!subtype || strcmp(subtype, "model") != 0)) {
            continue;
        }
        rc = o2l_mu_value(o2l_map_attr(c, keys[i]),
                          o2l_mu_starts(keys[i], "mlflow."), &v);
    }
    if (rc == O2L_OK && v && !cJSON_IsObject(v) && !cJSON_IsArray(v)) {
        rc = o2l_mu_text(v, &c->obs->model);
    }
    cJSON_Delete(v);
    return rc;
}

/* Scalars as they are, anything else as JSON text. */
static int add_param(cJSON *params, const char *key, const cJSON *v,
                     bool first_wins)
{
    char *text = NULL;
    cJSON *item;
    int rc;

    if (!o2l_mu_usable(v) && !cJSON_IsString(v)) {
        return O2L_OK;
    }
    if (cJSON_IsString(v) || cJSON_IsNumber(v) || cJSON_IsBool(v) ||
        cJSON_IsRaw(v)) {
        item = cJSON_Duplicate(v, 1);
    } else {
        rc = o2l_mu_text(v, &text);
        if (rc != O2L_OK) {
            return rc;
        }
        item = cJSON_CreateString(text);
        o2l_free(text);
    }
    return o2l_mu_add(params, key, item, first_wins);
}

static int add_params_object(cJSON *params, const cJSON *attr, bool unquote,
                             bool first_wins)
{
    cJSON *obj = NULL;
    const cJSON *m;
    int rc;

    rc = o2l_mu_value(attr, unquote, &obj);
    if (rc == O2L_OK && cJSON_IsObject(obj)) {
        cJSON_ArrayForEach(m, obj)
        {
            rc = add_param(params, m->string, m, first_wins);
            if (rc != O2L_OK) {
                break;
            }
        }
    }
    cJSON_Delete(obj);
    return rc;
}

/* The Vercel AI SDK set, with an explicit object laid over it. */
static int ai_sdk_params(struct o2l_map_ctx *c, cJSON *params)
{
    static const char *const map[][2] = {
        {"ai.settings.maxSteps", "maxSteps"},
        {"ai.prompt.toolChoice", "toolChoice"},
        {"gen_ai.request.max_tokens", "maxTokens"},
        {"gen_ai.response.finish_reasons", "finishReason"},
        {"gen_ai.system", "system"},
        {"ai.model.provider", "system"},
        {"ai.settings.maxRetries", "maxRetries"},
        {"ai.settings.mode", "mode"},
        {"gen_ai.request.temperature", "temperature"},
        {"gen_ai.request.service_tier", "service_tier"}};
    cJSON *meta = NULL;
    int rc = O2L_OK;

    for (size_t i = 0; i < O2L_ARRAY_LEN(map) && rc == O2L_OK; i++) {
        /* OpenAI's provider metadata names the tier first. */
        if (strcmp(map[i][1], "service_tier") == 0) {
            rc = o2l_mu_value(o2l_map_attr(c, "ai.response.providerMetadata"),
                              false, &meta);
            if (rc == O2L_OK) {
                rc = add_param(
                    params, "service_tier",
                    o2l_mu_get(o2l_mu_get(meta, "openai"), "serviceTier"),
                    true);
            }
            cJSON_Delete(meta);
        }
        if (rc == O2L_OK) {
            rc = add_param(params, map[i][1], o2l_map_attr(c, map[i][0]), true);
        }
    }
    if (rc == O2L_OK) {
        rc = add_params_object(
            params, o2l_map_attr(c, "langfuse.observation.model.parameters"),
            false, false);
    }
    return rc;
}

/* Flattened gen_ai.request.* (not .model) and llm.invocation_parameters.*. */
static int flat_params(struct o2l_map_ctx *c, cJSON *params)
{
    static const char *const prefixes[] = {"gen_ai.request.",
                                           "llm.invocation_parameters."};
    int rc;

    for (const cJSON *a = c->attrs->child; a; a = a->next) {
        for (size_t i = 0; i < O2L_ARRAY_LEN(prefixes); i++) {
            const char *p = prefixes[i];

            if (!o2l_mu_starts(a->string, p) || !a->string[strlen(p)] ||
                strcmp(a->string, "gen_ai.request.model") == 0) {
                continue;
            }
            rc = add_param(params, a->string + strlen(p), a, true);
            if (rc != O2L_OK) {
                return rc;
            }
        }
    }
    return O2L_OK;
}

/* The parameters Genkit keeps in the JSON of |key|, under |path|. */
static int genkit_params(struct o2l_map_ctx *c, const char *key,
                         const char *const *path, cJSON *params)
{
    cJSON *genkit = NULL;
    const cJSON *v;
    int rc;

    rc = o2l_mu_value(o2l_map_attr(c, key), false, &genkit);
    v = genkit;
    for (size_t i = 0; path[i] && v; i++) {
        v = o2l_mu_get(v, path[i]);
    }
    if (rc == O2L_OK) {
        rc = add_params_object(params, v, false, true);
    }
    cJSON_Delete(genkit);
    return rc;
}

static int map_params(struct o2l_map_ctx *c)
{
    static const char *const json_keys[] = {"llm.invocation_parameters",
                                            "model_config"};
    static const char *const input_config[] = {"config", NULL};
    static const char *const request_config[] = {"request", "config", NULL};
    const cJSON *explicit =
        o2l_map_attr(c, "langfuse.observation.model.parameters");
    cJSON *params = cJSON_CreateObject();
    int rc;

    if (!params) {
        return O2L_ENOMEM;
    }
    /* On an AI SDK span the explicit object is laid over the Vercel set
     * rather than replacing it. */
    if (c->ai_sdk && o2l_mu_usable(explicit)) {
        rc = ai_sdk_params(c, params);
    } else {
        rc = add_params_object(params, explicit, false, true);
    }
    if (rc == O2L_OK && !params->child) {
        rc = genkit_params(c, "genkit:input", input_config, params);
    }
    if (rc == O2L_OK && !params->child) {
        rc = genkit_params(c, "genkit:output", request_config, params);
    }
    if (rc == O2L_OK && !params->child && c->ai_sdk) {
        rc = ai_sdk_params(c, params);
    }
    for (size_t i = 0; i < O2L_ARRAY_LEN(json_keys); i++) {
        if (rc == O2L_OK && !params->child) {
            rc = add_params_object(params, o2l_map_attr(c, json_keys[i]), false,
                                   true);
        }
    }
    if (rc == O2L_OK && !params->child) {
        rc = flat_params(c, params);
    }
    if (rc != O2L_OK || !params->child) {
        cJSON_Delete(params);
        return rc;
    }
    c->obs->model_parameters = params;
    return O2L_OK;
}

/* gen_ai.usage.* (not .cost), llm.token_count.*, llm.usage.*, and
 * mlflow.chat.tokenUsage. */
static int generic_usage(const struct o2l_map_ctx *c, struct o2l_usage_cands *u)
{
    static const char *const prefixes[] = {"gen_ai.usage.", "llm.token_count.",
                                           "llm.usage."};
    cJSON *mlflow = NULL;
    int rc;

    for (const cJSON *a = c->attrs->child; a; a = a->next) {
        for (size_t i = 0; i < O2L_ARRAY_LEN(prefixes); i++) {
            if (o2l_mu_starts(a->string, prefixes[i]) &&
                strcmp(a->string, "gen_ai.usage.cost") != 0) {
                o2l_usage_add(u, NULL, a->string + strlen(prefixes[i]), a,
                              true);
            }
        }
    }
    rc = o2l_mu_value(o2l_map_attr(c, "mlflow.chat.tokenUsage"), true, &mlflow);
    if (rc == O2L_OK && cJSON_IsObject(mlflow)) {
        o2l_usage_add(u, NULL, NULL, mlflow, true);
    }
    cJSON_Delete(mlflow);
    return rc;
}

/* Adds a JSON attribute (object or JSON text) flattened with '.'. */
static int json_usage(const cJSON *attr, const char *path,
                      struct o2l_usage_cands *u, const char *prefix)
{
    cJSON *v = NULL;
    const cJSON *at;
    int rc;

    rc = o2l_mu_value(attr, false, &v);
    at = path ? o2l_mu_get(v, path) : v;
    if (rc == O2L_OK && cJSON_IsObject(at)) {
        o2l_usage_add(u, prefix, NULL, at, false);
    }
    cJSON_Delete(v);
    return rc;
}

static int ai_sdk_usage(const struct o2l_map_ctx *c, struct o2l_usage_cands *u)
{
    cJSON *v = NULL;
    int rc = O2L_OK;

    for (const cJSON *a = c->attrs->child; a && rc == O2L_OK; a = a->next) {
        if (!o2l_mu_starts(a->string, "ai.usage.")) {
            continue;
        }
        rc = o2l_mu_value(a, false, &v);
        if (rc == O2L_OK && v) {
            o2l_usage_add(u, NULL, a->string + 9, v, false);
        }
        cJSON_Delete(v);
        v = NULL;
    }
    if (rc == O2L_OK) {
        rc = json_usage(o2l_map_attr(c, "ai.response.providerMetadata"), NULL,
                        u, NULL);
    }
    return rc;
}

static int map_usage(struct o2l_map_ctx *c)
{
    struct o2l_usage_cands cands;
    struct o2l_usage_cands *u = &cands;
    cJSON *explicit_usage = NULL;
    int rc;

    /*
     * A usable explicit object is taken as given, even when none of its
     * values is an integer >= 0: then usage is left out rather than
     * inferred from other keys. Only an absent or empty
     * one, or one that is not an object, falls through.
     */
    rc = o2l_mu_object(o2l_map_attr(c, "langfuse.observation.usage_details"),
                       &explicit_usage);
    if (rc != O2L_OK || explicit_usage) {
        if (rc == O2L_OK) {
            rc = o2l_usage_explicit(explicit_usage, &c->obs->usage_details);
        }
        cJSON_Delete(explicit_usage);
        return rc;
    }
    u->n = 0; /* only the first n items are ever read */
    if (c->genkit) {
        rc = json_usage(o2l_map_attr(c, "genkit:output"), "usage", u, NULL);
    }
    if (rc == O2L_OK && u->n == 0) {
        rc = generic_usage(c, u);
        if (rc == O2L_OK && c->ai_sdk) {
            rc = ai_sdk_usage(c, u);
        }
        if (rc == O2L_OK && strcmp(c->scope->name, "gcp.vertex.agent") == 0) {
            rc = json_usage(o2l_map_attr(c, "gcp.vertex.agent.llm_response"),
                            "usage_metadata", u, "usage_metadata");
        }
    }
    if (rc == O2L_OK) {
        rc = o2l_usage_buckets(u, &c->obs->usage_details);
    }
    return rc;
}

/* A cost value: a number >= 0 or a numeric string. */
static int add_cost(cJSON *cost, const char *key, const cJSON *v)
{
    double d;

    /* Langfuse takes finite numbers >= 0 only: 1e400 is infinity here. */
    if (!o2l_mu_number(v, &d) || !(d >= 0) || isinf(d)) {
        return O2L_OK;
    }
    return o2l_mu_add(cost, key, cJSON_CreateNumber(d), true);
}

static int map_cost(struct o2l_map_ctx *c)
{
    static const char *const oi[][2] = {{"llm.cost.total", "total"},
                                        {"llm.cost.prompt", "input"},
                                        {"llm.cost.completion", "output"}};
    static const char *const mlflow_keys[][2] = {{"input_cost", "input"},
                                                 {"output_cost", "output"},
                                                 {"total_cost", "total"}};
    cJSON *cost = cJSON_CreateObject();
    cJSON *v = NULL;
    const cJSON *m;
    int rc;

    if (!cost) {
        return O2L_ENOMEM;
    }
    rc =
        o2l_mu_object(o2l_map_attr(c, "langfuse.observation.cost_details"), &v);
    if (rc == O2L_OK && v) {
        cJSON_ArrayForEach(m, v)
        {
            rc = add_cost(cost, m->string, m);
            if (rc != O2L_OK) {
                break;
            }
        }
    }
    cJSON_Delete(v);
    v = NULL;
    if (rc == O2L_OK && !cost->child) {
        rc = add_cost(cost, "total", o2l_map_attr(c, "gen_ai.usage.cost"));
    }
    /* The three OpenInference keys form one step. */
    if (rc == O2L_OK && !cost->child) {
        for (size_t k = 0; k < 3 && rc == O2L_OK; k++) {
            rc = add_cost(cost, oi[k][1], o2l_map_attr(c, oi[k][0]));
        }
    }
    if (rc == O2L_OK && !cost->child) {
        rc = o2l_mu_value(o2l_map_attr(c, "mlflow.llm.cost"), true, &v);
        for (size_t k = 0; k < 3 && rc == O2L_OK && v; k++) {
            rc = add_cost(cost, mlflow_keys[k][1],
                          o2l_mu_get(v, mlflow_keys[k][0]));
        }
        cJSON_Delete(v);
    }
    if (rc != O2L_OK || !cost->child) {
        cJSON_Delete(cost);
        return rc;
    }
    c->obs->cost_details = cost;
    return O2L_OK;
}

static int map_completion_start(struct o2l_map_ctx *c)
{
    static const char *const ms_keys[] = {"ai.response.msToFirstChunk",
                                          "ai.stream.msToFirstChunk"};
    uint64_t ns = 0;
    double ms;
    int rc;

    rc = o2l_conv_langfuse_completion_start(c, &ns);
    for (size_t i = 0; i < O2L_ARRAY_LEN(ms_keys) && rc == O2L_OK && !ns; i++) {
        if (o2l_mu_number(o2l_map_attr(c, ms_keys[i]), &ms) && ms >= 0 &&
            ms < 1e12) {
            ns = c->span->start_ns + (uint64_t)(ms * 1e6);
        }
    }
    if (rc == O2L_OK && !ns) {
        o2l_conv_genai_first_chunk(c, &ns);
    }
    c->obs->completion_start_ns = ns;
    return rc;
}

static int map_generation_fields(struct o2l_map_ctx *c)
{
    int rc;

    rc = map_model(c);
    if (rc == O2L_OK) {
        rc = map_params(c);
    }
    if (rc == O2L_OK) {
        rc = map_usage(c);
    }
    if (rc == O2L_OK) {
        rc = map_cost(c);
    }
    if (rc == O2L_OK) {
        rc = map_completion_start(c);
    }
    if (rc == O2L_OK && c->obs->type == O2L_OBS_GENERATION) {
        rc = o2l_conv_langfuse_prompt(c);
    }
    return rc;
}

/* ---- level and status message ------------------------------------------ */

static const struct o2l_span_event *last_exception(const struct o2l_span *s)
{
    for (size_t i = s->n_events; i > 0; i--) {
        if (strcmp(s->events[i - 1].name, "exception") == 0) {
            return &s->events[i - 1];
        }
    }
    return NULL;
}

static bool in_list(const char *const *list, const char *s, size_t len)
{
    for (size_t i = 0; list && list[i]; i++) {
        if (strlen(list[i]) == len && strncmp(list[i], s, len) == 0) {
            return true;
        }
    }
    return false;
}

/* The last dotted segment of exception.type is a control-flow name. */
static bool control_flow_event(const struct o2l_map_config *cfg,
                               const struct o2l_span_event *ev)
{
    const char *type = ev ? o2l_mu_str(ev->attrs, "exception.type") : NULL;
    const char *dot;

    if (!type) {
        return false;
    }
    dot = strrchr(type, '.');
    type = dot ? dot + 1 : type;
    return in_list(cfg->control_flow_exceptions, type, strlen(type));
}

static bool control_flow_message(const struct o2l_map_config *cfg,
                                 const char *msg)
{
    size_t n = 0;

    if (!msg) {
        return false;
    }
    while (msg[n] && msg[n] != '(' && msg[n] != ':') {
        n++;
    }
    return msg[n] && in_list(cfg->control_flow_exceptions, msg, n);
}

/* "<type>: <message>", or just one of them. */
static int exception_text(const struct o2l_span_event *ev, char **out)
{
    const char *type = o2l_mu_str(ev->attrs, "exception.type");
    const char *msg = o2l_mu_str(ev->attrs, "exception.message");
    size_t len;

    *out = NULL;
    if (type && msg) {
        len = strlen(type) + strlen(msg) + 3;
        *out = o2l_malloc(len);
        if (*out) {
            snprintf(*out, len, "%s: %s", type, msg);
        }
    } else if (type || msg) {
        *out = o2l_strdup(type ? type : msg);
    } else {
        return O2L_OK;
    }
    return *out ? O2L_OK : O2L_ENOMEM;
}

static int map_level_status(struct o2l_map_ctx *c)
{
    static const char *const livekit_debug[] = {"user_speaking",
                                                "eou_detection",
                                                "llm_request_run",
                                                "tts_node",
                                                "tts_request",
                                                "tts_request_run",
                                                "tts_stream_adapter",
                                                "agent_speaking",
                                                "drain_agent_activity",
                                                "on_enter",
                                                "on_exit",
                                                "llm_fallback_adapter",
                                                "tts_fallback_adapter",
                                                "start_agent_activity",
                                                NULL};
    const struct o2l_span_event *exc = last_exception(c->span);
    const char *msg;
    enum o2l_level level = O2L_LEVEL_DEFAULT;
    int rc = O2L_OK;

    msg = o2l_map_attr_str(c, "langfuse.observation.status_message");
    if (!msg && c->span->status_message && c->span->status_message[0]) {
        msg = c->span->status_message;
    }
    if (msg) {
        c->obs->status_message = o2l_strdup(msg);
        rc = c->obs->status_message ? O2L_OK : O2L_ENOMEM;
    } else if (exc) {
        rc = exception_text(exc, &c->obs->status_message);
    }
    if (rc == O2L_OK && !c->obs->status_message) {
        msg = o2l_map_attr_str(c, "error.type");
        if (msg) {
            c->obs->status_message = o2l_strdup(msg);
            rc = c->obs->status_message ? O2L_OK : O2L_ENOMEM;
        }
    }

    if (o2l_conv_langfuse_level(c, &level)) {
        /* explicit level wins */
    } else if (c->span->status_code == O2L_STATUS_ERROR) {
        level = control_flow_event(c->cfg, exc) ||
                        control_flow_message(c->cfg, c->span->status_message)
                    ? O2L_LEVEL_DEFAULT
                    : O2L_LEVEL_ERROR;
    } else if (strcmp(c->scope->name, "livekit-agents") == 0 &&
               in_list(livekit_debug, c->span->name, strlen(c->span->name))) {
        level = O2L_LEVEL_DEBUG;
    }
    c->obs->level = level;
    return rc;
}

/* ---- version and ingestion-only metadata ------------------------------- */

static int map_version(struct o2l_map_ctx *c)
{
    const cJSON *v = o2l_map_attr(c, "langfuse.version");

    if (!o2l_mu_usable(v)) {
        v = o2l_mu_get(c->res, "service.version");
    }
    if (!o2l_mu_usable(v)) {
        return O2L_OK;
    }
    return o2l_mu_text(v, &c->obs->version);
}

/* Keys and prefixes that feed the observation metadata. */
static const char *const metadata_sources[] = {
    "langfuse.observation.metadata",
    "langfuse.observation.metadata.",
    "langfuse.metadata",
    "langfuse.metadata.",
    "ai.telemetry.metadata.",
    "ai.settings.context.",
    "metadata",
    "traceloop.association.properties.",
    "langsmith.metadata."};

static bool matches(const char *key, const char *pattern)
{
    size_t n = strlen(pattern);

    if (n > 0 && pattern[n - 1] == '.') {
        return strncmp(key, pattern, n) == 0;
    }
    return strcmp(key, pattern) == 0;
}

/* Whether |v| gives an object (itself, or JSON text of one). */
static bool gives_object(const cJSON *v)
{
    cJSON *obj = NULL;
    bool yes = o2l_mu_object(v, &obj) == O2L_OK && obj;

    cJSON_Delete(obj);
    return yes;
}

/*
 * Whether attribute |a| went into input, output or the metadata. A whole
 * metadata key whose value is not an object (plain text, a list, JSON the
 * parser refuses) gave nothing, so it stays among the attributes.
 */
static bool attribute_used(const struct o2l_map_ctx *c, const cJSON *a)
{
    const char *key = a->string;

    for (size_t i = 0; i < c->n_used; i++) {
        if (matches(key, c->used[i])) {
            return true;
        }
    }
    for (size_t i = 0; i < O2L_ARRAY_LEN(metadata_sources); i++) {
        const char *src = metadata_sources[i];

        if (matches(key, src)) {
            return src[strlen(src) - 1] == '.' || gives_object(a);
        }
    }
    return false;
}

/*
 * A read-only view of |v|: a new item whose children, string or raw text
 * stay owned by the export, so deleting it frees only the item itself.
 * Numbers and booleans are small enough to copy.
 */
static cJSON *ref_of(const cJSON *v)
{
    cJSON *r;

    if (cJSON_IsObject(v)) {
        return cJSON_CreateObjectReference(v->child);
    }
    if (cJSON_IsArray(v)) {
        return cJSON_CreateArrayReference(v->child);
    }
    if (cJSON_IsString(v) || cJSON_IsRaw(v)) {
        r = cJSON_CreateStringReference(v->valuestring);
        if (r && cJSON_IsRaw(v)) {
            r->type = cJSON_Raw | cJSON_IsReference;
        }
        return r;
    }
    return cJSON_Duplicate(v, 0);
}

/*
 * Adds |v| under |key|, a string that outlives |obj|: a view of it, or a
 * redacted copy when mapping.redact names a key inside it.
 */
static int add_ref(const struct o2l_map_ctx *c, cJSON *obj, const char *key,
                   const cJSON *v)
{
    cJSON *r;
    int rc = O2L_OK;

    if (!o2l_mu_usable(v)) {
        return O2L_OK;
    }
    if (o2l_map_redact_needed(c->cfg, v)) {
        r = cJSON_Duplicate(v, 1);
        rc = r ? o2l_map_redact(c->cfg, &r) : O2L_ENOMEM;
    } else {
        r = ref_of(v);
    }
    if (rc == O2L_OK && (!r || !cJSON_AddItemToObjectCS(obj, key, r))) {
        rc = O2L_ENOMEM;
    }
    if (rc != O2L_OK) {
        cJSON_Delete(r);
    }
    return rc;
}

/* A string holding JSON text, or any string of an mlflow.* key (MLflow
 * JSON-encodes every value). */
static bool json_text(const char *key, const cJSON *v)
{
    const char *s;

    if (!cJSON_IsString(v)) {
        return false;
    }
    s = v->valuestring + strspn(v->valuestring, " \t\r\n");
    return *s == '{' || *s == '[' || o2l_mu_starts(key, "mlflow.");
}

/*
 * Adds span attribute |a| to the ingestion-only "attributes": JSON held
 * in strings parsed (mlflow.* scalars unquoted), a redacted key as the
 * marker, anything else as a view of the export's value.
 */
static int add_attribute(const struct o2l_map_ctx *c, cJSON *obj,
                         const cJSON *a)
{
    cJSON *v = NULL;
    int rc;

    if (o2l_map_is_redacted(c->cfg, a->string) && o2l_mu_usable(a)) {
        rc = o2l_map_marker(c->cfg, &v);
    } else if (json_text(a->string, a)) {
        rc = o2l_mu_passthrough(a, o2l_mu_starts(a->string, "mlflow."), &v);
        rc = rc == O2L_OK ? o2l_map_redact(c->cfg, &v) : rc;
    } else {
        return add_ref(c, obj, a->string, a);
    }
    if (rc == O2L_OK && !v) {
        return add_ref(c, obj, a->string, a); /* "{}" stays as sent */
    }
    if (rc == O2L_OK && !cJSON_AddItemToObjectCS(obj, a->string, v)) {
        rc = O2L_ENOMEM;
    }
    if (rc != O2L_OK) {
        cJSON_Delete(v);
    }
    return rc;
}

static int map_ingest_metadata(struct o2l_map_ctx *c)
{
    cJSON *extra = cJSON_CreateObject();
    cJSON *attrs = NULL;
    cJSON *scope = NULL;
    int rc = O2L_OK;

    if (!extra) {
        return O2L_ENOMEM;
    }
    if (!o2l_mu_starts(c->scope->name, "langfuse-sdk")) {
        attrs = cJSON_CreateObject();
        rc = attrs ? O2L_OK : O2L_ENOMEM;
        /* Keys are unique already: no look-up before adding. */
        for (const cJSON *a = c->attrs->child; a && rc == O2L_OK; a = a->next) {
            if (!attribute_used(c, a)) {
                rc = add_attribute(c, attrs, a);
            }
        }
        if (rc == O2L_OK && attrs->child) {
            rc = cJSON_AddItemToObjectCS(extra, "attributes", attrs)
                     ? O2L_OK
                     : O2L_ENOMEM;
            attrs = rc == O2L_OK ? NULL : attrs;
        }
    }
    if (rc == O2L_OK) {
        rc = add_ref(c, extra, "resourceAttributes", c->res);
    }
    if (rc == O2L_OK) {
        scope = cJSON_CreateObject();
        rc = scope ? O2L_OK : O2L_ENOMEM;
    }
    if (rc == O2L_OK && c->scope->name[0]) {
        rc = o2l_mu_add_str(scope, "name", c->scope->name, false);
    }
    if (rc == O2L_OK && c->scope->version[0]) {
        rc = o2l_mu_add_str(scope, "version", c->scope->version, false);
    }
    if (rc == O2L_OK) {
        rc = add_ref(c, scope, "attributes", c->scope->attrs);
    }
    if (rc == O2L_OK && scope->child) {
        rc = cJSON_AddItemToObjectCS(extra, "scope", scope) ? O2L_OK
                                                            : O2L_ENOMEM;
        scope = rc == O2L_OK ? NULL : scope;
    }
    if (rc == O2L_OK && extra->child) {
        c->obs->ingest_metadata = extra;
        extra = NULL;
    }
    cJSON_Delete(scope);
    cJSON_Delete(attrs);
    cJSON_Delete(extra);
    return rc;
}

/* ---- the observation --------------------------------------------------- */

static bool has_key_prefix(const cJSON *attrs, const char *prefix)
{
    for (const cJSON *a = attrs->child; a; a = a->next) {
        if (a->string && o2l_mu_starts(a->string, prefix)) {
            return true;
        }
    }
    return false;
}

int o2l_map_observation(struct o2l_map_ctx *c)
{
    struct o2l_observation *o = c->obs;
    int rc;

    o2l_map_index_build(c);
    c->ai_sdk =
        strcmp(c->scope->name, "ai") == 0 || has_key_prefix(c->attrs, "ai.");
    c->genkit = o2l_mu_starts(c->scope->name, "genkit-tracer") ||
                has_key_prefix(c->attrs, "genkit:");
    c->slots_left = c->cfg->max_flattened_slots;
    o->type = decide_type(c);
    snprintf(o->id, sizeof(o->id), "%s", c->span->span_id);
    snprintf(o->parent_id, sizeof(o->parent_id), "%s", c->span->parent_id);
    o->start_ns = c->span->start_ns;
    o->end_ns = o->type == O2L_OBS_EVENT ? 0 : c->span->end_ns;
    o->envelope_ns = c->span->end_ns;
    o->level = O2L_LEVEL_DEFAULT;

    rc = map_name(c);
    if (rc == O2L_OK) {
        rc = map_metadata(c);
    }
    if (rc == O2L_OK) {
        rc = map_side(c, false, &o->input);
    }
    if (rc == O2L_OK) {
        rc = map_side(c, true, &o->output);
    }
    if (rc == O2L_OK && o->type == O2L_OBS_GENERATION) {
        rc = add_tools_to_input(c);
    }
    if (rc == O2L_OK && o2l_obs_type_is_generation_like(o->type)) {
        rc = map_generation_fields(c);
    }
    if (rc == O2L_OK) {
        rc = map_level_status(c);
    }
    if (rc == O2L_OK) {
        rc = map_version(c);
    }
    if (rc == O2L_OK) {
        rc = map_ingest_metadata(c);
    }
    return rc;
}

int o2l_map_event(const struct o2l_map_ctx *c, size_t n,
                  struct o2l_observation *o)
{
    const struct o2l_span_event *ev = &c->span->events[n];
    cJSON *md = NULL;
    cJSON *v;
    int rc = O2L_OK;

    o->type = O2L_OBS_EVENT;
    snprintf(o->id, sizeof(o->id), "%s-event-%zu", c->span->span_id, n);
    snprintf(o->parent_id, sizeof(o->parent_id), "%s", c->span->span_id);
    o->start_ns = ev->time_ns;
    o->envelope_ns = ev->time_ns;
    o->level = O2L_LEVEL_DEFAULT;
    o->name = o2l_strdup(ev->name);
    if (!o->name) {
        return O2L_ENOMEM;
    }
    if (strcmp(ev->name, "exception") == 0) {
        o->level = control_flow_event(c->cfg, ev) ? O2L_LEVEL_DEFAULT
                                                  : O2L_LEVEL_ERROR;
        rc = exception_text(ev, &o->status_message);
    }
    if (rc == O2L_OK && ev->attrs->child) {
        md = cJSON_CreateObject();
        rc = md ? O2L_OK : O2L_ENOMEM;
        for (const cJSON *a = ev->attrs->child; a && rc == O2L_OK;
             a = a->next) {
            rc = o2l_mu_value(a, false, &v);
            if (rc == O2L_OK && v) {
                rc = o2l_mu_add(md, a->string, v, false);
            }
        }
    }
    if (rc == O2L_OK && md && md->child) {
        o->metadata = md;
        md = NULL;
    }
    cJSON_Delete(md);
    return rc;
}
