/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_spool.c - the durable spool against a real SQLite file in a fresh
 * temporary directory and a real libevent loop: commit callbacks, reads
 * in id order, group commit, the byte cap, acks, recovery after a restart,
 * unreadable files, cancel, timeouts and stopping.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dirent.h>
#include <pthread.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>
#include <sqlite3.h>

#include "o2l/common.h"
#include "o2l/log.h"
#include "o2l/spool.h"

/*
 * Every wait in this file gives up after this many 10 ms steps; a failed
 * commit alone takes the spool's 5 s busy timeout.
 */
#define WAIT_STEPS 3000

struct fixture {
    char root[64];
    char dir[96];
    struct event_base *base;
    struct event *tick; /* bounds each EVLOOP_ONCE to 10 ms */
    FILE *log_file;
    struct o2l_log log;
};

struct probe {
    int calls;
    int rc; /* of the last call */
    int failures;
};

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    struct timeval tv = {0, 10000};

    if (!f) {
        return -1;
    }
    snprintf(f->root, sizeof(f->root), "/tmp/o2l-spool-XXXXXX");
    if (!mkdtemp(f->root)) {
        free(f);
        return -1;
    }
    /* One level below the temporary dir: the spool creates it. */
    snprintf(f->dir, sizeof(f->dir), "%s/spool", f->root);
    f->base = event_base_new();
    f->tick = event_new(f->base, -1, EV_PERSIST, on_tick, NULL);
    event_add(f->tick, &tv);
    f->log_file = tmpfile();
    f->log.level = O2L_LOG_DEBUG;
    f->log.out = f->log_file;
    *state = f;
    return 0;
}

static void remove_tree(const char *path)
{
    DIR *d = opendir(path);
    struct dirent *e;
    char child[512];

    if (!d) {
        unlink(path);
        return;
    }
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) {
            continue;
        }
        snprintf(child, sizeof(child), "%s/%s", path, e->d_name);
        remove_tree(child);
    }
    closedir(d);
    rmdir(path);
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    event_free(f->tick);
    event_base_free(f->base);
    fclose(f->log_file);
    remove_tree(f->root);
    free(f);
    return 0;
}

static struct o2l_spool *open_spool(struct fixture *f, uint64_t max_bytes,
                                    bool sync)
{
    struct o2l_spool_config cfg = {f->dir, max_bytes, sync};
    struct o2l_spool *sp;
    char err[256];

    sp = o2l_spool_open(&cfg, &f->log, err, sizeof(err));
    if (!sp) {
        fail_msg("open failed: %s", err);
    }
    return sp;
}

static void on_done(void *arg, int rc)
{
    struct probe *p = arg;

    p->calls++;
    p->rc = rc;
    p->failures += rc != O2L_OK;
}

static void make_record(struct o2l_spool_record *rec, unsigned char *buf,
                        size_t len, unsigned seed)
{
    for (size_t i = 0; i < len; i++) {
        buf[i] = (unsigned char)(seed * 31u + i * 7u);
    }
    memset(rec, 0, sizeof(*rec));
    rec->received_ns = 1700000000000000000LL + seed;
    rec->format = (int)(seed % 2u);
    rec->n_spans = seed + 1;
    rec->body = buf;
    rec->len = len;
}

/* Runs the loop until |*calls| reaches |want| or the steps run out. */
static void run_until_calls(struct fixture *f, const int *calls, int want)
{
    for (int i = 0; i < WAIT_STEPS && *calls < want; i++) {
        event_base_loop(f->base, EVLOOP_ONCE);
    }
    assert_int_equal(*calls, want);
}

static void wait_acked(struct o2l_spool *sp, uint64_t want)
{
    struct o2l_spool_stats st;

    for (int i = 0; i < WAIT_STEPS; i++) {
        o2l_spool_stats(sp, &st);
        if (st.requests_acked >= want) {
            break;
        }
        usleep(10000);
    }
    o2l_spool_stats(sp, &st);
    assert_int_equal(st.requests_acked, want);
}

static void assert_same_record(const struct o2l_spool_record *got,
                               const struct o2l_spool_record *want)
{
    assert_true(got->id > 0);
    assert_int_equal(got->received_ns, want->received_ns);
    assert_int_equal(got->format, want->format);
    assert_int_equal(got->n_spans, want->n_spans);
    assert_int_equal(got->len, want->len);
    assert_memory_equal(got->body, want->body, want->len);
}

