/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_exporter.c - the export stage: reading 207 answers and Retry-After,
 * the file sink, queue bounds and waiting for room, the settle callback,
 * expiry by age, HTTP round trips (retries, backoff growth, splitting
 * refused batches, stopping), event types Langfuse v4 refuses on the
 * ingestion API, and the OTLP output (gzip, framing, headers, partial
 * success) against a small canned-answer server on 127.0.0.1.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <zlib.h>

#include "o2l/common.h"
#include "o2l/exporter.h"

/* ---- o2l_ingestion_parse_results ------------------------------------ */

static void test_exporter_parse_results_207(void **state)
{
    static const char body[] =
        "{\"successes\":[{\"id\":\"t1-trace-a\",\"status\":201},"
        "{\"id\":\"t1-a\",\"status\":201}],"
        "\"errors\":[{\"id\":\"t1-b\",\"status\":400,"
        "\"message\":\"Invalid request data\","
        "\"error\":[{\"code\":\"invalid_type\",\"path\":[\"body\"]}]},"
        "{\"id\":\"t1-c\",\"status\":500,\"error\":\"Internal Server Error\"},"
        "{\"id\":\"t1-d\",\"status\":429}]}";
    const char *ids[] = {"t1-trace-a", "t1-a", "t1-b", "t1-c", "t1-d", "t1-e"};
    struct o2l_event_result res[6];

    (void)state;
    assert_int_equal(
        o2l_ingestion_parse_results(body, strlen(body), ids, 6, res), O2L_OK);
    assert_int_equal(res[0].outcome, O2L_OUTCOME_OK);
    assert_int_equal(res[0].status, 201);
    assert_int_equal(res[1].outcome, O2L_OUTCOME_OK);
    assert_int_equal(res[2].outcome, O2L_OUTCOME_REJECTED);
    assert_int_equal(res[2].status, 400);
    assert_string_equal(res[2].message, "Invalid request data");
    assert_int_equal(res[3].outcome, O2L_OUTCOME_RETRY);
    assert_string_equal(res[3].message, "Internal Server Error");
    assert_int_equal(res[4].outcome, O2L_OUTCOME_RETRY);
    assert_null(res[4].message);
    /* Not listed at all: delivered. */
    assert_int_equal(res[5].outcome, O2L_OUTCOME_OK);
    assert_int_equal(res[5].status, 0);
    o2l_event_results_clear(res, 6);
}

static void test_exporter_parse_results_duplicate_ids(void **state)
{
    static const char body[] = "{\"successes\":[],\"errors\":[{\"id\":\"x\","
                               "\"status\":503,\"message\":\"busy\"}]}";
    const char *ids[] = {"x", "y", "x"};
    struct o2l_event_result res[3];

    (void)state;
    assert_int_equal(
        o2l_ingestion_parse_results(body, strlen(body), ids, 3, res), O2L_OK);
    assert_int_equal(res[0].outcome, O2L_OUTCOME_RETRY);
    assert_int_equal(res[1].outcome, O2L_OUTCOME_OK);
    assert_int_equal(res[2].outcome, O2L_OUTCOME_RETRY);
    assert_int_equal(res[2].status, 503);
    o2l_event_results_clear(res, 3);
}

static void test_exporter_parse_results_rejects_garbage(void **state)
{
    static const char *const bodies[] = {
        "",
        "not json",
        "{\"successes\":[",
        "[]",
        "{\"message\":\"Invalid credentials\"}",
        "{\"successes\":{},\"errors\":[]}",
        "{\"successes\":[],\"errors\":\"no\"}",
    };
    const char *ids[] = {"a"};
    struct o2l_event_result res[1];

    (void)state;
    for (size_t i = 0; i < O2L_ARRAY_LEN(bodies); i++) {
        assert_int_equal(o2l_ingestion_parse_results(
                             bodies[i], strlen(bodies[i]), ids, 1, res),
                         O2L_EPARSE);
        assert_null(res[0].message);
    }
}

/* ---- o2l_retry_after_ms --------------------------------------------- */

static void test_exporter_retry_after_seconds_and_dates(void **state)
{
    /* Sun, 06 Nov 1994 08:49:37 GMT */
    const int64_t when = 784111777;

    (void)state;
    assert_int_equal(o2l_retry_after_ms("120", when), 120000);
    assert_int_equal(o2l_retry_after_ms(" 0", when), 0);
    assert_int_equal(o2l_retry_after_ms("1\r\n", when), 1000);
    assert_int_equal(
        o2l_retry_after_ms("Sun, 06 Nov 1994 08:49:37 GMT", when - 3), 3000);
    assert_int_equal(
        o2l_retry_after_ms("Sunday, 06-Nov-94 08:49:37 GMT", when - 10), 10000);
    /* A date in the past means now. */
    assert_int_equal(
        o2l_retry_after_ms("Sun, 06 Nov 1994 08:49:37 GMT", when + 60), 0);
}

static void test_exporter_retry_after_garbage(void **state)
{
    (void)state;
    assert_int_equal(o2l_retry_after_ms(NULL, 0), -1);
    assert_int_equal(o2l_retry_after_ms("", 0), -1);
    assert_int_equal(o2l_retry_after_ms("soon", 0), -1);
    assert_int_equal(o2l_retry_after_ms("12abc", 0), -1);
    assert_int_equal(o2l_retry_after_ms("-5", 0), -1);
    assert_int_equal(o2l_retry_after_ms("99999999999999999999999", 0), -1);
}

/* ---- helpers -------------------------------------------------------- */

static struct o2l_log quiet_log = {O2L_LOG_ERROR, NULL};

static void add_typed_event(struct o2l_event_list *l, const char *id,
                            const char *type)
{
    char json[160];
    struct o2l_event *ev;

    if (l->len == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 8;
        l->items = o2l_realloc(l->items, l->cap * sizeof(*l->items));
        assert_non_null(l->items);
    }
    snprintf(json, sizeof(json),
             "{\"id\":\"%s\",\"type\":\"%s\",\"timestamp\":"
             "\"2025-01-31T08:15:02.123456Z\",\"body\":{\"id\":\"%s\"}}",
             id, type, id);
    ev = &l->items[l->len++];
    memset(ev, 0, sizeof(*ev));
    ev->id = o2l_strdup(id);
    ev->json = o2l_strdup(json);
    ev->len = strlen(json);
    assert_non_null(ev->id);
    assert_non_null(ev->json);
}

static void add_event(struct o2l_event_list *l, const char *id)
{
    add_typed_event(l, id, "span-create");
}

/*
 * Appends an OTLP item named |name|: |len| bytes (at least 32) that start
 * with bytes a framing parser could trip on (NUL, 0x0a, continuation
 * bits), then "item:<name>|", then filler; random filler when |noise|,
 * so that gzip cannot shrink it.
 */
static void add_item(struct o2l_event_list *l, const char *name, size_t len,
                     bool noise)
{
    static const unsigned char lead[] = {0x00, 0x0a, 0x80, 0xff, 0x0a};
    struct o2l_event *ev;
    unsigned seed = (unsigned)(len + l->len);
    size_t off;

    if (l->len == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 8;
        l->items = o2l_realloc(l->items, l->cap * sizeof(*l->items));
        assert_non_null(l->items);
    }
    ev = &l->items[l->len++];
    memset(ev, 0, sizeof(*ev));
    ev->json = o2l_malloc(len + 1);
    ev->id = o2l_strdup(name);
    assert_non_null(ev->json);
    assert_non_null(ev->id);
    memcpy(ev->json, lead, sizeof(lead));
    off = sizeof(lead);
    off += (size_t)snprintf(ev->json + off, len + 1 - off, "item:%s|", name);
    assert_true(off < len);
    for (; off < len; off++) {
        ev->json[off] = noise ? (char)(rand_r(&seed) & 0xff) : 'x';
    }
    ev->json[len] = '\0';
    ev->len = len;
    ev->otlp = true;
    snprintf(ev->span_id, sizeof(ev->span_id), "%016x", (unsigned)l->len);
}

static void fast_config(struct o2l_exporter_config *cfg)
{
    o2l_exporter_config_defaults(cfg);
    cfg->flush_interval_ms = 10;
    cfg->retry_initial_ms = 5;
    cfg->retry_max_ms = 20;
    cfg->auth_retry_ms = 20;
    cfg->request_timeout_ms = 5000;
    cfg->shutdown_timeout_ms = 5000;
}

static struct o2l_exporter *
start_exporter(const struct o2l_exporter_config *cfg)
{
    struct o2l_exporter *ex;

    ex = o2l_exporter_create(cfg, &quiet_log);
    assert_non_null(ex);
    assert_int_equal(o2l_exporter_start(ex), O2L_OK);
    return ex;
}

/* Waits (bounded) until |n| events are delivered, rejected or expired. */
static void wait_settled(struct o2l_exporter *ex, uint64_t n)
{
    struct o2l_exporter_stats st;

    for (int i = 0; i < 1000; i++) {
        o2l_exporter_stats(ex, &st);
        if (st.events_delivered + st.events_rejected + st.events_expired >= n) {
            return;
        }
        usleep(10000);
    }
}

/* ---- a settle callback that records what it is told ---------------- */

#define MAX_SETTLED 32

struct settle_log {
    pthread_mutex_t mu;
    int delivered_calls;
    int dead_calls;   /* calls with rejected or expired events */
    int dead_refused; /* of those, how many answered with an error */
    int fail_dead;    /* dead calls still to refuse */
    int mixed;        /* a call mixed delivered with dead events */
    size_t n;
    char *id[MAX_SETTLED];
    uint64_t tag[MAX_SETTLED];
    enum o2l_settle_kind kind[MAX_SETTLED];
    int status[MAX_SETTLED];
    char *message[MAX_SETTLED];
    int refused_calls; /* on_type_refused calls */
};

static void settle_log_init(struct settle_log *sl)
{
    memset(sl, 0, sizeof(*sl));
    assert_int_equal(pthread_mutex_init(&sl->mu, NULL), 0);
}

static void settle_log_free(struct settle_log *sl)
{
    for (size_t i = 0; i < sl->n; i++) {
        free(sl->id[i]);
        free(sl->message[i]);
    }
    pthread_mutex_destroy(&sl->mu);
}

