/* SPDX-License-Identifier: Apache-2.0 */
/*
 * delivery.c - the delivery thread: chooses the output (asking Langfuse
 * for its version when the choice is automatic), reads the spool in
 * order, holds spans in the assemble stage, maps and encodes released
 * traces, and hands the result to the exporter, each event marked with
 * the spool request it came from.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "o2l/common.h"
#include "o2l/health.h"
#include "pipeline_internal.h"

#define COMPONENT "delivery"

/* How long one wait lasts before the thread looks at stop and timers. */
#define WAIT_SLICE_MS 200

/* Pause after a failure that may pass (memory, database). */
#define TROUBLE_PAUSE_MS 1000

/* Asking Langfuse for its version: timeout, retry bounds, re-check. */
#define PROBE_TIMEOUT_MS     5000
#define PROBE_RETRY_FIRST_MS 1000
#define PROBE_RETRY_MAX_MS   30000
#define PROBE_LOG_EVERY_MS   60000
#define PROBE_AGAIN_MS       (10 * 60 * 1000)

/* The first major version that takes OTLP and refuses ingestion events. */
#define OTLP_MAJOR 4

/* State only the delivery thread touches. */
struct run {
    struct o2l_pipeline *p;
    struct o2l_pipeline_delivery *d;
    struct o2l_assemble *held;
    enum o2l_output output;
    uint64_t last;          /* highest spool id read */
    uint64_t next_probe_ms; /* 0: no re-check (explicit choice) */
};

static const char *output_name(enum o2l_output o)
{
    return o == O2L_OUTPUT_OTLP ? "otlp" : "ingestion";
}

static bool stopping(const struct run *r)
{
    return atomic_load(&r->d->stop);
}

/* Sleeps up to |ms|, in slices, returning early on stop. */
static void pause_ms(const struct run *r, uint32_t ms)
{
    while (ms > 0 && !stopping(r)) {
        uint32_t step = ms < WAIT_SLICE_MS ? ms : WAIT_SLICE_MS;
        struct timespec ts = {0, (long)step * 1000000L};

        nanosleep(&ts, NULL);
        ms -= step;
    }
}

static bool have_langfuse(const struct o2l_pipeline *p)
{
    const struct o2l_exporter_config *ec = &p->export_cfg;

    return ec->base_url && *ec->base_url && ec->public_key && *ec->public_key;
}

/* ---- choosing the output ------------------------------------------ */

/* Why the version could not be asked, for the log. */
static void probe_failure(int status, char *out, size_t cap)
{
    if (status > 0) {
        snprintf(out, cap, "its health route answered status %d", status);
    } else {
        snprintf(out, cap, "no connection or no answer in time");
    }
}

/*
 * Asks Langfuse once. Returns O2L_OK with *out set, or O2L_EIO when it
 * could not be asked (no connection, a timeout, a 5xx, a 429: try again
 * later; *status is the answer's status, 0 when none). Only a 404 or a
 * 2xx without a usable version means a server older than v4. Logs the
 * decision unless |quiet|.
 */
static int probe(struct run *r, enum o2l_output *out, bool quiet, int *status)
{
    const struct o2l_exporter_config *ec = &r->p->export_cfg;
    char version[64] = "";
    int rc;
    int major;

    rc = o2l_langfuse_version(ec->base_url, ec->public_key, ec->secret_key,
                              PROBE_TIMEOUT_MS, version, sizeof(version),
                              status);
    if (rc != O2L_OK && rc != O2L_EHTTP && rc != O2L_EPARSE) {
        return O2L_EIO;
    }
    if (rc != O2L_OK) {
        if (!quiet) {
            o2l_log_warn(r->p->log, COMPONENT,
                         "Langfuse %s: taken as a server before v4, output "
                         "ingestion; switching to otlp if it refuses trace "
                         "events",
                         rc == O2L_EHTTP
                             ? "has no health route (status 404)"
                             : "did not say its version on its health route");
        }
        *out = O2L_OUTPUT_INGESTION;
        return O2L_OK;
    }
    major = o2l_version_major(version);
    *out = major >= OTLP_MAJOR ? O2L_OUTPUT_OTLP : O2L_OUTPUT_INGESTION;
    if (!quiet) {
        o2l_log_info(r->p->log, COMPONENT,
                     "Langfuse reports version %s: output %s", version,
                     output_name(*out));
    }
    return O2L_OK;
}

