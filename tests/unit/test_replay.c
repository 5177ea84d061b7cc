/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_replay.c - dead-letter replay: files left by replays that ended
 * early are adopted unless a running replay holds them, a stop puts what
 * was not delivered back unchanged, and giving up keeps the reason of the
 * first refusal.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "test_util.h"

#include "o2l/common.h"
#include "o2l/deadletter.h"
#include "o2l/replay.h"

/* 2025-12-03T10:00:00.123456789Z */
#define NOW_NS     INT64_C(1764756000123456789)
#define FIRST_TIME "2025-12-03T10:00:00.123456Z"

struct fixture {
    char dir[64];
    char path[128];
    char sink[160];
    FILE *log_out;
    struct o2l_log log;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));

    if (!f) {
        return -1;
    }
    snprintf(f->dir, sizeof(f->dir), "/tmp/o2l-replay-XXXXXX");
    if (!mkdtemp(f->dir)) {
        free(f);
        return -1;
    }
    snprintf(f->path, sizeof(f->path), "%s/dead.jsonl", f->dir);
    snprintf(f->sink, sizeof(f->sink), "%s/sink.out", f->dir);
    f->log_out = tmpfile();
    if (!f->log_out) {
        rmdir(f->dir);
        free(f);
        return -1;
    }
    f->log.level = O2L_LOG_INFO;
    f->log.out = f->log_out;
    *state = f;
    return 0;
}

/* Removes whatever a test left in its directory. */
static int teardown(void **state)
{
    struct fixture *f = *state;
    DIR *d = opendir(f->dir);
    struct dirent *de;
    char name[400];

    while (d && (de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0) {
            snprintf(name, sizeof(name), "%s/%s", f->dir, de->d_name);
            unlink(name);
        }
    }
    if (d) {
        closedir(d);
    }
    rmdir(f->dir);
    fclose(f->log_out);
    free(f);
    return 0;
}

/* What was logged so far, malloc'd. */
static char *logged(struct fixture *f)
{
    long size;
    char *buf;

    fflush(f->log_out);
    size = ftell(f->log_out);
    assert_true(size >= 0);
    buf = calloc(1, (size_t)size + 1);
    assert_non_null(buf);
    rewind(f->log_out);
    assert_int_equal(fread(buf, 1, (size_t)size, f->log_out), (size_t)size);
    return buf;
}

static size_t count_lines(const char *text)
{
    size_t n = 0;

    for (const char *p = text; *p; p++) {
        n += *p == '\n';
    }
    return n;
}

/* How many <path>.replaying-* files the directory holds. */
static size_t replaying_files(const struct fixture *f)
{
    DIR *d = opendir(f->dir);
    struct dirent *de;
    size_t n = 0;

    assert_non_null(d);
    while ((de = readdir(d)) != NULL) {
        n += strncmp(de->d_name, "dead.jsonl.replaying-", 21) == 0;
    }
    closedir(d);
    return n;
}

/* Writes |n| ingestion events ev-<tag>-<i> refused with 503 to |path|. */
static void write_refused(const char *path, const char *tag, size_t n)
{
    char err[256];
    struct o2l_deadletter *dl = o2l_deadletter_open(path, err, sizeof(err));

    assert_non_null(dl);
    for (size_t i = 0; i < n; i++) {
        char id[64];
        char json[160];
        struct o2l_event ev;
        struct o2l_deadletter_entry e;

        snprintf(id, sizeof(id), "ev-%s-%zu", tag, i);
        snprintf(json, sizeof(json),
                 "{\"id\":\"%s\",\"type\":\"trace-create\",\"body\":"
                 "{\"id\":\"t-%s-%zu\"}}",
                 id, tag, i);
        memset(&ev, 0, sizeof(ev));
        ev.json = json;
        ev.len = strlen(json);
        ev.id = id;
        memset(&e, 0, sizeof(e));
        e.ev = &ev;
        e.status = 503;
        e.message = "upstream down";
        assert_int_equal(o2l_deadletter_append(dl, &e, 1, NOW_NS), O2L_OK);
    }
    o2l_deadletter_close(dl);
}