static int record_settled(void *arg, const struct o2l_settled *items, size_t n)
{
    struct settle_log *sl = arg;
    int dead = n > 0 && items[0].kind != O2L_SETTLED_DELIVERED;

    pthread_mutex_lock(&sl->mu);
    for (size_t i = 0; i < n; i++) {
        if ((items[i].kind != O2L_SETTLED_DELIVERED) != dead) {
            sl->mixed = 1;
        }
    }
    if (!dead) {
        sl->delivered_calls++;
    } else {
        sl->dead_calls++;
        if (sl->fail_dead > 0) {
            sl->fail_dead--;
            sl->dead_refused++;
            pthread_mutex_unlock(&sl->mu);
            return O2L_EIO;
        }
    }
    for (size_t i = 0; i < n && sl->n < MAX_SETTLED; i++) {
        /* The events are still alive here: copy what is checked later. */
        sl->id[sl->n] = strdup(items[i].ev->id);
        sl->tag[sl->n] = items[i].ev->tag;
        sl->kind[sl->n] = items[i].kind;
        sl->status[sl->n] = items[i].status;
        sl->message[sl->n] = items[i].message ? strdup(items[i].message) : NULL;
        sl->n++;
    }
    pthread_mutex_unlock(&sl->mu);
    return O2L_OK;
}

/* Index of the one record for |id|; fails the test unless exactly one. */
static size_t settled_index(const struct settle_log *sl, const char *id)
{
    size_t found = sl->n;
    int hits = 0;

    for (size_t i = 0; i < sl->n; i++) {
        if (sl->id[i] && strcmp(sl->id[i], id) == 0) {
            found = i;
            hits++;
        }
    }
    assert_int_equal(hits, 1);
    return found;
}

static void settle_to(struct o2l_exporter_config *cfg, struct settle_log *sl)
{
    cfg->on_settle = record_settled;
    cfg->settle_arg = sl;
}

/* ---- file sink and queue -------------------------------------------- */

static void test_exporter_config_defaults(void **state)
{
    struct o2l_exporter_config cfg;

    (void)state;
    o2l_exporter_config_defaults(&cfg);
    assert_null(cfg.base_url);
    assert_int_equal(cfg.flush_interval_ms, 1000);
    assert_int_equal(cfg.batch_max_events, 500);
    assert_int_equal(cfg.batch_max_bytes, 3500000);
    assert_int_equal(cfg.queue_max_events, 100000);
    assert_int_equal(cfg.queue_max_bytes, 128u * 1024 * 1024);
    assert_int_equal(cfg.request_timeout_ms, 30000);
    assert_int_equal(cfg.retry_initial_ms, 500);
    assert_int_equal(cfg.retry_max_ms, 30000);
    /* 2.0 is exact in binary, so comparing for equality is safe. */
    assert_true(cfg.retry_multiplier == 2.0);
    assert_int_equal(cfg.max_age_ms, 0);
    assert_int_equal(cfg.auth_retry_ms, 30000);
    assert_int_equal(cfg.shutdown_timeout_ms, 10000);
    assert_false(cfg.leave_queued_on_stop);
    assert_null(cfg.on_settle);
}

static void test_exporter_file_sink_writes_json_lines(void **state)
{
    char path[] = "/tmp/o2l_exporter_test_XXXXXX";
    struct o2l_exporter_config cfg;
    struct o2l_exporter_stats st;
    struct o2l_event_list l = {0};
    struct o2l_exporter *ex;
    char line[256];
    FILE *f;
    int fd;
    int lines = 0;

    (void)state;
    fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);

    fast_config(&cfg);
    cfg.file_path = path;
    cfg.batch_max_events = 2;
    ex = o2l_exporter_create(&cfg, &quiet_log);
    assert_non_null(ex);
    assert_int_equal(o2l_exporter_start(ex), O2L_OK);
    add_event(&l, "e1");
    add_event(&l, "e2");
    add_event(&l, "e3");
    assert_int_equal(o2l_exporter_submit(ex, &l), O2L_OK);
    assert_int_equal(l.len, 0);
    assert_null(l.items);
    wait_settled(ex, 3);
    assert_int_equal(o2l_exporter_stop(ex), O2L_OK);

    /* After stop nothing more is taken, and the caller keeps its events. */
    add_event(&l, "late");
    assert_int_equal(o2l_exporter_submit(ex, &l), O2L_ESTOPPED);
    assert_int_equal(l.len, 1);
    o2l_event_list_clear(&l);

    o2l_exporter_stats(ex, &st);
    assert_int_equal(st.events_queued, 3);
    assert_int_equal(st.events_delivered, 3);
    assert_int_equal(st.queue_events, 0);
    o2l_exporter_destroy(ex);

    f = fopen(path, "r");
    assert_non_null(f);
    while (fgets(line, sizeof(line), f)) {
        char want[32];

        snprintf(want, sizeof(want), "\"id\":\"e%d\"", ++lines);
        assert_non_null(strstr(line, want));
        assert_int_equal(line[strlen(line) - 1], '\n');
    }
    fclose(f);
    unlink(path);
    assert_int_equal(lines, 3);
}

static void test_exporter_submit_respects_queue_bounds(void **state)
{
    struct o2l_exporter_config cfg;
    struct o2l_exporter_stats st;
    struct o2l_event_list l = {0};
    struct o2l_exporter *ex;

    (void)state;
    fast_config(&cfg);
    cfg.file_path = "/dev/null";
    cfg.queue_max_events = 2;
    ex = o2l_exporter_create(&cfg, &quiet_log);
    assert_non_null(ex);

    /* Not started: the queue fills and stays full. */
    assert_true(o2l_exporter_accepting(ex));
    add_event(&l, "a");
    assert_int_equal(o2l_exporter_submit(ex, &l), O2L_OK);
    add_event(&l, "b");
    add_event(&l, "c");
    assert_int_equal(o2l_exporter_submit(ex, &l), O2L_EFULL);
    assert_int_equal(l.len, 2);
    o2l_event_list_clear(&l);

    add_event(&l, "b");
    assert_int_equal(o2l_exporter_submit(ex, &l), O2L_OK);
    assert_false(o2l_exporter_accepting(ex));
    add_event(&l, "c");
    assert_int_equal(o2l_exporter_submit(ex, &l), O2L_EFULL);
    o2l_event_list_clear(&l);

    o2l_exporter_stats(ex, &st);
    assert_int_equal(st.queue_events, 2);
    assert_true(st.queue_bytes > 0);

    /* Stopping without a worker leaves both behind. */
    assert_int_equal(o2l_exporter_stop(ex), O2L_ESTOPPED);
    o2l_exporter_stats(ex, &st);
    assert_int_equal(st.events_dropped, 2);
    assert_false(o2l_exporter_accepting(ex));
    o2l_exporter_destroy(ex);
    o2l_exporter_destroy(NULL);
}

static void test_exporter_refuses_more_than_the_queue_holds(void **state)
{
    struct o2l_exporter_config cfg;
    struct o2l_event_list l = {0};
    struct o2l_exporter *ex;

    (void)state;
    fast_config(&cfg);
    cfg.file_path = "/dev/null";
    cfg.queue_max_events = 2;
    ex = o2l_exporter_create(&cfg, &quiet_log);
    assert_non_null(ex);

    /* Too big for ever, even for an empty queue: not "retry later". */
    add_event(&l, "a");
    add_event(&l, "b");
    add_event(&l, "c");
    assert_int_equal(o2l_exporter_submit(ex, &l), O2L_ETOOBIG);
    assert_int_equal(l.len, 3);
    o2l_event_list_clear(&l);
    add_event(&l, "d");
    assert_int_equal(o2l_exporter_submit(ex, &l), O2L_OK);
    o2l_exporter_destroy(ex);
}

struct waiter {
    struct o2l_exporter *ex;
    struct o2l_event_list l;
    int rc;
};

static void *submit_waiting(void *arg)
{
    struct waiter *w = arg;

    w->rc = o2l_exporter_submit_wait(w->ex, &w->l, 10000);
    return NULL;
}

static void test_exporter_submit_wait_times_out_then_gets_room(void **state)
{
    struct o2l_exporter_config cfg;
    struct o2l_exporter_stats st;
    struct o2l_event_list l = {0};
    struct o2l_exporter *ex;
    struct waiter w;
    pthread_t t;

    (void)state;
    fast_config(&cfg);
    cfg.file_path = "/dev/null";
    cfg.queue_max_events = 2;
    ex = o2l_exporter_create(&cfg, &quiet_log);
    assert_non_null(ex);

    /* Not started: a full queue stays full, so the wait runs out. */
    add_event(&l, "a");
    add_event(&l, "b");
    assert_int_equal(o2l_exporter_submit(ex, &l), O2L_OK);
    add_event(&l, "c");
    assert_int_equal(o2l_exporter_submit_wait(ex, &l, 0), O2L_ETIMEDOUT);
    assert_int_equal(o2l_exporter_submit_wait(ex, &l, 30), O2L_ETIMEDOUT);
    assert_int_equal(l.len, 1);
    assert_string_equal(l.items[0].id, "c");

    /* A waiter gets in once the worker starts draining. */
    memset(&w, 0, sizeof(w));
    w.ex = ex;
    w.l = l;
    memset(&l, 0, sizeof(l));
    assert_int_equal(pthread_create(&t, NULL, submit_waiting, &w), 0);
    assert_int_equal(o2l_exporter_start(ex), O2L_OK);
    pthread_join(t, NULL);
    assert_int_equal(w.rc, O2L_OK);
    assert_int_equal(w.l.len, 0);

    wait_settled(ex, 3);
    assert_int_equal(o2l_exporter_stop(ex), O2L_OK);
    o2l_exporter_stats(ex, &st);
    assert_int_equal(st.events_queued, 3);
    assert_int_equal(st.events_delivered, 3);

    /* After stop a wait ends at once. */
    add_event(&l, "late");
    assert_int_equal(o2l_exporter_submit_wait(ex, &l, 10000), O2L_ESTOPPED);
    assert_int_equal(l.len, 1);
    o2l_event_list_clear(&l);
    o2l_exporter_destroy(ex);
}