/* Decides the first output. Returns false when stopped first. */
static bool choose_output(struct run *r)
{
    uint32_t wait = PROBE_RETRY_FIRST_MS;
    uint64_t last_log = 0;
    int last_status = -1;

    if (!have_langfuse(r->p) || r->p->output == O2L_CHOOSE_INGESTION) {
        r->output = O2L_OUTPUT_INGESTION;
        return true;
    }
    if (r->p->output == O2L_CHOOSE_OTLP) {
        r->output = O2L_OUTPUT_OTLP;
        return true;
    }
    while (!stopping(r)) {
        char why[96];
        uint64_t now;
        int status = 0;

        if (probe(r, &r->output, false, &status) == O2L_OK) {
            r->next_probe_ms = o2l_mono_ms() + PROBE_AGAIN_MS;
            return true;
        }
        now = o2l_mono_ms();
        /* Once per cause, and again now and then while it lasts. */
        if (status != last_status || now - last_log >= PROBE_LOG_EVERY_MS) {
            probe_failure(status, why, sizeof(why));
            o2l_log_warn(r->p->log, COMPONENT,
                         "cannot ask Langfuse its version (%s); delivery "
                         "waits and asks again (requests are still "
                         "accepted into the spool)",
                         why);
            last_log = now;
            last_status = status;
        }
        pause_ms(r, wait);
        wait = wait * 2 > PROBE_RETRY_MAX_MS ? PROBE_RETRY_MAX_MS : wait * 2;
    }
    return false;
}

/* ---- the exporter --------------------------------------------------- */

static int start_exporter(struct run *r)
{
    struct o2l_exporter_config ec = r->p->export_cfg;
    struct o2l_exporter *ex;

    ec.output = r->output;
    ec.on_settle = o2l_pipeline_on_settle;
    ec.settle_arg = r->p;
    ec.on_type_refused =
        r->p->output == O2L_CHOOSE_AUTO && r->output == O2L_OUTPUT_INGESTION
            ? o2l_pipeline_on_type_refused
            : NULL;
    /* Queued events are in the spool too: a stop leaves them there. */
    ec.leave_queued_on_stop = true;
    ex = o2l_exporter_create(&ec, r->p->log);
    if (!ex) {
        return O2L_ENOMEM;
    }
    if (o2l_exporter_start(ex) != O2L_OK) {
        o2l_exporter_destroy(ex);
        return O2L_EIO;
    }
    pthread_mutex_lock(&r->d->mu);
    r->d->exporter = ex;
    r->d->st.output = (int)r->output;
    pthread_mutex_unlock(&r->d->mu);
    return O2L_OK;
}

/*
 * Stops the exporter and keeps its counters. The request in flight may
 * finish; with |now| no other begins (the route is left), else it goes on
 * while Langfuse takes them. Queued events stay in the spool either way.
 */
static void stop_exporter(struct run *r, bool now)
{
    struct o2l_exporter_stats st;
    struct o2l_exporter *ex;

    pthread_mutex_lock(&r->d->mu);
    ex = r->d->exporter;
    pthread_mutex_unlock(&r->d->mu);
    if (!ex) {
        return;
    }
    /* Settles during the stop still reach the spool through the lock. */
    if (now) {
        o2l_exporter_stop_now(ex);
    } else {
        o2l_exporter_stop(ex);
    }
    o2l_exporter_stats(ex, &st);
    pthread_mutex_lock(&r->d->mu);
    r->d->exporter = NULL;
    o2l_exporter_stats_add(&r->d->retired, &st);
    pthread_mutex_unlock(&r->d->mu);
    o2l_exporter_destroy(ex);
}

