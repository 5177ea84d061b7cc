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

struct o2l_map_config {
    bool session_from_thread_id;                /* default true */
    const char *const *control_flow_exceptions; /* NULL-terminated */
    const char *trace_id_attribute; /* default "langfuse.trace.id" */
    size_t max_flattened_slots;     /* default 10000 */
};

/* Fills |cfg| with the mapping defaults (config/otel2langfuse.yaml). The
 * strings are static. */
void o2l_map_config_defaults(struct o2l_map_config *cfg);

/*
 * Maps every span of |ex|. Spans are grouped by trace id; each group is
 * one assemble window: one o2l_trace per group, then its observations
 * (spans, and EVENTs from span events). Returns O2L_OK with *out owned by
 * the caller (o2l_mapped_free), or O2L_ENOMEM. Never fails on content.
 *
 * To save copying every attribute, the ingestion-only metadata of the
 * observations (ingest_metadata) refers to values inside |ex|: read the
 * result only while |ex| is alive. Freeing the two is safe in any order.
 */
int o2l_map_export(const struct o2l_export *ex,
                   const struct o2l_map_config *cfg, struct o2l_mapped **out);

#endif /* O2L_MAPPER_H */
