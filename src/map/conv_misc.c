/* SPDX-License-Identifier: Apache-2.0 */
/*
 * conv_misc.c - the smaller conventions, each a few keys: Vercel AI SDK,
 * Genkit, LangSmith, MLflow, Flue, LiveKit, Google ADK, Pydantic AI and
 * plain input/output keys.
 */
#include "o2l/map_conv.h"

#include <string.h>

#include "o2l/common.h"
#include "o2l/map_util.h"

struct kind_map {
    const char *value;
    enum o2l_obs_type type;
};

static bool lookup_kind(const char *v, const struct kind_map *map, size_t n,
                        enum o2l_obs_type *t)
{
    if (!v) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (strcmp(v, map[i].value) == 0) {
            *t = map[i].type;
            return true;
        }
    }
    return false;
}

/* Step 3 after Traceloop: LangSmith and MLflow kinds. */
bool o2l_conv_misc_kind_type(const struct o2l_map_ctx *c, enum o2l_obs_type *t)
{
    static const struct kind_map langsmith[] = {
        {"llm", O2L_OBS_GENERATION},     {"chain", O2L_OBS_CHAIN},
        {"prompt", O2L_OBS_CHAIN},       {"parser", O2L_OBS_CHAIN},
        {"tool", O2L_OBS_TOOL},          {"retriever", O2L_OBS_RETRIEVER},
        {"embedding", O2L_OBS_EMBEDDING}};
    static const struct kind_map mlflow[] = {
        {"LLM", O2L_OBS_GENERATION},      {"CHAT_MODEL", O2L_OBS_GENERATION},
        {"CHAIN", O2L_OBS_CHAIN},         {"PARSER", O2L_OBS_CHAIN},
        {"AGENT", O2L_OBS_AGENT},         {"TOOL", O2L_OBS_TOOL},
        {"RETRIEVER", O2L_OBS_RETRIEVER}, {"EMBEDDING", O2L_OBS_EMBEDDING},
        {"GUARDRAIL", O2L_OBS_GUARDRAIL}, {"EVALUATOR", O2L_OBS_EVALUATOR},
        {"RERANKER", O2L_OBS_RETRIEVER}};
    const cJSON *v;
    cJSON *unq = NULL;
    bool found;

    if (lookup_kind(o2l_map_attr_str(c, "langsmith.span.kind"), langsmith,
                    O2L_ARRAY_LEN(langsmith), t)) {
        return true;
    }
    v = o2l_map_attr(c, "mlflow.spanType");
    if (!cJSON_IsString(v)) {
        return false;
    }
    /* MLflow JSON-quotes its values; a failed parse keeps the text. */
    unq = cJSON_Parse(v->valuestring);
    found = lookup_kind(cJSON_IsString(unq) ? unq->valuestring : v->valuestring,
                        mlflow, O2L_ARRAY_LEN(mlflow), t);
    cJSON_Delete(unq);
    return found;
}

static bool ai_sdk_op(const struct o2l_map_ctx *c, const char *op)
{
    const char *name = o2l_map_attr_str(c, "operation.name");
    const char *id = o2l_map_attr_str(c, "ai.operationId");

    return (name && o2l_mu_starts(name, op)) || (id && strcmp(id, op) == 0);
}

/* Steps 5 to 7: Genkit subtypes and the Vercel AI SDK operations. */
bool o2l_conv_misc_late_type(const struct o2l_map_ctx *c, enum o2l_obs_type *t)
{
    static const struct kind_map genkit[] = {
        {"model", O2L_OBS_GENERATION},
        {"background-model", O2L_OBS_GENERATION},
        {"embedder", O2L_OBS_EMBEDDING},
        {"tool", O2L_OBS_TOOL},
        {"tool.v2", O2L_OBS_TOOL},
        {"retriever", O2L_OBS_RETRIEVER},
        {"evaluator", O2L_OBS_EVALUATOR}};
    static const char *const gen_ops[] = {
        "ai.generateText.doGenerate", "ai.streamText.doStream",
        "ai.generateObject.doGenerate", "ai.streamObject.doStream"};
    static const char *const embed_ops[] = {"ai.embed.doEmbed",
                                            "ai.embedMany.doEmbed"};
    static const char *const model_keys[] = {
        "langfuse.observation.model.name", "ai.model.id",
        "gen_ai.request.model", "gen_ai.response.model"};
    bool has_model = false;

    if (lookup_kind(o2l_map_attr_str(c, "genkit:metadata:subtype"), genkit,
                    O2L_ARRAY_LEN(genkit), t)) {
        return true;
    }
    for (size_t i = 0; i < O2L_ARRAY_LEN(model_keys); i++) {
        has_model |= o2l_mu_usable(o2l_map_attr(c, model_keys[i]));
    }
    for (size_t i = 0; has_model && i < O2L_ARRAY_LEN(gen_ops); i++) {
        if (ai_sdk_op(c, gen_ops[i])) {
            *t = O2L_OBS_GENERATION;
            return true;
        }
    }
    for (size_t i = 0; has_model && i < O2L_ARRAY_LEN(embed_ops); i++) {
        if (ai_sdk_op(c, embed_ops[i])) {
            *t = O2L_OBS_EMBEDDING;
            return true;
        }
    }
    if (ai_sdk_op(c, "ai.toolCall")) {
        *t = O2L_OBS_TOOL;
        return true;
    }
    return false;
}

