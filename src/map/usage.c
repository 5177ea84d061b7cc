/* SPDX-License-Identifier: Apache-2.0 */
/*
 * usage.c - token usage into exclusive buckets: one alias table for every
 * source, cached/cache-creation/audio parts taken out of input, reasoning
 * and audio parts taken out of output, and a total.
 */
#include "o2l/map_util.h"

#include <stdio.h>
#include <string.h>

#include "o2l/common.h"
#include "o2l/span.h"

#define ALIASES_MAX 20

struct bucket {
    const char *name; /* output key; NULL for the raw input/output */
    const char *aliases[ALIASES_MAX];
};

enum {
    B_RAW_IN = 0,
    B_RAW_OUT,
    B_TOTAL,
    B_CACHED,
    B_CACHE_CREATION,
    B_IN_AUDIO,
    B_REASONING,
    B_OUT_AUDIO,
    B_COUNT
};

static const struct bucket buckets[B_COUNT] = {
    [B_RAW_IN] = {"input",
                  {"prompt_tokens", "input_tokens", "prompt", "promptTokens",
                   "inputTokens", "tokens"}},
    [B_RAW_OUT] = {"output",
                   {"completion_tokens", "output_tokens", "completion",
                    "completionTokens", "outputTokens"}},
    [B_TOTAL] = {"total", {"total_tokens", "total", "totalTokens", "tokens"}},
    [B_CACHED] = {"input_cached_tokens",
                  {"cache_read.input_tokens",
                   "cache_read_input_tokens",
                   "cache_read_tokens",
                   "cache_read",
                   "cached_tokens",
                   "details.cached_tokens",
                   "details.cache_read_tokens",
                   "details.cache_read_input_tokens",
                   "prompt_details.cache_read",
                   "prompt_tokens_details.cached_tokens",
                   "input_tokens_details.cached_tokens",
                   "input_token_details.cache_read",
                   "input_cached_tokens",
                   "cachedInputTokens",
                   "inputTokenDetails.cacheReadTokens",
                   "openai.cachedPromptTokens",
                   "anthropic.usage.cache_read_input_tokens",
                   "bedrock.usage.cacheReadInputTokens",
                   "usage_metadata.cached_content_token_count",
                   "cached_content_token_count"}},
    [B_CACHE_CREATION] =
        {"input_cache_creation",
         {"cache_creation.input_tokens", "cache_creation_input_tokens",
          "cache_write_tokens", "details.cache_write_tokens",
          "details.cache_creation_input_tokens", "prompt_details.cache_write",
          "input_token_details.cache_creation", "input_cache_creation",
          "inputTokenDetails.cacheWriteTokens",
          "anthropic.usage.cache_creation_input_tokens",
          "bedrock.usage.cacheWriteInputTokens",
          "bedrock.usage.cacheCreationInputTokens"}},
    [B_IN_AUDIO] = {"input_audio_tokens",
                    {"prompt_details.audio",
                     "prompt_tokens_details.audio_tokens",
                     "input_token_details.audio"}},
    [B_REASONING] = {"output_reasoning_tokens",
                     {"reasoning.output_tokens", "reasoning_tokens",
                      "completion_details.reasoning",
                      "completion_tokens_details.reasoning_tokens",
                      "output_tokens_details.reasoning_tokens",
                      "output_token_details.reasoning", "reasoningTokens",
                      "outputTokenDetails.reasoningTokens",
                      "openai.reasoningTokens", "thoughtsTokens"}},
    [B_OUT_AUDIO] = {"output_audio_tokens",
                     {"completion_details.audio",
                      "completion_tokens_details.audio_tokens",
                      "output_token_details.audio"}},
};

/* Breakdown keys that repeat part of input or output: never sent. */
static const char *const repeats[] = {
    "text_tokens",
    "text_prompt_tokens",
    "details.text_prompt_tokens",
    "text_completion_tokens",
    "textTokens",
    "outputTokenDetails.textTokens",
    "noCacheTokens",
    "inputTokenDetails.noCacheTokens",
    "cache_creation.ephemeral_5m_input_tokens",
    "cache_creation.ephemeral_1h_input_tokens"};