static void test_exporter_submit_wait_takes_oversized_list(void **state)
{
    char path[] = "/tmp/o2l_exporter_test_XXXXXX";
    struct o2l_exporter_config cfg;
    struct o2l_exporter_stats st;
    struct o2l_event_list l = {0};
    struct o2l_exporter *ex;
    char line[256];
    FILE *f;
    int fd;
    int lines = 0;

    (void)state;
    fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);

    fast_config(&cfg);
    cfg.file_path = path;
    cfg.queue_max_events = 2;
    cfg.batch_max_events = 2;
    ex = o2l_exporter_create(&cfg, &quiet_log);
    assert_non_null(ex);

    /*
     * More than the queue holds: submit() refuses, the waiting kind takes
     * it because the queue is empty.
     */
    add_event(&l, "o1");
    add_event(&l, "o2");
    add_event(&l, "o3");
    assert_int_equal(o2l_exporter_submit(ex, &l), O2L_ETOOBIG);
    assert_int_equal(l.len, 3);
    assert_int_equal(o2l_exporter_submit_wait(ex, &l, 0), O2L_OK);
    assert_int_equal(l.len, 0);
    o2l_exporter_stats(ex, &st);
    assert_int_equal(st.queue_events, 3);

    /* The queue is now over its bound: nothing more until it drains. */
    add_event(&l, "o4");
    assert_int_equal(o2l_exporter_submit_wait(ex, &l, 10), O2L_ETIMEDOUT);
    assert_int_equal(l.len, 1);
    o2l_event_list_clear(&l);

    assert_int_equal(o2l_exporter_start(ex), O2L_OK);
    wait_settled(ex, 3);
    assert_int_equal(o2l_exporter_stop(ex), O2L_OK);
    o2l_exporter_stats(ex, &st);
    assert_int_equal(st.events_queued, 3);
    assert_int_equal(st.events_delivered, 3);
    assert_int_equal(st.events_dropped, 0);
    o2l_exporter_destroy(ex);

    f = fopen(path, "r");
    assert_non_null(f);
    while (fgets(line, sizeof(line), f)) {
        char want[32];

        snprintf(want, sizeof(want), "\"id\":\"o%d\"", ++lines);
        assert_non_null(strstr(line, want));
    }
    fclose(f);
    unlink(path);
    assert_int_equal(lines, 3);
}

/* Expired events the owner cannot keep come back until it can. */
static void test_exporter_settle_failure_keeps_expired_events(void **state)
{
    char path[] = "/tmp/o2l_exporter_test_XXXXXX";
    struct o2l_exporter_config cfg;
    struct o2l_exporter_stats st;
    struct o2l_event_list l = {0};
    struct o2l_exporter *ex;
    struct settle_log sl;
    struct stat sb;
    size_t i;
    int fd;

    (void)state;
    fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    settle_log_init(&sl);
    sl.fail_dead = 2;

    fast_config(&cfg);
    cfg.file_path = path;
    cfg.max_age_ms = 60000;
    settle_to(&cfg, &sl);
    ex = start_exporter(&cfg);
    add_event(&l, "stale");
    l.items[0].born_ns = 1; /* 1970 */
    l.items[0].tag = 42;
    assert_int_equal(o2l_exporter_submit(ex, &l), O2L_OK);
    wait_settled(ex, 1);
    assert_int_equal(o2l_exporter_stop(ex), O2L_OK);
    o2l_exporter_stats(ex, &st);
    o2l_exporter_destroy(ex);

    assert_int_equal(sl.dead_calls, 3);
    assert_int_equal(sl.dead_refused, 2);
    assert_int_equal(sl.delivered_calls, 0);
    assert_int_equal(sl.mixed, 0);
    i = settled_index(&sl, "stale");
    assert_int_equal(sl.kind[i], O2L_SETTLED_EXPIRED);
    assert_int_equal(sl.tag[i], 42);
    assert_int_equal(sl.status[i], 0);
    assert_non_null(sl.message[i]);
    assert_int_equal(st.events_expired, 1);
    assert_int_equal(st.events_rejected, 0);
    assert_int_equal(st.events_delivered, 0);
    assert_int_equal(st.events_retried, 2);
    assert_int_equal(st.events_dropped, 0);

    /* Never written to the sink. */
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_size, 0);
    unlink(path);
    settle_log_free(&sl);
}

/* ---- a canned-answer HTTP server ------------------------------------ */

#define MAX_REQUESTS 16

struct fake_server {
    int listen_fd;
    int port;
    pthread_t thread;
    atomic_int stop;
    const char *answers[MAX_REQUESTS]; /* full responses, in order */
    size_t n_answers;
    const char *fallback; /* past |answers|; NULL: an empty 207 */
    /* A request whose body holds |refuse_marker| gets |refusal|. */
    const char *refuse_marker;
    const char *refusal;
    char *bodies[MAX_REQUESTS]; /* request bodies received (gunzipped) */
    size_t body_len[MAX_REQUESTS];
    char *auth[MAX_REQUESTS]; /* Authorization header values */
    char *path[MAX_REQUESTS];
    char *ctype[MAX_REQUESTS];          /* Content-Type */
    char *cenc[MAX_REQUESTS];           /* Content-Encoding */
    char *ingest_version[MAX_REQUESTS]; /* x-langfuse-ingestion-version */
    char *sdk_name[MAX_REQUESTS];       /* x-langfuse-sdk-name */
    char *sdk_version[MAX_REQUESTS];    /* x-langfuse-sdk-version */
    /*
     * OTLP bodies: the names of the items framed in each (see add_item),
     * comma-separated, or "framing error".
     */
    char *items[MAX_REQUESTS];
    atomic_int n_requests;
    unsigned answer_delay_ms; /* between reading a request and answering */
};

static const char *header_value(const char *head, const char *name, size_t *len)
{
    size_t nl = strlen(name);
    const char *p = head;

    while ((p = strstr(p, "\r\n")) != NULL) {
        p += 2;
        if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1;
            const char *e;

            while (*v == ' ') {
                v++;
            }
            e = strstr(v, "\r\n");
            *len = e ? (size_t)(e - v) : strlen(v);
            return v;
        }
    }
    return NULL;
}

static char *header_copy(const char *head, const char *name)
{
    size_t len = 0;
    const char *v = header_value(head, name, &len);

    return v ? strndup(v, len) : NULL;
}

/* Inflates a gzip body (malloc'd, NUL after); NULL when it is not gzip. */
static char *gunzip_body(const char *in, size_t len, size_t *out_len)
{
    size_t cap = len * 4 + 1024;
    char *out = malloc(cap + 1);
    z_stream zs;
    int zrc = Z_OK;

    assert_non_null(out);
    memset(&zs, 0, sizeof(zs));
    /* 16 + MAX_WBITS: a gzip wrapper only, as Content-Encoding says. */
    assert_int_equal(inflateInit2(&zs, 16 + MAX_WBITS), Z_OK);
    zs.next_in = (Bytef *)in;
    zs.avail_in = (uInt)len;
    for (int round = 0; round < 64 && zrc == Z_OK; round++) {
        if (zs.total_out == cap) {
            cap *= 2;
            out = realloc(out, cap + 1);
            assert_non_null(out);
        }
        zs.next_out = (Bytef *)out + zs.total_out;
        zs.avail_out = (uInt)(cap - zs.total_out);
        zrc = inflate(&zs, Z_NO_FLUSH);
    }
    *out_len = zs.total_out;
    inflateEnd(&zs);
    if (zrc != Z_STREAM_END || zs.avail_in != 0) {
        free(out);
        return NULL;
    }
    out[*out_len] = '\0';
    return out;
}

/*
 * Reads an ExportTraceServiceRequest made of framed items (0x0a, varint
 * length, bytes) and returns the names of the items (see add_item),
 * comma-separated, or "framing error".
 */
static char *frame_names(const unsigned char *b, size_t len)
{
    char names[512] = "";
    size_t used = 0;
    size_t pos = 0;

    while (pos < len) {
        uint64_t item_len = 0;
        const char *name;
        size_t name_len;

        if (b[pos++] != 0x0a) {
            return strdup("framing error");
        }
        for (int shift = 0;; shift += 7) {
            if (pos >= len || shift > 56) {
                return strdup("framing error");
            }
            item_len |= (uint64_t)(b[pos] & 0x7f) << shift;
            if (!(b[pos++] & 0x80)) {
                break;
            }
        }
        if (item_len > len - pos) {
            return strdup("framing error");
        }
        name = memmem(b + pos, (size_t)item_len, "item:", 5);
        if (!name) {
            return strdup("framing error");
        }
        name += 5;
        name_len = strcspn(name, "|");
        used += (size_t)snprintf(names + used, sizeof(names) - used, "%s%.*s",
                                 used ? "," : "", (int)name_len, name);
        assert_true(used < sizeof(names));
        pos += (size_t)item_len;
    }
    return strdup(names);
}

/* Keeps the request's headers and, for gzip, the inflated body. */
static void keep_request(struct fake_server *s, int idx, const char *head,
                         char *body, size_t body_len)
{
    const char *v = strchr(head, ' ');

    s->path[idx] = v ? strndup(v + 1, strcspn(v + 1, " ")) : NULL;
    s->auth[idx] = header_copy(head, "Authorization");
    s->ctype[idx] = header_copy(head, "Content-Type");
    s->cenc[idx] = header_copy(head, "Content-Encoding");
    s->ingest_version[idx] = header_copy(head, "x-langfuse-ingestion-version");
    s->sdk_name[idx] = header_copy(head, "x-langfuse-sdk-name");
    s->sdk_version[idx] = header_copy(head, "x-langfuse-sdk-version");
    if (s->cenc[idx] && strcmp(s->cenc[idx], "gzip") == 0) {
        size_t plain_len = 0;
        char *plain = gunzip_body(body, body_len, &plain_len);

        free(body);
        body = plain ? plain : strdup("not gzip");
        body_len = plain ? plain_len : strlen(body);
    }
    s->bodies[idx] = body;
    s->body_len[idx] = body_len;
    if (s->path[idx] && strstr(s->path[idx], "/otel/")) {
        s->items[idx] = frame_names((const unsigned char *)body, body_len);
    }
}

/* Reads one request from |fd| into the server's slots. Returns 0 on EOF. */
static int serve_one(struct fake_server *s, int fd)
{
    char head[8192];
    size_t have = 0;
    char *end = NULL;
    const char *v;
    size_t vlen = 0;
    size_t body_len = 0;
    char *body;
    size_t got;
    int idx;
    const char *answer;

    while (!end) {
        struct pollfd pfd = {fd, POLLIN, 0};
        ssize_t n;

        if (have + 1 >= sizeof(head) || poll(&pfd, 1, 5000) <= 0) {
            return 0;
        }
        n = read(fd, head + have, sizeof(head) - 1 - have);
        if (n <= 0) {
            return 0;
        }
        have += (size_t)n;
        head[have] = '\0';
        end = strstr(head, "\r\n\r\n");
    }
    v = header_value(head, "Content-Length", &vlen);
    if (v) {
        body_len = strtoul(v, NULL, 10);
    }
    body = calloc(1, body_len + 1);
    assert_non_null(body);
    got = have - (size_t)(end + 4 - head);
    memcpy(body, end + 4, got);
    while (got < body_len) {
        struct pollfd pfd = {fd, POLLIN, 0};
        ssize_t n;

        if (poll(&pfd, 1, 5000) <= 0) {
            free(body);
            return 0;
        }
        n = read(fd, body + got, body_len - got);
        if (n <= 0) {
            free(body);
            return 0;
        }
        got += (size_t)n;
    }

    idx = atomic_load(&s->n_requests);
    if (idx >= MAX_REQUESTS) {
        free(body);
        return 0;
    }
    keep_request(s, idx, head, body, body_len);
    if (s->refuse_marker &&
        memmem(s->bodies[idx], s->body_len[idx], s->refuse_marker,
               strlen(s->refuse_marker))) {
        answer = s->refusal;
    } else if ((size_t)idx < s->n_answers) {
        answer = s->answers[idx];
    } else if (s->fallback) {
        answer = s->fallback;
    } else {
        answer = "HTTP/1.1 207 Multi-Status\r\nContent-Length: 28\r\n\r\n"
                 "{\"successes\":[],\"errors\":[]}";
    }
    atomic_store(&s->n_requests, idx + 1);
    if (s->answer_delay_ms > 0) {
        usleep(s->answer_delay_ms * 1000u);
    }
    return write(fd, answer, strlen(answer)) == (ssize_t)strlen(answer);
}

