/* SPDX-License-Identifier: Apache-2.0 */
/*
 * pipeline.c - from an accepted export to events on the exporter's queue,
 * through the spool: the receive side stores requests, the delivery
 * thread reads them back in order, maps and encodes them, and deletes
 * each once all its events are settled.
 */
#include "o2l/pipeline.h"

#include <string.h>

#include "o2l/common.h"
#include "pipeline_internal.h"

#define COMPONENT "pipeline"

int o2l_pipeline_encode(const struct o2l_pipeline *p,
                        const struct o2l_export *ex, struct o2l_event_list *out)
{
    struct o2l_mapped *m = NULL;
    int rc;

    rc = o2l_map_export(ex, &p->map, &m);
    if (rc != O2L_OK) {
        goto out;
    }
    rc = o2l_encode_ingestion(m, O2L_EVENT_MAX_BYTES, out);

out:
    o2l_mapped_free(m);
    return rc;
}

static struct o2l_pipeline_delivery *delivery(struct o2l_pipeline *p)
{
    struct o2l_pipeline_delivery *d;

    if (p->delivery) {
        return p->delivery;
    }
    d = o2l_calloc(1, sizeof(*d));
    if (!d) {
        return NULL;
    }
    if (pthread_mutex_init(&d->mu, NULL) != 0) {
        o2l_free(d);
        return NULL;
    }
    atomic_init(&d->stop, false);
    atomic_init(&d->full, false);
    atomic_init(&d->type_refused, false);
    d->st.output = -1;
    p->delivery = d;
    return d;
}

static void count(struct o2l_pipeline *p, uint64_t *field, uint64_t n)
{
    pthread_mutex_lock(&p->delivery->mu);
    *field += n;
    pthread_mutex_unlock(&p->delivery->mu);
}

/* ---- requests in flight ------------------------------------------- */

static struct in_flight *flight_at(struct o2l_pipeline_delivery *d, size_t i)
{
    return &d->ring[(d->head + i) % d->cap];
}

int o2l_flight_push(struct o2l_pipeline_delivery *d, uint64_t id,
                    int64_t received_ns)
{
    if (d->len == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 256;
        struct in_flight *r = o2l_malloc(cap * sizeof(*r));

        if (!r) {
            return O2L_ENOMEM;
        }
        for (size_t i = 0; i < d->len; i++) {
            r[i] = *flight_at(d, i);
        }
        o2l_free(d->ring);
        d->ring = r;
        d->cap = cap;
        d->head = 0;
    }
    d->ring[(d->head + d->len) % d->cap] =
        (struct in_flight){id, received_ns, 0, false, false};
    d->len++;
    return O2L_OK;
}

struct in_flight *o2l_flight_find(struct o2l_pipeline_delivery *d, uint64_t id)
{
    size_t lo = 0;
    size_t hi = d->len;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        struct in_flight *f = flight_at(d, mid);

        if (f->id == id) {
            return f;
        }
        if (f->id < id) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return NULL;
}

/* Marks |f| done when nothing of it is pending; drops done ones in front. */
static bool flight_check(struct o2l_pipeline_delivery *d, struct in_flight *f)
{
    bool now_done = false;

    if (!f->done && f->released && f->left == 0) {
        f->done = true;
        now_done = true;
    }
    while (d->len > 0 && flight_at(d, 0)->done) {
        d->head = (d->head + 1) % d->cap;
        d->len--;
    }
    return now_done;
}

bool o2l_flight_settle(struct o2l_pipeline_delivery *d, uint64_t id, size_t n)
{
    struct in_flight *f = o2l_flight_find(d, id);

    if (!f || f->done) {
        return false;
    }
    f->left = f->left > n ? f->left - n : 0;
    return flight_check(d, f);
}

bool o2l_flight_release(struct o2l_pipeline_delivery *d, uint64_t id)
{
    struct in_flight *f = o2l_flight_find(d, id);

    if (!f || f->done) {
        return false;
    }
    f->released = true;
    return flight_check(d, f);
}

void o2l_flight_clear(struct o2l_pipeline_delivery *d)
{
    d->head = 0;
    d->len = 0;
}

void o2l_pipeline_finish(struct o2l_pipeline *p, uint64_t id)
{
    /* A failed delete only means it is sent again next start. */
    o2l_spool_ack(p->spool, id);
    pthread_mutex_lock(&p->delivery->mu);
    p->delivery->st.requests_delivered++;
    pthread_mutex_unlock(&p->delivery->mu);
    atomic_store(&p->delivery->full, false);
}

void o2l_exporter_stats_add(struct o2l_exporter_stats *sum,
                            const struct o2l_exporter_stats *more)
{
    sum->events_queued += more->events_queued;
    sum->events_delivered += more->events_delivered;
    sum->events_rejected += more->events_rejected;
    sum->events_expired += more->events_expired;
    sum->events_retried += more->events_retried;
    sum->events_dropped += more->events_dropped;
    sum->events_left += more->events_left;
    sum->requests_sent += more->requests_sent;
    sum->requests_failed += more->requests_failed;
    /* Gauges: the latest exporter's. */
    sum->queue_events = more->queue_events;
    sum->queue_bytes = more->queue_bytes;
}

/* ---- the exporter's callbacks ------------------------------------- */