static bool log_contains(struct fixture *f, const char *needle)
{
    char line[1024];

    fflush(f->log_file);
    rewind(f->log_file);
    while (fgets(line, sizeof(line), f->log_file)) {
        if (strstr(line, needle)) {
            return true;
        }
    }
    return false;
}

/* ---- tests --------------------------------------------------------- */

static void check_append_and_read_back(struct fixture *f, bool sync)
{
    unsigned char buf[300];
    struct o2l_spool_record rec;
    struct o2l_spool_record got;
    struct o2l_spool_stats st;
    struct o2l_spool_ticket *t;
    struct o2l_spool *sp;
    struct probe p = {0, 1, 0};
    struct stat sb;
    uint64_t last;

    sp = open_spool(f, 1 << 20, sync);
    assert_int_equal(stat(f->dir, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0700);
    assert_int_equal(o2l_spool_start(sp, f->base), O2L_OK);
    assert_int_equal(o2l_spool_start(sp, f->base), O2L_EINVAL);

    make_record(&rec, buf, sizeof(buf), 7);
    buf[10] = 0; /* bodies are bytes, not strings */
    assert_true(o2l_spool_has_room(sp, rec.len));
    assert_int_equal(o2l_spool_append(sp, &rec, on_done, &p, &t), O2L_OK);
    assert_non_null(t);
    run_until_calls(f, &p.calls, 1);
    assert_int_equal(p.rc, O2L_OK);

    o2l_spool_stats(sp, &st);
    assert_int_equal(st.requests_appended, 1);
    assert_int_equal(st.bytes_appended, sizeof(buf));
    assert_int_equal(st.spans_appended, 8);
    assert_int_equal(st.requests_held, 1);
    assert_int_equal(st.bytes_held, sizeof(buf));
    assert_int_equal(st.commits, 1);
    assert_int_equal(st.append_failures, 0);

    assert_int_equal(o2l_spool_next(sp, 0, &got, 1000), O2L_OK);
    assert_same_record(&got, &rec);
    last = got.id;
    o2l_spool_record_clear(&got);
    assert_int_equal(o2l_spool_next(sp, last, &got, 20), O2L_ETIMEDOUT);
    assert_null(got.body);
    o2l_spool_close(sp);
}

static void test_spool_append_commits_and_next_reads_it(void **state)
{
    check_append_and_read_back(*state, true);
}

static void test_spool_works_without_sync(void **state)
{
    check_append_and_read_back(*state, false);
}

static void test_spool_empty_body_round_trips(void **state)
{
    struct fixture *f = *state;
    struct o2l_spool_record rec;
    struct o2l_spool_record got;
    struct o2l_spool *sp;
    struct probe p = {0, 1, 0};

    sp = open_spool(f, 1000, true);
    assert_int_equal(o2l_spool_start(sp, f->base), O2L_OK);
    make_record(&rec, NULL, 0, 3);
    assert_int_equal(o2l_spool_append(sp, &rec, on_done, &p, NULL), O2L_OK);
    run_until_calls(f, &p.calls, 1);
    assert_int_equal(p.rc, O2L_OK);
    assert_int_equal(o2l_spool_next(sp, 0, &got, 1000), O2L_OK);
    assert_int_equal(got.len, 0);
    assert_int_equal(got.n_spans, 4);
    o2l_spool_record_clear(&got);
    o2l_spool_close(sp);
}

static void test_spool_ids_increase_in_append_order(void **state)
{
    struct fixture *f = *state;
    unsigned char bufs[5][40];
    struct o2l_spool_record recs[5];
    struct o2l_spool_record got;
    struct o2l_spool *sp;
    struct probe p[5];
    int calls = 0;
    uint64_t last = 0;

    sp = open_spool(f, 1 << 20, true);
    assert_int_equal(o2l_spool_start(sp, f->base), O2L_OK);
    memset(p, 0, sizeof(p));
    for (unsigned i = 0; i < 5; i++) {
        make_record(&recs[i], bufs[i], 10 + i * 5, i + 100);
        assert_int_equal(o2l_spool_append(sp, &recs[i], on_done, &p[i], NULL),
                         O2L_OK);
    }
    for (int i = 0; i < WAIT_STEPS && calls < 5; i++) {
        event_base_loop(f->base, EVLOOP_ONCE);
        calls = p[0].calls + p[1].calls + p[2].calls + p[3].calls + p[4].calls;
    }
    assert_int_equal(calls, 5);

    for (unsigned i = 0; i < 5; i++) {
        assert_int_equal(p[i].rc, O2L_OK);
        assert_int_equal(o2l_spool_next(sp, last, &got, 1000), O2L_OK);
        assert_true(got.id > last);
        assert_same_record(&got, &recs[i]);
        last = got.id;
        o2l_spool_record_clear(&got);
    }
    assert_int_equal(o2l_spool_next(sp, last, &got, 0), O2L_ETIMEDOUT);
    o2l_spool_close(sp);
}

static void test_spool_group_commit_uses_fewer_commits(void **state)
{
    enum {
        N = 200
    };
    struct fixture *f = *state;
    unsigned char buf[64];
    struct o2l_spool_record rec;
    struct o2l_spool_stats st;
    struct o2l_spool *sp;
    struct probe p = {0, 1, 0};

    sp = open_spool(f, 1 << 20, true);
    assert_int_equal(o2l_spool_start(sp, f->base), O2L_OK);
    /* All from one loop iteration, as a burst of requests would be. */
    for (unsigned i = 0; i < N; i++) {
        make_record(&rec, buf, sizeof(buf), i);
        assert_int_equal(o2l_spool_append(sp, &rec, on_done, &p, NULL), O2L_OK);
    }
    run_until_calls(f, &p.calls, N);
    assert_int_equal(p.failures, 0);

    o2l_spool_stats(sp, &st);
    assert_int_equal(st.requests_appended, N);
    assert_int_equal(st.bytes_appended, N * sizeof(buf));
    assert_int_equal(st.spans_appended, N * (N + 1) / 2);
    assert_true(st.commits >= 1);
    assert_true(st.commits < N);
    o2l_spool_close(sp);
}

static void test_spool_appends_before_start_share_one_commit(void **state)
{
    struct fixture *f = *state;
    unsigned char buf[16];
    struct o2l_spool_record rec;
    struct o2l_spool_stats st;
    struct o2l_spool *sp;
    struct probe p = {0, 1, 0};

    sp = open_spool(f, 1 << 20, true);
    for (unsigned i = 0; i < 10; i++) {
        make_record(&rec, buf, sizeof(buf), i);
        assert_int_equal(o2l_spool_append(sp, &rec, on_done, &p, NULL), O2L_OK);
    }
    assert_int_equal(o2l_spool_start(sp, f->base), O2L_OK);
    run_until_calls(f, &p.calls, 10);
    o2l_spool_stats(sp, &st);
    assert_int_equal(st.requests_appended, 10);
    assert_int_equal(st.commits, 1);
    o2l_spool_close(sp);
}

static void test_spool_cap_and_ack_free_room(void **state)
{
    struct fixture *f = *state;
    unsigned char big[1001];
    struct o2l_spool_record rec;
    struct o2l_spool_record got;
    struct o2l_spool_stats st;
    struct o2l_spool_ticket *t;
    struct o2l_spool *sp;
    struct probe p = {0, 1, 0};
    struct probe never = {0, 1, 0};

    sp = open_spool(f, 1000, true);
    assert_int_equal(o2l_spool_start(sp, f->base), O2L_OK);

    /* Larger than the whole cap: never fits. */
    assert_false(o2l_spool_has_room(sp, 1001));
    make_record(&rec, big, 1001, 1);
    t = (struct o2l_spool_ticket *)(void *)&never; /* must become NULL */
    assert_int_equal(o2l_spool_append(sp, &rec, on_done, &never, &t),
                     O2L_ETOOBIG);
    assert_null(t);

    /* Waiting bytes count against the cap before they are committed. */
    make_record(&rec, big, 600, 2);
    assert_int_equal(o2l_spool_append(sp, &rec, on_done, &p, NULL), O2L_OK);
    assert_false(o2l_spool_has_room(sp, 500));
    assert_true(o2l_spool_has_room(sp, 400));
    make_record(&rec, big, 500, 3);
    assert_int_equal(o2l_spool_append(sp, &rec, on_done, &never, NULL),
                     O2L_EFULL);
    run_until_calls(f, &p.calls, 1);
    assert_int_equal(p.rc, O2L_OK);

    o2l_spool_stats(sp, &st);
    assert_int_equal(st.bytes_held, 600);
    assert_int_equal(st.requests_held, 1);
    assert_false(o2l_spool_has_room(sp, 401));
    assert_true(o2l_spool_has_room(sp, 400));

    /* Acking deletes the row and gives the room back. */
    assert_int_equal(o2l_spool_next(sp, 0, &got, 1000), O2L_OK);
    assert_int_equal(o2l_spool_ack(sp, got.id), O2L_OK);
    o2l_spool_record_clear(&got);
    wait_acked(sp, 1);
    o2l_spool_stats(sp, &st);
    assert_int_equal(st.bytes_held, 0);
    assert_int_equal(st.requests_held, 0);
    assert_true(o2l_spool_has_room(sp, 1000));
    assert_int_equal(o2l_spool_next(sp, 0, &got, 0), O2L_ETIMEDOUT);

    /* A second ack of the same id changes nothing. */
    assert_int_equal(o2l_spool_ack(sp, 1), O2L_OK);
    assert_int_equal(o2l_spool_ack(sp, 0), O2L_EINVAL);
    o2l_spool_close(sp);
    assert_int_equal(never.calls, 0);
}

static void append_and_wait(struct fixture *f, struct o2l_spool *sp, size_t len,
                            unsigned seed)
{
    unsigned char buf[256];
    struct o2l_spool_record rec;
    struct probe p = {0, 1, 0};

    make_record(&rec, buf, len, seed);
    assert_int_equal(o2l_spool_append(sp, &rec, on_done, &p, NULL), O2L_OK);
    run_until_calls(f, &p.calls, 1);
    assert_int_equal(p.rc, O2L_OK);
}

static void test_spool_reopen_recovers_and_ids_keep_growing(void **state)
{
    struct fixture *f = *state;
    struct o2l_spool_record got;
    struct o2l_spool_stats st;
    struct o2l_spool *sp;
    uint64_t ids[3];
    uint64_t last = 0;

    sp = open_spool(f, 1 << 20, true);
    assert_int_equal(o2l_spool_start(sp, f->base), O2L_OK);
    append_and_wait(f, sp, 10, 1);
    append_and_wait(f, sp, 20, 2);
    append_and_wait(f, sp, 30, 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(o2l_spool_next(sp, last, &got, 1000), O2L_OK);
        ids[i] = last = got.id;
        o2l_spool_record_clear(&got);
    }
    assert_int_equal(o2l_spool_ack(sp, ids[0]), O2L_OK);
    wait_acked(sp, 1);
    o2l_spool_close(sp);

    /* A restart finds the two left and reads from the start again. */
    sp = open_spool(f, 1 << 20, true);
    o2l_spool_stats(sp, &st);
    assert_int_equal(st.recovered_requests, 2);
    assert_int_equal(st.recovered_bytes, 50);
    assert_int_equal(st.requests_held, 2);
    assert_int_equal(st.bytes_held, 50);
    assert_int_equal(st.requests_appended, 0);
    assert_int_equal(o2l_spool_next(sp, 0, &got, 1000), O2L_OK);
    assert_int_equal(got.id, ids[1]);
    assert_int_equal(got.len, 20);
    o2l_spool_record_clear(&got);

    /* Acks made after stop are still applied by close. */
    assert_int_equal(o2l_spool_start(sp, f->base), O2L_OK);
    o2l_spool_stop(sp);
    assert_int_equal(o2l_spool_ack(sp, ids[1]), O2L_OK);
    assert_int_equal(o2l_spool_ack(sp, ids[2]), O2L_OK);
    o2l_spool_close(sp);

    /* Empty now, yet a new id never reuses an old one. */
    sp = open_spool(f, 1 << 20, true);
    o2l_spool_stats(sp, &st);
    assert_int_equal(st.recovered_requests, 0);
    assert_int_equal(st.recovered_bytes, 0);
    assert_int_equal(o2l_spool_start(sp, f->base), O2L_OK);
    append_and_wait(f, sp, 5, 9);
    assert_int_equal(o2l_spool_next(sp, 0, &got, 1000), O2L_OK);
    assert_true(got.id > ids[2]);
    o2l_spool_record_clear(&got);
    o2l_spool_close(sp);
}

static int count_entries(const char *dir, const char *prefix)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;

    assert_non_null(d);
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, prefix, strlen(prefix)) == 0) {
            n++;
        }
    }
    closedir(d);
    return n;
}

