/* SPDX-License-Identifier: Apache-2.0 */
/* admin.c - health, readiness and Prometheus metrics on libevent's evhttp. */
#include "o2l/admin.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>

#include "o2l/common.h"
#include "o2l/listen.h"

enum admin_status {
    ADMIN_STATUS_OK = 200,
    ADMIN_STATUS_NOT_FOUND = 404,
    ADMIN_STATUS_METHOD_NOT_ALLOWED = 405,
    ADMIN_STATUS_UNAVAILABLE = 503
};

#define METRIC_PREFIX     "otel2langfuse_"
#define TEXT_CONTENT_TYPE "text/plain; charset=utf-8"
/* Prometheus text exposition format 0.0.4. */
#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* Probes send no body and few headers; anything larger is refused. */
#define ADMIN_MAX_BODY_BYTES   4096
#define ADMIN_MAX_HEADER_BYTES (16 * 1024)
#define ADMIN_IDLE_TIMEOUT_S   30
/* How often a listener paused by a failed accept() is switched back on. */
#define ADMIN_RESUME_INTERVAL_S 1
#define ADMIN_REASON_LEN        256

struct o2l_admin {
    struct evhttp *http;
    struct evhttp_bound_socket *sock;
    struct event *resume; /* re-enables a paused listener */
    o2l_admin_ready_fn ready;
    o2l_admin_metrics_fn metrics;
    void *arg;
    const struct o2l_log *log;
    int port;
};

static const char *reason_phrase(int status)
{
    switch (status) {
    case ADMIN_STATUS_OK:
        return "OK";
    case ADMIN_STATUS_NOT_FOUND:
        return "Not Found";
    case ADMIN_STATUS_METHOD_NOT_ALLOWED:
        return "Method Not Allowed";
    default:
        return "Service Unavailable";
    }
}

/*
 * Sends |status| with |body| (may be NULL). evhttp writes a body even in
 * answer to HEAD, so for HEAD only the length the GET answer would have
 * goes out, as Content-Length.
 */
static void send_reply(struct evhttp_request *req, int status,
                       const char *content_type, struct evbuffer *body)
{
    struct evkeyvalq *out = evhttp_request_get_output_headers(req);
    char length[32];

    evhttp_add_header(out, "Content-Type", content_type);
    /* Probe answers describe this instant; no cache may keep them. */
    evhttp_add_header(out, "Cache-Control", "no-store");
    if (evhttp_request_get_command(req) == EVHTTP_REQ_HEAD) {
        snprintf(length, sizeof(length), "%zu",
                 body ? evbuffer_get_length(body) : (size_t)0);
        evhttp_add_header(out, "Content-Length", length);
        body = NULL;
    }
    evhttp_send_reply(req, status, reason_phrase(status), body);
}

static void send_text(struct evhttp_request *req, int status, const char *text)
{
    struct evbuffer *body = evbuffer_new();

    if (body) {
        evbuffer_add(body, text, strlen(text));
    }
    send_reply(req, status, TEXT_CONTENT_TYPE, body);
    if (body) {
        evbuffer_free(body);
    }
}

static void serve_ready(struct o2l_admin *a, struct evhttp_request *req)
{
    char reason[ADMIN_REASON_LEN] = "";
    char text[ADMIN_REASON_LEN + 32];
    bool ready = true;

    if (a->ready) {
        ready = a->ready(a->arg, reason, sizeof(reason));
        /* The callback's contract asks for a NUL; do not rely on it. */
        reason[sizeof(reason) - 1] = '\0';
    }
    if (ready) {
        send_text(req, ADMIN_STATUS_OK, "ready\n");
        return;
    }
    o2l_log_debug(a->log, "admin", "readyz answered 503: %s",
                  reason[0] ? reason : "no reason given");
    snprintf(text, sizeof(text), "not ready: %s\n",
             reason[0] ? reason : "unknown");
    send_text(req, ADMIN_STATUS_UNAVAILABLE, text);
}

static void serve_metrics(struct o2l_admin *a, struct evhttp_request *req)
{
    struct evbuffer *body = evbuffer_new();

    if (body && a->metrics) {
        a->metrics(a->arg, body);
    }
    send_reply(req, ADMIN_STATUS_OK, METRICS_CONTENT_TYPE, body);
    if (body) {
        evbuffer_free(body);
    }
}

static void on_request(struct evhttp_request *req, void *arg)
{
    struct o2l_admin *a = arg;
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);

    if (!path ||
        (strcmp(path, "/healthz") != 0 && strcmp(path, "/readyz") != 0 &&
         strcmp(path, "/metrics") != 0)) {
        send_text(req, ADMIN_STATUS_NOT_FOUND,
                  "not found: try /healthz, /readyz or /metrics\n");
        return;
    }
    if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow",
                          "GET, HEAD");
        send_text(req, ADMIN_STATUS_METHOD_NOT_ALLOWED,
                  "method not allowed: use GET or HEAD\n");
        return;
    }

    if (strcmp(path, "/healthz") == 0) {
        send_text(req, ADMIN_STATUS_OK, "ok\n");
    } else if (strcmp(path, "/readyz") == 0) {
        serve_ready(a, req);
    } else {
        serve_metrics(a, req);
    }
}

/*
 * Runs every ADMIN_RESUME_INTERVAL_S. Enabling a listener that is already
 * on changes nothing, so this needs no record of whether it was paused.
 */