static void *server_main(void *arg)
{
    struct fake_server *s = arg;

    while (!atomic_load(&s->stop)) {
        struct pollfd pfd = {s->listen_fd, POLLIN, 0};
        int fd;

        if (poll(&pfd, 1, 50) <= 0) {
            continue;
        }
        fd = accept(s->listen_fd, NULL, NULL);
        if (fd < 0) {
            continue;
        }
        /* Keep-alive: serve requests on this connection until it ends. */
        while (!atomic_load(&s->stop) && serve_one(s, fd)) {
        }
        close(fd);
    }
    return NULL;
}

static void server_start(struct fake_server *s)
{
    struct sockaddr_in addr;
    socklen_t alen = sizeof(addr);
    int one = 1;

    s->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(s->listen_fd >= 0);
    setsockopt(s->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(s->listen_fd, (struct sockaddr *)&addr, sizeof(addr)),
                     0);
    assert_int_equal(listen(s->listen_fd, 8), 0);
    getsockname(s->listen_fd, (struct sockaddr *)&addr, &alen);
    s->port = ntohs(addr.sin_port);
    atomic_init(&s->stop, 0);
    atomic_init(&s->n_requests, 0);
    assert_int_equal(pthread_create(&s->thread, NULL, server_main, s), 0);
}

static void server_stop(struct fake_server *s)
{
    atomic_store(&s->stop, 1);
    pthread_join(s->thread, NULL);
    close(s->listen_fd);
}

static void server_free(struct fake_server *s)
{
    for (int i = 0; i < MAX_REQUESTS; i++) {
        free(s->bodies[i]);
        free(s->auth[i]);
        free(s->path[i]);
        free(s->ctype[i]);
        free(s->cenc[i]);
        free(s->ingest_version[i]);
        free(s->sdk_name[i]);
        free(s->sdk_version[i]);
        free(s->items[i]);
    }
}

/* Fills |cfg| for sending to |s|; |url| must outlive the exporter. */
static void http_config(struct fake_server *s, char *url, size_t url_len,
                        struct o2l_exporter_config *cfg)
{
    snprintf(url, url_len, "http://127.0.0.1:%d/", s->port);
    fast_config(cfg);
    cfg->base_url = url;
    cfg->public_key = "pk-lf-test";
    cfg->secret_key = "sk-lf-test";
}

static struct o2l_exporter *http_exporter(struct fake_server *s, char *url,
                                          size_t url_len)
{
    struct o2l_exporter_config cfg;

    http_config(s, url, url_len, &cfg);
    return start_exporter(&cfg);
}

/* Waits (bounded) until |s| has answered |n| requests. */
static void wait_requests(struct fake_server *s, int n)
{
    for (int i = 0; i < 1000 && atomic_load(&s->n_requests) < n; i++) {
        usleep(10000);
    }
}

/* A full HTTP response with a JSON body; free() it. */
static char *make_answer(const char *status_line, const char *body)
{
    size_t cap = strlen(body) + 256;
    char *out = malloc(cap);

    assert_non_null(out);
    snprintf(out, cap,
             "HTTP/1.1 %s\r\nContent-Type: application/json\r\n"
             "Content-Length: %zu\r\n\r\n%s",
             status_line, strlen(body), body);
    return out;
}

static void test_exporter_http_207_retries_5xx_not_4xx(void **state)
{
    static const char first[] =
        "{\"successes\":[{\"id\":\"ev-a\",\"status\":201}],"
        "\"errors\":[{\"id\":\"ev-b\",\"status\":500,"
        "\"message\":\"storage unavailable\"},"
        "{\"id\":\"ev-c\",\"status\":400,\"message\":\"Invalid request "
        "data\",\"error\":\"bad\"}]}";
    static const char second[] =
        "{\"successes\":[{\"id\":\"ev-b\",\"status\":201}],\"errors\":[]}";
    struct fake_server s;
    struct o2l_event_list l = {0};
    struct o2l_exporter_stats st;
    struct o2l_exporter *ex;
    char url[64];
    char *a1;
    char *a2;

    (void)state;
    memset(&s, 0, sizeof(s));
    a1 = make_answer("207 Multi-Status", first);
    a2 = make_answer("207 Multi-Status", second);
    s.answers[0] = a1;
    s.answers[1] = a2;
    s.n_answers = 2;
    server_start(&s);
    ex = http_exporter(&s, url, sizeof(url));

    add_event(&l, "ev-a");
    add_event(&l, "ev-b");
    add_event(&l, "ev-c");
    assert_int_equal(o2l_exporter_submit(ex, &l), O2L_OK);
    wait_settled(ex, 3);
    assert_int_equal(o2l_exporter_stop(ex), O2L_OK);
    o2l_exporter_stats(ex, &st);
    o2l_exporter_destroy(ex);
    server_stop(&s);

    assert_int_equal(st.events_delivered, 2);
    assert_int_equal(st.events_rejected, 1);
    assert_int_equal(st.events_retried, 1);
    assert_int_equal(st.requests_sent, 2);
    assert_int_equal(st.requests_failed, 0);
    assert_int_equal(atomic_load(&s.n_requests), 2);
    assert_string_equal(s.path[0], "/api/public/ingestion");
    /* base64("pk-lf-test:sk-lf-test") */
    assert_string_equal(s.auth[0], "Basic cGstbGYtdGVzdDpzay1sZi10ZXN0");
    assert_non_null(strstr(s.bodies[0], "\"id\":\"ev-c\""));
    assert_non_null(strstr(s.bodies[1], "\"id\":\"ev-b\""));
    /* Only the 5xx event comes back; the 400 is never sent again. */
    assert_null(strstr(s.bodies[1], "ev-a"));
    assert_null(strstr(s.bodies[1], "ev-c"));
    server_free(&s);
    free(a1);
    free(a2);
}

/* A wrong base URL or a redirect pauses delivery; it never drops. */
static void test_exporter_http_wrong_url_is_retried(void **state)
{
    static const char ok[] = "{\"successes\":[{\"id\":\"w1\",\"status\":201}],"
                             "\"errors\":[]}";
    struct fake_server s;
    struct o2l_event_list l = {0};
    struct o2l_exporter_stats st;
    struct o2l_exporter *ex;
    char url[64];
    char *ok_answer;

    (void)state;
    memset(&s, 0, sizeof(s));
    ok_answer = make_answer("207 Multi-Status", ok);
    s.answers[0] = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
    s.answers[1] = "HTTP/1.1 307 Temporary Redirect\r\nLocation: "
                   "https://elsewhere.invalid/api?token=x\r\n"
                   "Content-Length: 0\r\n\r\n";
    s.answers[2] = ok_answer;
    s.n_answers = 3;
    server_start(&s);
    ex = http_exporter(&s, url, sizeof(url));

    add_event(&l, "w1");
    assert_int_equal(o2l_exporter_submit(ex, &l), O2L_OK);
    wait_settled(ex, 1);
    assert_int_equal(o2l_exporter_stop(ex), O2L_OK);
    o2l_exporter_stats(ex, &st);
    o2l_exporter_destroy(ex);
    server_stop(&s);

    assert_int_equal(atomic_load(&s.n_requests), 3);
    assert_int_equal(st.events_delivered, 1);
    assert_int_equal(st.events_rejected, 0);
    server_free(&s);
    free(ok_answer);
}

static void test_exporter_http_retries_whole_batch(void **state)
{
    static const char ok[] = "{\"successes\":[{\"id\":\"r1\",\"status\":201},"
                             "{\"id\":\"r2\",\"status\":201}],\"errors\":[]}";
    struct fake_server s;
    struct o2l_event_list l = {0};
    struct o2l_exporter_stats st;
    struct o2l_exporter *ex;
    char url[64];
    char *ok_answer;

    (void)state;
    memset(&s, 0, sizeof(s));
    ok_answer = make_answer("207 Multi-Status", ok);
    s.answers[0] = "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 0\r\n"
                   "Content-Length: 0\r\n\r\n";
    s.answers[1] = "HTTP/1.1 401 Unauthorized\r\nContent-Length: 2\r\n\r\n{}";
    s.answers[2] =
        "HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\n\r\n";
    s.answers[3] = ok_answer;
    s.answers[4] = ok_answer;
    s.n_answers = 5;
    server_start(&s);
    ex = http_exporter(&s, url, sizeof(url));

    add_event(&l, "r1");
    add_event(&l, "r2");
    assert_int_equal(o2l_exporter_submit(ex, &l), O2L_OK);
    wait_settled(ex, 2);
    assert_int_equal(o2l_exporter_stop(ex), O2L_OK);
    o2l_exporter_stats(ex, &st);
    o2l_exporter_destroy(ex);
    server_stop(&s);

    /* 503, 401, 413 (split in two), then one request per half. */
    assert_int_equal(atomic_load(&s.n_requests), 5);
    assert_int_equal(st.requests_sent, 5);
    assert_int_equal(st.requests_failed, 3);
    assert_int_equal(st.events_delivered, 2);
    assert_int_equal(st.events_rejected, 0);
    assert_non_null(strstr(s.bodies[3], "r1"));
    assert_null(strstr(s.bodies[3], "r2"));
    assert_non_null(strstr(s.bodies[4], "r2"));
    server_free(&s);
    free(ok_answer);
}

static void test_exporter_http_other_4xx_is_not_retried(void **state)
{
    struct fake_server s;
    struct o2l_event_list l = {0};
    struct o2l_exporter_stats st;
    struct o2l_exporter *ex;
    char url[64];

    (void)state;
    memset(&s, 0, sizeof(s));
    s.answers[0] = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n";
    s.n_answers = 1;
    server_start(&s);
    ex = http_exporter(&s, url, sizeof(url));

    add_event(&l, "x1");
    assert_int_equal(o2l_exporter_submit(ex, &l), O2L_OK);
    wait_settled(ex, 1);
    assert_int_equal(o2l_exporter_stop(ex), O2L_OK);
    o2l_exporter_stats(ex, &st);
    o2l_exporter_destroy(ex);
    server_stop(&s);

    assert_int_equal(atomic_load(&s.n_requests), 1);
    assert_int_equal(st.events_rejected, 1);
    assert_int_equal(st.events_delivered, 0);
    server_free(&s);
}