static void test_spool_garbage_file_is_moved_aside(void **state)
{
    static const char junk[] =
        "this is certainly not an SQLite database file, just some text "
        "that is long enough to fill the header SQLite looks at first....";
    struct fixture *f = *state;
    struct o2l_spool_stats st;
    struct o2l_spool *sp;
    char path[160];
    FILE *fp;

    assert_int_equal(mkdir(f->dir, 0700), 0);
    snprintf(path, sizeof(path), "%s/spool.db", f->dir);
    fp = fopen(path, "wb");
    assert_non_null(fp);
    for (int i = 0; i < 64; i++) {
        fwrite(junk, 1, sizeof(junk) - 1, fp);
    }
    fclose(fp);

    sp = open_spool(f, 1 << 20, true);
    assert_int_equal(count_entries(f->dir, "spool.db.corrupt-"), 1);
    assert_true(log_contains(f, "moved aside"));
    o2l_spool_stats(sp, &st);
    assert_int_equal(st.recovered_requests, 0);

    assert_int_equal(o2l_spool_start(sp, f->base), O2L_OK);
    append_and_wait(f, sp, 50, 4);
    o2l_spool_stats(sp, &st);
    assert_int_equal(st.requests_held, 1);
    o2l_spool_close(sp);
}

static void test_spool_open_fails_without_parent_dir(void **state)
{
    struct fixture *f = *state;
    struct o2l_spool_config cfg = {NULL, 1000, true};
    char dir[160];
    char err[256];

    snprintf(dir, sizeof(dir), "%s/missing/spool", f->root);
    cfg.dir = dir;
    err[0] = '\0';
    assert_null(o2l_spool_open(&cfg, &f->log, err, sizeof(err)));
    assert_non_null(strstr(err, "missing"));
}

