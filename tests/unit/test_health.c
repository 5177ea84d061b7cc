/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_health.c - asking Langfuse its version: answers read, refused and
 * unreadable, servers that are gone or silent, and major versions.
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
#include <unistd.h>

#include <cmocka.h>

#include "o2l/common.h"
#include "o2l/health.h"

/* ---- a one-request HTTP server on 127.0.0.1 ------------------------- */

struct health_server {
    int listen_fd;
    int port;
    pthread_t thread;
    atomic_int stop;
    const char *answer; /* full response; NULL: never answer */
    char head[4096];    /* the request as received */
    atomic_int served;
};

/* Reads the request head (bounded in size and time). */
static void read_head(struct health_server *s, int fd)
{
    size_t have = 0;

    while (have + 1 < sizeof(s->head) && !strstr(s->head, "\r\n\r\n")) {
        struct pollfd pfd = {fd, POLLIN, 0};
        ssize_t n;

        if (poll(&pfd, 1, 5000) <= 0) {
            return;
        }
        n = read(fd, s->head + have, sizeof(s->head) - 1 - have);
        if (n <= 0) {
            return;
        }
        have += (size_t)n;
        s->head[have] = '\0';
    }
}

static void *health_server_main(void *arg)
{
    struct health_server *s = arg;
    int fd = -1;

    /* One connection, then wait (answering or not) until told to stop. */
    for (int i = 0; i < 200 && fd < 0 && !atomic_load(&s->stop); i++) {
        struct pollfd pfd = {s->listen_fd, POLLIN, 0};

        if (poll(&pfd, 1, 50) > 0) {
            fd = accept(s->listen_fd, NULL, NULL);
        }
    }
    if (fd < 0) {
        return NULL;
    }
    read_head(s, fd);
    if (s->answer) {
        size_t len = strlen(s->answer);
        ssize_t w = write(fd, s->answer, len);

        (void)w; /* a short write shows as a failed test in the client */
    }
    atomic_store(&s->served, 1);
    for (int i = 0; i < 200 && !atomic_load(&s->stop); i++) {
        usleep(10000);
    }
    close(fd);
    return NULL;
}

static void server_start(struct health_server *s, const char *answer)
{
    struct sockaddr_in addr;
    socklen_t alen = sizeof(addr);

    memset(s, 0, sizeof(*s));
    s->answer = answer;
    s->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(s->listen_fd >= 0);
    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(s->listen_fd, (struct sockaddr *)&addr, sizeof(addr)),
                     0);
    assert_int_equal(listen(s->listen_fd, 4), 0);
    getsockname(s->listen_fd, (struct sockaddr *)&addr, &alen);
    s->port = ntohs(addr.sin_port);
    atomic_init(&s->stop, 0);
    atomic_init(&s->served, 0);
    assert_int_equal(pthread_create(&s->thread, NULL, health_server_main, s),
                     0);
}

static void server_stop(struct health_server *s)
{
    atomic_store(&s->stop, 1);
    pthread_join(s->thread, NULL);
    close(s->listen_fd);
}

/* Asks |s| for its version (base URL with a trailing slash); the
 * answer's status in *status when not NULL. */
static int ask_status(struct health_server *s, const char *pk, const char *sk,
                      uint32_t timeout_ms, char *version, size_t len,
                      int *status)
{
    char url[64];

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/", s->port);
    return o2l_langfuse_version(url, pk, sk, timeout_ms, version, len, status);
}

static int ask(struct health_server *s, const char *pk, const char *sk,
               uint32_t timeout_ms, char *version, size_t len)
{
    return ask_status(s, pk, sk, timeout_ms, version, len, NULL);
}

#define OK_HEAD "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"

/* ---- o2l_langfuse_version ------------------------------------------- */