/*
 * Changes the output: the old exporter stops, what it and the assemble
 * stage held is forgotten (it is all still in the spool), and reading
 * starts again from the oldest request in the spool.
 */
static int switch_output(struct run *r, enum o2l_output to, const char *why)
{
    o2l_log_warn(r->p->log, COMPONENT,
                 "switching output %s -> %s: %s; undelivered requests are "
                 "sent again from the spool",
                 output_name(r->output), output_name(to), why);
    /* Not one more request to the route being left. */
    stop_exporter(r, true);
    pthread_mutex_lock(&r->d->mu);
    o2l_flight_clear(r->d);
    r->d->st.output_switches++;
    pthread_mutex_unlock(&r->d->mu);
    o2l_assemble_free(r->held);
    r->held = o2l_assemble_new(&r->p->assemble);
    r->output = to;
    r->last = 0;
    if (!r->held) {
        return O2L_ENOMEM;
    }
    return start_exporter(r);
}

/* Looks again at the server's version now and then, and at refusals. */
static int check_output(struct run *r)
{
    enum o2l_output seen;

    if (atomic_exchange(&r->d->type_refused, false) &&
        r->output == O2L_OUTPUT_INGESTION) {
        return switch_output(r, O2L_OUTPUT_OTLP,
                             "Langfuse refuses trace events on the "
                             "ingestion API (v4 or later)");
    }
    if (r->next_probe_ms == 0 || o2l_mono_ms() < r->next_probe_ms) {
        return O2L_OK;
    }
    r->next_probe_ms = o2l_mono_ms() + PROBE_AGAIN_MS;
    if (probe(r, &seen, true, NULL) == O2L_OK && seen != r->output &&
        !(seen == O2L_OUTPUT_INGESTION && r->output == O2L_OUTPUT_OTLP &&
          r->d->st.output_switches > 0)) {
        /* A server that refused ingestion events keeps its OTLP output
         * even when it still reports an older version. */
        return switch_output(r, seen, "Langfuse reports another version");
    }
    return O2L_OK;
}

/* ---- reading the spool ---------------------------------------------- */

/*
 * Decodes a spooled request and hands its spans to the assemble stage.
 * Returns O2L_OK, O2L_ENOMEM (try the same request again) or O2L_EPARSE.
 */
static int take(struct run *r, struct o2l_spool_record *rec)
{
    struct o2l_export *ex = NULL;
    char err[256] = "";
    bool finished = false;
    int rc;

    rc = o2l_otlp_decode(rec->body, rec->len, (enum o2l_otlp_format)rec->format,
                         (uint64_t)rec->received_ns, &ex, err, sizeof(err));
    if (rc == O2L_EPARSE) {
        o2l_log_error(r->p->log, COMPONENT,
                      "spooled request=%llu bytes=%zu no longer decodes (%s); "
                      "it stays in the spool",
                      (unsigned long long)rec->id, rec->len, err);
        pthread_mutex_lock(&r->d->mu);
        r->d->st.requests_unreadable++;
        pthread_mutex_unlock(&r->d->mu);
        return rc;
    }
    if (rc != O2L_OK) {
        return rc;
    }
    pthread_mutex_lock(&r->d->mu);
    rc = o2l_flight_push(r->d, rec->id, rec->received_ns);
    if (rc == O2L_OK && ex->n_spans == 0) {
        /* Nothing to hold or send. */
        finished = o2l_flight_release(r->d, rec->id);
    }
    pthread_mutex_unlock(&r->d->mu);
    if (rc != O2L_OK || ex->n_spans == 0) {
        o2l_export_free(ex);
        if (finished) {
            o2l_pipeline_finish(r->p, rec->id);
        }
        return rc;
    }
    rc = o2l_assemble_add(r->held, rec->id, rec->len, ex, o2l_mono_ms());
    if (rc != O2L_OK) {
        /* The stage freed the export; forget the request for now. */
        pthread_mutex_lock(&r->d->mu);
        r->d->len--;
        pthread_mutex_unlock(&r->d->mu);
    }
    return rc;
}