static void test_spool_cancel_suppresses_callback(void **state)
{
    struct fixture *f = *state;
    unsigned char buf[32];
    struct o2l_spool_record rec;
    struct o2l_spool_stats st;
    struct o2l_spool_ticket *t;
    struct o2l_spool *sp;
    struct probe gone = {0, 1, 0};
    struct probe kept = {0, 1, 0};

    sp = open_spool(f, 1 << 20, true);
    assert_int_equal(o2l_spool_start(sp, f->base), O2L_OK);
    make_record(&rec, buf, sizeof(buf), 1);
    assert_int_equal(o2l_spool_append(sp, &rec, on_done, &gone, &t), O2L_OK);
    o2l_spool_ticket_cancel(t);
    assert_int_equal(o2l_spool_append(sp, &rec, on_done, &kept, NULL), O2L_OK);
    run_until_calls(f, &kept.calls, 1);
    assert_int_equal(gone.calls, 0);

    /* The cancelled append was still stored. */
    o2l_spool_stats(sp, &st);
    assert_int_equal(st.requests_appended, 2);
    o2l_spool_close(sp);
    assert_int_equal(gone.calls, 0);
}

static void test_spool_next_times_out(void **state)
{
    struct fixture *f = *state;
    struct o2l_spool_record got;
    struct o2l_spool *sp;

    sp = open_spool(f, 1 << 20, true);
    assert_int_equal(o2l_spool_start(sp, f->base), O2L_OK);
    assert_int_equal(o2l_spool_next(sp, 0, &got, 30), O2L_ETIMEDOUT);
    assert_int_equal(o2l_spool_next(sp, 0, &got, 0), O2L_ETIMEDOUT);
    assert_int_equal(o2l_spool_next(sp, UINT64_MAX, &got, 0), O2L_ETIMEDOUT);
    o2l_spool_close(sp);
}