/* Provider-metadata keys passed on under Langfuse-style names. */
static const char *const renames[][2] = {
    {"openai.acceptedPredictionTokens", "accepted_prediction_tokens"},
    {"openai.rejectedPredictionTokens", "rejected_prediction_tokens"}};

static void add_one(struct o2l_usage_cands *c, const char *name, int64_t value,
                    bool passthrough)
{
    struct o2l_usage_cand *cand;

    if (c->n >= O2L_USAGE_CANDS_MAX || strlen(name) >= O2L_USAGE_NAME_MAX) {
        return;
    }
    cand = &c->items[c->n++];
    snprintf(cand->name, sizeof(cand->name), "%s", name);
    cand->value = value;
    cand->passthrough = passthrough;
}

static void add_rec(struct o2l_usage_cands *c, char *name, size_t len,
                    const cJSON *v, bool passthrough, int depth)
{
    int64_t value;

    if (cJSON_IsObject(v)) {
        if (depth > 4) {
            return;
        }
        for (const cJSON *m = v->child; m; m = m->next) {
            size_t klen = m->string ? strlen(m->string) : 0;

            if (len + klen + 2 > O2L_USAGE_NAME_MAX) {
                continue;
            }
            if (len > 0) {
                name[len] = '.';
                memcpy(name + len + 1, m->string, klen + 1);
                add_rec(c, name, len + 1 + klen, m, passthrough, depth + 1);
            } else {
                memcpy(name, m->string, klen + 1);
                add_rec(c, name, klen, m, passthrough, depth + 1);
            }
            name[len] = '\0';
        }
        return;
    }
    if (o2l_json_get_int64(v, 1, &value) && value >= 0) {
        add_one(c, name, value, passthrough);
    }
}

void o2l_usage_add(struct o2l_usage_cands *c, const char *prefix,
                   const char *name, const cJSON *v, bool passthrough)
{
    char buf[O2L_USAGE_NAME_MAX];
    int n;

    n = snprintf(buf, sizeof(buf), "%s%s", prefix ? prefix : "",
                 name ? name : "");
    if (n < 0 || (size_t)n >= sizeof(buf)) {
        return;
    }
    add_rec(c, buf, (size_t)n, v, passthrough, 0);
}

static bool is_alias(const char *name)
{
    for (size_t b = 0; b < B_COUNT; b++) {
        for (size_t i = 0; i < ALIASES_MAX && buckets[b].aliases[i]; i++) {
            if (strcmp(buckets[b].aliases[i], name) == 0) {
                return true;
            }
        }
    }
    for (size_t i = 0; i < O2L_ARRAY_LEN(repeats); i++) {
        if (strcmp(repeats[i], name) == 0) {
            return true;
        }
    }
    return false;
}

/* The value of the first alias of bucket |b| present in |c|. */
static bool bucket_value(const struct o2l_usage_cands *c, size_t b,
                         int64_t *out)
{
    for (size_t i = 0; i < ALIASES_MAX && buckets[b].aliases[i]; i++) {
        for (size_t k = 0; k < c->n; k++) {
            if (strcmp(c->items[k].name, buckets[b].aliases[i]) == 0) {
                *out = c->items[k].value;
                return true;
            }
        }
    }
    return false;
}

/* Counts past 10^15 go out as exact decimal text, as the decoder keeps
 * them: a double would print them rounded or in exponent form. */
static int add_int(cJSON *obj, const char *key, int64_t v)
{
    char text[24];

    if (v < 1000000000000000 && v > -1000000000000000) {
        return o2l_mu_add(obj, key, cJSON_CreateNumber((double)v), true);
    }
    snprintf(text, sizeof(text), "%lld", (long long)v);
    return o2l_mu_add(obj, key, cJSON_CreateRaw(text), true);
}

