/* SPDX-License-Identifier: Apache-2.0 */
/*
 * pipeline.c - from an accepted export to events on the exporter's queue,
 * through the spool: the receive side stores requests, the delivery
 * thread reads them back in order, maps and encodes them, and deletes
 * each once all its events are settled.
 */
#include "o2l/pipeline.h"

#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "o2l/common.h"

#define COMPONENT "pipeline"

/* How long the delivery thread waits in one call before looking at stop. */
#define WAIT_SLICE_MS 200

/* Pause after a failure that may pass (memory, database). */
#define TROUBLE_PAUSE_MS 1000

/* A spool request whose events are on the exporter's queue. */
struct in_flight {
    uint64_t id;
    size_t left; /* events not yet settled */
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

    /* Requests in flight, in increasing id order (a ring). */
    struct in_flight *ring;
    size_t cap;
    size_t head;
    size_t len;

    struct o2l_pipeline_stats st;
};

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

/* Appends |id| (larger than any held). Lock held. */
static int flight_push(struct o2l_pipeline_delivery *d, uint64_t id,
                       size_t left)
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
    d->ring[(d->head + d->len) % d->cap] = (struct in_flight){id, left};
    d->len++;
    return O2L_OK;
}

/* Finds request |id| by binary search over the increasing ids. */
static struct in_flight *flight_find(struct o2l_pipeline_delivery *d,
                                     uint64_t id)
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

/*
 * Counts |n| settled events of request |id|. Returns true when that was
 * the last of them. Lock held.
 */
static bool flight_settle(struct o2l_pipeline_delivery *d, uint64_t id,
                          size_t n)
{
    struct in_flight *f = flight_find(d, id);
    bool done;

    if (!f || f->left == 0) {
        return false;
    }
    f->left = f->left > n ? f->left - n : 0;
    done = f->left == 0;
    /* Settled requests at the front make room; others wait their turn. */
    while (d->len > 0 && flight_at(d, 0)->left == 0) {
        d->head = (d->head + 1) % d->cap;
        d->len--;
    }
    return done;
}

/* ---- the exporter's settle callback ------------------------------- */

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

int o2l_pipeline_on_settle(void *arg, const struct o2l_settled *items,
                           size_t n)
{
    struct o2l_pipeline *p = arg;
    struct o2l_pipeline_delivery *d = p->delivery;
    uint64_t finished = 0;

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
    pthread_mutex_lock(&d->mu);
    for (size_t i = 0; i < n;) {
        uint64_t id = items[i].ev->tag;
        size_t run = 1;

        while (i + run < n && items[i + run].ev->tag == id) {
            run++;
        }
        if (id != 0 && flight_settle(d, id, run)) {
            pthread_mutex_unlock(&d->mu);
            /* A failed delete only means it is sent again next start. */
            o2l_spool_ack(p->spool, id);
            pthread_mutex_lock(&d->mu);
            finished++;
        }
        i += run;
    }
    d->st.requests_delivered += finished;
    pthread_mutex_unlock(&d->mu);
    if (finished > 0) {
        atomic_store(&d->full, false);
    }
    return O2L_OK;
}

/* ---- the delivery thread ------------------------------------------ */

static void pause_ms(uint32_t ms)
{
    struct timespec ts = {(time_t)(ms / 1000u), (long)(ms % 1000u) * 1000000L};

    nanosleep(&ts, NULL);
}

/*
 * Decodes, maps and encodes one spooled request into |out|. Returns
 * O2L_OK, O2L_EPARSE when it no longer decodes, or O2L_ENOMEM.
 */
static int rebuild(struct o2l_pipeline *p, const struct o2l_spool_record *rec,
                   struct o2l_event_list *out)
{
    struct o2l_export *ex = NULL;
    char err[256] = "";
    int rc;

    rc = o2l_otlp_decode(rec->body, rec->len, (enum o2l_otlp_format)rec->format,
                         (uint64_t)rec->received_ns, &ex, err, sizeof(err));
    if (rc == O2L_EPARSE) {
        o2l_log_error(p->log, COMPONENT,
                      "spooled request=%llu bytes=%zu no longer decodes (%s); "
                      "it stays in the spool",
                      (unsigned long long)rec->id, rec->len, err);
    }
    if (rc == O2L_OK) {
        rc = o2l_pipeline_encode(p, ex, out);
    }
    o2l_export_free(ex);
    for (size_t i = 0; rc == O2L_OK && i < out->len; i++) {
        out->items[i].tag = rec->id;
        out->items[i].born_ns = rec->received_ns;
    }
    return rc;
}

