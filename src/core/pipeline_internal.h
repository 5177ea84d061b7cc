/* SPDX-License-Identifier: Apache-2.0 */
/*
 * pipeline_internal.h - state shared by pipeline.c (receive side, settle
 * callback, lifetime) and delivery.c (the delivery thread). Not for other
 * modules.
 */
#ifndef O2L_PIPELINE_INTERNAL_H
#define O2L_PIPELINE_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "o2l/pipeline.h"

/* A spool request read by the delivery thread and not yet deleted. */
struct in_flight {
    uint64_t id;
    int64_t received_ns;
    size_t left;   /* events handed to the exporter, not yet settled */
    bool released; /* every span of it has left the assemble stage */
    bool done;     /* deleted from the spool (or being deleted) */
};

struct o2l_pipeline_delivery {
    pthread_mutex_t mu;
    pthread_t thread;
    bool started;
    atomic_bool stop;
    /*
     * An append was refused for want of room and no request has left the
     * spool since: receivers refuse before decoding and readiness says
     * full, until delivery frees some room.
     */
    atomic_bool full;
    /* The ingestion API refused trace events as a type: go OTLP. */
    atomic_bool type_refused;

    /* Guarded by mu: requests in flight, increasing ids (a ring). */
    struct in_flight *ring;
    size_t cap;
    size_t head;
    size_t len;

    /* Guarded by mu: the exporter in use (the delivery thread swaps it),
     * the counters of the ones before it, and the other counters. */
    struct o2l_exporter *exporter;
    struct o2l_exporter_stats retired;
    struct o2l_pipeline_stats st;
};

/* The delivery thread's body (delivery.c). */
void *o2l_delivery_main(void *arg);

/* The exporter callbacks (pipeline.c), with the pipeline as argument. */
int o2l_pipeline_on_settle(void *arg, const struct o2l_settled *items,
                           size_t n);
void o2l_pipeline_on_type_refused(void *arg);

/*
 * Requests in flight (pipeline.c); all with mu held. flight_* return
 * true when the request just became done: the caller deletes it from
 * the spool (without the lock) and counts it.
 */
int o2l_flight_push(struct o2l_pipeline_delivery *d, uint64_t id,
                    int64_t received_ns);
struct in_flight *o2l_flight_find(struct o2l_pipeline_delivery *d, uint64_t id);
bool o2l_flight_settle(struct o2l_pipeline_delivery *d, uint64_t id, size_t n);
bool o2l_flight_release(struct o2l_pipeline_delivery *d, uint64_t id);
void o2l_flight_clear(struct o2l_pipeline_delivery *d);

/* Adds the counters of |more| to |sum| (gauges: |more|'s). */
void o2l_exporter_stats_add(struct o2l_exporter_stats *sum,
                            const struct o2l_exporter_stats *more);

/* Deletes request |id| from the spool and counts it as delivered. */
void o2l_pipeline_finish(struct o2l_pipeline *p, uint64_t id);

#endif /* O2L_PIPELINE_INTERNAL_H */
