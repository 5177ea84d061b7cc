/* SPDX-License-Identifier: Apache-2.0 */
/*
 * model.h - Langfuse's model as the map stage produces it and the encoders
 * read it: traces and observations, with the fields of Langfuse's
 * ingestion API. NULL pointers and zero times mean
 * "unknown", and the encoders leave unknown fields out.
 */
#ifndef O2L_MODEL_H
#define O2L_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

enum o2l_obs_type {
    O2L_OBS_SPAN = 0,
    O2L_OBS_GENERATION,
    O2L_OBS_EVENT,
    O2L_OBS_AGENT,
    O2L_OBS_TOOL,
    O2L_OBS_CHAIN,
    O2L_OBS_RETRIEVER,
    O2L_OBS_EMBEDDING,
    O2L_OBS_EVALUATOR,
    O2L_OBS_GUARDRAIL,
    O2L_OBS_TYPE_COUNT
};

enum o2l_level {
    O2L_LEVEL_DEBUG = 0,
    O2L_LEVEL_DEFAULT,
    O2L_LEVEL_WARNING,
    O2L_LEVEL_ERROR
};

/* "span", "generation", ...: lower case, as in langfuse.observation.type. */
const char *o2l_obs_type_name(enum o2l_obs_type t);

/* "DEBUG", "DEFAULT", "WARNING", "ERROR". */
const char *o2l_level_name(enum o2l_level l);

/* True for GENERATION and the seven other generation-like types, which
 * carry model, usage, cost and completion start. */
bool o2l_obs_type_is_generation_like(enum o2l_obs_type t);

#define O2L_OBS_ID_MAX 48

struct o2l_observation {
    enum o2l_obs_type type;
    char id[O2L_OBS_ID_MAX];        /* span id, or <spanId>-event-<n> */
    char trace_id[33];              /* after custom trace ids */
    char parent_id[O2L_OBS_ID_MAX]; /* "" for a root */
    char *name;
    uint64_t start_ns;
    uint64_t end_ns;              /* 0 for EVENT */
    uint64_t completion_start_ns; /* 0 = unknown */
    enum o2l_level level;
    char *status_message;
    char *version;
    char *environment; /* the trace's, normalised; never NULL */
    char *model;
    cJSON *input;
    cJSON *output;
    cJSON *metadata; /* object */
    /* Object with "attributes", "resourceAttributes" and "scope": merged
     * into metadata by the ingestion encoder only; the OTLP encoder leaves
     * it out. */
    cJSON *ingest_metadata;
    cJSON *model_parameters; /* object of scalars */
    cJSON *usage_details;    /* object of integers >= 0 */
    cJSON *cost_details;     /* object of numbers >= 0 */
    char *prompt_name;       /* set only together with prompt_version */
    int64_t prompt_version;
    uint64_t envelope_ns; /* envelope timestamp (latest end time) */
    bool usage_dropped;   /* the agent rule removed model, usage and cost
                             (its children carry them) */
    bool agent_operation; /* gen_ai.operation.name is invoke_agent or
                             agent_step */
};

struct o2l_trace {
    char id[33];
    char envelope_id[80]; /* <traceId>-trace-<spanId> */
    uint64_t timestamp_ns;
    uint64_t envelope_ns;
    char *name;
    char *user_id;
    char *session_id;
    char *release;
    char *version;
    char *environment; /* never NULL */
    cJSON *tags;       /* array of unique sorted strings, or NULL */
    cJSON *metadata;   /* object or NULL */
    /* The true root's observation metadata, merged under metadata in
     * trace-create only; the OTLP encoder leaves it out. */
    cJSON *ingest_metadata;
    cJSON *input;
    cJSON *output;
    int public_flag; /* -1 unknown, 0 false, 1 true */
};

/* What one map call produced: each trace is followed, in encoding order,
 * by its observations (obs[i].trace_id names the trace). */
struct o2l_mapped {
    struct o2l_trace *traces;
    size_t n_traces;
    struct o2l_observation *obs;
    size_t n_obs;
    /* Spans left out by mapping.non_llm_spans = drop. */
    size_t spans_dropped;
    /* Flattened attribute keys (llm.input_messages.N..., ...) dropped
     * because a span went over mapping.max_flattened_slots. */
    size_t flattened_keys_dropped;
};

/* Frees |m| and everything it owns. Accepts NULL. */
void o2l_mapped_free(struct o2l_mapped *m);

#endif /* O2L_MODEL_H */