/* Steps 9 and 10: Flue and LiveKit. */
bool o2l_conv_misc_tail_type(const struct o2l_map_ctx *c, enum o2l_obs_type *t)
{
    const char *name = c->span->name;

    if (o2l_mu_usable(o2l_map_attr(c, "flue.tool.name")) ||
        o2l_mu_usable(o2l_map_attr(c, "flue.tool.call_id"))) {
        *t = O2L_OBS_TOOL;
        return true;
    }
    if (o2l_mu_usable(o2l_map_attr(c, "flue.task.id")) ||
        o2l_mu_usable(o2l_map_attr(c, "flue.task.agent"))) {
        *t = O2L_OBS_AGENT;
        return true;
    }
    if (strcmp(c->scope->name, "livekit-agents") == 0) {
        if (strcmp(name, "agent_turn") == 0 ||
            strcmp(name, "start_agent_activity") == 0) {
            *t = O2L_OBS_AGENT;
            return true;
        }
        if (strcmp(name, "function_tool") == 0) {
            *t = O2L_OBS_TOOL;
            return true;
        }
    }
    return false;
}

/* The first usable key of a NULL-terminated list. */
static int first_key(struct o2l_map_ctx *c, const char *const *keys,
                     bool unquote, cJSON **out)
{
    int rc = O2L_OK;

    *out = NULL;
    for (size_t i = 0; keys[i] && !*out && rc == O2L_OK; i++) {
        rc = o2l_map_io_key(c, keys[i], unquote, out);
    }
    return rc;
}

/* Output of an AI SDK span whose response has both text and tool calls:
 * one assistant message. */
static int ai_sdk_combined(struct o2l_map_ctx *c, cJSON **out)
{
    const cJSON *text = o2l_map_attr(c, "ai.response.text");
    const cJSON *calls = o2l_map_attr(c, "ai.response.toolCalls");
    cJSON *msg;
    cJSON *v = NULL;
    int rc;

    *out = NULL;
    if (!o2l_mu_usable(text) || !o2l_mu_usable(calls)) {
        return O2L_OK;
    }
    msg = cJSON_CreateObject();
    if (!msg) {
        return O2L_ENOMEM;
    }
    rc = o2l_mu_add_str(msg, "role", "assistant", false);
    if (rc == O2L_OK) {
        rc = o2l_mu_add(msg, "content", cJSON_Duplicate(text, 1), false);
    }
    if (rc == O2L_OK) {
        rc = o2l_mu_value(calls, false, &v);
    }
    if (rc == O2L_OK && v) {
        rc = o2l_mu_add(msg, "tool_calls", v, false);
    }
    if (rc != O2L_OK) {
        cJSON_Delete(msg);
        return rc;
    }
    o2l_map_mark_used(c, "ai.response.text");
    o2l_map_mark_used(c, "ai.response.toolCalls");
    *out = msg;
    return O2L_OK;
}

int o2l_conv_misc_io_ai_sdk(struct o2l_map_ctx *c, bool output, cJSON **out)
{
    static const char *const in_keys[] = {"ai.prompt.messages", "ai.prompt",
                                          "ai.toolCall.args",
                                          "gen_ai.input.messages", NULL};
    static const char *const out_keys[] = {"ai.response.text",
                                           "ai.result.text",
                                           "ai.toolCall.result",
                                           "ai.response.object",
                                           "ai.result.object",
                                           "ai.response.toolCalls",
                                           "ai.result.toolCalls",
                                           "gen_ai.output.messages",
                                           NULL};
    int rc;

    *out = NULL;
    if (!c->ai_sdk) {
        return O2L_OK;
    }
    if (!output) {
        return first_key(c, in_keys, false, out);
    }
    rc = ai_sdk_combined(c, out);
    if (rc != O2L_OK || *out) {
        return rc;
    }
    return first_key(c, out_keys, false, out);
}

/* Table-driven input/output steps that read plain keys. */
struct key_step {
    int step;
    /* scope name prefix required, or NULL; "genkit-tracer" also admits
     * spans with genkit:* keys (c->genkit) */
    const char *scope;
    bool unquote;
    const char *in[5];
    const char *out[6];
};