static void test_health_reads_v4(void **state)
{
    struct health_server s;
    char version[32];

    (void)state;
    server_start(&s, OK_HEAD "Content-Length: 34\r\n\r\n"
                             "{\"status\":\"OK\",\"version\":\"4.2.1\"}\n");
    assert_int_equal(
        ask(&s, "pk-lf-test", "sk-lf-test", 5000, version, sizeof(version)),
        O2L_OK);
    server_stop(&s);

    assert_string_equal(version, "4.2.1");
    assert_int_equal(o2l_version_major(version), 4);
    assert_non_null(strstr(s.head, "GET /api/public/health HTTP/1.1\r\n"));
    /* base64("pk-lf-test:sk-lf-test") */
    assert_non_null(strstr(
        s.head, "Authorization: Basic cGstbGYtdGVzdDpzay1sZi10ZXN0\r\n"));
}

static void test_health_reads_v3_without_keys(void **state)
{
    struct health_server s;
    char version[32];

    (void)state;
    server_start(&s, OK_HEAD "Content-Length: 36\r\n\r\n"
                             "{\"status\":\"OK\",\"version\":\"3.120.0\"}\n");
    assert_int_equal(ask(&s, NULL, NULL, 5000, version, sizeof(version)),
                     O2L_OK);
    server_stop(&s);

    assert_string_equal(version, "3.120.0");
    assert_int_equal(o2l_version_major(version), 3);
    assert_null(strcasestr(s.head, "Authorization:"));
}

static void test_health_cuts_version_to_fit(void **state)
{
    struct health_server s;
    char version[4];

    (void)state;
    server_start(&s, OK_HEAD "Content-Length: 34\r\n\r\n"
                             "{\"status\":\"OK\",\"version\":\"4.2.1\"}\n");
    assert_int_equal(ask(&s, NULL, NULL, 5000, version, sizeof(version)),
                     O2L_OK);
    server_stop(&s);
    assert_string_equal(version, "4.2");
}

/*
 * A server that is failing or busy, or a proxy in front of it, did not say:
 * the caller asks again later, it does not take it for an old server.
 */
static void test_health_passing_errors_are_eio(void **state)
{
    static const struct {
        const char *answer;
        int status;
    } cases[] = {
        {"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 34\r\n\r\n"
         "{\"status\":\"OK\",\"version\":\"4.2.1\"}\n",
         500},
        {"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n", 502},
        {"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\n"
         "Content-Length: 0\r\n\r\n",
         503},
        {"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 0\r\n\r\n", 429},
        {"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n", 408},
    };
    struct health_server s;
    char version[32];
    int status;

    (void)state;
    for (size_t i = 0; i < O2L_ARRAY_LEN(cases); i++) {
        strcpy(version, "stale");
        status = -1;
        server_start(&s, cases[i].answer);
        assert_int_equal(
            ask_status(&s, "pk", "sk", 5000, version, sizeof(version), &status),
            O2L_EIO);
        server_stop(&s);
        assert_int_equal(status, cases[i].status);
        assert_string_equal(version, "");
    }
}

/* Only a missing route says the server is older than the route. */
static void test_health_not_found_is_ehttp(void **state)
{
    struct health_server s;
    char version[32] = "stale";
    int status = -1;

    (void)state;
    server_start(&s, "HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\n"
                     "Not Found");
    assert_int_equal(
        ask_status(&s, "pk", "sk", 5000, version, sizeof(version), &status),
        O2L_EHTTP);
    server_stop(&s);
    assert_int_equal(status, 404);
    assert_string_equal(version, "");
}

