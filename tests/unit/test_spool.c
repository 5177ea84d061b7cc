/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_spool.c - the durable spool against a real SQLite file in a fresh
 * temporary directory and a real libevent loop: commit callbacks, reads
 * in id order, group commit, the byte cap, acks, recovery after a restart,
 * unreadable files, cancel, timeouts and stopping; the directory lock, the
 * space reserve and running out of disk space (simulated with a page cap,
 * and on a real small tmpfs where mounting one is permitted).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>
#include <sqlite3.h>

#include "o2l/common.h"
#include "o2l/log.h"
#include "o2l/pipeline.h"
#include "o2l/spool.h"

/*
 * Every wait in this file gives up after this many 10 ms steps; a failed
 * commit alone takes the spool's 5 s busy timeout.
 */
#define WAIT_STEPS 3000

struct fixture {
    char root[64];
    char dir[96];
    char mnt[96]; /* a tmpfs mounted by the test, unmounted by teardown */
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

    if (f->mnt[0]) {
        umount2(f->mnt, MNT_DETACH);
    }
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
    /* A small reserve keeps the tests quick. */
    struct o2l_spool_config cfg = {f->dir, max_bytes, sync, 64 * 1024, 0};
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
            fseek(f->log_file, 0, SEEK_END);
            return true;
        }
    }
    /* Writes go on at the end. */
    fseek(f->log_file, 0, SEEK_END);
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
    assert_int_equal(st.damaged_at_open, 1);

    assert_int_equal(o2l_spool_start(sp, f->base), O2L_OK);
    append_and_wait(f, sp, 50, 4);
    o2l_spool_stats(sp, &st);
    assert_int_equal(st.requests_held, 1);
    o2l_spool_close(sp);
}

static void test_spool_open_fails_without_parent_dir(void **state)
{
    struct fixture *f = *state;
    struct o2l_spool_config cfg = {NULL, 1000, true, 0, 0};
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
     * append and is being tried again on its own: it may be applied
     * already or soon.
     */
    o2l_spool_stats(sp, &st);
    assert_true(st.append_failures >= 1);
    assert_int_equal(st.requests_failed, 1);
    assert_int_equal(st.requests_appended, 1);
    assert_true(st.requests_held <= 1);
    assert_true(st.bytes_held == 100 || st.bytes_held == 0);
    assert_true(o2l_spool_has_room(sp, 900));

    append_and_wait(f, sp, 30, 3);
    wait_acked(sp, 1);
    o2l_spool_stats(sp, &st);
    assert_int_equal(st.requests_held, 1);
    assert_int_equal(st.bytes_held, 30);
    o2l_spool_close(sp);
}

/* ---- the directory lock -------------------------------------------- */

static struct o2l_spool *open_with(struct fixture *f, const char *dir,
                                   uint64_t max_bytes, uint64_t reserve,
                                   uint32_t max_pages)
{
    struct o2l_spool_config cfg = {dir, max_bytes, true, reserve, max_pages};
    struct o2l_spool *sp;
    char err[512];

    sp = o2l_spool_open(&cfg, &f->log, err, sizeof(err));
    if (!sp) {
        fail_msg("open failed: %s", err);
    }
    return sp;
}

static void test_spool_second_open_of_dir_is_refused(void **state)
{
    struct fixture *f = *state;
    struct o2l_spool_config cfg = {f->dir, 1 << 20, true, 0, 0};
    struct o2l_spool_record got;
    struct o2l_spool *sp;
    struct o2l_spool *other;
    char err[512];

    sp = open_spool(f, 1 << 20, true);
    err[0] = '\0';
    other = o2l_spool_open(&cfg, &f->log, err, sizeof(err));
    assert_null(other);
    assert_non_null(strstr(err, f->dir));
    assert_non_null(strstr(err, "another otel2langfuse holds its lock"));

    /* The first one is not disturbed. */
    assert_int_equal(o2l_spool_start(sp, f->base), O2L_OK);
    append_and_wait(f, sp, 40, 1);
    assert_int_equal(o2l_spool_next(sp, 0, &got, 1000), O2L_OK);
    assert_int_equal(got.len, 40);
    o2l_spool_record_clear(&got);
    o2l_spool_close(sp);

    /* Closing releases the lock. */
    sp = open_spool(f, 1 << 20, true);
    o2l_spool_close(sp);
}