static void on_accept_resume(evutil_socket_t fd, short what, void *arg)
{
    struct o2l_admin *a = arg;

    (void)fd;
    (void)what;
    if (a->sock) {
        evconnlistener_enable(evhttp_bound_socket_get_listener(a->sock));
    }
}

/*
 * accept() failed, usually because the process ran out of descriptors.
 * The listening socket stays readable, so without a pause the loop would
 * spin on the same error and starve the receivers sharing it. The error
 * callback's argument belongs to evhttp and cannot lead back to the
 * admin, so the pause ends through on_accept_resume, which the admin owns
 * and cancels when it stops; a one-shot timer holding the listener could
 * fire after the listener is gone. Logs at most once per pause.
 */
static void on_accept_error(struct evconnlistener *l, void *arg)
{
    const struct o2l_log warn_log = {O2L_LOG_WARN, NULL};
    int err = EVUTIL_SOCKET_ERROR();

    (void)arg;
    o2l_log_write(&warn_log, O2L_LOG_WARN, "admin",
                  "accept failed: %s; pausing admin connections for up to "
                  "%ds",
                  evutil_socket_error_to_string(err), ADMIN_RESUME_INTERVAL_S);
    evconnlistener_disable(l);
}

/* Splits |listen| into a host and a port number in 0..65535. */
static int parse_listen(const char *listen, char *host, size_t host_len,
                        int *port)
{
    char text[16];
    char *end = NULL;
    long v;

    if (!listen || o2l_listen_split(listen, host, host_len, text,
                                    sizeof(text)) != O2L_OK) {
        return O2L_EINVAL;
    }
    errno = 0;
    v = strtol(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || v < 0 || v > 65535) {
        return O2L_EINVAL;
    }
    *port = (int)v;
    return O2L_OK;
}

struct o2l_admin *o2l_admin_start(struct event_base *base,
                                  const struct o2l_admin_config *cfg,
                                  const struct o2l_log *log, char *err,
                                  size_t err_len)
{
    const struct timeval resume_every = {ADMIN_RESUME_INTERVAL_S, 0};
    struct o2l_admin *a;
    char host[256];
    int port = 0;

    a = o2l_calloc(1, sizeof(*a));
    if (!a) {
        snprintf(err, err_len, "admin.listen: out of memory");
        return NULL;
    }
    a->ready = cfg->ready;
    a->metrics = cfg->metrics;
    a->arg = cfg->arg;
    a->log = log;

    if (parse_listen(cfg->listen, host, sizeof(host), &port) != O2L_OK) {
        snprintf(err, err_len,
                 "admin.listen: bad address %s (expected host:port)",
                 cfg->listen ? cfg->listen : "(none)");
        goto fail;
    }
    a->http = evhttp_new(base);
    if (!a->http) {
        snprintf(err, err_len, "admin.listen: cannot create the HTTP server");
        goto fail;
    }
    evhttp_set_max_body_size(a->http, ADMIN_MAX_BODY_BYTES);
    evhttp_set_max_headers_size(a->http, ADMIN_MAX_HEADER_BYTES);
    evhttp_set_timeout(a->http, ADMIN_IDLE_TIMEOUT_S);
    /* Let every method through so that on_request can answer 405. */
    evhttp_set_allowed_methods(
        a->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                     EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS |
                     EVHTTP_REQ_TRACE | EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
    evhttp_set_gencb(a->http, on_request, a);

    errno = 0;
    a->sock = evhttp_bind_socket_with_handle(a->http, host, (ev_uint16_t)port);
    if (!a->sock) {
        /* errno is 0 when the host did not resolve to a local address. */
        const char *why =
            errno ? strerror(errno) : "not a usable local address";

        snprintf(err, err_len, "admin.listen: cannot listen on %s: %s",
                 cfg->listen, why);
        o2l_log_error(log, "admin", "admin.listen=%s: cannot listen: %s",
                      cfg->listen, why);
        goto fail;
    }
    a->port = o2l_listen_local_port(evhttp_bound_socket_get_fd(a->sock));

    a->resume = event_new(base, -1, EV_PERSIST, on_accept_resume, a);
    if (!a->resume || event_add(a->resume, &resume_every) != 0) {
        snprintf(err, err_len, "admin.listen: out of memory");
        goto fail;
    }
    evconnlistener_set_error_cb(evhttp_bound_socket_get_listener(a->sock),
                                on_accept_error);
    return a;

fail:
    o2l_admin_stop(a);
    return NULL;
}

int o2l_admin_port(const struct o2l_admin *a)
{
    return a->port;
}

void o2l_admin_stop(struct o2l_admin *a)
{
    if (!a) {
        return;
    }
    if (a->resume) {
        event_free(a->resume);
        a->resume = NULL;
    }
    /* Closes the listener and every open connection with it. */
    if (a->http) {
        evhttp_free(a->http);
        a->http = NULL;
    }
    o2l_free(a);
}

void o2l_admin_metric(struct evbuffer *out, const char *name, const char *type,
                      const char *help, uint64_t value)
{
    evbuffer_add_printf(out,
                        "# HELP " METRIC_PREFIX "%s %s\n"
                        "# TYPE " METRIC_PREFIX "%s %s\n" METRIC_PREFIX
                        "%s %" PRIu64 "\n",
                        name, help, name, type, name, value);
}
