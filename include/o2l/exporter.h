/* SPDX-License-Identifier: Apache-2.0 */
/*
 * exporter.h - the export stage: a bounded queue of events and one worker
 * thread that sends them in batches to Langfuse, either to the ingestion
 * API (JSON ingestion events) or to the OTLP API (items of encode_otlp.h),
 * or, without credentials, appends them as JSON lines to a file.
 *
 * Both APIs share the answers' meaning: 429, 408, 5xx and network errors
 * are retried after a backoff; 413 splits the batch; 401/403/404/405/3xx
 * pause delivery (a configuration error); any other 4xx splits the batch
 * down to the one event at fault, which is dead-lettered. A 2xx from the
 * OTLP API delivers every item of the request: spans it reports as
 * rejected (partial success) cannot be told apart and are only logged.
 *
 * The queue is the seam where the durable spool plugs in: submit() is
 * where a request's events become the exporter's responsibility.
 */
#ifndef O2L_EXPORTER_H
#define O2L_EXPORTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "o2l/encode.h"
#include "o2l/log.h"

/* How an event left the exporter for good. */
enum o2l_settle_kind {
    O2L_SETTLED_DELIVERED = 0, /* accepted by Langfuse or written to file */
    O2L_SETTLED_REJECTED,      /* refused for good (a 4xx) */
    O2L_SETTLED_EXPIRED        /* older than max_age_ms, never delivered */
};

struct o2l_settled {
    const struct o2l_event *ev;
    enum o2l_settle_kind kind;
    int status;          /* Langfuse's status, 0 when none */
    const char *message; /* Langfuse's message or our reason; may be NULL */
};

/*
 * Called on the worker thread with events that are done, all of one kind
 * (delivered, or rejected and expired together), before they are freed.
 * For rejected and expired ones the callback must make them durable (the
 * dead-letter file): returning anything but O2L_OK keeps them queued and
 * tried again after a backoff. The return value for delivered events is
 * ignored.
 */
typedef int (*o2l_exporter_settle_fn)(void *arg,
                                      const struct o2l_settled *items,
                                      size_t n);

/* Which Langfuse API the exporter sends to. */
enum o2l_output {
    O2L_OUTPUT_INGESTION = 0, /* POST /api/public/ingestion, JSON batches
                                 of ingestion events (v2, v3) */
    O2L_OUTPUT_OTLP           /* POST /api/public/otel/v1/traces, OTLP
                                 protobuf, gzip, items from encode_otlp.h
                                 (v4, Cloud) */
};

/*
 * Called on the worker thread when the ingestion API refuses trace or
 * observation events as a type it does not accept (Langfuse v4 in its
 * default mode answers each with a per-event 400 whose message says
 * "not accepted"). With this callback set, such events are neither
 * dead-lettered nor re-sent: they stay queued and delivery pauses (as
 * after a configuration error) until the owner switches to the OTLP
 * output. NULL: they are dead-lettered like any other 4xx.
 */
typedef void (*o2l_exporter_refused_fn)(void *arg);

struct o2l_exporter_config {
    enum o2l_output output;
    const char *base_url;   /* e.g. http://localhost:3000; NULL: file sink */
    const char *public_key; /* NULL: file sink */
    const char *secret_key; /* never logged */
    const char *file_path;  /* file sink path (JSON lines) */
    uint32_t flush_interval_ms; /* send a partial batch after this long */
    size_t batch_max_events;    /* flush when this many are queued */
    size_t batch_max_bytes;     /* at most 3.5 MB per request, counted
                                   before compression (OTLP requests are
                                   also split to stay under 4 MB gzipped) */
    size_t queue_max_events;    /* submit() answers O2L_EFULL past these */
    size_t queue_max_bytes;
    uint32_t request_timeout_ms; /* whole HTTP request */
    uint32_t retry_initial_ms;   /* first backoff */
    uint32_t retry_max_ms;       /* backoff cap */
    double retry_multiplier;     /* growth per failed attempt (>= 1) */
    uint64_t max_age_ms;         /* 0: retry forever; else expire events
                                    whose born_ns is older than this */
    uint32_t auth_retry_ms;      /* pause after a configuration error
                                    (401/403/404/405/3xx) or a refused
                                    event type */
    uint32_t shutdown_timeout_ms;
    /*
     * What stop() does with queued events. false: it keeps sending until
     * the queue is empty or the shutdown timeout passes (a backoff in
     * progress is cut short for one last try) and what is left counts as
     * dropped. true: the owner keeps them elsewhere (the spool), so it
     * keeps sending only while Langfuse takes them, returns as soon as
     * nothing is in flight and the next request would have to wait (a
     * backoff, a Retry-After, a pause), and what is left counts as left,
     * not dropped.
     */
    bool leave_queued_on_stop;
    o2l_exporter_settle_fn on_settle; /* NULL: log and count only */
    void *settle_arg;
    o2l_exporter_refused_fn on_type_refused; /* see above; uses settle_arg */
};

