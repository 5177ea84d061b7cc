/* SPDX-License-Identifier: Apache-2.0 */
/* http_receiver.c - OTLP/HTTP (or HTTPS) on libevent's evhttp. */
#include "o2l/http_receiver.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>

#include "o2l/common.h"
#include "o2l/gunzip.h"
#include "o2l/listen.h"
#include "o2l/otlp.h"
#include "o2l/pipeline.h"
#include "o2l/tls.h"

/* gRPC/google.rpc status codes used in OTLP/HTTP error bodies. */
enum rpc_code {
    RPC_INVALID_ARGUMENT = 3,
    RPC_NOT_FOUND = 5,
    RPC_RESOURCE_EXHAUSTED = 8,
    RPC_UNIMPLEMENTED = 12,
    RPC_INTERNAL = 13,
    RPC_UNAVAILABLE = 14
};

enum http_status {
    HTTP_STATUS_OK = 200,
    HTTP_STATUS_BAD_REQUEST = 400,
    HTTP_STATUS_NOT_FOUND = 404,
    HTTP_STATUS_METHOD_NOT_ALLOWED = 405,
    HTTP_STATUS_TOO_LARGE = 413,
    HTTP_STATUS_UNSUPPORTED_MEDIA = 415,
    HTTP_STATUS_INTERNAL = 500,
    HTTP_STATUS_UNAVAILABLE = 503
};

#define TRACES_PATH "/v1/traces"
/* Seconds a client is asked to wait when the spool is full. */
#define SPOOL_FULL_RETRY_AFTER "5"

/* How long accepting pauses after accept() fails (out of descriptors). */
#define ACCEPT_PAUSE_MS 1000

/* An accepted request waiting for the spool to have it on disk. */
struct pending {
    struct o2l_http_receiver *r;
    struct pending *prev;
    struct pending *next;
    struct evhttp_request *req;
    struct o2l_spool_ticket *ticket;
    enum o2l_otlp_format fmt;
    size_t n_spans;
    size_t rejected;
    char *message; /* why spans were rejected, or NULL */
    char peer[80];
};

struct o2l_http_receiver {
    struct evhttp *http;
    struct evhttp_bound_socket *sock;
    struct o2l_pipeline *pipeline;
    const struct o2l_log *log;
    size_t max_body_bytes;
    struct o2l_tls *tls; /* NULL: plain HTTP */
    int port;
    uint64_t requests;
    struct pending *pending; /* waiting for the spool */
};

static const char *reason_phrase(int status)
{
    switch (status) {
    case HTTP_STATUS_OK:
        return "OK";
    case HTTP_STATUS_BAD_REQUEST:
        return "Bad Request";
    case HTTP_STATUS_NOT_FOUND:
        return "Not Found";
    case HTTP_STATUS_METHOD_NOT_ALLOWED:
        return "Method Not Allowed";
    case HTTP_STATUS_TOO_LARGE:
        return "Payload Too Large";
    case HTTP_STATUS_UNSUPPORTED_MEDIA:
        return "Unsupported Media Type";
    case HTTP_STATUS_UNAVAILABLE:
        return "Service Unavailable";
    default:
        return "Internal Server Error";
    }
}

static const char *content_type_of(enum o2l_otlp_format fmt)
{
    return fmt == O2L_OTLP_JSON ? "application/json" : "application/x-protobuf";
}

static void send_body(struct evhttp_request *req, int status,
                      enum o2l_otlp_format fmt, const char *body, size_t len)
{
    struct evkeyvalq *out = evhttp_request_get_output_headers(req);
    struct evbuffer *buf = evbuffer_new();

    evhttp_add_header(out, "Content-Type", content_type_of(fmt));
    if (buf && len > 0) {
        evbuffer_add(buf, body, len);
    }
    evhttp_send_reply(req, status, reason_phrase(status), buf);
    if (buf) {
        evbuffer_free(buf);
    }
}