struct waiter {
    struct o2l_spool *sp;
    int rc;
};

static void *wait_next(void *arg)
{
    struct waiter *w = arg;
    struct o2l_spool_record got;

    /* Far longer than the test needs: stop() must cut it short. */
    w->rc = o2l_spool_next(w->sp, 0, &got, 20000);
    o2l_spool_record_clear(&got);
    return NULL;
}

static void test_spool_stop_ends_next_and_appends(void **state)
{
    struct fixture *f = *state;
    unsigned char buf[32];
    struct o2l_spool_record rec;
    struct o2l_spool_record got;
    struct o2l_spool *sp;
    struct probe p = {0, 1, 0};
    struct waiter w;
    pthread_t th;

    sp = open_spool(f, 1 << 20, true);
    assert_int_equal(o2l_spool_start(sp, f->base), O2L_OK);
    w.sp = sp;
    w.rc = 1;
    assert_int_equal(pthread_create(&th, NULL, wait_next, &w), 0);
    usleep(20000);

    /* Queued just before the stop: committed, callback run by stop. */
    make_record(&rec, buf, sizeof(buf), 5);
    assert_int_equal(o2l_spool_append(sp, &rec, on_done, &p, NULL), O2L_OK);
    o2l_spool_stop(sp);
    assert_int_equal(p.calls, 1);
    assert_int_equal(p.rc, O2L_OK);
    pthread_join(th, NULL);
    /* The waiter saw either the record or the stop, never a timeout. */
    assert_true(w.rc == O2L_ESTOPPED || w.rc == O2L_OK);

    assert_int_equal(o2l_spool_next(sp, 0, &got, 1000), O2L_ESTOPPED);
    assert_false(o2l_spool_has_room(sp, 1));
    assert_int_equal(o2l_spool_append(sp, &rec, on_done, &p, NULL),
                     O2L_ESTOPPED);
    assert_int_equal(o2l_spool_start(sp, f->base), O2L_EINVAL);
    o2l_spool_stop(sp);
    o2l_spool_close(sp);
    assert_int_equal(p.calls, 1);
}