static void test_exporter_settle_reports_outcomes(void **state)
{
    static const char first[] =
        "{\"successes\":[{\"id\":\"ev-a\",\"status\":201}],"
        "\"errors\":[{\"id\":\"ev-b\",\"status\":500,"
        "\"message\":\"storage unavailable\"},"
        "{\"id\":\"ev-c\",\"status\":400,\"message\":\"Invalid request "
        "data\",\"error\":\"bad\"}]}";
    struct o2l_exporter_config cfg;
    struct fake_server s;
    struct o2l_event_list l = {0};
    struct o2l_exporter_stats st;
    struct o2l_exporter *ex;
    struct settle_log sl;
    char url[64];
    char *a1;
    size_t ia;
    size_t ib;
    size_t ic;

    (void)state;
    memset(&s, 0, sizeof(s));
    settle_log_init(&sl);
    a1 = make_answer("207 Multi-Status", first);
    s.answers[0] = a1;
    s.n_answers = 1; /* then empty 207s: everything delivered */
    server_start(&s);
    http_config(&s, url, sizeof(url), &cfg);
    settle_to(&cfg, &sl);
    ex = start_exporter(&cfg);

    add_event(&l, "ev-a");
    add_event(&l, "ev-b");
    add_event(&l, "ev-c");
    for (size_t i = 0; i < l.len; i++) {
        l.items[i].tag = 100 + i;
    }
    assert_int_equal(o2l_exporter_submit(ex, &l), O2L_OK);
    wait_settled(ex, 3);
    assert_int_equal(o2l_exporter_stop(ex), O2L_OK);
    o2l_exporter_stats(ex, &st);
    o2l_exporter_destroy(ex);
    server_stop(&s);

    assert_int_equal(sl.n, 3);
    assert_int_equal(sl.mixed, 0);
    assert_int_equal(sl.dead_calls, 1);
    assert_int_equal(sl.delivered_calls, 2);

    ia = settled_index(&sl, "ev-a");
    assert_int_equal(sl.kind[ia], O2L_SETTLED_DELIVERED);
    assert_int_equal(sl.tag[ia], 100);
    assert_null(sl.message[ia]);

    ic = settled_index(&sl, "ev-c");
    assert_int_equal(sl.kind[ic], O2L_SETTLED_REJECTED);
    assert_int_equal(sl.tag[ic], 102);
    assert_int_equal(sl.status[ic], 400);
    assert_non_null(sl.message[ic]);
    assert_string_equal(sl.message[ic], "Invalid request data");

    /* The 500 was sent again and only then delivered. */
    ib = settled_index(&sl, "ev-b");
    assert_int_equal(sl.kind[ib], O2L_SETTLED_DELIVERED);
    assert_int_equal(sl.tag[ib], 101);
    assert_true(ib > ia);
    assert_true(ib > ic);

    assert_int_equal(atomic_load(&s.n_requests), 2);
    assert_non_null(strstr(s.bodies[1], "\"id\":\"ev-b\""));
    assert_null(strstr(s.bodies[1], "ev-a"));
    assert_null(strstr(s.bodies[1], "ev-c"));
    assert_int_equal(st.events_delivered, 2);
    assert_int_equal(st.events_rejected, 1);
    assert_int_equal(st.events_retried, 1);
    server_free(&s);
    settle_log_free(&sl);
    free(a1);
}

/* A refused event the owner cannot keep is offered again, not lost. */
static void test_exporter_settle_failure_keeps_rejected_events(void **state)
{
    struct o2l_exporter_config cfg;
    struct fake_server s;
    struct o2l_event_list l = {0};
    struct o2l_exporter_stats st;
    struct o2l_exporter *ex;
    struct settle_log sl;
    char url[64];
    char *refused;
    size_t i;

    (void)state;
    memset(&s, 0, sizeof(s));
    settle_log_init(&sl);
    sl.fail_dead = 2;
    refused = make_answer("400 Bad Request", "{\"message\":\"nope\"}");
    s.fallback = refused;
    server_start(&s);
    http_config(&s, url, sizeof(url), &cfg);
    settle_to(&cfg, &sl);
    ex = start_exporter(&cfg);

    add_event(&l, "x1");
    assert_int_equal(o2l_exporter_submit(ex, &l), O2L_OK);
    wait_settled(ex, 1);
    assert_int_equal(o2l_exporter_stop(ex), O2L_OK);
    o2l_exporter_stats(ex, &st);
    o2l_exporter_destroy(ex);
    server_stop(&s);

    assert_int_equal(sl.dead_calls, 3);
    assert_int_equal(sl.dead_refused, 2);
    assert_int_equal(sl.delivered_calls, 0);
    i = settled_index(&sl, "x1");
    assert_int_equal(sl.kind[i], O2L_SETTLED_REJECTED);
    assert_int_equal(sl.status[i], 400);
    assert_non_null(sl.message[i]);
    assert_non_null(strstr(sl.message[i], "nope"));
    /* Kept in the queue, so each offer followed another attempt. */
    assert_int_equal(atomic_load(&s.n_requests), 3);
    assert_int_equal(st.events_rejected, 1);
    assert_int_equal(st.events_retried, 2);
    assert_int_equal(st.events_dropped, 0);
    assert_int_equal(st.queue_events, 0);
    server_free(&s);
    settle_log_free(&sl);
    free(refused);
}

static void test_exporter_max_age_expires_without_sending(void **state)
{
    const int64_t hour_ns = INT64_C(3600) * 1000000000;
    struct o2l_exporter_config cfg;
    struct fake_server s;
    struct o2l_event_list l = {0};
    struct o2l_exporter_stats st;
    struct o2l_exporter *ex;
    struct settle_log sl;
    char url[64];
    int64_t now;
    int sent;
    size_t i;

    (void)state;
    memset(&s, 0, sizeof(s));
    settle_log_init(&sl);
    server_start(&s);
    http_config(&s, url, sizeof(url), &cfg);
    cfg.max_age_ms = 60000;
    settle_to(&cfg, &sl);
    ex = start_exporter(&cfg);

    /* Only old events: they expire and no request goes out. */
    now = (int64_t)o2l_now_ns();
    add_event(&l, "old-1");
    l.items[0].born_ns = 1;
    add_event(&l, "old-2");
    l.items[1].born_ns = now - hour_ns;
    assert_int_equal(o2l_exporter_submit(ex, &l), O2L_OK);
    wait_settled(ex, 2);
    o2l_exporter_stats(ex, &st);
    assert_int_equal(st.events_expired, 2);
    assert_int_equal(atomic_load(&s.n_requests), 0);

    /* Fresh ones (and ones of unknown age) mixed with an old one. */
    add_event(&l, "fresh");
    l.items[0].born_ns = now;
    add_event(&l, "old-3");
    l.items[1].born_ns = now - hour_ns;
    add_event(&l, "ageless");
    assert_int_equal(o2l_exporter_submit(ex, &l), O2L_OK);
    wait_settled(ex, 5);
    assert_int_equal(o2l_exporter_stop(ex), O2L_OK);
    o2l_exporter_stats(ex, &st);
    o2l_exporter_destroy(ex);
    server_stop(&s);

    assert_int_equal(st.events_expired, 3);
    assert_int_equal(st.events_delivered, 2);
    assert_int_equal(st.events_rejected, 0);
    sent = atomic_load(&s.n_requests);
    assert_true(sent >= 1);
    for (int r = 0; r < sent && r < MAX_REQUESTS; r++) {
        assert_null(strstr(s.bodies[r], "old-"));
    }
    assert_non_null(strstr(s.bodies[0], "\"id\":\"fresh\""));

    assert_int_equal(sl.mixed, 0);
    for (int k = 1; k <= 3; k++) {
        char id[16];

        snprintf(id, sizeof(id), "old-%d", k);
        i = settled_index(&sl, id);
        assert_int_equal(sl.kind[i], O2L_SETTLED_EXPIRED);
        assert_non_null(sl.message[i]);
    }
    assert_int_equal(sl.kind[settled_index(&sl, "fresh")],
                     O2L_SETTLED_DELIVERED);
    assert_int_equal(sl.kind[settled_index(&sl, "ageless")],
                     O2L_SETTLED_DELIVERED);
    server_free(&s);
    settle_log_free(&sl);
}

/* A 400 for the whole request: halving finds the one event at fault. */
static void test_exporter_whole_request_refusal_is_split(void **state)
{
    static const char *const ids[] = {"a", "bad", "c", "d"};
    struct o2l_exporter_config cfg;
    struct fake_server s;
    struct o2l_event_list l = {0};
    struct o2l_exporter_stats st;
    struct o2l_exporter *ex;
    struct settle_log sl;
    char url[64];
    char *refused;
    size_t i;

    (void)state;
    memset(&s, 0, sizeof(s));
    settle_log_init(&sl);
    refused = make_answer("400 Bad Request",
                          "{\"message\":\"Invalid request data\"}");
    s.refuse_marker = "\"id\":\"bad\"";
    s.refusal = refused;
    server_start(&s);
    http_config(&s, url, sizeof(url), &cfg);
    settle_to(&cfg, &sl);
    ex = start_exporter(&cfg);

    for (i = 0; i < O2L_ARRAY_LEN(ids); i++) {
        add_event(&l, ids[i]);
    }
    assert_int_equal(o2l_exporter_submit(ex, &l), O2L_OK);
    wait_settled(ex, 4);
    assert_int_equal(o2l_exporter_stop(ex), O2L_OK);
    o2l_exporter_stats(ex, &st);
    o2l_exporter_destroy(ex);
    server_stop(&s);

    assert_int_equal(st.events_delivered, 3);
    assert_int_equal(st.events_rejected, 1);
    assert_int_equal(st.events_dropped, 0);
    /* [a bad c d], [a bad], [a], [bad], [c d] */
    assert_int_equal(atomic_load(&s.n_requests), 5);
    assert_int_equal(st.requests_failed, 3);

    assert_int_equal(sl.mixed, 0);
    assert_int_equal(sl.n, 4);
    i = settled_index(&sl, "bad");
    assert_int_equal(sl.kind[i], O2L_SETTLED_REJECTED);
    assert_int_equal(sl.status[i], 400);
    assert_non_null(sl.message[i]);
    assert_non_null(strstr(sl.message[i], "Invalid request data"));
    assert_int_equal(sl.kind[settled_index(&sl, "a")], O2L_SETTLED_DELIVERED);
    assert_int_equal(sl.kind[settled_index(&sl, "c")], O2L_SETTLED_DELIVERED);
    assert_int_equal(sl.kind[settled_index(&sl, "d")], O2L_SETTLED_DELIVERED);
    server_free(&s);
    settle_log_free(&sl);
    free(refused);
}