/* ---- the space reserve and a full disk ------------------------------ */

static off_t file_size(const char *dir, const char *name, blkcnt_t *blocks)
{
    char path[256];
    struct stat sb;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    if (stat(path, &sb) != 0) {
        return -1;
    }
    if (blocks) {
        *blocks = sb.st_blocks;
    }
    return sb.st_size;
}

static void test_spool_reserve_is_written_with_real_blocks(void **state)
{
    struct fixture *f = *state;
    struct o2l_spool_stats st;
    struct o2l_spool *sp;
    blkcnt_t blocks = 0;

    sp = open_with(f, f->dir, 1 << 20, 300 * 1024, 0);
    assert_int_equal(file_size(f->dir, "spool.reserve", &blocks), 300 * 1024);
    assert_true((uint64_t)blocks * 512u >= 300 * 1024);
    o2l_spool_stats(sp, &st);
    assert_int_equal(st.reserve_bytes, 300 * 1024);
    assert_false(st.out_of_space);
    assert_int_equal(st.damaged_at_open, 0);
    o2l_spool_close(sp);
    /* Kept for the next start. */
    assert_int_equal(file_size(f->dir, "spool.reserve", NULL), 300 * 1024);
}

static int count_lines(struct fixture *f, const char *needle)
{
    char line[1024];
    int n = 0;

    fflush(f->log_file);
    rewind(f->log_file);
    while (fgets(line, sizeof(line), f->log_file)) {
        n += strstr(line, needle) != NULL;
    }
    fseek(f->log_file, 0, SEEK_END);
    return n;
}

/*
 * Appends |len|-byte records one at a time until one fails (the disk is
 * full) or |max| went in; returns how many were stored.
 */
static int fill_until_failure(struct fixture *f, struct o2l_spool *sp,
                              size_t len, int max)
{
    static unsigned char buf[64 * 1024];
    struct o2l_spool_record rec;
    int stored = 0;

    assert_true(len <= sizeof(buf));
    for (int i = 0; i < max; i++) {
        struct probe p = {0, 1, 0};

        make_record(&rec, buf, len, (unsigned)i);
        rec.n_spans = 1;
        if (o2l_spool_append(sp, &rec, on_done, &p, NULL) != O2L_OK) {
            break;
        }
        run_until_calls(f, &p.calls, 1);
        if (p.rc != O2L_OK) {
            assert_int_equal(p.rc, O2L_EIO);
            break;
        }
        stored++;
    }
    return stored;
}

/* Reads every record in order and acks it. */
static int ack_everything(struct o2l_spool *sp)
{
    struct o2l_spool_record got;
    uint64_t last = 0;
    int n = 0;

    while (n < 10000 && o2l_spool_next(sp, last, &got, 50) == O2L_OK) {
        last = got.id;
        assert_int_equal(o2l_spool_ack(sp, got.id), O2L_OK);
        o2l_spool_record_clear(&got);
        n++;
    }
    return n;
}

static void wait_space_back(struct o2l_spool *sp)
{
    struct o2l_spool_stats st;

    for (int i = 0; i < WAIT_STEPS; i++) {
        o2l_spool_stats(sp, &st);
        if (!st.out_of_space) {
            break;
        }
        usleep(10000);
    }
    o2l_spool_stats(sp, &st);
    assert_false(st.out_of_space);
}