/* Answers with a google.rpc.Status body in the request's format. */
static void send_status(struct evhttp_request *req, int status,
                        enum o2l_otlp_format fmt, enum rpc_code code,
                        const char *message)
{
    char *body = NULL;
    size_t len = 0;

    if (o2l_otlp_encode_status(fmt, code, message, &body, &len) != O2L_OK) {
        body = NULL;
        len = 0;
    }
    send_body(req, status, fmt, body, len);
    o2l_free(body);
}

/* 503 with Retry-After: the client should send the same request later. */
static void send_unavailable(struct evhttp_request *req,
                             enum o2l_otlp_format fmt, const char *message)
{
    evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After",
                      SPOOL_FULL_RETRY_AFTER);
    send_status(req, HTTP_STATUS_UNAVAILABLE, fmt, RPC_UNAVAILABLE, message);
}

static const char *peer_of(struct evhttp_request *req, char *buf, size_t len)
{
    struct evhttp_connection *conn = evhttp_request_get_connection(req);
    const char *addr = NULL;
    ev_uint16_t port = 0;

    if (conn) {
        evhttp_connection_get_peer(conn, (char **)&addr, &port);
    }
    snprintf(buf, len, "%s:%u", addr ? addr : "?", (unsigned)port);
    return buf;
}

/* Matches a media type against |want|, ignoring case and parameters. */
static int media_type_is(const char *value, const char *want)
{
    size_t n = strlen(want);

    while (*value == ' ' || *value == '\t') {
        value++;
    }
    if (strncasecmp(value, want, n) != 0) {
        return 0;
    }
    value += n;
    while (*value == ' ' || *value == '\t') {
        value++;
    }
    return *value == '\0' || *value == ';';
}

static int parse_content_type(const char *ct, enum o2l_otlp_format *fmt)
{
    if (!ct) {
        return O2L_EUNSUPP;
    }
    if (media_type_is(ct, "application/x-protobuf") ||
        media_type_is(ct, "application/protobuf")) {
        *fmt = O2L_OTLP_PROTOBUF;
        return O2L_OK;
    }
    if (media_type_is(ct, "application/json")) {
        *fmt = O2L_OTLP_JSON;
        return O2L_OK;
    }
    return O2L_EUNSUPP;
}

static void pending_unlink(struct pending *pd)
{
    if (pd->prev) {
        pd->prev->next = pd->next;
    } else {
        pd->r->pending = pd->next;
    }
    if (pd->next) {
        pd->next->prev = pd->prev;
    }
}

static void pending_free(struct pending *pd)
{
    o2l_free(pd->message);
    o2l_free(pd);
}

/* The spool has the request on disk (or could not store it). */
static void on_stored(void *arg, int rc)
{
    struct pending *pd = arg;
    struct o2l_http_receiver *r = pd->r;
    char *resp = NULL;
    size_t resp_len = 0;

    pending_unlink(pd);
    if (rc == O2L_OK) {
        rc = o2l_otlp_encode_response(pd->fmt, (int64_t)pd->rejected,
                                      pd->message, &resp, &resp_len);
    } else {
        /* The spool logs the cause once per episode; the refusal is
         * counted in requests_refused_total. */
        o2l_log_debug(r->log, "http",
                      "peer=%s spans=%zu answered 503: cannot store the "
                      "request: %s",
                      pd->peer, pd->n_spans, o2l_strerror(rc));
        send_unavailable(pd->req, pd->fmt,
                         "cannot store the request now, retry later");
        goto out;
    }
    if (rc != O2L_OK) {
        send_unavailable(pd->req, pd->fmt,
                         "temporarily out of memory, retry later");
        goto out;
    }
    o2l_log_debug(r->log, "http", "peer=%s accepted spans=%zu rejected=%zu",
                  pd->peer, pd->n_spans, pd->rejected);
    send_body(pd->req, HTTP_STATUS_OK, pd->fmt, resp, resp_len);
out:
    o2l_free(resp);
    pending_free(pd);
}