static int dead_letter(struct o2l_pipeline *p, const struct o2l_settled *items,
                       size_t n)
{
    int rc = O2L_EIO;

    if (p->dead) {
        rc = o2l_deadletter_append_settled(p->dead, items, n,
                                           (int64_t)o2l_now_ns());
    }
    if (rc != O2L_OK) {
        o2l_log_error(p->log, COMPONENT,
                      "cannot write events=%zu to the dead-letter file: %s; "
                      "they stay queued",
                      n, o2l_strerror(rc));
    }
    return rc;
}

int o2l_pipeline_on_settle(void *arg, const struct o2l_settled *items, size_t n)
{
    struct o2l_pipeline *p = arg;
    struct o2l_pipeline_delivery *d = p->delivery;

    if (n > 0 && items[0].kind != O2L_SETTLED_DELIVERED) {
        int rc = dead_letter(p, items, n);

        if (rc != O2L_OK) {
            return rc;
        }
    }
    if (!d) {
        return O2L_OK;
    }
    /* Runs of one request are common: settle them in one step. */
    for (size_t i = 0; i < n;) {
        uint64_t id = items[i].ev->tag;
        size_t run = 1;
        bool finished;

        while (i + run < n && items[i + run].ev->tag == id) {
            run++;
        }
        pthread_mutex_lock(&d->mu);
        finished = id != 0 && o2l_flight_settle(d, id, run);
        pthread_mutex_unlock(&d->mu);
        if (finished) {
            o2l_pipeline_finish(p, id);
        }
        i += run;
    }
    return O2L_OK;
}

void o2l_pipeline_on_type_refused(void *arg)
{
    struct o2l_pipeline *p = arg;

    if (p->delivery) {
        atomic_store(&p->delivery->type_refused, true);
    }
}

int o2l_pipeline_start(struct o2l_pipeline *p)
{
    struct o2l_pipeline_delivery *d = delivery(p);

    if (!d) {
        return O2L_ENOMEM;
    }
    if (d->started) {
        return O2L_OK;
    }
    if (pthread_create(&d->thread, NULL, o2l_delivery_main, p) != 0) {
        return O2L_EIO;
    }
    d->started = true;
    return O2L_OK;
}

/* ---- the receive side --------------------------------------------- */

bool o2l_pipeline_full(struct o2l_pipeline *p)
{
    return p->delivery && atomic_load(&p->delivery->full);
}

bool o2l_pipeline_accepting(struct o2l_pipeline *p, size_t len)
{
    bool ok = !o2l_pipeline_full(p) && o2l_spool_has_room(p->spool, len);

    if (!ok && p->delivery) {
        count(p, &p->delivery->st.requests_refused, 1);
    }
    return ok;
}

int o2l_pipeline_submit(struct o2l_pipeline *p,
                        const struct o2l_pipeline_request *req,
                        o2l_spool_done_fn done, void *arg,
                        struct o2l_spool_ticket **ticket)
{
    struct o2l_spool_record rec;
    int rc;

    memset(&rec, 0, sizeof(rec));
    rec.received_ns = req->received_ns;
    rec.format = (int)req->format;
    rec.n_spans =
        req->n_spans > UINT32_MAX ? UINT32_MAX : (uint32_t)req->n_spans;
    /* The spool copies the body; it never writes through this pointer. */
    rec.body = (unsigned char *)(uintptr_t)req->body;
    rec.len = req->len;
    rc = o2l_spool_append(p->spool, &rec, done, arg, ticket);
    if (rc != O2L_OK && p->delivery) {
        count(p, &p->delivery->st.requests_refused, 1);
        if (rc == O2L_EFULL) {
            atomic_store(&p->delivery->full, true);
        }
    }
    return rc;
}

void o2l_pipeline_stop_intake(struct o2l_pipeline *p)
{
    /* Answers what is waiting for disk, then no more appends or reads. */
    if (p->spool) {
        o2l_spool_stop(p->spool);
    }
}

void o2l_pipeline_stop(struct o2l_pipeline *p)
{
    struct o2l_pipeline_delivery *d = p->delivery;

    o2l_pipeline_stop_intake(p);
    /* The delivery thread stops its exporter on its way out. */
    if (d && d->started) {
        atomic_store(&d->stop, true);
        pthread_join(d->thread, NULL);
        d->started = false;
    }
}

void o2l_pipeline_stats(struct o2l_pipeline *p, struct o2l_pipeline_stats *out)
{
    struct o2l_spool_stats sp;

    memset(out, 0, sizeof(*out));
    if (!p->delivery) {
        return;
    }
    pthread_mutex_lock(&p->delivery->mu);
    *out = p->delivery->st;
    /* Appends the spool could not store were answered 503 too. */
    if (p->spool) {
        o2l_spool_stats(p->spool, &sp);
        out->requests_refused += sp.requests_failed;
    }
    out->exporter = p->delivery->retired;
    if (p->delivery->exporter) {
        struct o2l_exporter_stats now;

        o2l_exporter_stats(p->delivery->exporter, &now);
        o2l_exporter_stats_add(&out->exporter, &now);
    }
    pthread_mutex_unlock(&p->delivery->mu);
}

void o2l_pipeline_free(struct o2l_pipeline *p)
{
    struct o2l_pipeline_delivery *d = p->delivery;

    if (!d) {
        return;
    }
    if (d->started) {
        o2l_pipeline_stop(p);
    }
    o2l_free(d->ring);
    pthread_mutex_destroy(&d->mu);
    o2l_free(d);
    p->delivery = NULL;
}