/* ---- releasing traces ----------------------------------------------- */

static int encode(struct run *r, const struct o2l_release *rel,
                  struct o2l_event_list *out)
{
    struct o2l_mapped *m = NULL;
    int rc;

    rc = o2l_map_export(&rel->ex, &r->p->map, &m);
    if (rc == O2L_OK) {
        pthread_mutex_lock(&r->d->mu);
        r->d->st.spans_dropped += m->spans_dropped;
        r->d->st.flattened_dropped += m->flattened_keys_dropped;
        pthread_mutex_unlock(&r->d->mu);
        rc = o2l_assemble_facts(r->held, m, o2l_mono_ms());
    }
    if (rc == O2L_OK) {
        rc = r->output == O2L_OUTPUT_OTLP
                 ? o2l_encode_otlp(&rel->ex, m, &r->p->otlp, out)
                 : o2l_encode_ingestion(m, O2L_EVENT_MAX_BYTES, out);
    }
    o2l_mapped_free(m);
    return rc;
}

/*
 * Marks every event with its spool request and receive time, and counts
 * them on their requests (before they can be settled).
 */
static void mark(struct run *r, const struct o2l_release *rel,
                 struct o2l_event_list *events)
{
    pthread_mutex_lock(&r->d->mu);
    for (size_t i = 0; i < events->len; i++) {
        struct o2l_event *ev = &events->items[i];
        uint64_t id = o2l_release_request(rel, ev->span_id);
        struct in_flight *f;

        if (id == 0) {
            id = rel->request_ids[0];
        }
        f = o2l_flight_find(r->d, id);
        ev->tag = id;
        ev->born_ns = f ? f->received_ns : (int64_t)o2l_now_ns();
        if (f) {
            f->left++;
        }
    }
    pthread_mutex_unlock(&r->d->mu);
}

/*
 * Queues |events| on the exporter, waiting for room (during a stop only
 * as long as one wait: what does not fit stays in the spool).
 */
static int hand_over(struct run *r, struct o2l_event_list *events)
{
    struct o2l_exporter *ex;
    int rc = O2L_OK;

    while (events->len > 0) {
        pthread_mutex_lock(&r->d->mu);
        ex = r->d->exporter;
        pthread_mutex_unlock(&r->d->mu);
        if (!ex) {
            return O2L_ESTOPPED;
        }
        rc = o2l_exporter_submit_wait(ex, events, WAIT_SLICE_MS);
        if (rc != O2L_ETIMEDOUT) {
            break;
        }
        if (stopping(r)) {
            return O2L_ESTOPPED;
        }
        /* A refusal of the event type while the queue is full. */
        if (atomic_load(&r->d->type_refused)) {
            return O2L_ESTOPPED;
        }
    }
    return rc;
}

/* Releases what is due (everything with |all|), maps and sends it. */
static int release(struct run *r, bool all)
{
    struct o2l_release rel;
    struct o2l_event_list events = {0};
    uint64_t *ids = NULL;
    size_t n_ids = 0;
    int rc;

    memset(&rel, 0, sizeof(rel));
    rc = o2l_assemble_release(r->held, o2l_mono_ms(), all, &rel);
    if (rc != O2L_OK) {
        return rc;
    }
    if (rel.ex.n_spans > 0) {
        rc = encode(r, &rel, &events);
        if (rc == O2L_OK) {
            mark(r, &rel, &events);
        }
    }
    if (o2l_assemble_done(r->held, &rel, &ids, &n_ids) != O2L_OK) {
        rc = O2L_ENOMEM;
    }
    if (rc != O2L_OK) {
        /*
         * The released spans could not be mapped: their requests are
         * never marked released, so they stay in the spool and are sent
         * after the next start.
         */
        o2l_log_error(r->p->log, COMPONENT,
                      "cannot map released spans: %s; their requests stay "
                      "in the spool until the next start",
                      o2l_strerror(rc));
        o2l_event_list_clear(&events);
        o2l_free(ids);
        return rc;
    }
    for (size_t i = 0; i < n_ids; i++) {
        bool finished;

        pthread_mutex_lock(&r->d->mu);
        finished = o2l_flight_release(r->d, ids[i]);
        pthread_mutex_unlock(&r->d->mu);
        if (finished) {
            o2l_pipeline_finish(r->p, ids[i]);
        }
    }
    o2l_free(ids);
    rc = hand_over(r, &events);
    o2l_event_list_clear(&events);
    return rc;
}