/* The owner keeps queued events elsewhere: stop does not wait for them. */
static void test_exporter_leave_queued_on_stop(void **state)
{
    struct o2l_exporter_config cfg;
    struct fake_server s;
    struct o2l_event_list l = {0};
    struct o2l_exporter_stats st;
    struct o2l_exporter *ex;
    struct settle_log sl;
    char url[64];

    (void)state;
    memset(&s, 0, sizeof(s));
    settle_log_init(&sl);
    s.fallback = "HTTP/1.1 503 Service Unavailable\r\n"
                 "Content-Length: 0\r\n\r\n";
    server_start(&s);
    http_config(&s, url, sizeof(url), &cfg);
    cfg.leave_queued_on_stop = true;
    cfg.shutdown_timeout_ms = 2000;
    settle_to(&cfg, &sl);
    ex = start_exporter(&cfg);

    add_event(&l, "k1");
    add_event(&l, "k2");
    add_event(&l, "k3");
    assert_int_equal(o2l_exporter_submit(ex, &l), O2L_OK);
    wait_requests(&s, 2);
    assert_true(atomic_load(&s.n_requests) >= 2);
    assert_int_equal(o2l_exporter_stop(ex), O2L_OK);
    o2l_exporter_stats(ex, &st);
    o2l_exporter_destroy(ex);
    server_stop(&s);

    assert_int_equal(st.events_queued, 3);
    assert_int_equal(st.events_left, st.events_queued);
    assert_int_equal(st.events_dropped, 0);
    assert_int_equal(st.events_delivered, 0);
    assert_int_equal(st.queue_events, 0);
    /* Nothing was settled: the owner still holds all three. */
    assert_int_equal(sl.delivered_calls + sl.dead_calls, 0);
    server_free(&s);
    settle_log_free(&sl);
}

/*
 * A stop does not wait out a backoff for events the owner keeps: with a
 * minute to wait before the next try it returns at once.
 */
static void test_exporter_stop_does_not_wait_out_a_backoff(void **state)
{
    struct o2l_exporter_config cfg;
    struct fake_server s;
    struct o2l_event_list l = {0};
    struct o2l_exporter_stats st;
    struct o2l_exporter *ex;
    char url[64];

    (void)state;
    memset(&s, 0, sizeof(s));
    s.fallback = "HTTP/1.1 503 Service Unavailable\r\n"
                 "Retry-After: 600\r\nContent-Length: 0\r\n\r\n";
    server_start(&s);
    http_config(&s, url, sizeof(url), &cfg);
    cfg.leave_queued_on_stop = true;
    /* A stop that waited out the backoff or the shutdown timeout would
     * outlast the test's own time limit. */
    cfg.retry_initial_ms = 600000;
    cfg.retry_max_ms = 600000;
    cfg.shutdown_timeout_ms = 600000;
    ex = start_exporter(&cfg);

    add_event(&l, "b1");
    add_event(&l, "b2");
    add_event(&l, "b3");
    assert_int_equal(o2l_exporter_submit(ex, &l), O2L_OK);
    wait_requests(&s, 1);
    /* Let the answer be read and the backoff begin. */
    usleep(100000);
    assert_int_equal(o2l_exporter_stop(ex), O2L_OK);
    o2l_exporter_stats(ex, &st);
    o2l_exporter_destroy(ex);
    server_stop(&s);

    assert_int_equal(atomic_load(&s.n_requests), 1);
    assert_int_equal(st.events_left, 3);
    assert_int_equal(st.events_dropped, 0);
    assert_int_equal(st.events_delivered, 0);
    server_free(&s);
}

/* A plain stop still sends what is queued while Langfuse takes it. */
static void test_exporter_stop_flushes_while_answered(void **state)
{
    struct o2l_exporter_config cfg;
    struct fake_server s;
    struct o2l_event_list l = {0};
    struct o2l_exporter_stats st;
    struct o2l_exporter *ex;
    char url[64];

    (void)state;
    memset(&s, 0, sizeof(s));
    server_start(&s);
    http_config(&s, url, sizeof(url), &cfg);
    cfg.leave_queued_on_stop = true;
    cfg.flush_interval_ms = 60000;
    cfg.batch_max_events = 2;
    ex = start_exporter(&cfg);

    add_event(&l, "f1");
    add_event(&l, "f2");
    add_event(&l, "f3");
    assert_int_equal(o2l_exporter_submit(ex, &l), O2L_OK);
    assert_int_equal(o2l_exporter_stop(ex), O2L_OK);
    o2l_exporter_stats(ex, &st);
    o2l_exporter_destroy(ex);
    server_stop(&s);

    assert_int_equal(atomic_load(&s.n_requests), 2);
    assert_int_equal(st.events_delivered, 3);
    assert_int_equal(st.events_left, 0);
    server_free(&s);
}

/* stop_now() leaves a route: nothing queued is sent any more. */
static void test_exporter_stop_now_sends_nothing_new(void **state)
{
    struct o2l_exporter_config cfg;
    struct fake_server s;
    struct o2l_event_list l = {0};
    struct o2l_exporter_stats st;
    struct o2l_exporter *ex;
    char url[64];

    (void)state;
    memset(&s, 0, sizeof(s));
    server_start(&s);
    http_config(&s, url, sizeof(url), &cfg);
    cfg.leave_queued_on_stop = true;
    cfg.flush_interval_ms = 60000;
    cfg.shutdown_timeout_ms = 600000;
    ex = start_exporter(&cfg);

    add_event(&l, "n1");
    add_event(&l, "n2");
    assert_int_equal(o2l_exporter_submit(ex, &l), O2L_OK);
    assert_int_equal(o2l_exporter_stop_now(ex), O2L_OK);
    o2l_exporter_stats(ex, &st);
    assert_int_equal(o2l_exporter_submit(ex, &l), O2L_ESTOPPED);
    o2l_exporter_destroy(ex);
    server_stop(&s);

    assert_int_equal(atomic_load(&s.n_requests), 0);
    assert_int_equal(st.events_left, 2);
    assert_int_equal(st.events_dropped, 0);
    server_free(&s);
}

/*
 * stop_now() during a request: that request is answered and settled, and
 * no other begins, not even the halves of a batch the answer splits.
 */
static void stop_now_in_flight(const char *answer, size_t batch_max,
                               uint64_t delivered, uint64_t left)
{
    struct o2l_exporter_config cfg;
    struct fake_server s;
    struct o2l_event_list l = {0};
    struct o2l_exporter_stats st;
    struct o2l_exporter *ex;
    char url[64];

    memset(&s, 0, sizeof(s));
    s.fallback = answer;
    s.answer_delay_ms = 400;
    server_start(&s);
    http_config(&s, url, sizeof(url), &cfg);
    cfg.leave_queued_on_stop = true;
    cfg.batch_max_events = batch_max;
    cfg.shutdown_timeout_ms = 600000;
    ex = start_exporter(&cfg);

    add_event(&l, "i1");
    add_event(&l, "i2");
    add_event(&l, "i3");
    assert_int_equal(o2l_exporter_submit(ex, &l), O2L_OK);
    wait_requests(&s, 1);
    assert_int_equal(atomic_load(&s.n_requests), 1);
    assert_int_equal(o2l_exporter_stop_now(ex), O2L_OK);
    o2l_exporter_stats(ex, &st);
    o2l_exporter_destroy(ex);
    server_stop(&s);

    /* It waited for the answer (settled below), not for the shutdown
     * timeout (the test would outlast its time limit). */
    assert_int_equal(atomic_load(&s.n_requests), 1);
    assert_int_equal(st.events_delivered, delivered);
    assert_int_equal(st.events_left, left);
    assert_int_equal(st.events_dropped, 0);
    server_free(&s);
}

static void test_exporter_stop_now_lets_the_request_in_flight_end(void **state)
{
    (void)state;
    /* An empty 207: the one event of the batch is delivered. */
    stop_now_in_flight(NULL, 1, 1, 2);
    /* A 413 would split the batch: the halves stay queued. */
    stop_now_in_flight("HTTP/1.1 413 Payload Too Large\r\n"
                       "Content-Length: 0\r\n\r\n",
                       500, 0, 3);
}

/* A few 503s, then delivery, with the given backoff growth. */
static void deliver_after_503s(double multiplier)
{
    static const char busy[] = "HTTP/1.1 503 Service Unavailable\r\n"
                               "Content-Length: 0\r\n\r\n";
    struct o2l_exporter_config cfg;
    struct fake_server s;
    struct o2l_event_list l = {0};
    struct o2l_exporter_stats st;
    struct o2l_exporter *ex;
    char url[64];

    memset(&s, 0, sizeof(s));
    s.answers[0] = busy;
    s.answers[1] = busy;
    s.answers[2] = busy;
    s.n_answers = 3;
    server_start(&s);
    http_config(&s, url, sizeof(url), &cfg);
    cfg.retry_initial_ms = 5;
    cfg.retry_max_ms = 50;
    cfg.retry_multiplier = multiplier;
    ex = start_exporter(&cfg);

    add_event(&l, "m1");
    assert_int_equal(o2l_exporter_submit(ex, &l), O2L_OK);
    wait_settled(ex, 1);
    assert_int_equal(o2l_exporter_stop(ex), O2L_OK);
    o2l_exporter_stats(ex, &st);
    o2l_exporter_destroy(ex);
    server_stop(&s);

    assert_int_equal(atomic_load(&s.n_requests), 4);
    assert_int_equal(st.requests_failed, 3);
    assert_int_equal(st.events_retried, 3);
    assert_int_equal(st.events_delivered, 1);
    assert_int_equal(st.events_dropped, 0);
    server_free(&s);
}

static void test_exporter_retry_multiplier(void **state)
{
    (void)state;
    deliver_after_503s(1.0);
    deliver_after_503s(3.0);
    /* Below 1 is taken as 1: the backoff never shrinks. */
    deliver_after_503s(0.5);
}

static void test_exporter_stop_gives_up_after_timeout(void **state)
{
    struct o2l_exporter_config cfg;
    struct o2l_exporter_stats st;
    struct o2l_event_list l = {0};
    struct o2l_exporter *ex;

    (void)state;
    /* Nothing listens on port 9 of 127.0.0.1: every attempt fails. */
    fast_config(&cfg);
    cfg.base_url = "http://127.0.0.1:9";
    cfg.public_key = "pk-lf-test";
    cfg.secret_key = "sk-lf-test";
    cfg.shutdown_timeout_ms = 100;
    ex = o2l_exporter_create(&cfg, &quiet_log);
    assert_non_null(ex);
    assert_int_equal(o2l_exporter_start(ex), O2L_OK);
    add_event(&l, "lost");
    assert_int_equal(o2l_exporter_submit(ex, &l), O2L_OK);
    assert_int_equal(o2l_exporter_stop(ex), O2L_ESTOPPED);
    o2l_exporter_stats(ex, &st);
    assert_int_equal(st.events_dropped, 1);
    assert_int_equal(st.queue_events, 0);
    o2l_exporter_destroy(ex);
}

