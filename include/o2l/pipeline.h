/* SPDX-License-Identifier: Apache-2.0 */
/*
 * pipeline.h - what happens to an accepted export: map, encode, and hand
 * the events to the exporter. Receivers call o2l_pipeline_submit(); the
 * convert command calls o2l_pipeline_encode() and prints the result, so
 * both produce the same events. The durable spool goes in front of the
 * map step here.
 */
#ifndef O2L_PIPELINE_H
#define O2L_PIPELINE_H

#include <stdbool.h>

#include "o2l/encode.h"
#include "o2l/exporter.h"
#include "o2l/mapper.h"
#include "o2l/span.h"

struct o2l_pipeline {
    struct o2l_map_config map;
    struct o2l_exporter *exporter; /* NULL: encode only */
};

/*
 * Maps and encodes |ex| into |out| (appended). Returns O2L_OK or
 * O2L_ENOMEM.
 */
int o2l_pipeline_encode(const struct o2l_pipeline *p,
                        const struct o2l_export *ex,
                        struct o2l_event_list *out);

/* True when a submit has a chance: the exporter's queue has room. */
bool o2l_pipeline_accepting(struct o2l_pipeline *p);

/*
 * Maps, encodes and queues |ex| for export. Returns O2L_OK once the
 * events are queued, O2L_EFULL when the exporter's queue is full (the
 * receiver answers 503 and the client retries), O2L_ETOOBIG when the
 * request is larger than the whole queue (the client must send smaller
 * requests or the queue be raised), O2L_ESTOPPED during shutdown, or
 * O2L_ENOMEM. On any error nothing was queued.
 */
int o2l_pipeline_submit(struct o2l_pipeline *p, const struct o2l_export *ex);

#endif /* O2L_PIPELINE_H */