/* The state a full disk leaves: checked by both kinds of full disk. */
static void assert_out_of_space(struct fixture *f, struct o2l_spool *sp,
                                const char *dir, bool store_failed)
{
    struct o2l_pipeline pl;
    unsigned char buf[8] = {0};
    struct o2l_spool_record rec;
    struct o2l_spool_stats st;
    struct probe never = {0, 1, 0};
    char reason[256];

    o2l_spool_stats(sp, &st);
    assert_true(st.out_of_space);
    /* A real disk may show it first in a checkpoint, before any store. */
    if (store_failed) {
        assert_true(st.append_failures >= 1);
        assert_true(st.requests_failed >= 1);
    }
    /* The reserve was given up so deletes can go through. */
    assert_int_equal(st.reserve_bytes, 0);
    assert_int_equal(file_size(dir, "spool.reserve", NULL), -1);
    /* Appends are refused up front, and readiness says why. */
    assert_false(o2l_spool_has_room(sp, 1));
    make_record(&rec, buf, sizeof(buf), 1);
    assert_int_equal(o2l_spool_append(sp, &rec, on_done, &never, NULL),
                     O2L_EFULL);
    memset(&pl, 0, sizeof(pl));
    pl.spool = sp;
    assert_false(o2l_pipeline_ready(&pl, reason, sizeof(reason)));
    assert_non_null(strstr(reason, "out of space"));
    /* One line for the episode, however many stores failed. */
    assert_int_equal(count_lines(f, "out of disk space"), 1);
    assert_int_equal(never.calls, 0);
}

static void assert_recovered(struct fixture *f, struct o2l_spool *sp,
                             const char *dir, uint64_t reserve)
{
    struct o2l_pipeline pl;
    struct o2l_spool_stats st;
    char reason[256];

    wait_space_back(sp);
    o2l_spool_stats(sp, &st);
    assert_int_equal(st.requests_held, 0);
    assert_int_equal(st.reserve_bytes, reserve);
    assert_int_equal(file_size(dir, "spool.reserve", NULL), (off_t)reserve);
    assert_true(o2l_spool_has_room(sp, 100));
    memset(&pl, 0, sizeof(pl));
    pl.spool = sp;
    assert_true(o2l_pipeline_ready(&pl, reason, sizeof(reason)));
    assert_true(log_contains(f, "room again"));
    append_and_wait(f, sp, 100, 77);
}

/* max_page_count stands in for the disk: it runs out the same way. */
static void test_spool_out_of_space_refuses_then_recovers(void **state)
{
    struct fixture *f = *state;
    struct o2l_spool_stats st;
    struct o2l_spool *sp;
    int stored;

    sp = open_with(f, f->dir, 1 << 24, 64 * 1024, 48);
    assert_int_equal(o2l_spool_start(sp, f->base), O2L_OK);
    stored = fill_until_failure(f, sp, 8000, 200);
    assert_true(stored > 3);
    assert_true(stored < 200);
    assert_out_of_space(f, sp, f->dir, true);

    /* Delivery goes on: deletes work although inserts do not. */
    assert_int_equal(ack_everything(sp), stored);
    wait_acked(sp, (uint64_t)stored);
    assert_recovered(f, sp, f->dir, 64 * 1024);
    o2l_spool_stats(sp, &st);
    assert_int_equal(st.requests_held, 1);
    o2l_spool_close(sp);
}

/*
 * Appends and deletes in one transaction that fails for space: the
 * deletes are written again on their own at once.
 */