/* ---- event types Langfuse v4 refuses on the ingestion API ---------- */

static void record_refused(void *arg)
{
    struct settle_log *sl = arg;

    pthread_mutex_lock(&sl->mu);
    sl->refused_calls++;
    pthread_mutex_unlock(&sl->mu);
}

static int refused_calls(struct settle_log *sl)
{
    int n;

    pthread_mutex_lock(&sl->mu);
    n = sl->refused_calls;
    pthread_mutex_unlock(&sl->mu);
    return n;
}

/* A 207 as Langfuse v4 gives it for a mixed batch (see refused_batch). */
static const char v4_results[] =
    "{\"successes\":[{\"id\":\"gen1\",\"status\":201}],"
    "\"errors\":[{\"id\":\"tr1\",\"status\":400,"
    "\"message\":\"Event type not accepted: trace-create\"},"
    "{\"id\":\"sp1\",\"status\":400,\"message\":\"Event type not accepted\"},"
    "{\"id\":\"sc1\",\"status\":400,\"message\":\"Event type NOT ACCEPTED\"}]}";

static void refused_batch(struct o2l_event_list *l)
{
    add_typed_event(l, "tr1", "trace-create");
    add_typed_event(l, "sp1", "span-create");
    add_typed_event(l, "sc1", "score-create");
    add_typed_event(l, "gen1", "generation-create");
}

static void test_exporter_refused_type_is_kept_and_pauses(void **state)
{
    struct o2l_exporter_config cfg;
    struct fake_server s;
    struct o2l_event_list l = {0};
    struct o2l_exporter_stats st;
    struct o2l_exporter *ex;
    struct settle_log sl;
    char url[64];
    char *answer;

    (void)state;
    memset(&s, 0, sizeof(s));
    settle_log_init(&sl);
    answer = make_answer("207 Multi-Status", v4_results);
    s.fallback = answer;
    server_start(&s);
    http_config(&s, url, sizeof(url), &cfg);
    settle_to(&cfg, &sl);
    cfg.on_type_refused = record_refused;
    /* Long enough that the kept events are not sent again in the test. */
    cfg.auth_retry_ms = 60000;
    cfg.leave_queued_on_stop = true;
    ex = start_exporter(&cfg);

    refused_batch(&l);
    assert_int_equal(o2l_exporter_submit(ex, &l), O2L_OK);
    for (int i = 0; i < 1000 && refused_calls(&sl) == 0; i++) {
        usleep(10000);
    }
    wait_settled(ex, 2);
    o2l_exporter_stats(ex, &st);
    assert_int_equal(st.queue_events, 2);
    assert_int_equal(o2l_exporter_stop(ex), O2L_OK);
    o2l_exporter_stats(ex, &st);
    o2l_exporter_destroy(ex);
    server_stop(&s);

    /* Told once for the one pause; the two events stayed queued. */
    assert_int_equal(sl.refused_calls, 1);
    assert_int_equal(atomic_load(&s.n_requests), 1);
    assert_int_equal(st.events_delivered, 1);
    assert_int_equal(st.events_rejected, 1);
    assert_int_equal(st.events_retried, 0);
    assert_int_equal(st.events_left, 2);
    assert_int_equal(st.events_dropped, 0);

    /* Settled: the generation, and the score (still ingested, so its
     * refusal is final); never the trace or the span. */
    assert_int_equal(sl.n, 2);
    assert_int_equal(sl.kind[settled_index(&sl, "gen1")],
                     O2L_SETTLED_DELIVERED);
    assert_int_equal(sl.kind[settled_index(&sl, "sc1")], O2L_SETTLED_REJECTED);
    for (size_t i = 0; i < sl.n; i++) {
        assert_string_not_equal(sl.id[i], "tr1");
        assert_string_not_equal(sl.id[i], "sp1");
    }
    server_free(&s);
    settle_log_free(&sl);
    free(answer);
}

static void
test_exporter_refused_type_without_callback_dead_letters(void **state)
{
    struct o2l_exporter_config cfg;
    struct fake_server s;
    struct o2l_event_list l = {0};
    struct o2l_exporter_stats st;
    struct o2l_exporter *ex;
    struct settle_log sl;
    char url[64];
    char *answer;
    size_t i;

    (void)state;
    memset(&s, 0, sizeof(s));
    settle_log_init(&sl);
    answer = make_answer("207 Multi-Status", v4_results);
    s.fallback = answer;
    server_start(&s);
    http_config(&s, url, sizeof(url), &cfg);
    settle_to(&cfg, &sl);
    ex = start_exporter(&cfg);

    refused_batch(&l);
    assert_int_equal(o2l_exporter_submit(ex, &l), O2L_OK);
    wait_settled(ex, 4);
    assert_int_equal(o2l_exporter_stop(ex), O2L_OK);
    o2l_exporter_stats(ex, &st);
    o2l_exporter_destroy(ex);
    server_stop(&s);

    assert_int_equal(atomic_load(&s.n_requests), 1);
    assert_int_equal(st.events_delivered, 1);
    assert_int_equal(st.events_rejected, 3);
    assert_int_equal(sl.refused_calls, 0);
    i = settled_index(&sl, "tr1");
    assert_int_equal(sl.kind[i], O2L_SETTLED_REJECTED);
    assert_int_equal(sl.status[i], 400);
    assert_string_equal(sl.message[i], "Event type not accepted: trace-create");
    assert_int_equal(sl.kind[settled_index(&sl, "sp1")], O2L_SETTLED_REJECTED);
    server_free(&s);
    settle_log_free(&sl);
    free(answer);
}

/* ---- the OTLP output ------------------------------------------------ */

static const char otlp_ok[] = "HTTP/1.1 200 OK\r\n"
                              "Content-Type: application/json\r\n"
                              "Content-Length: 2\r\n\r\n{}";

static void otlp_config(struct fake_server *s, char *url, size_t url_len,
                        struct o2l_exporter_config *cfg)
{
    http_config(s, url, url_len, cfg);
    cfg->output = O2L_OUTPUT_OTLP;
}

static void test_exporter_otlp_sends_gzipped_framed_items(void **state)
{
    struct o2l_exporter_config cfg;
    struct fake_server s;
    struct o2l_event_list l = {0};
    struct o2l_exporter_stats st;
    struct o2l_exporter *ex;
    struct settle_log sl;
    char url[64];

    (void)state;
    memset(&s, 0, sizeof(s));
    settle_log_init(&sl);
    s.fallback = otlp_ok;
    server_start(&s);
    otlp_config(&s, url, sizeof(url), &cfg);
    settle_to(&cfg, &sl);
    ex = start_exporter(&cfg);

    /* One item long enough for a two-byte length varint. */
    add_item(&l, "a", 40, false);
    add_item(&l, "b", 300, false);
    add_item(&l, "c", 64, true);
    l.items[1].tag = 7;
    assert_int_equal(o2l_exporter_submit(ex, &l), O2L_OK);
    wait_settled(ex, 3);
    assert_int_equal(o2l_exporter_stop(ex), O2L_OK);
    o2l_exporter_stats(ex, &st);
    o2l_exporter_destroy(ex);
    server_stop(&s);

    assert_int_equal(atomic_load(&s.n_requests), 1);
    assert_string_equal(s.path[0], "/api/public/otel/v1/traces");
    assert_string_equal(s.ctype[0], "application/x-protobuf");
    assert_string_equal(s.cenc[0], "gzip");
    assert_string_equal(s.ingest_version[0], "4");
    assert_string_equal(s.sdk_name[0], "otel2langfuse");
    assert_non_null(s.sdk_version[0]);
    assert_string_equal(s.auth[0], "Basic cGstbGYtdGVzdDpzay1sZi10ZXN0");
    /* Gunzipped: three framed items, in order, nothing else. */
    assert_string_equal(s.items[0], "a,b,c");
    assert_int_equal(s.body_len[0],
                     (1 + 1 + 40) + (1 + 2 + 300) + (1 + 1 + 64));

    assert_int_equal(st.events_delivered, 3);
    assert_int_equal(st.requests_sent, 1);
    assert_int_equal(st.requests_failed, 0);
    assert_int_equal(sl.n, 3);
    assert_int_equal(sl.kind[settled_index(&sl, "b")], O2L_SETTLED_DELIVERED);
    assert_int_equal(sl.tag[settled_index(&sl, "b")], 7);
    server_free(&s);
    settle_log_free(&sl);
}

static void test_exporter_otlp_retries_server_errors(void **state)
{
    struct o2l_exporter_config cfg;
    struct fake_server s;
    struct o2l_event_list l = {0};
    struct o2l_exporter_stats st;
    struct o2l_exporter *ex;
    char url[64];

    (void)state;
    memset(&s, 0, sizeof(s));
    s.answers[0] = "HTTP/1.1 500 Internal Server Error\r\n"
                   "Content-Length: 0\r\n\r\n";
    s.n_answers = 1;
    s.fallback = otlp_ok;
    server_start(&s);
    otlp_config(&s, url, sizeof(url), &cfg);
    ex = start_exporter(&cfg);

    add_item(&l, "r1", 48, false);
    add_item(&l, "r2", 48, false);
    assert_int_equal(o2l_exporter_submit(ex, &l), O2L_OK);
    wait_settled(ex, 2);
    assert_int_equal(o2l_exporter_stop(ex), O2L_OK);
    o2l_exporter_stats(ex, &st);
    o2l_exporter_destroy(ex);
    server_stop(&s);

    assert_int_equal(atomic_load(&s.n_requests), 2);
    assert_string_equal(s.items[0], "r1,r2");
    assert_string_equal(s.items[1], "r1,r2");
    assert_int_equal(st.requests_failed, 1);
    assert_int_equal(st.events_retried, 2);
    assert_int_equal(st.events_delivered, 2);
    assert_int_equal(st.events_rejected, 0);
    server_free(&s);
}