/*
 * Hands a decoded request to the spool. Returns O2L_OK when the answer
 * will come from on_stored(), else the error to answer now.
 */
static int store(struct o2l_http_receiver *r, struct evhttp_request *req,
                 const struct o2l_export *ex,
                 const struct o2l_pipeline_request *preq, const char *peer)
{
    struct pending *pd = o2l_calloc(1, sizeof(*pd));
    int rc;

    if (!pd) {
        return O2L_ENOMEM;
    }
    pd->r = r;
    pd->req = req;
    pd->fmt = preq->format;
    pd->n_spans = ex->n_spans;
    pd->rejected = ex->rejected;
    snprintf(pd->peer, sizeof(pd->peer), "%s", peer);
    if (ex->error_message) {
        pd->message = o2l_strdup(ex->error_message);
        if (!pd->message) {
            pending_free(pd);
            return O2L_ENOMEM;
        }
    }
    rc = o2l_pipeline_submit(r->pipeline, preq, on_stored, pd, &pd->ticket);
    if (rc != O2L_OK) {
        pending_free(pd);
        return rc;
    }
    pd->next = r->pending;
    if (r->pending) {
        r->pending->prev = pd;
    }
    r->pending = pd;
    return O2L_OK;
}

static void handle_export(struct o2l_http_receiver *r,
                          struct evhttp_request *req, enum o2l_otlp_format fmt,
                          const unsigned char *body, size_t len,
                          const char *peer)
{
    struct o2l_pipeline_request preq;
    struct o2l_export *ex = NULL;
    char err[256] = "";
    char *resp = NULL;
    size_t resp_len = 0;
    int rc;

    preq.format = fmt;
    preq.body = body;
    preq.len = len;
    preq.received_ns = (int64_t)o2l_now_ns();
    rc = o2l_otlp_decode(body, len, fmt, (uint64_t)preq.received_ns, &ex, err,
                         sizeof(err));
    if (rc == O2L_EPARSE) {
        o2l_log_warn(r->log, "http", "peer=%s rejected bytes=%zu: %s", peer,
                     len, err);
        send_status(req, HTTP_STATUS_BAD_REQUEST, fmt, RPC_INVALID_ARGUMENT,
                    err[0] ? err : "undecodable export");
        goto out;
    }
    if (rc != O2L_OK) {
        goto fail;
    }
    if (ex->rejected > 0) {
        o2l_log_warn(r->log, "http", "peer=%s rejected_spans=%zu: %s", peer,
                     ex->rejected,
                     ex->error_message ? ex->error_message : "bad span");
    }
    if (ex->n_spans > 0) {
        preq.n_spans = ex->n_spans;
        rc = store(r, req, ex, &preq, peer);
        if (rc == O2L_OK) {
            goto out; /* answered once on disk */
        }
        if (rc == O2L_ETOOBIG) {
            o2l_log_warn(r->log, "http",
                         "peer=%s bytes=%zu answered 413: larger than the "
                         "whole spool",
                         peer, len);
            send_status(req, HTTP_STATUS_TOO_LARGE, fmt, RPC_RESOURCE_EXHAUSTED,
                        "request larger than the whole spool "
                        "(spool.max_bytes): send smaller batches");
            goto out;
        }
        if (rc == O2L_EFULL || rc == O2L_ESTOPPED) {
            o2l_log_warn(r->log, "http", "peer=%s spans=%zu answered 503: %s",
                         peer, ex->n_spans,
                         rc == O2L_EFULL ? "spool full" : "stopping");
            send_unavailable(req, fmt,
                             rc == O2L_EFULL ? "spool is full, retry later"
                                             : "shutting down, retry later");
            goto out;
        }
        goto fail;
    }
    /* Nothing to store: answer at once. */
    o2l_log_debug(r->log, "http", "peer=%s accepted spans=0 rejected=%zu", peer,
                  ex->rejected);
    rc = o2l_otlp_encode_response(fmt, (int64_t)ex->rejected, ex->error_message,
                                  &resp, &resp_len);
    if (rc != O2L_OK) {
        goto fail;
    }
    send_body(req, HTTP_STATUS_OK, fmt, resp, resp_len);
    goto out;

fail:
    o2l_log_error(r->log, "http", "peer=%s request failed: %s", peer,
                  o2l_strerror(rc));
    send_unavailable(req, fmt, "temporarily out of resources, retry later");
out:
    o2l_free(resp);
    o2l_export_free(ex);
}