/* A pid that no process has: a child that has been reaped. */
static pid_t dead_pid(void)
{
    pid_t pid = fork();
    int status;

    assert_true(pid >= 0);
    if (pid == 0) {
        _exit(0);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    return pid;
}

/* Replays into a file sink: every event is delivered at once. */
static void sink_config(struct fixture *f, struct o2l_exporter_config *ec)
{
    o2l_exporter_config_defaults(ec);
    ec->file_path = f->sink;
    ec->flush_interval_ms = 10;
}

/*
 * A Langfuse that takes connections and never answers: the kernel
 * completes the handshake into the backlog and nobody accepts, so every
 * request stays in flight.
 */
static int silent_server(int *port)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    assert_true(fd >= 0);
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(fd, 64), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    *port = ntohs(sa.sin_port);
    return fd;
}

static void silent_config(struct o2l_exporter_config *ec, char *url,
                          size_t url_len, int port)
{
    snprintf(url, url_len, "http://127.0.0.1:%d", port);
    o2l_exporter_config_defaults(ec);
    ec->base_url = url;
    ec->public_key = "pk-lf-test";
    ec->secret_key = "sk-lf-test";
    ec->flush_interval_ms = 10;
    ec->retry_initial_ms = 50;
    ec->retry_max_ms = 200;
    ec->request_timeout_ms = 20000;
}

static void test_replay_adopts_file_of_dead_replay(void **state)
{
    struct fixture *f = *state;
    struct o2l_exporter_config ec;
    struct o2l_replay_result res;
    char leftover[200];
    char *text;
    char *log;
    size_t len;

    snprintf(leftover, sizeof(leftover), "%s.replaying-%ld", f->path,
             (long)dead_pid());
    write_refused(leftover, "old", 2);
    write_refused(f->path, "new", 1);

    sink_config(f, &ec);
    assert_int_equal(o2l_replay_dead_letters(&ec, f->path, NULL, &f->log, &res),
                     O2L_OK);
    assert_int_equal(res.replayed, 3);
    assert_int_equal(res.adopted, 2);
    assert_int_equal(res.delivered, 3);
    assert_int_equal(res.refused, 0);
    assert_false(res.interrupted);

    /* Both files are done with; everything reached the sink. */
    assert_int_equal(replaying_files(f), 0);
    text = test_read_file(f->path, &len);
    assert_int_equal(len, 0);
    free(text);
    text = test_read_file(f->sink, &len);
    assert_non_null(strstr(text, "\"id\":\"ev-old-0\""));
    assert_non_null(strstr(text, "\"id\":\"ev-old-1\""));
    assert_non_null(strstr(text, "\"id\":\"ev-new-0\""));
    free(text);
    log = logged(f);
    assert_non_null(strstr(log, "adopted events=2 from files=1"));
    assert_non_null(strstr(log, "the replay that made it is gone"));
    free(log);
}

/* Only leftovers count: with no dead-letter file at all they are found. */
static void test_replay_adopts_without_a_live_file(void **state)
{
    struct fixture *f = *state;
    struct o2l_exporter_config ec;
    struct o2l_replay_result res;
    char leftover[200];

    /* The suffix a replay uses when an old file already has its pid. */
    snprintf(leftover, sizeof(leftover), "%s.replaying-%ld.1", f->path,
             (long)dead_pid());
    write_refused(leftover, "old", 3);

    sink_config(f, &ec);
    assert_int_equal(o2l_replay_dead_letters(&ec, f->path, NULL, &f->log, &res),
                     O2L_OK);
    assert_int_equal(res.replayed, 3);
    assert_int_equal(res.adopted, 3);
    assert_int_equal(res.delivered, 3);
    assert_int_equal(replaying_files(f), 0);
}

/*
 * A file whose lock is held belongs to a running replay, whatever its
 * pid: it is left alone. Unlocked, it is adopted even though its pid is
 * alive (a reused pid).
 */