/* A 400 for the request: halving finds the item, which is dead-lettered. */
static void test_exporter_otlp_refused_item_is_split_out(void **state)
{
    static const char *const names[] = {"a", "bad", "c", "d"};
    struct o2l_exporter_config cfg;
    struct fake_server s;
    struct o2l_event_list l = {0};
    struct o2l_exporter_stats st;
    struct o2l_exporter *ex;
    struct settle_log sl;
    char url[64];
    char *refused;
    size_t i;

    (void)state;
    memset(&s, 0, sizeof(s));
    settle_log_init(&sl);
    refused = make_answer("400 Bad Request",
                          "{\"message\":\"span has no trace id\"}");
    s.refuse_marker = "item:bad|";
    s.refusal = refused;
    s.fallback = otlp_ok;
    server_start(&s);
    otlp_config(&s, url, sizeof(url), &cfg);
    settle_to(&cfg, &sl);
    ex = start_exporter(&cfg);

    for (i = 0; i < O2L_ARRAY_LEN(names); i++) {
        add_item(&l, names[i], 50, false);
    }
    assert_int_equal(o2l_exporter_submit(ex, &l), O2L_OK);
    wait_settled(ex, 4);
    assert_int_equal(o2l_exporter_stop(ex), O2L_OK);
    o2l_exporter_stats(ex, &st);
    o2l_exporter_destroy(ex);
    server_stop(&s);

    /* [a bad c d], [a bad], [a], [bad], [c d] */
    assert_int_equal(atomic_load(&s.n_requests), 5);
    assert_string_equal(s.items[0], "a,bad,c,d");
    assert_string_equal(s.items[1], "a,bad");
    assert_string_equal(s.items[2], "a");
    assert_string_equal(s.items[3], "bad");
    assert_string_equal(s.items[4], "c,d");
    assert_int_equal(st.events_delivered, 3);
    assert_int_equal(st.events_rejected, 1);

    assert_int_equal(sl.mixed, 0);
    i = settled_index(&sl, "bad");
    assert_int_equal(sl.kind[i], O2L_SETTLED_REJECTED);
    assert_int_equal(sl.status[i], 400);
    assert_non_null(sl.message[i]);
    assert_non_null(strstr(sl.message[i], "span has no trace id"));
    assert_int_equal(sl.kind[settled_index(&sl, "d")], O2L_SETTLED_DELIVERED);
    server_free(&s);
    settle_log_free(&sl);
    free(refused);
}

static void test_exporter_otlp_413_splits(void **state)
{
    struct o2l_exporter_config cfg;
    struct fake_server s;
    struct o2l_event_list l = {0};
    struct o2l_exporter_stats st;
    struct o2l_exporter *ex;
    char url[64];

    (void)state;
    memset(&s, 0, sizeof(s));
    s.answers[0] = "HTTP/1.1 413 Payload Too Large\r\n"
                   "Content-Length: 0\r\n\r\n";
    s.n_answers = 1;
    s.fallback = otlp_ok;
    server_start(&s);
    otlp_config(&s, url, sizeof(url), &cfg);
    ex = start_exporter(&cfg);

    add_item(&l, "big1", 200, true);
    add_item(&l, "big2", 200, true);
    assert_int_equal(o2l_exporter_submit(ex, &l), O2L_OK);
    wait_settled(ex, 2);
    assert_int_equal(o2l_exporter_stop(ex), O2L_OK);
    o2l_exporter_stats(ex, &st);
    o2l_exporter_destroy(ex);
    server_stop(&s);

    assert_int_equal(atomic_load(&s.n_requests), 3);
    assert_string_equal(s.items[1], "big1");
    assert_string_equal(s.items[2], "big2");
    assert_int_equal(st.events_delivered, 2);
    assert_int_equal(st.events_rejected, 0);
    server_free(&s);
}

/* A body over 4 MB once gzipped is split before it is sent. */
static void test_exporter_otlp_splits_bodies_over_4mb(void **state)
{
    struct o2l_exporter_config cfg;
    struct fake_server s;
    struct o2l_event_list l = {0};
    struct o2l_exporter_stats st;
    struct o2l_exporter *ex;
    char url[64];

    (void)state;
    memset(&s, 0, sizeof(s));
    s.fallback = otlp_ok;
    server_start(&s);
    otlp_config(&s, url, sizeof(url), &cfg);
    cfg.batch_max_bytes = 8 * 1000 * 1000;
    ex = start_exporter(&cfg);

    /* Random bytes: gzip keeps them at about 2.1 MB each. */
    add_item(&l, "n1", 2100 * 1000, true);
    add_item(&l, "n2", 2100 * 1000, true);
    assert_int_equal(o2l_exporter_submit(ex, &l), O2L_OK);
    wait_settled(ex, 2);
    assert_int_equal(o2l_exporter_stop(ex), O2L_OK);
    o2l_exporter_stats(ex, &st);
    o2l_exporter_destroy(ex);
    server_stop(&s);

    assert_int_equal(atomic_load(&s.n_requests), 2);
    assert_string_equal(s.items[0], "n1");
    assert_string_equal(s.items[1], "n2");
    assert_int_equal(st.requests_failed, 0);
    assert_int_equal(st.events_delivered, 2);
    server_free(&s);
}

/* Reads what |f| holds so far into a NUL-terminated buffer; free() it. */
static char *read_log(FILE *f)
{
    long size;
    char *text;

    assert_int_equal(fflush(f), 0);
    size = ftell(f);
    assert_true(size >= 0);
    text = calloc(1, (size_t)size + 1);
    assert_non_null(text);
    rewind(f);
    assert_int_equal(fread(text, 1, (size_t)size, f), (size_t)size);
    return text;
}

/* Spans rejected in a 2xx are logged; the items count as delivered. */
static void test_exporter_otlp_partial_success_is_delivered(void **state)
{
    /* ExportTraceServiceResponse{partial_success{rejected_spans: 2}} */
    static const char pb_answer[] =
        "HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\n"
        "Content-Length: 4\r\n\r\n\x0a\x02\x08\x02";
    struct o2l_log warn_log = {O2L_LOG_WARN, NULL};
    struct o2l_exporter_config cfg;
    struct fake_server s;
    struct o2l_event_list l = {0};
    struct o2l_exporter_stats st;
    struct o2l_exporter *ex;
    char url[64];
    char *json_answer;
    char *logged;

    (void)state;
    memset(&s, 0, sizeof(s));
    json_answer =
        make_answer("200 OK", "{\"partialSuccess\":{\"rejectedSpans\":\"1\","
                              "\"errorMessage\":\"span too old\"}}");
    s.answers[0] = json_answer;
    s.answers[1] = pb_answer;
    s.n_answers = 2;
    server_start(&s);
    otlp_config(&s, url, sizeof(url), &cfg);
    warn_log.out = tmpfile();
    assert_non_null(warn_log.out);
    ex = o2l_exporter_create(&cfg, &warn_log);
    assert_non_null(ex);
    assert_int_equal(o2l_exporter_start(ex), O2L_OK);

    add_item(&l, "p1", 40, false);
    add_item(&l, "p2", 40, false);
    assert_int_equal(o2l_exporter_submit(ex, &l), O2L_OK);
    wait_settled(ex, 2);
    add_item(&l, "p3", 40, false);
    assert_int_equal(o2l_exporter_submit(ex, &l), O2L_OK);
    wait_settled(ex, 3);
    assert_int_equal(o2l_exporter_stop(ex), O2L_OK);
    o2l_exporter_stats(ex, &st);
    o2l_exporter_destroy(ex);
    server_stop(&s);

    assert_int_equal(atomic_load(&s.n_requests), 2);
    assert_int_equal(st.events_delivered, 3);
    assert_int_equal(st.events_rejected, 0);
    assert_int_equal(st.events_retried, 0);
    logged = read_log(warn_log.out);
    assert_non_null(strstr(logged, "rejected spans=1 of items=2"));
    assert_non_null(strstr(logged, "span too old"));
    assert_non_null(strstr(logged, "rejected spans=2 of items=1"));
    /* Neither the secret nor the Authorization header is ever logged. */
    assert_null(strstr(logged, "sk-lf-test"));
    assert_null(strstr(logged, "cGstbGYtdGVzdDpzay1sZi10ZXN0"));
    free(logged);
    fclose(warn_log.out);
    server_free(&s);
    free(json_answer);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exporter_parse_results_207),
        cmocka_unit_test(test_exporter_parse_results_duplicate_ids),
        cmocka_unit_test(test_exporter_parse_results_rejects_garbage),
        cmocka_unit_test(test_exporter_retry_after_seconds_and_dates),
        cmocka_unit_test(test_exporter_retry_after_garbage),
        cmocka_unit_test(test_exporter_config_defaults),
        cmocka_unit_test(test_exporter_file_sink_writes_json_lines),
        cmocka_unit_test(test_exporter_submit_respects_queue_bounds),
        cmocka_unit_test(test_exporter_refuses_more_than_the_queue_holds),
        cmocka_unit_test(test_exporter_submit_wait_times_out_then_gets_room),
        cmocka_unit_test(test_exporter_submit_wait_takes_oversized_list),
        cmocka_unit_test(test_exporter_settle_failure_keeps_expired_events),
        cmocka_unit_test(test_exporter_http_207_retries_5xx_not_4xx),
        cmocka_unit_test(test_exporter_http_retries_whole_batch),
        cmocka_unit_test(test_exporter_http_wrong_url_is_retried),
        cmocka_unit_test(test_exporter_http_other_4xx_is_not_retried),
        cmocka_unit_test(test_exporter_settle_reports_outcomes),
        cmocka_unit_test(test_exporter_settle_failure_keeps_rejected_events),
        cmocka_unit_test(test_exporter_max_age_expires_without_sending),
        cmocka_unit_test(test_exporter_whole_request_refusal_is_split),
        cmocka_unit_test(test_exporter_leave_queued_on_stop),
        cmocka_unit_test(test_exporter_stop_does_not_wait_out_a_backoff),
        cmocka_unit_test(test_exporter_stop_flushes_while_answered),
        cmocka_unit_test(test_exporter_stop_now_sends_nothing_new),
        cmocka_unit_test(test_exporter_stop_now_lets_the_request_in_flight_end),
        cmocka_unit_test(test_exporter_retry_multiplier),
        cmocka_unit_test(test_exporter_stop_gives_up_after_timeout),
        cmocka_unit_test(test_exporter_refused_type_is_kept_and_pauses),
        cmocka_unit_test(
            test_exporter_refused_type_without_callback_dead_letters),
        cmocka_unit_test(test_exporter_otlp_sends_gzipped_framed_items),
        cmocka_unit_test(test_exporter_otlp_retries_server_errors),
        cmocka_unit_test(test_exporter_otlp_refused_item_is_split_out),
        cmocka_unit_test(test_exporter_otlp_413_splits),
        cmocka_unit_test(test_exporter_otlp_splits_bodies_over_4mb),
        cmocka_unit_test(test_exporter_otlp_partial_success_is_delivered),
    };

    o2l_mem_init();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