/* True when the request arrived over TLS. */
static bool connection_is_tls(struct evhttp_request *req)
{
    struct evhttp_connection *conn = evhttp_request_get_connection(req);
    struct bufferevent *bev =
        conn ? evhttp_connection_get_bufferevent(conn) : NULL;

    return bev && bufferevent_openssl_get_ssl(bev) != NULL;
}

/*
 * evhttp asks for each accepted connection's bufferevent: a TLS one,
 * given its socket by evhttp afterwards. When this returns NULL evhttp
 * makes a plain one, which on_request then refuses.
 */
static struct bufferevent *make_tls_bufferevent(struct event_base *base,
                                                void *arg)
{
    struct o2l_http_receiver *r = arg;
    SSL *ssl = o2l_tls_ssl_new(r->tls);
    struct bufferevent *bev;

    if (!ssl) {
        o2l_log_error(r->log, "http", "out of memory for a TLS connection");
        return NULL;
    }
    bev = bufferevent_openssl_socket_new(
        base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
    if (!bev) {
        SSL_free(ssl);
        o2l_log_error(r->log, "http", "out of memory for a TLS connection");
        return NULL;
    }
    /* Clients that close without a TLS close_notify are common. */
    bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    return bev;
}

static void on_request(struct evhttp_request *req, void *arg)
{
    struct o2l_http_receiver *r = arg;
    struct evkeyvalq *in = evhttp_request_get_input_headers(req);
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    const char *encoding = evhttp_find_header(in, "Content-Encoding");
    enum o2l_otlp_format fmt = O2L_OTLP_JSON;
    struct evbuffer *body = evhttp_request_get_input_buffer(req);
    unsigned char *inflated = NULL;
    const unsigned char *data;
    size_t len;
    char peer[80];
    char msg[160];

    r->requests++;
    peer_of(req, peer, sizeof(peer));
    if (r->tls && !connection_is_tls(req)) {
        /* Only when creating its TLS state failed: refuse, do not read. */
        o2l_log_error(r->log, "http", "peer=%s refused: no TLS state", peer);
        send_unavailable(req, fmt, "temporarily out of memory, retry later");
        return;
    }
    if (!path || strcmp(path, TRACES_PATH) != 0) {
        send_status(req, HTTP_STATUS_NOT_FOUND, fmt, RPC_NOT_FOUND,
                    "not found: OTLP traces are accepted at " TRACES_PATH);
        return;
    }
    if (evhttp_request_get_command(req) != EVHTTP_REQ_POST) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow",
                          "POST");
        send_status(req, HTTP_STATUS_METHOD_NOT_ALLOWED, fmt, RPC_UNIMPLEMENTED,
                    "method not allowed: use POST");
        return;
    }
    if (parse_content_type(evhttp_find_header(in, "Content-Type"), &fmt) !=
        O2L_OK) {
        const char *ct = evhttp_find_header(in, "Content-Type");

        o2l_log_warn(r->log, "http", "peer=%s unsupported content-type=%.64s",
                     peer, ct ? ct : "(none)");
        send_status(req, HTTP_STATUS_UNSUPPORTED_MEDIA, O2L_OTLP_JSON,
                    RPC_INVALID_ARGUMENT,
                    "unsupported content type: use application/x-protobuf "
                    "or application/json");
        return;
    }

    /* Refuse before decoding: load that must be shed should cost little. */
    if (!o2l_pipeline_accepting(r->pipeline, 0)) {
        o2l_log_debug(r->log, "http", "peer=%s answered 503: spool full", peer);
        send_unavailable(req, fmt, "spool is full, retry later");
        return;
    }

    len = evbuffer_get_length(body);
    data = len ? evbuffer_pullup(body, -1) : (const unsigned char *)"";
    if (len > 0 && !data) {
        send_unavailable(req, fmt, "temporarily out of memory, retry later");
        return;
    }
    if (encoding && strcasecmp(encoding, "gzip") != 0 &&
        strcasecmp(encoding, "identity") != 0 &&
        strcasecmp(encoding, "deflate") != 0) {
        o2l_log_warn(r->log, "http", "peer=%s unsupported encoding=%.32s", peer,
                     encoding);
        send_status(req, HTTP_STATUS_UNSUPPORTED_MEDIA, fmt,
                    RPC_INVALID_ARGUMENT,
                    "unsupported content encoding: use gzip or none");
        return;
    }
    if (encoding && strcasecmp(encoding, "identity") != 0) {
        size_t out_len = 0;
        int rc = o2l_gunzip(data, len, r->max_body_bytes, &inflated, &out_len);

        if (rc == O2L_ETOOBIG) {
            snprintf(msg, sizeof(msg),
                     "body larger than %zu bytes after decompression",
                     r->max_body_bytes);
            o2l_log_warn(r->log, "http", "peer=%s rejected bytes=%zu: %s", peer,
                         len, msg);
            send_status(req, HTTP_STATUS_TOO_LARGE, fmt, RPC_RESOURCE_EXHAUSTED,
                        msg);
            return;
        }
        if (rc == O2L_EPARSE) {
            snprintf(msg, sizeof(msg), "body is not valid %.16s data",
                     encoding);
            o2l_log_warn(r->log, "http", "peer=%s rejected bytes=%zu: %s", peer,
                         len, msg);
            send_status(req, HTTP_STATUS_BAD_REQUEST, fmt, RPC_INVALID_ARGUMENT,
                        msg);
            return;
        }
        if (rc != O2L_OK) {
            send_unavailable(req, fmt,
                             "temporarily out of memory, retry later");
            return;
        }
        data = inflated;
        len = out_len;
    } else if (len > r->max_body_bytes) {
        snprintf(msg, sizeof(msg), "body larger than %zu bytes",
                 r->max_body_bytes);
        send_status(req, HTTP_STATUS_TOO_LARGE, fmt, RPC_RESOURCE_EXHAUSTED,
                    msg);
        return;
    }
    handle_export(r, req, fmt, data, len, peer);
    o2l_free(inflated);
}

