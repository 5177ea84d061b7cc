/* SPDX-License-Identifier: Apache-2.0 */
/*
 * pipeline.h - what happens to an accepted export.
 *
 * Receive side (the libevent loop): o2l_pipeline_submit() hands the
 * request body to the spool; the receiver answers once the spool says it
 * is on disk.
 *
 * Delivery side (a thread of its own): requests are read from the spool
 * in order, decoded again, mapped, encoded and queued on the exporter.
 * Each event carries the id of its request; when every event of a
 * request is settled (delivered, or written to the dead-letter file) the
 * request is deleted from the spool.
 *
 * The convert command calls o2l_pipeline_encode() alone, so it prints the
 * very events the daemon delivers.
 */
#ifndef O2L_PIPELINE_H
#define O2L_PIPELINE_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "o2l/assemble.h"
#include "o2l/deadletter.h"
#include "o2l/encode.h"
#include "o2l/encode_otlp.h"
#include "o2l/exporter.h"
#include "o2l/log.h"
#include "o2l/mapper.h"
#include "o2l/otlp.h"
#include "o2l/span.h"
#include "o2l/spool.h"

/* Which output delivery uses. */
enum o2l_output_choice {
    O2L_CHOOSE_AUTO = 0, /* ask the server; v4 and later: OTLP */
    O2L_CHOOSE_INGESTION,
    O2L_CHOOSE_OTLP
};

/*
 * Counters, read with o2l_pipeline_stats (what was accepted is counted by
 * the spool, which knows when it is on disk).
 */
struct o2l_pipeline_stats {
    uint64_t requests_refused;    /* spool full, disk full, a failed store,
                                     stopping or out of memory */
    uint64_t requests_delivered;  /* every event settled; deleted */
    uint64_t requests_unreadable; /* spooled requests that no longer decode */
    uint64_t output_switches;     /* changes of output after the first */
    uint64_t spans_dropped;       /* not LLM-related (mapping.non_llm_spans) */
    uint64_t flattened_dropped;   /* flattened keys over the slot budget */
    int output;                   /* enum o2l_output in use; -1: undecided */
    size_t held_traces;           /* in the assemble stage now */
    size_t held_spans;
    size_t held_bytes;
    struct o2l_exporter_stats exporter; /* summed over every exporter */
};

struct o2l_pipeline_delivery; /* private to pipeline.c and delivery.c */

struct o2l_pipeline {
    struct o2l_map_config map;
    struct o2l_spool *spool;     /* NULL: encode only */
    struct o2l_deadletter *dead; /* where refused events go */
    const struct o2l_log *log;
    /* How delivery makes its exporters (output and callbacks are set by
     * the pipeline); strings must outlive the pipeline. */
    struct o2l_exporter_config export_cfg;
    enum o2l_output_choice output;
    struct o2l_assemble_config assemble;
    struct o2l_otlp_out_config otlp;
    struct o2l_pipeline_delivery *delivery;
};

/*
 * Maps and encodes |ex| into |out| (appended). Returns O2L_OK or
 * O2L_ENOMEM.
 */
int o2l_pipeline_encode(const struct o2l_pipeline *p,
                        const struct o2l_export *ex,
                        struct o2l_event_list *out);

/*
 * Starts the delivery thread, which chooses the output (asking the server
 * for its version with O2L_CHOOSE_AUTO), makes the exporter and delivers.
 * Returns O2L_OK, O2L_ENOMEM or O2L_EIO.
 */
int o2l_pipeline_start(struct o2l_pipeline *p);

/*
 * True when a request of |len| bytes would be taken now: there is room,
 * and the spool has not refused a request for want of room since the
 * last one left it. A false answer is counted as a refused request (the
 * receiver answers 503 without reading further).
 */
bool o2l_pipeline_accepting(struct o2l_pipeline *p, size_t len);

/* True from a refusal for want of room until a request leaves the spool. */
bool o2l_pipeline_full(struct o2l_pipeline *p);

/* What the receiver decoded, to be stored. */
struct o2l_pipeline_request {
    enum o2l_otlp_format format;
    const unsigned char *body; /* decompressed; copied */
    size_t len;
    int64_t received_ns; /* the now_ns the receiver decoded with */
    size_t n_spans;      /* spans accepted from it */
};

/*
 * Stores |req| in the spool. On O2L_OK |done| runs later on the receive
 * thread with O2L_OK (on disk: answer success) or an error (answer 503);
 * *ticket (if not NULL) lets the caller cancel the callback when its
 * request goes away. Otherwise no callback runs: O2L_EFULL (spool at its
 * cap: 503 and retry later), O2L_ETOOBIG (larger than the whole spool:
 * 413), O2L_ESTOPPED (503) or O2L_ENOMEM (503).
 */
int o2l_pipeline_submit(struct o2l_pipeline *p,
                        const struct o2l_pipeline_request *req,
                        o2l_spool_done_fn done, void *arg,
                        struct o2l_spool_ticket **ticket);

/*
 * Stops intake: appends waiting for the disk are committed and their
 * callbacks run on this thread (the receive thread); later submits get
 * O2L_ESTOPPED. Idempotent.
 */
void o2l_pipeline_stop_intake(struct o2l_pipeline *p);

/*
 * Stops intake if not yet done, stops the delivery thread and lets the
 * exporter finish the request in flight. What was not delivered, and what
 * the assemble stage still held, stays in the spool for the next start.
 */
void o2l_pipeline_stop(struct o2l_pipeline *p);

/* Readiness: false with |reason| filled when the spool is full. */
bool o2l_pipeline_ready(struct o2l_pipeline *p, char *reason, size_t len);

struct evbuffer;

/* Writes every counter and gauge of the pipeline in Prometheus form. */
void o2l_pipeline_write_metrics(struct o2l_pipeline *p, struct evbuffer *out);

void o2l_pipeline_stats(struct o2l_pipeline *p, struct o2l_pipeline_stats *out);

/* Frees the delivery state (after stop). Accepts a never-started one. */
void o2l_pipeline_free(struct o2l_pipeline *p);

#endif /* O2L_PIPELINE_H */