static void test_spool_stop_without_start_commits(void **state)
{
    struct fixture *f = *state;
    unsigned char buf[32];
    struct o2l_spool_record rec;
    struct o2l_spool_stats st;
    struct o2l_spool *sp;
    struct probe p = {0, 1, 0};

    sp = open_spool(f, 1 << 20, false);
    make_record(&rec, buf, sizeof(buf), 6);
    assert_int_equal(o2l_spool_append(sp, &rec, on_done, &p, NULL), O2L_OK);
    o2l_spool_stop(sp);
    assert_int_equal(p.calls, 1);
    assert_int_equal(p.rc, O2L_OK);
    o2l_spool_close(sp);

    sp = open_spool(f, 1 << 20, false);
    o2l_spool_stats(sp, &st);
    assert_int_equal(st.recovered_requests, 1);
    assert_int_equal(st.recovered_bytes, sizeof(buf));
    o2l_spool_close(sp);
}

/* The delivery side on its own thread, acking what it reads. */
struct reader {
    struct o2l_spool *sp;
    int want;
    int got;
    int bad;
};

static void *read_and_ack(void *arg)
{
    struct reader *r = arg;
    struct o2l_spool_record rec;
    uint64_t last = 0;

    for (int i = 0; i < WAIT_STEPS && r->got < r->want; i++) {
        int rc = o2l_spool_next(r->sp, last, &rec, 50);

        if (rc == O2L_ETIMEDOUT) {
            continue;
        }
        if (rc != O2L_OK || rec.id <= last ||
            rec.n_spans != (uint32_t)r->got + 1) {
            r->bad++;
            o2l_spool_record_clear(&rec);
            break;
        }
        last = rec.id;
        r->got++;
        o2l_spool_ack(r->sp, rec.id);
        o2l_spool_record_clear(&rec);
    }
    return NULL;
}