static void on_accept_resume(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    evconnlistener_enable(arg);
}

/*
 * accept() failed, most often for want of file descriptors. Retrying at
 * once would spin on the same error, so accepting pauses for a moment
 * while the connections being served go on and free descriptors. The
 * callback's argument belongs to evhttp, so it logs with a local logger,
 * at most once per pause.
 */
static void on_accept_error(struct evconnlistener *l, void *arg)
{
    const struct o2l_log warn_log = {O2L_LOG_WARN, NULL};
    struct timeval pause = {ACCEPT_PAUSE_MS / 1000,
                            (ACCEPT_PAUSE_MS % 1000) * 1000};
    int err = EVUTIL_SOCKET_ERROR();

    (void)arg;
    o2l_log_write(&warn_log, O2L_LOG_WARN, "http",
                  "accept failed: %s; pausing new connections for %dms",
                  evutil_socket_error_to_string(err), ACCEPT_PAUSE_MS);
    evconnlistener_disable(l);
    if (event_base_once(evconnlistener_get_base(l), -1, EV_TIMEOUT,
                        on_accept_resume, l, &pause) != 0) {
        evconnlistener_enable(l);
    }
}

static int split_listen(const char *listen, char *host, size_t host_len,
                        int *port)
{
    char text[16];
    char *end = NULL;
    long v;

    if (o2l_listen_split(listen, host, host_len, text, sizeof(text)) !=
        O2L_OK) {
        return O2L_EINVAL;
    }
    v = strtol(text, &end, 10);
    *port = (int)v;
    return *end == '\0' && v >= 0 && v <= 65535 ? O2L_OK : O2L_EINVAL;
}

