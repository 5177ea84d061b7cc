/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_admin.c - the admin listener on a real event loop: health,
 * readiness and metrics answers, 404 and 405, bind failures, and the
 * Prometheus text written by o2l_admin_metric().
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
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "o2l/admin.h"
#include "o2l/common.h"

/* 10ms polls: a request gets at most 10 seconds. */
#define POLL_MS      10
#define MAX_POLLS    1000
#define RESPONSE_MAX 8192

static const struct o2l_log quiet_log = {O2L_LOG_ERROR, NULL};

struct probe_state {
    bool ready;
    const char *reason;
    int ready_calls;
    int metrics_calls;
};

struct response {
    int status;
    char raw[RESPONSE_MAX];
    const char *body; /* inside raw */
};

static bool probe_ready(void *arg, char *reason, size_t len)
{
    struct probe_state *p = arg;

    p->ready_calls++;
    if (!p->ready) {
        snprintf(reason, len, "%s", p->reason);
    }
    return p->ready;
}

static void probe_metrics(void *arg, struct evbuffer *out)
{
    struct probe_state *p = arg;

    p->metrics_calls++;
    o2l_admin_metric(out, "spans_accepted_total", "counter", "Spans accepted.",
                     42);
    o2l_admin_metric(out, "queue_events", "gauge", "Events queued.", 7);
}

static struct o2l_admin *start_admin(struct event_base *base,
                                     struct probe_state *p)
{
    struct o2l_admin_config cfg;
    struct o2l_admin *a;
    char err[256] = "";

    memset(&cfg, 0, sizeof(cfg));
    cfg.listen = "127.0.0.1:0";
    cfg.ready = probe_ready;
    cfg.metrics = probe_metrics;
    cfg.arg = p;
    a = o2l_admin_start(base, &cfg, &quiet_log, err, sizeof(err));
    assert_non_null(a);
    assert_int_equal(err[0], '\0');
    assert_true(o2l_admin_port(a) > 0);
    return a;
}

static int connect_local(int port)
{
    struct sockaddr_in sa;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    assert_true(fd >= 0);
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    /* On loopback the kernel completes the handshake from the backlog. */
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    return fd;
}

/*
 * Sends one request on |fd| and runs |base| without blocking between
 * short polls of the socket until the server closes the connection.
 */
static void request_on(struct event_base *base, int fd, const char *method,
                       const char *path, struct response *r)
{
    char req[256];
    size_t used = 0;
    bool closed = false;
    int n;

    n = snprintf(req, sizeof(req),
                 "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 "Connection: close\r\nContent-Length: 0\r\n\r\n",
                 method, path);
    assert_true(n > 0 && (size_t)n < sizeof(req));
    assert_int_equal(send(fd, req, (size_t)n, MSG_NOSIGNAL), n);

    for (int i = 0; i < MAX_POLLS && !closed; i++) {
        struct pollfd pfd = {fd, POLLIN, 0};

        event_base_loop(base, EVLOOP_NONBLOCK);
        if (poll(&pfd, 1, POLL_MS) <= 0) {
            continue;
        }
        n = (int)recv(fd, r->raw + used, sizeof(r->raw) - 1 - used, 0);
        if (n <= 0) {
            closed = true;
        } else {
            used += (size_t)n;
        }
    }
    close(fd);
    assert_true(closed);

    r->raw[used] = '\0';
    assert_int_equal(sscanf(r->raw, "HTTP/1.%*d %d", &r->status), 1);
    r->body = strstr(r->raw, "\r\n\r\n");
    assert_non_null(r->body);
    r->body += 4;
}

static void request(struct event_base *base, int port, const char *method,
                    const char *path, struct response *r)
{
    request_on(base, connect_local(port), method, path, r);
}

/* True when |line| is one whole header line of |r|. */
static bool has_header(const struct response *r, const char *line)
{
    char want[160];

    snprintf(want, sizeof(want), "\r\n%s\r\n", line);
    return strstr(r->raw, want) != NULL && strstr(r->raw, want) < r->body;
}

