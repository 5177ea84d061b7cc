/* SPDX-License-Identifier: Apache-2.0 */
/*
 * mapper.h - the map stage: one decoded export (struct o2l_export) into
 * Langfuse's model (struct o2l_mapped), reading every supported convention
 * in priority order (README: "What is mapped from where").
 * Pure: no I/O, no logging, no global state.
 */
#ifndef O2L_MAPPER_H
#define O2L_MAPPER_H

#include <stdbool.h>
#include <stddef.h>

#include "o2l/model.h"
#include "o2l/span.h"

/* Lists are NULL-terminated; a NULL list is an empty one. */
struct o2l_map_config {
    bool session_from_thread_id;                /* default true */
    const char *const *control_flow_exceptions; /* NULL-terminated */
    const char *trace_id_attribute; /* default "langfuse.trace.id" */
    size_t max_flattened_slots;     /* default 10000 */
    /* mapping.thread_id_keys: lifted-metadata keys read as the LangGraph
     * thread id, the last session source (default "thread_id"). */
    const char *const *thread_id_keys;
    /* mapping.non_llm_spans = drop: spans that are not LLM-related give
     * no observation (default false: keep). A span is LLM-related when
     * its scope name starts with one of llm_scopes or one of its
     * attribute keys starts with one of llm_key_prefixes. */
    bool drop_non_llm_spans;
    const char *const *llm_scopes;
    const char *const *llm_key_prefixes;
    /* mapping.redact: key names whose values become redact_marker in
     * input, output, metadata and model parameters (default none). */
    const char *const *redact;
    const char *redact_marker; /* default "[REDACTED]" */
};

/* Fills |cfg| with the mapping defaults (config/otel2langfuse.yaml). The
 * strings are static. */
void o2l_map_config_defaults(struct o2l_map_config *cfg);

/*
 * True when |key| is listed in cfg->redact: it equals a listed name, or
 * ends with "." and that name ("email" matches "user.email", and
 * "user.email" matches "app.user.email"). Exact and case-sensitive.
 * Accepts a NULL |cfg| or |key| (false).
 */
bool o2l_map_is_redacted(const struct o2l_map_config *cfg, const char *key);

/*
 * Replaces, anywhere in |*v| (objects at any depth, also inside arrays,
 * raw JSON items and strings holding JSON), the value of every redacted
 * key with cfg->redact_marker. A raw item holding an object or array is
 * parsed first; a string holding JSON in which a key is redacted is
 * written back as compact JSON text. Returns O2L_OK or O2L_ENOMEM (|*v| may then be partly redacted
 * and is still valid).
 */
int o2l_map_redact(const struct o2l_map_config *cfg, cJSON **v);

/*
 * Maps every span of |ex|. Spans are grouped by trace id; each group is
 * one assemble window: one o2l_trace per group, then its observations
 * (spans, and EVENTs from span events). Returns O2L_OK with *out owned by
 * the caller (o2l_mapped_free), or O2L_ENOMEM. Never fails on content.
 *
 * To save copying every attribute, the ingestion-only metadata of the
 * observations (ingest_metadata) refers to values inside |ex|: read the
 * result only while |ex| is alive. Freeing the two is safe in any order.
 *
 * With cfg->drop_non_llm_spans, a span that is not LLM-related gives no
 * observation and no EVENTs (counted in spans_dropped), yet still counts
 * for the trace: its attributes give trace facts, it can be the true
 * root (then the trace's name, input and output come only from explicit
 * langfuse.trace.* keys) and its children keep it as their parent. A
 * trace whose spans are all dropped gives no trace.
 */
int o2l_map_export(const struct o2l_export *ex,
                   const struct o2l_map_config *cfg, struct o2l_mapped **out);

#endif /* O2L_MAPPER_H */