struct o2l_http_receiver *
o2l_http_receiver_start(struct event_base *base,
                        const struct o2l_http_receiver_config *cfg,
                        struct o2l_pipeline *pipeline,
                        const struct o2l_log *log, char *err, size_t err_len)
{
    struct o2l_http_receiver *r;
    char host[256];
    int port = 0;

    r = o2l_calloc(1, sizeof(*r));
    if (!r) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    r->pipeline = pipeline;
    r->log = log;
    r->max_body_bytes = cfg->max_body_bytes;
    r->tls = cfg->tls;
    if (split_listen(cfg->listen, host, sizeof(host), &port) != O2L_OK) {
        snprintf(err, err_len, "bad listen address %s", cfg->listen);
        goto fail;
    }
    r->http = evhttp_new(base);
    if (!r->http) {
        snprintf(err, err_len, "cannot create the HTTP server");
        goto fail;
    }
    /*
     * Bodies up to twice the limit are read and answered with a 413 and a
     * message (a client still writing when an early answer comes gets a
     * broken pipe instead); beyond that libevent refuses them unread. The
     * exact check comes after decompression.
     */
    evhttp_set_max_body_size(r->http, (ev_ssize_t)cfg->max_body_bytes * 2);
    evhttp_set_max_headers_size(r->http, 64 * 1024);
    evhttp_set_timeout(r->http,
                       (int)(cfg->idle_timeout_s ? cfg->idle_timeout_s : 60));
    evhttp_set_allowed_methods(
        r->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_PUT |
                     EVHTTP_REQ_DELETE | EVHTTP_REQ_HEAD | EVHTTP_REQ_OPTIONS |
                     EVHTTP_REQ_PATCH);
    evhttp_set_gencb(r->http, on_request, r);
    if (r->tls) {
        evhttp_set_bevcb(r->http, make_tls_bufferevent, r);
    }
    errno = 0;
    r->sock = evhttp_bind_socket_with_handle(r->http, host, (ev_uint16_t)port);
    if (!r->sock) {
        snprintf(err, err_len, "cannot listen on %s: %s", cfg->listen,
                 errno ? strerror(errno) : "not a usable local address");
        goto fail;
    }
    r->port = o2l_listen_local_port(evhttp_bound_socket_get_fd(r->sock));
    evconnlistener_set_error_cb(evhttp_bound_socket_get_listener(r->sock),
                                on_accept_error);
    return r;

fail:
    o2l_http_receiver_free(r);
    return NULL;
}

int o2l_http_receiver_port(const struct o2l_http_receiver *r)
{
    return r->port;
}

void o2l_http_receiver_close_listener(struct o2l_http_receiver *r)
{
    if (r && r->sock) {
        evhttp_del_accept_socket(r->http, r->sock);
        r->sock = NULL;
    }
}

void o2l_http_receiver_free(struct o2l_http_receiver *r)
{
    if (!r) {
        return;
    }
    /* Requests still waiting lose their answer; the client retries. */
    while (r->pending) {
        struct pending *pd = r->pending;

        r->pending = pd->next;
        o2l_spool_ticket_cancel(pd->ticket);
        pending_free(pd);
    }
    if (r->http) {
        evhttp_free(r->http);
    }
    o2l_free(r);
}