/* Exporter counters, read with o2l_exporter_stats(). */
struct o2l_exporter_stats {
    uint64_t events_queued;    /* accepted by submit() */
    uint64_t events_delivered; /* accepted by Langfuse or written */
    uint64_t events_rejected;  /* refused for good (4xx), dead-lettered */
    uint64_t events_expired;   /* older than max_age_ms, dead-lettered */
    uint64_t events_retried;   /* re-sent after 5xx or request failure
                                  (not those held for a refused type) */
    uint64_t events_dropped;   /* lost: queued at shutdown with nowhere
                                  else to keep them */
    uint64_t events_left;      /* queued at shutdown, kept by the owner */
    uint64_t requests_sent;
    uint64_t requests_failed;
    size_t queue_events;
    size_t queue_bytes;
};

struct o2l_exporter;

/* Fills |cfg| with defaults (sizes and timers; no URL or keys). */
void o2l_exporter_config_defaults(struct o2l_exporter_config *cfg);

/*
 * Creates an exporter. Strings in |cfg| are copied. |log| must outlive the
 * exporter. Returns NULL when out of memory or when libcurl cannot start.
 */
struct o2l_exporter *o2l_exporter_create(const struct o2l_exporter_config *cfg,
                                         const struct o2l_log *log);

/* Starts the worker thread. Returns O2L_OK or O2L_EIO. */
int o2l_exporter_start(struct o2l_exporter *ex);

/*
 * Queues every event of |events|. On O2L_OK the exporter owns them and
 * |events| is left empty; on O2L_EFULL (no room now), O2L_ETOOBIG (more
 * events or bytes than the whole queue holds, so never) or O2L_ESTOPPED
 * nothing is taken and the caller keeps |events|.
 */
int o2l_exporter_submit(struct o2l_exporter *ex, struct o2l_event_list *events);

/*
 * Like o2l_exporter_submit(), but waits up to |timeout_ms| for room, and
 * takes a list larger than the whole queue when the queue is empty (so
 * one large request cannot block delivery for good). Returns O2L_OK,
 * O2L_ETIMEDOUT (nothing taken), O2L_ESTOPPED or O2L_ENOMEM.
 */
int o2l_exporter_submit_wait(struct o2l_exporter *ex,
                             struct o2l_event_list *events,
                             uint32_t timeout_ms);

/*
 * True while the queue has room and the exporter is not stopping: a cheap
 * check receivers make before decoding, so that load they must refuse
 * costs little.
 */
bool o2l_exporter_accepting(struct o2l_exporter *ex);

/* The queue's bound in events (fixed at creation). */
size_t o2l_exporter_queue_max_events(const struct o2l_exporter *ex);

/*
 * Stops accepting and stops the worker after at most the shutdown
 * timeout (see leave_queued_on_stop for what happens to queued events).
 * Returns O2L_OK, or O2L_ESTOPPED when events were dropped.
 */
int o2l_exporter_stop(struct o2l_exporter *ex);

/*
 * Like o2l_exporter_stop(), but no further request begins (nor the other
 * halves of a split one): it returns once the request in flight, if any,
 * is answered, or at the shutdown timeout, when that request is cut off.
 * For leaving a route that is no longer used; queued events count as left
 * (leave_queued_on_stop) or dropped.
 */
int o2l_exporter_stop_now(struct o2l_exporter *ex);

void o2l_exporter_stats(struct o2l_exporter *ex,
                        struct o2l_exporter_stats *out);

/* Frees |ex| (stopping it first if needed). Accepts NULL. */
void o2l_exporter_destroy(struct o2l_exporter *ex);

/* What a 207 (or 200/201) body says about one event of the batch. */
enum o2l_event_outcome {
    O2L_OUTCOME_OK = 0,  /* listed in successes, or not listed at all */
    O2L_OUTCOME_RETRY,   /* per-event 5xx (or 429) */
    O2L_OUTCOME_REJECTED /* per-event 4xx: dead-letter, never retry */
};

struct o2l_event_result {
    enum o2l_event_outcome outcome;
    int status;    /* the per-event status, 0 when not given */
    char *message; /* Langfuse's message/error text, or NULL */
};

/*
 * Reads an ingestion answer body ({"successes":[...],"errors":[...]}) and
 * fills results[i] for each of the |n| events of the batch whose envelope
 * ids are |ids|. Returns O2L_OK, or O2L_EPARSE when the body is not such a
 * document (the caller then treats the whole request as failed).
 * Messages are o2l_malloc'd; free with o2l_event_results_clear().
 */
int o2l_ingestion_parse_results(const char *body, size_t body_len,
                                const char *const *ids, size_t n,
                                struct o2l_event_result *results);
void o2l_event_results_clear(struct o2l_event_result *results, size_t n);

/*
 * Parses a Retry-After header value: delay seconds or an HTTP date.
 * Returns the delay in milliseconds from |now_s| (Unix seconds), or -1.
 */
long long o2l_retry_after_ms(const char *value, int64_t now_s);

#endif /* O2L_EXPORTER_H */