static void test_spool_deletes_do_not_fail_with_inserts(void **state)
{
    struct fixture *f = *state;
    unsigned char buf[8000];
    struct o2l_spool_record rec;
    struct o2l_spool_record got;
    struct o2l_spool_stats st;
    struct o2l_spool *sp;
    struct probe p = {0, 1, 0};
    uint64_t ids[4];
    uint64_t last = 0;

    sp = open_with(f, f->dir, 1 << 24, 64 * 1024, 0);
    assert_int_equal(o2l_spool_start(sp, f->base), O2L_OK);
    for (unsigned i = 0; i < 4; i++) {
        append_and_wait(f, sp, 200, i);
    }
    for (int i = 0; i < 4; i++) {
        assert_int_equal(o2l_spool_next(sp, last, &got, 1000), O2L_OK);
        ids[i] = last = got.id;
        o2l_spool_record_clear(&got);
    }
    o2l_spool_close(sp);

    /* The file may not grow at all now (the cap stops at its size). */
    sp = open_with(f, f->dir, 1 << 24, 64 * 1024, 1);
    make_record(&rec, buf, sizeof(buf), 9);
    assert_int_equal(o2l_spool_append(sp, &rec, on_done, &p, NULL), O2L_OK);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(o2l_spool_ack(sp, ids[i]), O2L_OK);
    }
    /* Both go into the first transaction. */
    assert_int_equal(o2l_spool_start(sp, f->base), O2L_OK);
    run_until_calls(f, &p.calls, 1);
    assert_int_equal(p.rc, O2L_EIO);
    wait_acked(sp, 4);
    o2l_spool_stats(sp, &st);
    assert_int_equal(st.requests_held, 0);
    assert_int_equal(st.requests_failed, 1);
    assert_true(log_contains(f, "full"));
    o2l_spool_close(sp);
}

/* A real full disk: a 1 MiB tmpfs, where the test may mount one. */
static void test_spool_full_tmpfs_recovers(void **state)
{
    struct fixture *f = *state;
    struct o2l_spool_stats st;
    struct o2l_spool *sp;
    char dir[160];
    int stored;

    snprintf(f->mnt, sizeof(f->mnt), "%s/mnt", f->root);
    assert_int_equal(mkdir(f->mnt, 0700), 0);
    if (mount("tmpfs", f->mnt, "tmpfs", MS_NOSUID | MS_NODEV,
              "size=1m,mode=0700") != 0) {
        int e = errno;

        f->mnt[0] = '\0';
        print_message("cannot mount a tmpfs here (%s): the real full-disk "
                      "case is skipped; the page-cap tests cover the "
                      "logic\n",
                      strerror(e));
        skip();
    }
    snprintf(dir, sizeof(dir), "%s/spool", f->mnt);
    /* The reserve is sized from the file system: an eighth of 1 MiB. */
    sp = open_with(f, dir, 1 << 24, 0, 0);
    o2l_spool_stats(sp, &st);
    assert_int_equal(st.reserve_bytes, 128 * 1024);
    assert_true(log_contains(f, "small file system"));
    assert_int_equal(o2l_spool_start(sp, f->base), O2L_OK);

    stored = fill_until_failure(f, sp, 20000, 200);
    assert_true(stored > 3);
    assert_true(stored < 200);
    assert_out_of_space(f, sp, dir, false);

    assert_int_equal(ack_everything(sp), stored);
    wait_acked(sp, (uint64_t)stored);
    assert_recovered(f, sp, dir, 128 * 1024);

    /* And it fills and drains again. */
    stored = fill_until_failure(f, sp, 20000, 200);
    assert_true(stored > 3);
    assert_int_equal(ack_everything(sp), stored + 1);
    wait_space_back(sp);
    o2l_spool_close(sp);
}

/* ---- damage found at open ------------------------------------------ */

static void copy_file(const char *from, const char *to, off_t keep)
{
    unsigned char buf[65536];
    FILE *in = fopen(from, "rb");
    FILE *out = fopen(to, "wb");
    off_t done = 0;
    size_t n;

    assert_non_null(in);
    assert_non_null(out);
    while ((keep < 0 || done < keep) &&
           (n = fread(buf, 1, sizeof(buf), in)) > 0) {
        if (keep >= 0 && done + (off_t)n > keep) {
            n = (size_t)(keep - done);
        }
        assert_int_equal(fwrite(buf, 1, n, out), n);
        done += (off_t)n;
    }
    fclose(in);
    fclose(out);
}

/*
 * Copies the live spool (a crash image: the commits are in the WAL) into
 * |to|, the WAL cut to |wal_keep| bytes (-1: whole).
 */