/* a + b for counts >= 0, stopping at INT64_MAX instead of overflowing. */
static int64_t add_counts(int64_t a, int64_t b)
{
    return a > INT64_MAX - b ? INT64_MAX : a + b;
}

/* input = raw - parts when the parts fit inside raw, else raw. */

static int64_t exclusive(int64_t raw, const int64_t *parts, const bool *have,
                         size_t n)
{
    int64_t sum = 0;

    for (size_t i = 0; i < n; i++) {
        if (have[i]) {
            sum = add_counts(sum, parts[i]);
        }
    }
    return sum <= raw ? raw - sum : raw;
}

static int add_passthrough(const struct o2l_usage_cands *c, cJSON *obj)
{
    int rc;

    for (size_t k = 0; k < c->n; k++) {
        const char *name = c->items[k].name;
        const char *out_name = NULL;

        for (size_t i = 0; i < O2L_ARRAY_LEN(renames); i++) {
            if (strcmp(name, renames[i][0]) == 0) {
                out_name = renames[i][1];
            }
        }
        if (!out_name && c->items[k].passthrough && !is_alias(name)) {
            out_name = o2l_mu_starts(name, "details.") ? name + 8 : name;
        }
        if (!out_name || !out_name[0]) {
            continue;
        }
        rc = add_int(obj, out_name, c->items[k].value);
        if (rc != O2L_OK) {
            return rc;
        }
    }
    return O2L_OK;
}

int o2l_usage_buckets(const struct o2l_usage_cands *c, cJSON **out)
{
    int64_t v[B_COUNT] = {0};
    bool have[B_COUNT] = {false};
    cJSON *obj;
    int rc = O2L_OK;

    *out = NULL;
    if (c->n == 0) {
        return O2L_OK;
    }
    for (size_t b = 0; b < B_COUNT; b++) {
        have[b] = bucket_value(c, b, &v[b]);
    }
    obj = cJSON_CreateObject();
    if (!obj) {
        return O2L_ENOMEM;
    }
    if (have[B_RAW_IN]) {
        rc = add_int(obj, "input",
                     exclusive(v[B_RAW_IN], &v[B_CACHED], &have[B_CACHED], 3));
    }
    if (rc == O2L_OK && have[B_RAW_OUT]) {
        rc = add_int(
            obj, "output",
            exclusive(v[B_RAW_OUT], &v[B_REASONING], &have[B_REASONING], 2));
    }
    if (rc == O2L_OK && (have[B_TOTAL] || have[B_RAW_IN] || have[B_RAW_OUT])) {
        rc = add_int(obj, "total",
                     have[B_TOTAL] ? v[B_TOTAL]
                                   : add_counts(v[B_RAW_IN], v[B_RAW_OUT]));
    }
    for (size_t b = B_CACHED; rc == O2L_OK && b < B_COUNT; b++) {
        if (have[b]) {
            rc = add_int(obj, buckets[b].name, v[b]);
        }
    }
    if (rc == O2L_OK) {
        rc = add_passthrough(c, obj);
    }
    if (rc != O2L_OK || !obj->child) {
        cJSON_Delete(obj);
        return rc;
    }
    *out = obj;
    return O2L_OK;
}

int o2l_usage_explicit(const cJSON *v, cJSON **out)
{
    cJSON *parsed = NULL;
    cJSON *obj = NULL;
    int64_t n;
    int rc;

    *out = NULL;
    rc = o2l_mu_object(v, &parsed);
    if (rc != O2L_OK || !parsed) {
        return rc;
    }
    obj = cJSON_CreateObject();
    if (!obj) {
        rc = O2L_ENOMEM;
        goto out;
    }
    for (const cJSON *m = parsed->child; m; m = m->next) {
        if (o2l_json_get_int64(m, 1, &n) && n >= 0) {
            rc = add_int(obj, m->string, n);
            if (rc != O2L_OK) {
                goto out;
            }
        }
    }
    if (obj->child) {
        *out = obj;
        obj = NULL;
    }

out:
    cJSON_Delete(obj);
    cJSON_Delete(parsed);
    return rc;
}