static void test_admin_healthz_answers_ok(void **state)
{
    struct event_base *base = event_base_new();
    struct probe_state p = {true, "", 0, 0};
    struct o2l_admin *a;
    struct response r;

    (void)state;
    assert_non_null(base);
    a = start_admin(base, &p);

    request(base, o2l_admin_port(a), "GET", "/healthz", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "ok\n");
    assert_true(has_header(&r, "Content-Type: text/plain; charset=utf-8"));
    /* Liveness never asks the owner. */
    assert_int_equal(p.ready_calls, 0);

    o2l_admin_stop(a);
    event_base_free(base);
}

static void test_admin_readyz_follows_the_callback(void **state)
{
    struct event_base *base = event_base_new();
    struct probe_state p = {true, "", 0, 0};
    struct o2l_admin *a;
    struct response r;

    (void)state;
    assert_non_null(base);
    a = start_admin(base, &p);

    request(base, o2l_admin_port(a), "GET", "/readyz", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "ready\n");

    p.ready = false;
    p.reason = "spool full";
    request(base, o2l_admin_port(a), "GET", "/readyz", &r);
    assert_int_equal(r.status, 503);
    assert_string_equal(r.body, "not ready: spool full\n");

    /* A query string does not change the path. */
    p.ready = true;
    request(base, o2l_admin_port(a), "GET", "/readyz?verbose=1", &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(p.ready_calls, 3);

    o2l_admin_stop(a);
    event_base_free(base);
}

static void test_admin_metrics_serves_prometheus_text(void **state)
{
    static const char want[] =
        "# HELP otel2langfuse_spans_accepted_total Spans accepted.\n"
        "# TYPE otel2langfuse_spans_accepted_total counter\n"
        "otel2langfuse_spans_accepted_total 42\n"
        "# HELP otel2langfuse_queue_events Events queued.\n"
        "# TYPE otel2langfuse_queue_events gauge\n"
        "otel2langfuse_queue_events 7\n";
    struct event_base *base = event_base_new();
    struct probe_state p = {true, "", 0, 0};
    struct o2l_admin *a;
    struct response r;

    (void)state;
    assert_non_null(base);
    a = start_admin(base, &p);

    request(base, o2l_admin_port(a), "GET", "/metrics", &r);
    assert_int_equal(r.status, 200);
    assert_true(has_header(
        &r, "Content-Type: text/plain; version=0.0.4; charset=utf-8"));
    assert_string_equal(r.body, want);
    assert_int_equal(p.metrics_calls, 1);

    o2l_admin_stop(a);
    event_base_free(base);
}

static void test_admin_head_has_no_body(void **state)
{
    struct event_base *base = event_base_new();
    struct probe_state p = {true, "", 0, 0};
    struct o2l_admin *a;
    struct response r;

    (void)state;
    assert_non_null(base);
    a = start_admin(base, &p);

    request(base, o2l_admin_port(a), "HEAD", "/healthz", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "");
    /* The length of "ok\n", as GET would send it. */
    assert_true(has_header(&r, "Content-Length: 3"));
    request(base, o2l_admin_port(a), "HEAD", "/metrics", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "");
    assert_int_equal(p.metrics_calls, 1);

    o2l_admin_stop(a);
    event_base_free(base);
}

static void test_admin_unknown_path_is_404(void **state)
{
    struct event_base *base = event_base_new();
    struct probe_state p = {true, "", 0, 0};
    struct o2l_admin *a;
    struct response r;

    (void)state;
    assert_non_null(base);
    a = start_admin(base, &p);

    request(base, o2l_admin_port(a), "GET", "/", &r);
    assert_int_equal(r.status, 404);
    request(base, o2l_admin_port(a), "GET", "/healthz/extra", &r);
    assert_int_equal(r.status, 404);
    /* The path decides first: an unknown path is 404 for any method. */
    request(base, o2l_admin_port(a), "POST", "/v1/traces", &r);
    assert_int_equal(r.status, 404);

    o2l_admin_stop(a);
    event_base_free(base);
}

static void test_admin_other_methods_are_405(void **state)
{
    static const char *methods[] = {"POST", "PUT", "DELETE", "OPTIONS",
                                    "PATCH"};
    struct event_base *base = event_base_new();
    struct probe_state p = {true, "", 0, 0};
    struct o2l_admin *a;
    struct response r;

    (void)state;
    assert_non_null(base);
    a = start_admin(base, &p);

    for (size_t i = 0; i < O2L_ARRAY_LEN(methods); i++) {
        request(base, o2l_admin_port(a), methods[i], "/metrics", &r);
        assert_int_equal(r.status, 405);
        assert_true(has_header(&r, "Allow: GET, HEAD"));
    }
    request(base, o2l_admin_port(a), "POST", "/readyz", &r);
    assert_int_equal(r.status, 405);
    assert_int_equal(p.metrics_calls, 0);
    assert_int_equal(p.ready_calls, 0);

    o2l_admin_stop(a);
    event_base_free(base);
}

/*
 * With no descriptor left, accept() fails: the listener pauses and comes
 * back by itself once descriptors are free again.
 */
static void test_admin_recovers_from_failed_accept(void **state)
{
    struct event_base *base = event_base_new();
    struct probe_state p = {true, "", 0, 0};
    struct o2l_admin *a;
    struct response r;
    struct rlimit saved;
    struct rlimit tight;
    int lowest;
    int fd;

    (void)state;
    assert_non_null(base);
    a = start_admin(base, &p);
    fd = connect_local(o2l_admin_port(a));

    /* The next descriptor would be |lowest|: allow none from there on. */
    lowest = dup(fd);
    assert_true(lowest >= 0);
    close(lowest);
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &saved), 0);
    tight = saved;
    tight.rlim_cur = (rlim_t)lowest;
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &tight), 0);
    for (int i = 0; i < 5; i++) {
        event_base_loop(base, EVLOOP_NONBLOCK);
    }
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &saved), 0);

    request_on(base, fd, "GET", "/healthz", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "ok\n");

    o2l_admin_stop(a);
    event_base_free(base);
}