static void publish_counts(struct run *r)
{
    size_t traces = 0, spans = 0, bytes = 0;

    o2l_assemble_counts(r->held, &traces, &spans, &bytes);
    pthread_mutex_lock(&r->d->mu);
    r->d->st.held_traces = traces;
    r->d->st.held_spans = spans;
    r->d->st.held_bytes = bytes;
    pthread_mutex_unlock(&r->d->mu);
}

/* ---- the thread ----------------------------------------------------- */

static void run_loop(struct run *r)
{
    struct o2l_spool_record rec;
    bool have = false; /* |rec| holds a request not yet taken */

    memset(&rec, 0, sizeof(rec));
    while (!stopping(r)) {
        uint32_t wait = o2l_assemble_next_due(r->held, o2l_mono_ms());
        int rc;

        if (check_output(r) != O2L_OK) {
            o2l_log_error(r->p->log, COMPONENT,
                          "cannot set up the new output; retrying");
            pause_ms(r, TROUBLE_PAUSE_MS);
            continue;
        }
        if (!have) {
            rc = o2l_spool_next(r->p->spool, r->last, &rec,
                                wait < WAIT_SLICE_MS ? wait : WAIT_SLICE_MS);
            if (rc == O2L_ESTOPPED) {
                break;
            }
            if (rc == O2L_OK) {
                have = true;
            } else if (rc != O2L_ETIMEDOUT) {
                o2l_log_error(r->p->log, COMPONENT,
                              "cannot read the spool: %s; retrying",
                              o2l_strerror(rc));
                pause_ms(r, TROUBLE_PAUSE_MS);
            }
        }
        if (have) {
            rc = take(r, &rec);
            if (rc == O2L_ENOMEM) {
                pause_ms(r, TROUBLE_PAUSE_MS);
                continue;
            }
            r->last = rec.id;
            o2l_spool_record_clear(&rec);
            have = false;
        }
        if (release(r, false) == O2L_ENOMEM) {
            pause_ms(r, TROUBLE_PAUSE_MS);
        }
        publish_counts(r);
    }
    o2l_spool_record_clear(&rec);
}

void *o2l_delivery_main(void *arg)
{
    struct run r;

    memset(&r, 0, sizeof(r));
    r.p = arg;
    r.d = r.p->delivery;
    if (!choose_output(&r)) {
        return NULL;
    }
    r.held = o2l_assemble_new(&r.p->assemble);
    while (!stopping(&r) && (!r.held || start_exporter(&r) != O2L_OK)) {
        o2l_log_error(r.p->log, COMPONENT,
                      "cannot start the exporter; retrying");
        pause_ms(&r, TROUBLE_PAUSE_MS);
        if (!r.held) {
            r.held = o2l_assemble_new(&r.p->assemble);
        }
    }
    if (r.held && !stopping(&r)) {
        run_loop(&r);
        /*
         * A stop sends what the stage holds, as far as the exporter gets
         * within its shutdown timeout; the rest is still in the spool.
         */
        if (release(&r, true) != O2L_OK) {
            o2l_log_info(r.p->log, COMPONENT,
                         "stopping with spans held; they stay in the spool");
        }
    }
    stop_exporter(&r, false);
    o2l_assemble_free(r.held);
    return NULL;
}