/*
 * Queues the events of one request on the exporter, waiting for room.
 * Returns O2L_OK, O2L_ESTOPPED or O2L_ENOMEM.
 */
static int hand_over(struct o2l_pipeline *p, uint64_t id,
                     struct o2l_event_list *events)
{
    struct o2l_pipeline_delivery *d = p->delivery;
    int rc;

    pthread_mutex_lock(&d->mu);
    rc = flight_push(d, id, events->len);
    pthread_mutex_unlock(&d->mu);
    if (rc != O2L_OK) {
        return rc;
    }
    for (;;) {
        rc = o2l_exporter_submit_wait(p->exporter, events, WAIT_SLICE_MS);
        if (rc != O2L_ETIMEDOUT) {
            break;
        }
        if (atomic_load(&d->stop)) {
            rc = O2L_ESTOPPED;
            break;
        }
    }
    if (rc != O2L_OK) {
        /* Not queued: it must not wait for settles that never come. */
        pthread_mutex_lock(&d->mu);
        flight_settle(d, id, events->len);
        pthread_mutex_unlock(&d->mu);
    }
    return rc;
}

static void *delivery_main(void *arg)
{
    struct o2l_pipeline *p = arg;
    struct o2l_pipeline_delivery *d = p->delivery;
    struct o2l_spool_record rec;
    bool have = false; /* |rec| holds a request not yet handed over */
    uint64_t last = 0;

    memset(&rec, 0, sizeof(rec));
    while (!atomic_load(&d->stop)) {
        struct o2l_event_list events = {0};
        int rc;

        if (!have) {
            rc = o2l_spool_next(p->spool, last, &rec, WAIT_SLICE_MS);
            if (rc == O2L_ETIMEDOUT) {
                continue;
            }
            if (rc == O2L_ESTOPPED) {
                break;
            }
            if (rc != O2L_OK) {
                o2l_log_error(p->log, COMPONENT,
                              "cannot read the spool: %s; retrying",
                              o2l_strerror(rc));
                pause_ms(TROUBLE_PAUSE_MS);
                continue;
            }
            have = true;
        }
        rc = rebuild(p, &rec, &events);
        if (rc == O2L_ENOMEM) {
            /* Keep the record and try it again. */
            o2l_event_list_clear(&events);
            pause_ms(TROUBLE_PAUSE_MS);
            continue;
        }
        last = rec.id;
        if (rc == O2L_EPARSE) {
            count(p, &d->st.requests_unreadable, 1);
        } else if (events.len == 0) {
            /* Nothing to send (e.g. every span was filtered out). */
            o2l_spool_ack(p->spool, rec.id);
            count(p, &d->st.requests_delivered, 1);
            atomic_store(&d->full, false);
        } else {
            rc = hand_over(p, rec.id, &events);
            if (rc == O2L_ENOMEM) {
                /* Keep the record and try it again. */
                o2l_event_list_clear(&events);
                pause_ms(TROUBLE_PAUSE_MS);
                continue;
            }
        }
        o2l_event_list_clear(&events);
        o2l_spool_record_clear(&rec);
        have = false;
    }
    o2l_spool_record_clear(&rec);
    return NULL;
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
    if (pthread_create(&d->thread, NULL, delivery_main, p) != 0) {
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
    return !o2l_pipeline_full(p) && o2l_spool_has_room(p->spool, len);
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
    rec.n_spans = req->n_spans > UINT32_MAX ? UINT32_MAX
                                            : (uint32_t)req->n_spans;
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
    if (d && d->started) {
        atomic_store(&d->stop, true);
        pthread_join(d->thread, NULL);
        d->started = false;
    }
    if (p->exporter) {
        o2l_exporter_stop(p->exporter);
    }
}

void o2l_pipeline_stats(struct o2l_pipeline *p, struct o2l_pipeline_stats *out)
{
    memset(out, 0, sizeof(*out));
    if (!p->delivery) {
        return;
    }
    pthread_mutex_lock(&p->delivery->mu);
    *out = p->delivery->st;
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