static void test_replay_leaves_a_locked_file_alone(void **state)
{
    struct fixture *f = *state;
    struct o2l_exporter_config ec;
    struct o2l_replay_result res;
    char leftover[200];
    char *before;
    char *after;
    char *log;
    size_t before_len;
    size_t after_len;
    int held;

    /* Our parent is alive and is not a replay. */
    snprintf(leftover, sizeof(leftover), "%s.replaying-%ld", f->path,
             (long)getppid());
    write_refused(leftover, "busy", 2);
    before = test_read_file(leftover, &before_len);
    held = open(leftover, O_RDONLY);
    assert_true(held >= 0);
    assert_int_equal(flock(held, LOCK_EX), 0);

    sink_config(f, &ec);
    assert_int_equal(o2l_replay_dead_letters(&ec, f->path, NULL, &f->log, &res),
                     O2L_OK);
    assert_int_equal(res.replayed, 0);
    assert_int_equal(res.adopted, 0);
    after = test_read_file(leftover, &after_len);
    assert_int_equal(after_len, before_len);
    assert_memory_equal(after, before, before_len);
    free(after);
    log = logged(f);
    assert_non_null(strstr(log, "another running replay holds it"));
    free(log);

    /* Lock gone, pid still alive: adopted. */
    close(held);
    assert_int_equal(o2l_replay_dead_letters(&ec, f->path, NULL, &f->log, &res),
                     O2L_OK);
    assert_int_equal(res.replayed, 2);
    assert_int_equal(res.adopted, 2);
    assert_int_equal(res.delivered, 2);
    assert_int_equal(replaying_files(f), 0);
    log = logged(f);
    assert_non_null(strstr(log, "its pid is alive but does not hold"));
    free(log);
    free(before);
}

/* Names that only look like leftovers are not touched. */
static void test_replay_ignores_other_names(void **state)
{
    static const char *names[] = {
        "dead.jsonl.replaying-", "dead.jsonl.replaying-12x",
        "dead.jsonl.replaying-12.", "other.jsonl.replaying-12",
        "dead.jsonl.replaying-0"};
    struct fixture *f = *state;
    struct o2l_exporter_config ec;
    struct o2l_replay_result res;
    char name[300];
    struct stat st;

    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        snprintf(name, sizeof(name), "%s/%s", f->dir, names[i]);
        write_refused(name, "x", 1);
    }
    sink_config(f, &ec);
    assert_int_equal(o2l_replay_dead_letters(&ec, f->path, NULL, &f->log, &res),
                     O2L_OK);
    assert_int_equal(res.replayed, 0);
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        snprintf(name, sizeof(name), "%s/%s", f->dir, names[i]);
        assert_int_equal(stat(name, &st), 0);
    }
}

struct stopper {
    atomic_int *flag;
    unsigned after_ms;
};

static void *stop_later(void *arg)
{
    struct stopper *s = arg;
    struct timespec ts = {(time_t)(s->after_ms / 1000u),
                          (long)(s->after_ms % 1000u) * 1000000L};

    nanosleep(&ts, NULL);
    atomic_store(s->flag, 2);
    return NULL;
}

/*
 * A stop while requests hang: the replay ends within a few seconds, and
 * the file holds again exactly the lines it held before.
 */
static void test_replay_stop_puts_events_back(void **state)
{
    struct fixture *f = *state;
    atomic_int stop = 0;
    struct stopper s = {&stop, 300};
    /* Neither the request timeout nor giving up can end it: only the
     * stop (else the test outlasts its time limit). */
    struct o2l_replay_options opt = {&stop, 600000};
    struct o2l_exporter_config ec;
    struct o2l_replay_result res;
    pthread_t th;
    char url[64];
    char *before;
    char *after;
    char *log;
    size_t before_len;
    size_t after_len;
    int port;
    int srv;

    write_refused(f->path, "a", 4);
    before = test_read_file(f->path, &before_len);
    srv = silent_server(&port);
    silent_config(&ec, url, sizeof(url), port);
    ec.request_timeout_ms = 600000;

    assert_int_equal(pthread_create(&th, NULL, stop_later, &s), 0);
    assert_int_equal(o2l_replay_dead_letters(&ec, f->path, &opt, &f->log, &res),
                     O2L_OK);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_true(res.interrupted);
    assert_int_equal(res.replayed, 4);
    assert_int_equal(res.delivered, 0);
    assert_int_equal(res.refused, 0);
    assert_int_equal(res.returned, 4);

    after = test_read_file(f->path, &after_len);
    assert_int_equal(after_len, before_len);
    assert_memory_equal(after, before, before_len);
    assert_int_equal(replaying_files(f), 0);
    log = logged(f);
    assert_non_null(strstr(log, "interrupted"));
    assert_non_null(strstr(log, "events=4 not delivered went back"));
    free(log);
    free(after);
    free(before);
    close(srv);
}

