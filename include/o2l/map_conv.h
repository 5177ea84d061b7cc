/* SPDX-License-Identifier: Apache-2.0 */
/*
 * map_conv.h - the per-span state of the map stage and the readers of
 * each convention (Langfuse SDKs, OTel GenAI, OpenInference, OpenLLMetry,
 * and the smaller ones). The driver (mapper.c) owns the priority order of
 * every field and asks the readers for their steps.
 */
#ifndef O2L_MAP_CONV_H
#define O2L_MAP_CONV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "o2l/mapper.h"
#include "o2l/model.h"
#include "o2l/span.h"

#define O2L_MAP_USED_MAX    24
#define O2L_MAP_INDEX_SLOTS 512

/* One span being mapped into one observation. */
struct o2l_map_ctx {
    const struct o2l_span *span;
    const struct o2l_scope *scope;
    const cJSON *attrs;
    const cJSON *res;
    const struct o2l_map_config *cfg;
    struct o2l_observation *obs;
    bool ai_sdk;         /* scope "ai" or an "ai." key */
    bool genkit;         /* scope "genkit-tracer..." or a "genkit:" key */
    size_t slots_left;   /* flattened-key budget */
    size_t flat_dropped; /* flattened keys over the budget */
    /* Attribute keys (or prefixes ending in '.') taken as input or output;
     * they are left out of the ingestion-only "attributes". */
    const char *used[O2L_MAP_USED_MAX];
    size_t n_used;
    /* Hash index over the span's attribute keys (open addressing);
     * index_mask 0 means "no index, search linearly". */
    size_t index_mask;
    const cJSON *index[O2L_MAP_INDEX_SLOTS];
};

/* Builds c->index from c->attrs; spans with very many attributes keep
 * the linear search. Call before any o2l_map_attr. */
void o2l_map_index_build(struct o2l_map_ctx *c);

/* The span attribute |key| (exact match), or NULL. */
const cJSON *o2l_map_attr(const struct o2l_map_ctx *c, const char *key);

/* The span attribute |key| when it is a usable string, else NULL. */
const char *o2l_map_attr_str(const struct o2l_map_ctx *c, const char *key);

/*
 * Fills c->obs from c->span: everything but the trace id, the
 * environment and the trace-wide rules (mapper.c). Returns O2L_OK or
 * O2L_ENOMEM; fields filled before a failure stay for o2l_mapped_free.
 */
int o2l_map_observation(struct o2l_map_ctx *c);

/* Fills |o| with the EVENT made from span event |n| of c->span. */
int o2l_map_event(const struct o2l_map_ctx *c, size_t n,
                  struct o2l_observation *o);

/* Records |key| (a key, or a prefix ending in '.') as an input/output
 * source. |key| must outlive the context (attribute keys or literals). */
void o2l_map_mark_used(struct o2l_map_ctx *c, const char *key);

/* An input or output step: *out NULL when the step has nothing for that
 * side. Returns O2L_OK or O2L_ENOMEM. */
typedef int (*o2l_map_io_fn)(struct o2l_map_ctx *c, bool output, cJSON **out);

/* Copies the value of |key| for input/output (JSON strings parsed) and
 * marks it used. */
int o2l_map_io_key(struct o2l_map_ctx *c, const char *key, bool unquote,
                   cJSON **out);

/* Langfuse SDK attributes (langfuse.*). */
bool o2l_conv_langfuse_type(const struct o2l_map_ctx *c, enum o2l_obs_type *t);
int o2l_conv_langfuse_io(struct o2l_map_ctx *c, bool output, cJSON **out);
int o2l_conv_langfuse_metadata(const struct o2l_map_ctx *c, cJSON *md);
bool o2l_conv_langfuse_level(const struct o2l_map_ctx *c,
                             enum o2l_level *level);
int o2l_conv_langfuse_prompt(struct o2l_map_ctx *c);
int o2l_conv_langfuse_completion_start(const struct o2l_map_ctx *c,
                                       uint64_t *ns);

/* OpenTelemetry GenAI conventions (gen_ai.*). */
bool o2l_conv_genai_type(const struct o2l_map_ctx *c, enum o2l_obs_type *t);
bool o2l_conv_genai_tool_type(const struct o2l_map_ctx *c,
                              enum o2l_obs_type *t);
bool o2l_conv_genai_is_content_event(const char *name);
int o2l_conv_genai_io_details_event(struct o2l_map_ctx *c, bool output,
                                    cJSON **out);
int o2l_conv_genai_io_message_events(struct o2l_map_ctx *c, bool output,
                                     cJSON **out);