static void test_health_garbage_is_eparse(void **state)
{
    static const char *const answers[] = {
        OK_HEAD "Content-Length: 8\r\n\r\nnot json",
        OK_HEAD "Content-Length: 15\r\n\r\n{\"status\":\"OK\"}",
        OK_HEAD "Content-Length: 13\r\n\r\n{\"version\":4}",
        OK_HEAD "Content-Length: 14\r\n\r\n{\"version\":\"\"}",
        OK_HEAD "Content-Length: 0\r\n\r\n",
        /* Any 2xx is an answer; without a version it says nothing more. */
        "HTTP/1.1 204 No Content\r\n\r\n",
        "HTTP/1.1 201 Created\r\nContent-Length: 15\r\n\r\n"
        "<html></html>\r\n",
    };
    struct health_server s;
    char version[32];

    (void)state;
    for (size_t i = 0; i < O2L_ARRAY_LEN(answers); i++) {
        server_start(&s, answers[i]);
        assert_int_equal(ask(&s, NULL, NULL, 5000, version, sizeof(version)),
                         O2L_EPARSE);
        server_stop(&s);
    }
}

static void test_health_closed_port_is_eio(void **state)
{
    struct health_server s;
    char version[32];
    int status = -1;

    (void)state;
    /* Bound and closed without listening: nothing answers there now. */
    server_start(&s, NULL);
    server_stop(&s);
    assert_int_equal(
        ask_status(&s, "pk", "sk", 5000, version, sizeof(version), &status),
        O2L_EIO);
    assert_int_equal(status, 0);
}

static void test_health_silent_server_is_eio(void **state)
{
    struct health_server s;
    char version[32];

    (void)state;
    server_start(&s, NULL);
    assert_int_equal(ask(&s, NULL, NULL, 200, version, sizeof(version)),
                     O2L_EIO);
    server_stop(&s);
}

static void test_health_bad_arguments(void **state)
{
    char version[8] = "x";

    (void)state;
    assert_int_equal(o2l_langfuse_version(NULL, NULL, NULL, 100, version,
                                          sizeof(version), NULL),
                     O2L_EINVAL);
    assert_string_equal(version, "");
    assert_int_equal(o2l_langfuse_version("", NULL, NULL, 100, version,
                                          sizeof(version), NULL),
                     O2L_EINVAL);
}

/* ---- o2l_version_major ---------------------------------------------- */

static void test_health_version_major(void **state)
{
    (void)state;
    assert_int_equal(o2l_version_major("4.1.0"), 4);
    assert_int_equal(o2l_version_major("3.120.0"), 3);
    assert_int_equal(o2l_version_major("v3"), 3);
    assert_int_equal(o2l_version_major("V4.0.0"), 4);
    assert_int_equal(o2l_version_major("12"), 12);
    assert_int_equal(o2l_version_major("4.0.0-rc.1"), 4);
    assert_int_equal(o2l_version_major("5-beta"), 5);
    assert_int_equal(o2l_version_major(" 4.2"), 4);
    assert_int_equal(o2l_version_major("0.9"), 0);

    assert_int_equal(o2l_version_major(NULL), -1);
    assert_int_equal(o2l_version_major(""), -1);
    assert_int_equal(o2l_version_major("v"), -1);
    assert_int_equal(o2l_version_major("latest"), -1);
    assert_int_equal(o2l_version_major("-4"), -1);
    assert_int_equal(o2l_version_major("+4"), -1);
    assert_int_equal(o2l_version_major("v 4"), -1);
    assert_int_equal(o2l_version_major("4x"), -1);
    assert_int_equal(o2l_version_major(".4"), -1);
    assert_int_equal(o2l_version_major("99999999999999999999"), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_health_reads_v4),
        cmocka_unit_test(test_health_reads_v3_without_keys),
        cmocka_unit_test(test_health_cuts_version_to_fit),
        cmocka_unit_test(test_health_passing_errors_are_eio),
        cmocka_unit_test(test_health_not_found_is_ehttp),
        cmocka_unit_test(test_health_garbage_is_eparse),
        cmocka_unit_test(test_health_closed_port_is_eio),
        cmocka_unit_test(test_health_silent_server_is_eio),
        cmocka_unit_test(test_health_bad_arguments),
        cmocka_unit_test(test_health_version_major),
    };

    o2l_mem_init();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