static void test_spool_delivery_thread_reads_while_appending(void **state)
{
    enum {
        N = 40
    };
    struct fixture *f = *state;
    unsigned char buf[100];
    struct o2l_spool_record rec;
    struct o2l_spool_stats st;
    struct o2l_spool *sp;
    struct probe p = {0, 1, 0};
    struct reader r = {NULL, N, 0, 0};
    pthread_t th;

    sp = open_spool(f, 1 << 20, true);
    assert_int_equal(o2l_spool_start(sp, f->base), O2L_OK);
    r.sp = sp;
    assert_int_equal(pthread_create(&th, NULL, read_and_ack, &r), 0);
    for (unsigned i = 0; i < N; i++) {
        make_record(&rec, buf, sizeof(buf), i);
        assert_int_equal(o2l_spool_append(sp, &rec, on_done, &p, NULL), O2L_OK);
        if (i % 4 == 3) {
            run_until_calls(f, &p.calls, (int)i + 1);
        }
    }
    run_until_calls(f, &p.calls, N);
    pthread_join(th, NULL);
    assert_int_equal(r.bad, 0);
    assert_int_equal(r.got, N);
    wait_acked(sp, N);
    o2l_spool_stats(sp, &st);
    assert_int_equal(st.requests_held, 0);
    assert_int_equal(st.bytes_held, 0);
    o2l_spool_close(sp);
}

static void test_spool_failed_commit_reports_eio_and_retries_acks(void **state)
{
    struct fixture *f = *state;
    struct o2l_spool_record got;
    struct o2l_spool_stats st;
    struct o2l_spool *sp;
    struct probe p = {0, 1, 0};
    unsigned char buf[64];
    struct o2l_spool_record rec;
    char path[160];
    sqlite3 *other;
    uint64_t first;

    sp = open_spool(f, 1000, true);
    assert_int_equal(o2l_spool_start(sp, f->base), O2L_OK);
    append_and_wait(f, sp, 100, 1);
    assert_int_equal(o2l_spool_next(sp, 0, &got, 1000), O2L_OK);
    first = got.id;
    o2l_spool_record_clear(&got);

    /* Another process holding the write lock past the busy timeout. */
    snprintf(path, sizeof(path), "%s/spool.db", f->dir);
    assert_int_equal(sqlite3_open(path, &other), SQLITE_OK);
    assert_int_equal(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL),
                     SQLITE_OK);
    make_record(&rec, buf, sizeof(buf), 2);
    assert_int_equal(o2l_spool_append(sp, &rec, on_done, &p, NULL), O2L_OK);
    assert_int_equal(o2l_spool_ack(sp, first), O2L_OK);
    run_until_calls(f, &p.calls, 1);
    assert_int_equal(p.rc, O2L_EIO);
    assert_true(log_contains(f, "locked"));
    sqlite3_exec(other, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_close(other);

    /*
     * Nothing was stored and the room is back. The ack failed with the
     * append or is still waiting: either way it is applied later.
     */
    o2l_spool_stats(sp, &st);
    assert_true(st.append_failures >= 1);
    assert_int_equal(st.requests_appended, 1);
    assert_int_equal(st.requests_held, 1);
    assert_int_equal(st.bytes_held, 100);
    assert_true(o2l_spool_has_room(sp, 900));

    append_and_wait(f, sp, 30, 3);
    wait_acked(sp, 1);
    o2l_spool_stats(sp, &st);
    assert_int_equal(st.requests_held, 1);
    assert_int_equal(st.bytes_held, 30);
    o2l_spool_close(sp);
}

#define SPOOL_TEST(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        SPOOL_TEST(test_spool_append_commits_and_next_reads_it),
        SPOOL_TEST(test_spool_works_without_sync),
        SPOOL_TEST(test_spool_empty_body_round_trips),
        SPOOL_TEST(test_spool_ids_increase_in_append_order),
        SPOOL_TEST(test_spool_group_commit_uses_fewer_commits),
        SPOOL_TEST(test_spool_appends_before_start_share_one_commit),
        SPOOL_TEST(test_spool_cap_and_ack_free_room),
        SPOOL_TEST(test_spool_reopen_recovers_and_ids_keep_growing),
        SPOOL_TEST(test_spool_garbage_file_is_moved_aside),
        SPOOL_TEST(test_spool_open_fails_without_parent_dir),
        SPOOL_TEST(test_spool_cancel_suppresses_callback),
        SPOOL_TEST(test_spool_next_times_out),
        SPOOL_TEST(test_spool_stop_ends_next_and_appends),
        SPOOL_TEST(test_spool_stop_without_start_commits),
        SPOOL_TEST(test_spool_delivery_thread_reads_while_appending),
        SPOOL_TEST(test_spool_failed_commit_reports_eio_and_retries_acks),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