static void crash_image(struct fixture *f, const char *to, off_t wal_keep)
{
    char a[256];
    char b[256];

    assert_int_equal(mkdir(to, 0700), 0);
    snprintf(a, sizeof(a), "%s/spool.db", f->dir);
    snprintf(b, sizeof(b), "%s/spool.db", to);
    copy_file(a, b, -1);
    snprintf(a, sizeof(a), "%s/spool.db-wal", f->dir);
    snprintf(b, sizeof(b), "%s/spool.db-wal", to);
    copy_file(a, b, wal_keep);
}

static void test_spool_damaged_wal_is_reported(void **state)
{
    struct fixture *f = *state;
    struct o2l_spool_stats st;
    struct o2l_spool *sp;
    struct o2l_spool *copy;
    char whole[160];
    char cut[160];

    /* A reserve this size keeps the three commits in the WAL. */
    sp = open_with(f, f->dir, 1 << 20, 1 << 20, 0);
    assert_int_equal(o2l_spool_start(sp, f->base), O2L_OK);
    for (unsigned i = 0; i < 3; i++) {
        append_and_wait(f, sp, 100, i);
    }
    snprintf(whole, sizeof(whole), "%s/whole", f->root);
    snprintf(cut, sizeof(cut), "%s/cut", f->root);
    crash_image(f, whole, -1);
    crash_image(f, cut, 20);
    o2l_spool_close(sp);

    /* An intact crash image has everything. */
    copy = open_with(f, whole, 1 << 20, 64 * 1024, 0);
    o2l_spool_stats(copy, &st);
    assert_int_equal(st.recovered_requests, 3);
    assert_int_equal(st.damaged_at_open, 0);
    o2l_spool_close(copy);

    /* A WAL cut inside its header: reported, kept aside, counted. */
    copy = open_with(f, cut, 1 << 20, 64 * 1024, 0);
    o2l_spool_stats(copy, &st);
    assert_int_equal(st.recovered_requests, 0);
    assert_int_equal(st.damaged_at_open, 1);
    assert_true(log_contains(f, "damaged (shorter than its header"));
    assert_int_equal(count_entries(cut, "spool.db-wal.damaged-"), 1);
    o2l_spool_close(copy);
}

static void test_spool_bad_wal_checksum_is_reported(void **state)
{
    struct fixture *f = *state;
    struct o2l_spool_stats st;
    struct o2l_spool *sp;
    char dir[160];
    char path[200];
    unsigned char byte;
    FILE *fp;

    sp = open_with(f, f->dir, 1 << 20, 1 << 20, 0);
    assert_int_equal(o2l_spool_start(sp, f->base), O2L_OK);
    append_and_wait(f, sp, 100, 1);
    snprintf(dir, sizeof(dir), "%s/flip", f->root);
    crash_image(f, dir, -1);
    o2l_spool_close(sp);

    /* One bit of the salt changed: SQLite alone would drop the log. */
    snprintf(path, sizeof(path), "%s/spool.db-wal", dir);
    fp = fopen(path, "r+b");
    assert_non_null(fp);
    assert_int_equal(fseek(fp, 16, SEEK_SET), 0);
    assert_int_equal(fread(&byte, 1, 1, fp), 1);
    byte ^= 1;
    assert_int_equal(fseek(fp, 16, SEEK_SET), 0);
    assert_int_equal(fwrite(&byte, 1, 1, fp), 1);
    fclose(fp);

    sp = open_with(f, dir, 1 << 20, 64 * 1024, 0);
    o2l_spool_stats(sp, &st);
    assert_int_equal(st.damaged_at_open, 1);
    assert_true(log_contains(f, "checksum"));
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
        SPOOL_TEST(test_spool_second_open_of_dir_is_refused),
        SPOOL_TEST(test_spool_reserve_is_written_with_real_blocks),
        SPOOL_TEST(test_spool_out_of_space_refuses_then_recovers),
        SPOOL_TEST(test_spool_deletes_do_not_fail_with_inserts),
        SPOOL_TEST(test_spool_full_tmpfs_recovers),
        SPOOL_TEST(test_spool_damaged_wal_is_reported),
        SPOOL_TEST(test_spool_bad_wal_checksum_is_reported),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