static void test_admin_without_callbacks(void **state)
{
    struct event_base *base = event_base_new();
    struct o2l_admin_config cfg;
    struct o2l_admin *a;
    struct response r;
    char err[256] = "";

    (void)state;
    assert_non_null(base);
    memset(&cfg, 0, sizeof(cfg));
    cfg.listen = "127.0.0.1:0";
    a = o2l_admin_start(base, &cfg, &quiet_log, err, sizeof(err));
    assert_non_null(a);

    request(base, o2l_admin_port(a), "GET", "/readyz", &r);
    assert_int_equal(r.status, 200);
    request(base, o2l_admin_port(a), "GET", "/metrics", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "");

    o2l_admin_stop(a);
    event_base_free(base);
}

static void test_admin_bind_failure_names_the_setting(void **state)
{
    struct event_base *base = event_base_new();
    struct probe_state p = {true, "", 0, 0};
    struct o2l_admin_config cfg;
    struct o2l_log log = {O2L_LOG_INFO, NULL};
    struct o2l_admin *first;
    char listen[64];
    char err[256] = "";
    char logged[512] = "";
    size_t n;

    (void)state;
    assert_non_null(base);
    log.out = tmpfile();
    assert_non_null(log.out);
    first = start_admin(base, &p);

    /* The port is taken by |first|. */
    snprintf(listen, sizeof(listen), "127.0.0.1:%d", o2l_admin_port(first));
    memset(&cfg, 0, sizeof(cfg));
    cfg.listen = listen;
    assert_null(o2l_admin_start(base, &cfg, &log, err, sizeof(err)));
    assert_non_null(strstr(err, "admin.listen"));
    assert_non_null(strstr(err, listen));

    rewind(log.out);
    n = fread(logged, 1, sizeof(logged) - 1, log.out);
    logged[n] = '\0';
    assert_non_null(strstr(logged, "admin.listen"));
    assert_non_null(strstr(logged, "error"));

    fclose(log.out);
    o2l_admin_stop(first);
    event_base_free(base);
}