static const struct key_step key_steps[] = {
    {2, "genkit-tracer", false, {"genkit:input"}, {"genkit:output"}},
    {4,
     "@flue/opentelemetry",
     false,
     {"flue.turn.input", "flue.tool.arguments", "flue.task.prompt",
      "flue.workflow.payload"},
     {"flue.turn.output", "flue.tool.result", "flue.task.result",
      "flue.operation.result", "flue.workflow.result"}},
    {8,
     NULL,
     false,
     {"gcp.vertex.agent.llm_request", "gcp.vertex.agent.tool_call_args"},
     {"gcp.vertex.agent.llm_response", "gcp.vertex.agent.tool_response"}},
    {9, NULL, false, {"prompt"}, {"all_messages_events"}},
    {10,
     NULL,
     false,
     {"lk.input_text", "lk.user_transcript", "lk.chat_ctx"},
     {"lk.function_tool.output", "lk.response.text"}},
    {12, NULL, true, {"mlflow.spanInputs"}, {"mlflow.spanOutputs"}},
    {15, NULL, false, {"input"}, {"output"}},
    {16, "pydantic-ai", false, {"pydantic_ai.all_messages"}, {"final_result"}},
    {17, NULL, false, {"tool_arguments"}, {"tool_response"}},
};

/* Step 11: Logfire's "events" JSON array of message events. */
static int logfire_events(struct o2l_map_ctx *c, bool output, cJSON **out)
{
    cJSON *events = NULL;
    cJSON *e;
    cJSON *next;
    int rc;

    *out = NULL;
    rc = o2l_mu_value(o2l_map_attr(c, "events"), false, &events);
    if (rc != O2L_OK || !cJSON_IsArray(events)) {
        cJSON_Delete(events);
        return rc;
    }
    for (e = events->child; e; e = next) {
        const char *name = o2l_mu_str(e, "event.name");
        bool choice = name && strcmp(name, "gen_ai.choice") == 0;

        next = e->next;
        if (output && choice) {
            *out = cJSON_DetachItemViaPointer(events, e);
            break;
        }
        if (!output && choice) {
            cJSON_Delete(cJSON_DetachItemViaPointer(events, e));
        }
    }
    if (!output && events->child) {
        *out = events;
        events = NULL;
    }
    if (*out) {
        o2l_map_mark_used(c, "events");
    }
    cJSON_Delete(events);
    return O2L_OK;
}

int o2l_conv_misc_io_step(struct o2l_map_ctx *c, int step, bool output,
                          cJSON **out)
{
    const char *const *keys;
    cJSON *msg;
    int rc = O2L_OK;

    *out = NULL;
    if (step == 11) {
        return logfire_events(c, output, out);
    }
    for (size_t i = 0; i < O2L_ARRAY_LEN(key_steps); i++) {
        const struct key_step *s = &key_steps[i];

        if (s->step != step) {
            continue;
        }
        if (s->step == 2
                ? !c->genkit
                : s->scope && !o2l_mu_starts(c->scope->name, s->scope)) {
            return O2L_OK;
        }
        keys = output ? s->out : s->in;
        for (size_t k = 0; k < 6 && keys[k] && !*out; k++) {
            rc = o2l_map_io_key(c, keys[k], s->unquote, out);
            if (rc != O2L_OK) {
                return rc;
            }
        }
        if ((step == 2 && output) || (step == 16 && !output)) {
            rc = o2l_mu_tree(out); /* both rules below edit the value */
            if (rc != O2L_OK) {
                return rc;
            }
        }
        if (step == 2 && output && *out) {
            /* Genkit: the model's message when there is one. */
            msg = cJSON_DetachItemFromObjectCaseSensitive(*out, "message");
            if (msg) {
                cJSON_Delete(*out);
                *out = msg;
            }
        }
        if (step == 16 && !output && *out) {
            rc = o2l_conv_genai_prepend_system(
                *out, o2l_map_attr(c, "gen_ai.system_instructions"));
        }
        return rc;
    }
    return O2L_OK;
}

static const char *const ai_meta_skip[] = {"userId", "sessionId", "tags",
                                           "langfusePrompt", NULL};

int o2l_conv_misc_metadata(const struct o2l_map_ctx *c, cJSON *md)
{
    int rc;

    rc = o2l_map_add_prefixed(c->attrs, "ai.telemetry.metadata.", ai_meta_skip,
                              md);
    if (rc == O2L_OK) {
        rc = o2l_map_add_prefixed(c->attrs, "ai.settings.context.",
                                  ai_meta_skip, md);
    }
    return rc;
}

int o2l_conv_misc_late_metadata(const struct o2l_map_ctx *c, cJSON *md)
{
    return o2l_map_add_prefixed(c->attrs, "langsmith.metadata.", NULL, md);
}