int o2l_conv_genai_io_content_events(struct o2l_map_ctx *c, bool output,
                                     cJSON **out);
int o2l_conv_genai_io_messages(struct o2l_map_ctx *c, bool output, cJSON **out);
int o2l_conv_genai_io_tool_call(struct o2l_map_ctx *c, bool output,
                                cJSON **out);
bool o2l_conv_genai_first_chunk(const struct o2l_map_ctx *c, uint64_t *ns);
/* Puts gen_ai.system_instructions (|instr|) in front of the message list
 * |messages| as a system message, unless it already has one. */
int o2l_conv_genai_prepend_system(cJSON *messages, const cJSON *instr);

/* OpenInference (openinference.span.kind, llm.*, input.value, ...). */
bool o2l_conv_openinference_type(const struct o2l_map_ctx *c,
                                 enum o2l_obs_type *t);
int o2l_conv_openinference_io_value(struct o2l_map_ctx *c, bool output,
                                    cJSON **out);
int o2l_conv_openinference_io_messages(struct o2l_map_ctx *c, bool output,
                                       cJSON **out);
int o2l_conv_openinference_metadata(const struct o2l_map_ctx *c, cJSON *md);
int o2l_conv_openinference_tools(struct o2l_map_ctx *c, cJSON **out);

/* OpenLLMetry (traceloop.*, gen_ai.prompt.N, gen_ai.completion.N). */
bool o2l_conv_openllmetry_type(const struct o2l_map_ctx *c,
                               enum o2l_obs_type *t);
bool o2l_conv_openllmetry_task_type(const struct o2l_map_ctx *c,
                                    enum o2l_obs_type *t);
const cJSON *o2l_conv_openllmetry_name(const struct o2l_map_ctx *c);
int o2l_conv_openllmetry_io_entity(struct o2l_map_ctx *c, bool output,
                                   cJSON **out);
int o2l_conv_openllmetry_io_prompt(struct o2l_map_ctx *c, bool output,
                                   cJSON **out);
int o2l_conv_openllmetry_metadata(const struct o2l_map_ctx *c, cJSON *md);

/* Smaller conventions: Vercel AI SDK, Genkit, LangSmith, MLflow, Flue,
 * LiveKit, Google ADK, Pydantic AI. */
bool o2l_conv_misc_kind_type(const struct o2l_map_ctx *c, enum o2l_obs_type *t);
bool o2l_conv_misc_late_type(const struct o2l_map_ctx *c, enum o2l_obs_type *t);
bool o2l_conv_misc_tail_type(const struct o2l_map_ctx *c, enum o2l_obs_type *t);
int o2l_conv_misc_io_ai_sdk(struct o2l_map_ctx *c, bool output, cJSON **out);
/* Steps 2, 4, 8-12 and 15-17 of the input/output order. */
int o2l_conv_misc_io_step(struct o2l_map_ctx *c, int step, bool output,
                          cJSON **out);
/* ai.telemetry.metadata.* and ai.settings.context.* (before OpenInference)
 * and langsmith.metadata.* (after OpenLLMetry). */
int o2l_conv_misc_metadata(const struct o2l_map_ctx *c, cJSON *md);
int o2l_conv_misc_late_metadata(const struct o2l_map_ctx *c, cJSON *md);

/*
 * Adds to |md| (first value wins) the attributes "<prefix><key>" as
 * "<key>", except the names in |skip| (NULL-terminated, may be NULL).
 * Values go through the JSON-in-strings rule.
 */
int o2l_map_add_prefixed(const cJSON *attrs, const char *prefix,
                         const char *const *skip, cJSON *md);

/* What a redacted value becomes when the settings name no marker. */
#define O2L_MAP_REDACT_MARKER "[REDACTED]"

/* True when |v| (an object, array, raw JSON item or a string holding
 * JSON) holds a key that o2l_map_redact would replace. */
bool o2l_map_redact_needed(const struct o2l_map_config *cfg, const cJSON *v);

/* A new string item holding cfg->redact_marker. */
int o2l_map_marker(const struct o2l_map_config *cfg, cJSON **out);

/* OpenInference retrieval.documents.N.document.* rebuilt into a list
 * (the output of a RETRIEVER when no output step matched). */
int o2l_conv_openinference_documents(struct o2l_map_ctx *c, cJSON **out);

/* OpenLLMetry (0.52 and older) llm.request.functions.N.* rebuilt into a
 * list of tool definitions, "parameters" parsed. */
int o2l_conv_openllmetry_functions(struct o2l_map_ctx *c, cJSON **out);

#endif /* O2L_MAP_CONV_H */