/* A stop asked for before anything was sent puts everything back too. */
static void test_replay_stop_before_sending(void **state)
{
    struct fixture *f = *state;
    atomic_int stop = 15;
    struct o2l_replay_options opt = {&stop, 0};
    struct o2l_exporter_config ec;
    struct o2l_replay_result res;
    char leftover[200];
    char *text;
    size_t len;

    snprintf(leftover, sizeof(leftover), "%s.replaying-%ld", f->path,
             (long)dead_pid());
    write_refused(leftover, "old", 2);
    write_refused(f->path, "new", 1);
    sink_config(f, &ec);
    assert_int_equal(o2l_replay_dead_letters(&ec, f->path, &opt, &f->log, &res),
                     O2L_OK);
    assert_true(res.interrupted);
    assert_int_equal(res.delivered, 0);
    assert_int_equal(res.returned, 3);
    assert_int_equal(replaying_files(f), 0);
    text = test_read_file(f->path, &len);
    assert_int_equal(count_lines(text), 3);
    assert_non_null(strstr(text, "\"id\":\"ev-old-1\""));
    free(text);
}

/* Checks the line of a given-up event: first refusal kept, replay added. */
static void check_given_up(const char *line, const char *id)
{
    cJSON *root = cJSON_Parse(line);
    const cJSON *replay;
    const cJSON *event;

    assert_non_null(root);
    assert_string_equal(
        cJSON_GetObjectItemCaseSensitive(root, "time")->valuestring,
        FIRST_TIME);
    assert_int_equal(cJSON_GetObjectItemCaseSensitive(root, "status")->valueint,
                     503);
    assert_string_equal(
        cJSON_GetObjectItemCaseSensitive(root, "message")->valuestring,
        "upstream down");
    replay = cJSON_GetObjectItemCaseSensitive(root, "replay");
    assert_true(cJSON_IsObject(replay));
    assert_true(
        cJSON_IsString(cJSON_GetObjectItemCaseSensitive(replay, "time")));
    assert_string_equal(
        cJSON_GetObjectItemCaseSensitive(replay, "message")->valuestring,
        "gave up after 1 s without progress");
    event = cJSON_GetObjectItemCaseSensitive(root, "event");
    assert_string_equal(
        cJSON_GetObjectItemCaseSensitive(event, "id")->valuestring, id);
    cJSON_Delete(root);
}

/*
 * Giving up keeps the status, message and time Langfuse's refusal left,
 * and says so apart; a second give-up replaces the note, not the reason.
 */
static void test_replay_give_up_keeps_the_first_refusal(void **state)
{
    struct fixture *f = *state;
    struct o2l_replay_options opt = {NULL, 300};
    struct o2l_exporter_config ec;
    struct o2l_replay_result res;
    char url[64];
    char *text;
    char *nl;
    size_t len;
    int port;
    int srv;

    write_refused(f->path, "g", 1);
    srv = silent_server(&port);
    silent_config(&ec, url, sizeof(url), port);

    for (int round = 0; round < 2; round++) {
        assert_int_equal(
            o2l_replay_dead_letters(&ec, f->path, &opt, &f->log, &res), O2L_OK);
        assert_false(res.interrupted);
        assert_int_equal(res.replayed, 1);
        assert_int_equal(res.delivered, 0);
        assert_int_equal(res.refused, 1);
        assert_int_equal(replaying_files(f), 0);

        text = test_read_file(f->path, &len);
        assert_int_equal(count_lines(text), 1);
        nl = strchr(text, '\n');
        *nl = '\0';
        check_given_up(text, "ev-g-0");
        /* One "replay" member only, after a second give-up too. */
        assert_null(strstr(strstr(text, "\"replay\"") + 1, "\"replay\""));
        free(text);
    }
    close(srv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_replay_adopts_file_of_dead_replay,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_replay_adopts_without_a_live_file,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_replay_leaves_a_locked_file_alone,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_replay_ignores_other_names, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_replay_stop_puts_events_back,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_replay_stop_before_sending, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_replay_give_up_keeps_the_first_refusal, setup, teardown),
    };

    o2l_mem_init();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