static void test_admin_bad_address_is_refused(void **state)
{
    static const char *bad[] = {"127.0.0.1", "127.0.0.1:", "127.0.0.1:http",
                                "127.0.0.1:70000", "127.0.0.1:-1"};
    struct event_base *base = event_base_new();
    struct o2l_admin_config cfg;
    char err[256];

    (void)state;
    assert_non_null(base);
    memset(&cfg, 0, sizeof(cfg));
    for (size_t i = 0; i < O2L_ARRAY_LEN(bad); i++) {
        err[0] = '\0';
        cfg.listen = bad[i];
        assert_null(o2l_admin_start(base, &cfg, &quiet_log, err, sizeof(err)));
        assert_non_null(strstr(err, "admin.listen"));
    }
    event_base_free(base);
}

static void test_admin_start_survives_allocation_failure(void **state)
{
    struct event_base *base = event_base_new();
    struct o2l_admin_config cfg;
    char err[256] = "";

    (void)state;
    assert_non_null(base);
    memset(&cfg, 0, sizeof(cfg));
    cfg.listen = "127.0.0.1:0";
    o2l_mem_fail_after(0);
    assert_null(o2l_admin_start(base, &cfg, &quiet_log, err, sizeof(err)));
    o2l_mem_fail_after(-1);
    assert_non_null(strstr(err, "admin.listen"));
    event_base_free(base);
}

static void test_admin_stop_accepts_null(void **state)
{
    (void)state;
    o2l_admin_stop(NULL);
}

static void test_admin_metric_text_format(void **state)
{
    struct evbuffer *out = evbuffer_new();
    char text[512];
    size_t n;

    (void)state;
    assert_non_null(out);
    o2l_admin_metric(out, "events_dead_lettered_total", "counter",
                     "Events written to the dead-letter file.",
                     UINT64_C(18446744073709551615));
    o2l_admin_metric(out, "up", "gauge", "One while serving.", 0);

    n = evbuffer_get_length(out);
    assert_true(n < sizeof(text));
    evbuffer_remove(out, text, n);
    text[n] = '\0';
    assert_string_equal(
        text, "# HELP otel2langfuse_events_dead_lettered_total Events "
              "written to the dead-letter file.\n"
              "# TYPE otel2langfuse_events_dead_lettered_total counter\n"
              "otel2langfuse_events_dead_lettered_total "
              "18446744073709551615\n"
              "# HELP otel2langfuse_up One while serving.\n"
              "# TYPE otel2langfuse_up gauge\n"
              "otel2langfuse_up 0\n");
    evbuffer_free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_admin_healthz_answers_ok),
        cmocka_unit_test(test_admin_readyz_follows_the_callback),
        cmocka_unit_test(test_admin_metrics_serves_prometheus_text),
        cmocka_unit_test(test_admin_head_has_no_body),
        cmocka_unit_test(test_admin_unknown_path_is_404),
        cmocka_unit_test(test_admin_other_methods_are_405),
        cmocka_unit_test(test_admin_recovers_from_failed_accept),
        cmocka_unit_test(test_admin_without_callbacks),
        cmocka_unit_test(test_admin_bind_failure_names_the_setting),
        cmocka_unit_test(test_admin_bad_address_is_refused),
        cmocka_unit_test(test_admin_start_survives_allocation_failure),
        cmocka_unit_test(test_admin_stop_accepts_null),
        cmocka_unit_test(test_admin_metric_text_format),
    };

    o2l_mem_init();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
