/* SPDX-License-Identifier: Apache-2.0 */
/*
 * grpc_receiver.c - OTLP/gRPC on nghttp2's server session over libevent
 * bufferevents: h2c with prior knowledge, or TLS (OpenSSL bufferevents)
 * with ALPN h2, where a client without ALPN goes on with prior knowledge.
 * Each request is a unary call: its one length-prefixed message is
 * collected as DATA arrives, then decoded and handed to the pipeline when
 * the client ends the stream.
 * TODO: grpc-timeout is not read: every call is answered at once.
 */
#include "o2l/grpc_receiver.h"

#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/listener.h>
#include <event2/util.h>
#include <nghttp2/nghttp2.h>
#include <openssl/err.h>

#include "o2l/common.h"
#include "o2l/grpc_frame.h"
#include "o2l/gunzip.h"
#include "o2l/listen.h"
#include "o2l/otlp.h"
#include "o2l/tls.h"

/* gRPC status codes this server answers with. */
enum grpc_status {
    GRPC_STATUS_OK = 0,
    GRPC_STATUS_INVALID_ARGUMENT = 3,
    GRPC_STATUS_NOT_FOUND = 5,
    GRPC_STATUS_RESOURCE_EXHAUSTED = 8,
    GRPC_STATUS_UNIMPLEMENTED = 12,
    GRPC_STATUS_UNAVAILABLE = 14
};

/* HTTP statuses of gRPC answers: 200 unless the request is not gRPC. */
enum http_status {
    HTTP_STATUS_OK = 200,
    HTTP_STATUS_METHOD_NOT_ALLOWED = 405,
    HTTP_STATUS_UNSUPPORTED_MEDIA = 415
};

/* grpc.health.v1.HealthCheckResponse: field 1, status = SERVING (1). */
enum health_wire {
    HEALTH_STATUS_TAG = 0x08, /* field 1, varint */
    HEALTH_SERVING = 1
};

/* Protobuf wire types read by the health request parser. */
enum wire_type {
    WIRE_VARINT = 0,
    WIRE_FIXED64 = 1,
    WIRE_LEN = 2,
    WIRE_FIXED32 = 5
};

enum route {
    ROUTE_UNKNOWN = 0,
    ROUTE_EXPORT,
    ROUTE_HEALTH
};

enum encoding {
    ENCODING_IDENTITY = 0, /* absent or "identity" */
    ENCODING_GZIP,
    ENCODING_UNKNOWN
};

#define TRACE_SERVICE     "opentelemetry.proto.collector.trace.v1.TraceService"
#define EXPORT_PATH       "/" TRACE_SERVICE "/Export"
#define HEALTH_CHECK_PATH "/grpc.health.v1.Health/Check"
#define ACCEPT_ENCODING   "gzip,identity"

/* Connection settings sent to every client. */
#define MAX_CONCURRENT_STREAMS 100
#define STREAM_WINDOW_BYTES    (1u << 20)
#define CONN_WINDOW_BYTES      (16u << 20)
#define MAX_HEADER_LIST_BYTES  (64u << 10)

#define DEFAULT_IDLE_TIMEOUT_S 300
/* Frames wait in nghttp2 while this much output is still unsent. */
#define OUTPUT_HIGH_WATER_BYTES (1u << 20)
/*
 * All streams of one connection hold at most this many full messages.
 * TODO: no bound across connections and no cap on their number, so many
 * clients sending large messages at once can still use a lot of memory.
 */
#define CONN_BUFFER_MESSAGES 8
/* Seconds a client is asked to wait when the spool is full. */
#define RETRY_DELAY_S 5
/* How long accepting pauses after accept() fails (out of descriptors). */
#define ACCEPT_PAUSE_MS 1000
/* Characters of a request path kept for log lines and answers. */
#define PATH_KEEP 96

struct conn;

struct stream {
    struct conn *conn;
    struct stream *prev;
    struct stream *next;
    int32_t id;
    bool post;
    bool grpc_content_type;
    enum route route;
    enum encoding encoding;
    char path[PATH_KEEP + 1];
    char encoding_name[33];
    bool answered;   /* a response is submitted; later DATA is dropped */
    bool compressed; /* the message came gzip-compressed */
    struct o2l_grpc_frame_reader reader;
    unsigned char *resp; /* framed response message */
    size_t resp_len;
    size_t resp_off;
    struct o2l_spool_ticket *ticket; /* waiting for the spool */
    size_t n_spans;                  /* of the stored export */
    size_t rejected;                 /* spans refused in it */
    char *rejected_message;
};

struct conn {
    struct o2l_grpc_receiver *r;
    struct conn *prev;
    struct conn *next;
    uint64_t id;
    char peer[64];
    struct bufferevent *bev;
    nghttp2_session *session;
    struct stream *streams;
    size_t buffered; /* message bytes held by all its streams */
    bool closing;    /* GOAWAY sent after a timeout; close once flushed */
};

struct o2l_grpc_receiver {
    struct event_base *base;
    struct evconnlistener *listener;
    struct o2l_pipeline *pipeline;
    const struct o2l_log *log;
    nghttp2_session_callbacks *callbacks;
    struct o2l_tls *tls; /* NULL: h2c */
    size_t max_message_bytes;
    uint32_t idle_timeout_s;
    int port;
    uint64_t next_conn_id;
    struct conn *conns;
    size_t n_conns;
    bool shutting_down;
    struct event *grace_timer;
    void (*done)(void *arg);
    void *done_arg;
};

static const char *status_name(enum grpc_status code)
{
    switch (code) {
    case GRPC_STATUS_OK:
        return "OK";
    case GRPC_STATUS_INVALID_ARGUMENT:
        return "INVALID_ARGUMENT";
    case GRPC_STATUS_NOT_FOUND:
        return "NOT_FOUND";
    case GRPC_STATUS_RESOURCE_EXHAUSTED:
        return "RESOURCE_EXHAUSTED";
    case GRPC_STATUS_UNIMPLEMENTED:
        return "UNIMPLEMENTED";
    case GRPC_STATUS_UNAVAILABLE:
        return "UNAVAILABLE";
    }
    return "UNKNOWN";
}

static nghttp2_nv make_nv(const char *name, const char *value)
{
    nghttp2_nv nv;

    nv.name = (uint8_t *)name;
    nv.value = (uint8_t *)value;
    nv.namelen = strlen(name);
    nv.valuelen = strlen(value);
    nv.flags = NGHTTP2_NV_FLAG_NONE;
    return nv;
}

static bool bytes_are(const uint8_t *s, size_t len, const char *lit)
{
    return len == strlen(lit) && memcmp(s, lit, len) == 0;
}

static bool bytes_are_nocase(const uint8_t *s, size_t len, const char *lit)
{
    return len == strlen(lit) && strncasecmp((const char *)s, lit, len) == 0;
}

/*
 * application/grpc or application/grpc+proto, parameters allowed. Other
 * subtypes (grpc+json) name a message format this server cannot read.
 */
static bool is_grpc_content_type(const uint8_t *v, size_t len)
{
    static const char *const accepted[] = {"application/grpc+proto",
                                           "application/grpc"};

    for (size_t i = 0; i < O2L_ARRAY_LEN(accepted); i++) {
        size_t n = strlen(accepted[i]);

        if (len >= n && strncasecmp((const char *)v, accepted[i], n) == 0 &&
            (len == n || v[n] == ';')) {
            return true;
        }
    }
    return false;
}

/* ---- streams ---- */

static void stream_drop_buffer(struct stream *s)
{
    size_t held = o2l_grpc_frame_reader_buffered(&s->reader);

    s->conn->buffered -= held < s->conn->buffered ? held : s->conn->buffered;
    o2l_grpc_frame_reader_clear(&s->reader);
}

static void stream_free(struct stream *s)
{
    struct conn *c = s->conn;

    stream_drop_buffer(s);
    if (s->ticket) {
        /* The client went away first; the request is stored anyway. */
        o2l_spool_ticket_cancel(s->ticket);
    }
    if (s->prev) {
        s->prev->next = s->next;
    } else {
        c->streams = s->next;
    }
    if (s->next) {
        s->next->prev = s->prev;
    }
    o2l_free(s->resp);
    o2l_free(s->rejected_message);
    o2l_free(s);
}

/*
 * Answers with headers only (a trailers-only response): the gRPC status
 * and message, and for UNAVAILABLE the retry hint clients honour. Logs
 * the answer once at |level|.
 */
static void respond_status(struct stream *s, enum o2l_log_level level,
                           int http_status, enum grpc_status code,
                           const char *message)
{
    struct conn *c = s->conn;
    char status_buf[8], code_buf[8];
    char *msg = NULL, *details = NULL;
    nghttp2_nv nva[6];
    size_t n = 0;
    int rv;

    O2L_LOG_AT(c->r->log, level, "grpc",
               "conn=%" PRIu64 " stream=%" PRId32 " peer=%s answered %s: %s",
               c->id, s->id, c->peer, status_name(code), message);
    s->answered = true;
    stream_drop_buffer(s);

    snprintf(status_buf, sizeof(status_buf), "%d", http_status);
    snprintf(code_buf, sizeof(code_buf), "%d", (int)code);
    msg = o2l_grpc_frame_percent_encode(message);
    if (code == GRPC_STATUS_UNAVAILABLE &&
        o2l_grpc_frame_status_details((int)code, message, RETRY_DELAY_S,
                                      &details) != O2L_OK) {
        details = NULL;
    }
    nva[n++] = make_nv(":status", status_buf);
    nva[n++] = make_nv("content-type", "application/grpc");
    nva[n++] = make_nv("grpc-accept-encoding", ACCEPT_ENCODING);
    nva[n++] = make_nv("grpc-status", code_buf);
    if (msg) {
        nva[n++] = make_nv("grpc-message", msg);
    }
    if (details) {
        nva[n++] = make_nv("grpc-status-details-bin", details);
    }
    /* nghttp2 copies the header block; the strings may go now. */
    rv = nghttp2_submit_response(c->session, s->id, nva, n, NULL);
    if (rv != 0) {
        nghttp2_submit_rst_stream(c->session, NGHTTP2_FLAG_NONE, s->id,
                                  NGHTTP2_INTERNAL_ERROR);
    }
    o2l_free(msg);
    o2l_free(details);
}

/* Hands the framed response to nghttp2 and asks for grpc-status 0 after. */
static ssize_t read_response(nghttp2_session *session, int32_t stream_id,
                             uint8_t *buf, size_t length, uint32_t *data_flags,
                             nghttp2_data_source *source, void *user_data)
{
    struct stream *s = source->ptr;
    size_t left = s->resp_len - s->resp_off;
    size_t n = left < length ? left : length;
    nghttp2_nv trailers[1];

    (void)user_data;
    memcpy(buf, s->resp + s->resp_off, n);
    s->resp_off += n;
    if (s->resp_off == s->resp_len) {
        /* The stream ends with the trailers, not with this DATA. */
        *data_flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
        trailers[0] = make_nv("grpc-status", "0");
        if (nghttp2_submit_trailer(session, stream_id, trailers, 1) != 0) {
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        }
    }
    return (ssize_t)n;
}

/*
 * Answers OK with one message; the stream owns nothing else by then.
 * TODO: answers are never compressed, even when the client asked for
 * gzip; they are a few bytes, so this costs nothing in practice.
 */
static void respond_message(struct stream *s, const void *msg, size_t len)
{
    struct conn *c = s->conn;
    nghttp2_data_provider body;
    nghttp2_nv nva[3];
    int rv;

    s->answered = true;
    stream_drop_buffer(s);
    if (o2l_grpc_frame_encode(msg, len, &s->resp, &s->resp_len) != O2L_OK) {
        respond_status(s, O2L_LOG_ERROR, HTTP_STATUS_OK,
                       GRPC_STATUS_UNAVAILABLE,
                       "temporarily out of memory, retry later");
        return;
    }
    nva[0] = make_nv(":status", "200");
    nva[1] = make_nv("content-type", "application/grpc");
    nva[2] = make_nv("grpc-accept-encoding", ACCEPT_ENCODING);
    body.source.ptr = s;
    body.read_callback = read_response;
    rv = nghttp2_submit_response(c->session, s->id, nva, O2L_ARRAY_LEN(nva),
                                 &body);
    if (rv != 0) {
        nghttp2_submit_rst_stream(c->session, NGHTTP2_FLAG_NONE, s->id,
                                  NGHTTP2_INTERNAL_ERROR);
    }
}

/* ---- the calls ---- */

static bool conn_flush(struct conn *c);

/* The spool has the export on disk (or could not store it). */
static void on_stored(void *arg, int rc)
{
    struct stream *s = arg;
    struct conn *c = s->conn;
    char *resp = NULL;
    size_t resp_len = 0;

    s->ticket = NULL;
    if (rc != O2L_OK) {
        /* The spool logs the cause once per episode; the refusal is
         * counted in requests_refused_total. */
        o2l_log_debug(c->r->log, "grpc",
                      "conn=%" PRIu64 " stream=%" PRId32
                      " cannot store the request: %s",
                      c->id, s->id, o2l_strerror(rc));
        respond_status(s, O2L_LOG_DEBUG, HTTP_STATUS_OK,
                       GRPC_STATUS_UNAVAILABLE,
                       "cannot store the request now, retry later");
    } else if (o2l_otlp_encode_response(O2L_OTLP_PROTOBUF, (int64_t)s->rejected,
                                        s->rejected_message, &resp,
                                        &resp_len) != O2L_OK) {
        respond_status(s, O2L_LOG_ERROR, HTTP_STATUS_OK,
                       GRPC_STATUS_UNAVAILABLE,
                       "temporarily out of memory, retry later");
    } else {
        o2l_log_debug(c->r->log, "grpc",
                      "conn=%" PRIu64 " stream=%" PRId32
                      " accepted spans=%zu rejected=%zu compressed=%s",
                      c->id, s->id, s->n_spans, s->rejected,
                      s->compressed ? "yes" : "no");
        respond_message(s, resp, resp_len);
    }
    o2l_free(resp);
    /* Outside nghttp2's callbacks: write the answer now. */
    conn_flush(c);
}

/* Hands a decoded export to the spool; the answer comes from on_stored. */
static int store(struct stream *s, const struct o2l_export *ex,
                 const struct o2l_pipeline_request *preq)
{
    s->n_spans = ex->n_spans;
    s->rejected = ex->rejected;
    if (ex->error_message) {
        s->rejected_message = o2l_strdup(ex->error_message);
        if (!s->rejected_message) {
            return O2L_ENOMEM;
        }
    }
    return o2l_pipeline_submit(s->conn->r->pipeline, preq, on_stored, s,
                               &s->ticket);
}

static void handle_export(struct stream *s, const unsigned char *msg,
                          size_t len)
{
    struct conn *c = s->conn;
    struct o2l_pipeline_request preq;
    struct o2l_export *ex = NULL;
    char err[256] = "";
    char *resp = NULL;
    size_t resp_len = 0;
    int rc;

    preq.format = O2L_OTLP_PROTOBUF;
    preq.body = msg;
    preq.len = len;
    preq.received_ns = (int64_t)o2l_now_ns();
    rc = o2l_otlp_decode(msg, len, O2L_OTLP_PROTOBUF,
                         (uint64_t)preq.received_ns, &ex, err, sizeof(err));
    if (rc == O2L_EPARSE) {
        respond_status(s, O2L_LOG_WARN, HTTP_STATUS_OK,
                       GRPC_STATUS_INVALID_ARGUMENT,
                       err[0] ? err : "undecodable export");
        goto out;
    }
    if (rc != O2L_OK) {
        goto fail;
    }
    if (ex->rejected > 0) {
        o2l_log_warn(c->r->log, "grpc",
                     "conn=%" PRIu64 " stream=%" PRId32
                     " peer=%s rejected_spans=%zu: %s",
                     c->id, s->id, c->peer, ex->rejected,
                     ex->error_message ? ex->error_message : "bad span");
    }
    if (ex->n_spans > 0) {
        preq.n_spans = ex->n_spans;
        rc = store(s, ex, &preq);
        if (rc == O2L_OK) {
            s->answered = true; /* the answer is on its way */
            goto out;
        }
        if (rc == O2L_ETOOBIG) {
            respond_status(s, O2L_LOG_WARN, HTTP_STATUS_OK,
                           GRPC_STATUS_RESOURCE_EXHAUSTED,
                           "request larger than the whole spool "
                           "(spool.max_bytes): send smaller batches");
            goto out;
        }
        if (rc == O2L_EFULL || rc == O2L_ESTOPPED) {
            respond_status(s, O2L_LOG_WARN, HTTP_STATUS_OK,
                           GRPC_STATUS_UNAVAILABLE,
                           rc == O2L_EFULL ? "spool is full, retry later"
                                           : "shutting down, retry later");
            goto out;
        }
        goto fail;
    }
    rc = o2l_otlp_encode_response(O2L_OTLP_PROTOBUF, (int64_t)ex->rejected,
                                  ex->error_message, &resp, &resp_len);
    if (rc != O2L_OK) {
        goto fail;
    }
    o2l_log_debug(c->r->log, "grpc",
                  "conn=%" PRIu64 " stream=%" PRId32
                  " accepted spans=0 rejected=%zu",
                  c->id, s->id, ex->rejected);
    respond_message(s, resp, resp_len);
    goto out;

fail:
    respond_status(s, O2L_LOG_ERROR, HTTP_STATUS_OK, GRPC_STATUS_UNAVAILABLE,
                   "temporarily out of resources, retry later");
out:
    o2l_free(resp);
    o2l_export_free(ex);
}

static bool read_varint(const unsigned char **p, const unsigned char *end,
                        uint64_t *v)
{
    *v = 0;
    for (unsigned shift = 0; shift < 64 && *p < end; shift += 7) {
        unsigned char b = *(*p)++;

        *v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            return true;
        }
    }
    return false;
}

/*
 * Finds the service name (field 1) of a grpc.health.v1.HealthCheckRequest.
 * Returns false for a malformed message.
 */
static bool health_service(const unsigned char *p, size_t len,
                           const unsigned char **name, size_t *name_len)
{
    const unsigned char *end = p + len;

    *name = p;
    *name_len = 0;
    while (p < end) {
        uint64_t key, n;

        if (!read_varint(&p, end, &key)) {
            return false;
        }
        switch (key & 7) {
        case WIRE_VARINT:
            if (!read_varint(&p, end, &n)) {
                return false;
            }
            break;
        case WIRE_FIXED64:
        case WIRE_FIXED32:
            n = (key & 7) == WIRE_FIXED64 ? 8 : 4;
            if ((uint64_t)(end - p) < n) {
                return false;
            }
            p += n;
            break;
        case WIRE_LEN:
            if (!read_varint(&p, end, &n) || (uint64_t)(end - p) < n) {
                return false;
            }
            if ((key >> 3) == 1) {
                *name = p;
                *name_len = (size_t)n;
            }
            p += n;
            break;
        default:
            return false;
        }
    }
    return true;
}

/* The server as a whole ("") and the trace service are SERVING. */
static void handle_health(struct stream *s, const unsigned char *msg,
                          size_t len)
{
    static const unsigned char serving[] = {HEALTH_STATUS_TAG, HEALTH_SERVING};
    const unsigned char *name;
    size_t name_len;

    if (!health_service(msg, len, &name, &name_len)) {
        respond_status(s, O2L_LOG_WARN, HTTP_STATUS_OK,
                       GRPC_STATUS_INVALID_ARGUMENT,
                       "undecodable health check request");
        return;
    }
    if (name_len != 0 && !bytes_are(name, name_len, TRACE_SERVICE)) {
        respond_status(s, O2L_LOG_DEBUG, HTTP_STATUS_OK, GRPC_STATUS_NOT_FOUND,
                       "unknown service");
        return;
    }
    respond_message(s, serving, sizeof(serving));
}

/* Checks made on the request headers, before any message is read. */
static void on_request_headers(struct stream *s)
{
    char msg[192];

    if (!s->post) {
        respond_status(s, O2L_LOG_WARN, HTTP_STATUS_METHOD_NOT_ALLOWED,
                       GRPC_STATUS_UNIMPLEMENTED,
                       "method not allowed: gRPC calls use POST");
        return;
    }
    if (!s->grpc_content_type) {
        respond_status(s, O2L_LOG_WARN, HTTP_STATUS_UNSUPPORTED_MEDIA,
                       GRPC_STATUS_INVALID_ARGUMENT,
                       "unsupported content type: use application/grpc");
        return;
    }
    if (s->route == ROUTE_UNKNOWN) {
        snprintf(msg, sizeof(msg), "unknown method %s", s->path);
        respond_status(s, O2L_LOG_WARN, HTTP_STATUS_OK,
                       GRPC_STATUS_UNIMPLEMENTED, msg);
        return;
    }
    if (s->encoding == ENCODING_UNKNOWN) {
        snprintf(msg, sizeof(msg),
                 "grpc-encoding %s is not supported: use " ACCEPT_ENCODING,
                 s->encoding_name);
        respond_status(s, O2L_LOG_WARN, HTTP_STATUS_OK,
                       GRPC_STATUS_UNIMPLEMENTED, msg);
        return;
    }
    /* Refuse before reading: load that must be shed should cost little. */
    if (s->route == ROUTE_EXPORT &&
        !o2l_pipeline_accepting(s->conn->r->pipeline, 0)) {
        respond_status(s, O2L_LOG_DEBUG, HTTP_STATUS_OK,
                       GRPC_STATUS_UNAVAILABLE, "spool is full, retry later");
    }
}

static void answer_too_big(struct stream *s, const char *what)
{
    char msg[160];

    snprintf(msg, sizeof(msg), "message larger than %zu bytes%s",
             s->conn->r->max_message_bytes, what);
    respond_status(s, O2L_LOG_WARN, HTTP_STATUS_OK,
                   GRPC_STATUS_RESOURCE_EXHAUSTED, msg);
}

/* The client ended its side: the message is complete or never will be. */
static void on_request_end(struct stream *s)
{
    const unsigned char *msg = NULL;
    unsigned char *inflated = NULL;
    size_t len = 0;
    bool compressed = false;
    int rc;

    if (s->answered) {
        return;
    }
    if (o2l_grpc_frame_reader_finish(&s->reader, &msg, &len, &compressed) !=
        O2L_OK) {
        respond_status(s, O2L_LOG_WARN, HTTP_STATUS_OK,
                       GRPC_STATUS_INVALID_ARGUMENT,
                       "the request ended before its length-prefixed message "
                       "did, or held none");
        return;
    }
    if (compressed && s->encoding != ENCODING_GZIP) {
        respond_status(s, O2L_LOG_WARN, HTTP_STATUS_OK,
                       GRPC_STATUS_INVALID_ARGUMENT,
                       "compressed message without grpc-encoding");
        return;
    }
    if (compressed) {
        rc = o2l_gunzip(msg, len, s->conn->r->max_message_bytes, &inflated,
                        &len);
        if (rc == O2L_ETOOBIG) {
            answer_too_big(s, " after decompression");
            return;
        }
        if (rc == O2L_EPARSE) {
            respond_status(s, O2L_LOG_WARN, HTTP_STATUS_OK,
                           GRPC_STATUS_INVALID_ARGUMENT,
                           "message is not valid gzip data");
            return;
        }
        if (rc != O2L_OK) {
            respond_status(s, O2L_LOG_ERROR, HTTP_STATUS_OK,
                           GRPC_STATUS_UNAVAILABLE,
                           "temporarily out of memory, retry later");
            return;
        }
        msg = inflated;
        s->compressed = true;
    }
    if (s->route == ROUTE_HEALTH) {
        handle_health(s, msg, len);
    } else {
        handle_export(s, msg, len);
    }
    o2l_free(inflated);
}

/* ---- nghttp2 callbacks ---- */

static ssize_t on_send(nghttp2_session *session, const uint8_t *data,
                       size_t length, int flags, void *user_data)
{
    struct conn *c = user_data;
    struct evbuffer *out = bufferevent_get_output(c->bev);

    (void)session;
    (void)flags;
    /* A client that does not read gets no more frames queued in memory. */
    if (evbuffer_get_length(out) >= OUTPUT_HIGH_WATER_BYTES) {
        return NGHTTP2_ERR_WOULDBLOCK;
    }
    if (evbuffer_add(out, data, length) != 0) {
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    return (ssize_t)length;
}

static int on_begin_headers(nghttp2_session *session,
                            const nghttp2_frame *frame, void *user_data)
{
    struct conn *c = user_data;
    struct stream *s;

    if (frame->hd.type != NGHTTP2_HEADERS ||
        frame->headers.cat != NGHTTP2_HCAT_REQUEST) {
        return 0;
    }
    s = o2l_calloc(1, sizeof(*s));
    if (!s) {
        /* nghttp2 resets this stream; the others go on. */
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    s->conn = c;
    s->id = frame->hd.stream_id;
    o2l_grpc_frame_reader_init(&s->reader, c->r->max_message_bytes);
    s->next = c->streams;
    if (c->streams) {
        c->streams->prev = s;
    }
    c->streams = s;
    nghttp2_session_set_stream_user_data(session, s->id, s);
    return 0;
}

static void copy_printable(char *dst, size_t cap, const uint8_t *src,
                           size_t len)
{
    size_t n = len < cap - 1 ? len : cap - 1;

    for (size_t i = 0; i < n; i++) {
        dst[i] = src[i] >= 0x20 && src[i] < 0x7f ? (char)src[i] : '?';
    }
    dst[n] = '\0';
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame,
                     const uint8_t *name, size_t namelen, const uint8_t *value,
                     size_t valuelen, uint8_t flags, void *user_data)
{
    struct stream *s;

    (void)flags;
    (void)user_data;
    if (frame->hd.type != NGHTTP2_HEADERS ||
        frame->headers.cat != NGHTTP2_HCAT_REQUEST) {
        return 0;
    }
    s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    if (!s) {
        return 0;
    }
    if (bytes_are(name, namelen, ":method")) {
        s->post = bytes_are(value, valuelen, "POST");
    } else if (bytes_are(name, namelen, ":path")) {
        copy_printable(s->path, sizeof(s->path), value, valuelen);
        if (bytes_are(value, valuelen, EXPORT_PATH)) {
            s->route = ROUTE_EXPORT;
        } else if (bytes_are(value, valuelen, HEALTH_CHECK_PATH)) {
            s->route = ROUTE_HEALTH;
        } else {
            s->route = ROUTE_UNKNOWN;
        }
    } else if (bytes_are(name, namelen, "content-type")) {
        s->grpc_content_type = is_grpc_content_type(value, valuelen);
    } else if (bytes_are(name, namelen, "grpc-encoding")) {
        copy_printable(s->encoding_name, sizeof(s->encoding_name), value,
                       valuelen);
        if (bytes_are_nocase(value, valuelen, "gzip")) {
            s->encoding = ENCODING_GZIP;
        } else if (bytes_are_nocase(value, valuelen, "identity")) {
            s->encoding = ENCODING_IDENTITY;
        } else {
            s->encoding = ENCODING_UNKNOWN;
        }
    }
    return 0;
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame,
                         void *user_data)
{
    struct stream *s;

    (void)user_data;
    if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA) {
        return 0;
    }
    s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    if (!s) {
        return 0;
    }
    if (frame->hd.type == NGHTTP2_HEADERS &&
        frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
        on_request_headers(s);
    }
    if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) {
        on_request_end(s);
    }
    return 0;
}

static int on_data_chunk_recv(nghttp2_session *session, uint8_t flags,
                              int32_t stream_id, const uint8_t *data,
                              size_t len, void *user_data)
{
    struct conn *c = user_data;
    struct stream *s;
    size_t before, after;
    int rc;

    (void)flags;
    s = nghttp2_session_get_stream_user_data(session, stream_id);
    if (!s || s->answered) {
        return 0;
    }
    /*
     * Each stream is bounded by its reader; all of them together by a few
     * messages' worth, so one connection cannot hold 100 full streams.
     */
    if (c->buffered + len >
        CONN_BUFFER_MESSAGES *
            (c->r->max_message_bytes + O2L_GRPC_FRAME_PREFIX_LEN)) {
        /*
         * Transient, unlike a message over the limit: UNAVAILABLE carries
         * a retry hint, and OTLP clients must not retry RESOURCE_EXHAUSTED
         * without one, so they would drop the data.
         */
        respond_status(s, O2L_LOG_WARN, HTTP_STATUS_OK, GRPC_STATUS_UNAVAILABLE,
                       "too many large messages in flight on this connection, "
                       "retry later");
        return 0;
    }
    before = o2l_grpc_frame_reader_buffered(&s->reader);
    rc = o2l_grpc_frame_reader_feed(&s->reader, data, len);
    after = o2l_grpc_frame_reader_buffered(&s->reader);
    c->buffered += after - before;
    if (rc == O2L_ETOOBIG) {
        answer_too_big(s, "");
    } else if (rc == O2L_EPARSE) {
        respond_status(s, O2L_LOG_WARN, HTTP_STATUS_OK,
                       GRPC_STATUS_INVALID_ARGUMENT,
                       "bad message framing: one length-prefixed message "
                       "with flag 0 or 1 expected");
    } else if (rc != O2L_OK) {
        respond_status(s, O2L_LOG_ERROR, HTTP_STATUS_OK,
                       GRPC_STATUS_UNAVAILABLE,
                       "temporarily out of memory, retry later");
    }
    return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t stream_id,
                           uint32_t error_code, void *user_data)
{
    struct stream *s = nghttp2_session_get_stream_user_data(session, stream_id);

    (void)error_code;
    (void)user_data;
    if (s) {
        nghttp2_session_set_stream_user_data(session, stream_id, NULL);
        stream_free(s);
    }
    return 0;
}

/* ---- connections ---- */

static void finish_shutdown(struct o2l_grpc_receiver *r)
{
    void (*done)(void *arg) = r->done;

    if (r->grace_timer) {
        event_free(r->grace_timer);
        r->grace_timer = NULL;
    }
    r->done = NULL;
    if (done) {
        done(r->done_arg);
    }
}

static void conn_free(struct conn *c)
{
    struct o2l_grpc_receiver *r = c->r;

    /* nghttp2_session_del does not report the streams it drops. */
    while (c->streams) {
        stream_free(c->streams);
    }
    nghttp2_session_del(c->session);
    if (c->bev) {
        bufferevent_free(c->bev);
    }
    if (c->prev) {
        c->prev->next = c->next;
    } else {
        r->conns = c->next;
    }
    if (c->next) {
        c->next->prev = c->prev;
    }
    r->n_conns--;
    o2l_log_debug(r->log, "grpc", "conn=%" PRIu64 " closed", c->id);
    o2l_free(c);
    if (r->shutting_down && r->n_conns == 0) {
        finish_shutdown(r);
    }
}

/*
 * Writes what nghttp2 has to send, then closes the connection when
 * neither side has anything left to say. Returns false when |c| is gone.
 */
static bool conn_flush(struct conn *c)
{
    int rv = nghttp2_session_send(c->session);

    if (rv != 0) {
        o2l_log_warn(c->r->log, "grpc", "conn=%" PRIu64 " peer=%s send: %s",
                     c->id, c->peer, nghttp2_strerror(rv));
        conn_free(c);
        return false;
    }
    if (!nghttp2_session_want_read(c->session) &&
        !nghttp2_session_want_write(c->session) &&
        evbuffer_get_length(bufferevent_get_output(c->bev)) == 0) {
        conn_free(c);
        return false;
    }
    return true;
}

static void on_conn_read(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);

    for (;;) {
        size_t len = evbuffer_get_contiguous_space(in);
        unsigned char *data;
        ssize_t n;

        if (len == 0) {
            break;
        }
        data = evbuffer_pullup(in, (ev_ssize_t)len);
        n = nghttp2_session_mem_recv(c->session, data, len);
        if (n < 0) {
            /* A connection-level error: this connection only ends. */
            o2l_log_warn(c->r->log, "grpc",
                         "conn=%" PRIu64 " peer=%s closed: %s", c->id, c->peer,
                         nghttp2_strerror((int)n));
            conn_free(c);
            return;
        }
        evbuffer_drain(in, (size_t)n);
    }
    conn_flush(c);
}

static void on_conn_write(struct bufferevent *bev, void *arg)
{
    (void)bev;
    conn_flush(arg);
}

static void on_conn_event(struct bufferevent *bev, short what, void *arg)
{
    struct conn *c = arg;

    if (what & BEV_EVENT_CONNECTED) {
        /* The TLS handshake is done; the ALPN callback refused non-h2. */
        SSL *ssl = bufferevent_openssl_get_ssl(bev);
        char desc[64];

        if (ssl) {
            o2l_log_debug(c->r->log, "grpc", "conn=%" PRIu64 " peer=%s %s",
                          c->id, c->peer,
                          o2l_tls_describe(ssl, desc, sizeof(desc)));
        }
        return;
    }
    if ((what & BEV_EVENT_TIMEOUT) && (what & BEV_EVENT_READING) &&
        !c->closing) {
        /* Idle: say goodbye properly, then close once that is written. */
        o2l_log_debug(c->r->log, "grpc",
                      "conn=%" PRIu64 " peer=%s idle, closing", c->id, c->peer);
        c->closing = true;
        nghttp2_session_terminate_session(c->session, NGHTTP2_NO_ERROR);
        conn_flush(c);
        return;
    }
    if (what & BEV_EVENT_ERROR) {
        unsigned long tls_err =
            c->r->tls ? bufferevent_get_openssl_error(bev) : 0;
        const char *why = tls_err ? ERR_reason_error_string(tls_err) : NULL;

        o2l_log_debug(
            c->r->log, "grpc", "conn=%" PRIu64 " peer=%s error: %s", c->id,
            c->peer,
            why ? why : evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
    }
    conn_free(c);
}

static void peer_name(const struct sockaddr *sa, char *buf, size_t len)
{
    char host[NI_MAXHOST], port[NI_MAXSERV];
    socklen_t sl = sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                             : sizeof(struct sockaddr_in);

    if (getnameinfo(sa, sl, host, sizeof(host), port, sizeof(port),
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
        snprintf(buf, len, "?");
        return;
    }
    /* An IPv6 address is at most 45 characters, a port 5. */
    snprintf(buf, len, "%.46s:%.6s", host, port);
}

/* A new session with this server's settings; SETTINGS go out first. */
static int conn_start_session(struct conn *c)
{
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, MAX_CONCURRENT_STREAMS},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW_BYTES},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, MAX_HEADER_LIST_BYTES},
    };

    if (nghttp2_session_server_new(&c->session, c->r->callbacks, c) != 0) {
        c->session = NULL;
        return O2L_ENOMEM;
    }
    if (nghttp2_submit_settings(c->session, NGHTTP2_FLAG_NONE, iv,
                                O2L_ARRAY_LEN(iv)) != 0 ||
        nghttp2_session_set_local_window_size(c->session, NGHTTP2_FLAG_NONE, 0,
                                              (int32_t)CONN_WINDOW_BYTES) !=
            0) {
        return O2L_ENOMEM;
    }
    return O2L_OK;
}

/*
 * The connection's bufferevent: over TLS, the server side of a handshake
 * that starts with the first bytes read. Frames nghttp2 queues before the
 * handshake ends wait in its output. NULL (socket closed) on failure.
 */
static struct bufferevent *new_bufferevent(struct o2l_grpc_receiver *r,
                                           evutil_socket_t fd)
{
    struct bufferevent *bev;
    SSL *ssl;

    if (!r->tls) {
        bev = bufferevent_socket_new(r->base, fd, BEV_OPT_CLOSE_ON_FREE);
        if (!bev) {
            evutil_closesocket(fd);
        }
        return bev;
    }
    ssl = o2l_tls_ssl_new(r->tls);
    if (!ssl) {
        evutil_closesocket(fd);
        return NULL;
    }
    bev = bufferevent_openssl_socket_new(
        r->base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
    if (!bev) {
        SSL_free(ssl);
        evutil_closesocket(fd);
        return NULL;
    }
    /* Clients that close without a TLS close_notify are common. */
    bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    return bev;
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd,
                      struct sockaddr *sa, int socklen, void *arg)
{
    struct o2l_grpc_receiver *r = arg;
    struct timeval idle = {(time_t)r->idle_timeout_s, 0};
    struct conn *c;
    int one = 1;

    (void)l;
    (void)socklen;
    c = o2l_calloc(1, sizeof(*c));
    if (!c) {
        o2l_log_error(r->log, "grpc", "out of memory: connection refused");
        evutil_closesocket(fd);
        return;
    }
    c->r = r;
    c->id = ++r->next_conn_id;
    peer_name(sa, c->peer, sizeof(c->peer));
    /* Small answers should not wait for Nagle's algorithm. */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->bev = new_bufferevent(r, fd);
    c->next = r->conns;
    if (r->conns) {
        r->conns->prev = c;
    }
    r->conns = c;
    r->n_conns++;
    if (!c->bev || conn_start_session(c) != O2L_OK) {
        o2l_log_error(r->log, "grpc",
                      "conn=%" PRIu64 " out of memory: connection closed",
                      c->id);
        conn_free(c);
        return;
    }
    o2l_log_debug(r->log, "grpc", "conn=%" PRIu64 " peer=%s open", c->id,
                  c->peer);
    bufferevent_setcb(c->bev, on_conn_read, on_conn_write, on_conn_event, c);
    bufferevent_set_timeouts(c->bev, &idle, &idle);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    conn_flush(c);
}

static void on_accept_resume(evutil_socket_t fd, short what, void *arg)
{
    struct o2l_grpc_receiver *r = arg;

    (void)fd;
    (void)what;
    if (r->listener) {
        evconnlistener_enable(r->listener);
    }
}

/* accept() failed, most often for want of descriptors: pause a moment. */
static void on_accept_error(struct evconnlistener *l, void *arg)
{
    struct o2l_grpc_receiver *r = arg;
    struct timeval pause = {ACCEPT_PAUSE_MS / 1000,
                            (ACCEPT_PAUSE_MS % 1000) * 1000};
    int err = EVUTIL_SOCKET_ERROR();

    o2l_log_warn(r->log, "grpc",
                 "accept failed: %s; pausing new connections for %dms",
                 evutil_socket_error_to_string(err), ACCEPT_PAUSE_MS);
    evconnlistener_disable(l);
    if (event_base_once(r->base, -1, EV_TIMEOUT, on_accept_resume, r, &pause) !=
        0) {
        evconnlistener_enable(l);
    }
}

/* ---- the receiver ---- */

static int make_callbacks(struct o2l_grpc_receiver *r)
{
    if (nghttp2_session_callbacks_new(&r->callbacks) != 0) {
        return O2L_ENOMEM;
    }
    nghttp2_session_callbacks_set_send_callback(r->callbacks, on_send);
    nghttp2_session_callbacks_set_on_begin_headers_callback(r->callbacks,
                                                            on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(r->callbacks, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(r->callbacks,
                                                         on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(
        r->callbacks, on_data_chunk_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(r->callbacks,
                                                           on_stream_close);
    return O2L_OK;
}

static int bind_listener(struct o2l_grpc_receiver *r, const char *listen,
                         char *err, size_t err_len)
{
    struct addrinfo hints, *res = NULL;
    char host[256], port[16];
    int grc;

    if (o2l_listen_split(listen, host, sizeof(host), port, sizeof(port)) !=
        O2L_OK) {
        snprintf(err, err_len, "bad listen address %s", listen);
        return O2L_EINVAL;
    }
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    grc = getaddrinfo(host[0] ? host : NULL, port, &hints, &res);
    if (grc != 0 || !res) {
        snprintf(err, err_len, "cannot resolve %s: %s", listen,
                 gai_strerror(grc));
        return O2L_EINVAL;
    }
    errno = 0;
    r->listener = evconnlistener_new_bind(
        r->base, on_accept, r,
        LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC, -1,
        res->ai_addr, (int)res->ai_addrlen);
    freeaddrinfo(res);
    if (!r->listener) {
        snprintf(err, err_len, "cannot listen on %s: %s", listen,
                 errno ? strerror(errno) : "not a usable local address");
        return O2L_EIO;
    }
    evconnlistener_set_error_cb(r->listener, on_accept_error);
    r->port = o2l_listen_local_port(evconnlistener_get_fd(r->listener));
    return O2L_OK;
}

struct o2l_grpc_receiver *
o2l_grpc_receiver_start(struct event_base *base,
                        const struct o2l_grpc_receiver_config *cfg,
                        struct o2l_pipeline *pipeline,
                        const struct o2l_log *log, char *err, size_t err_len)
{
    struct o2l_grpc_receiver *r;

    r = o2l_calloc(1, sizeof(*r));
    if (!r) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    r->base = base;
    r->pipeline = pipeline;
    r->log = log;
    r->max_message_bytes = cfg->max_message_bytes;
    r->tls = cfg->tls;
    r->idle_timeout_s =
        cfg->idle_timeout_s ? cfg->idle_timeout_s : DEFAULT_IDLE_TIMEOUT_S;
    if (make_callbacks(r) != O2L_OK) {
        snprintf(err, err_len, "out of memory");
        goto fail;
    }
    if (bind_listener(r, cfg->listen, err, err_len) != O2L_OK) {
        goto fail;
    }
    return r;

fail:
    o2l_grpc_receiver_free(r);
    return NULL;
}

int o2l_grpc_receiver_port(const struct o2l_grpc_receiver *r)
{
    return r->port;
}

static void close_all(struct o2l_grpc_receiver *r)
{
    while (r->conns) {
        conn_free(r->conns);
    }
}

static void on_grace_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct o2l_grpc_receiver *r = arg;

    (void)fd;
    (void)what;
    o2l_log_warn(r->log, "grpc",
                 "closing %zu connection(s) still open at the end of the "
                 "shutdown grace period",
                 r->n_conns);
    close_all(r);
    finish_shutdown(r);
}

void o2l_grpc_receiver_shutdown(struct o2l_grpc_receiver *r, uint32_t grace_ms,
                                void (*done)(void *arg), void *arg)
{
    struct timeval tv = {(time_t)(grace_ms / 1000),
                         (suseconds_t)((grace_ms % 1000) * 1000)};
    struct conn *c, *next;

    r->done = done;
    r->done_arg = arg;
    if (r->shutting_down) {
        close_all(r);
        finish_shutdown(r);
        return;
    }
    r->shutting_down = true;
    if (r->listener) {
        evconnlistener_free(r->listener);
        r->listener = NULL;
    }
    for (c = r->conns; c; c = next) {
        next = c->next;
        /* Streams up to the last one begun finish; later ones are refused
         * and the client may safely send them again elsewhere. */
        nghttp2_submit_goaway(
            c->session, NGHTTP2_FLAG_NONE,
            nghttp2_session_get_last_proc_stream_id(c->session),
            NGHTTP2_NO_ERROR, NULL, 0);
        conn_flush(c);
    }
    if (r->n_conns == 0) {
        finish_shutdown(r);
        return;
    }
    r->grace_timer = evtimer_new(r->base, on_grace_timeout, r);
    if (!r->grace_timer || evtimer_add(r->grace_timer, &tv) != 0) {
        close_all(r);
        finish_shutdown(r);
    }
}

void o2l_grpc_receiver_free(struct o2l_grpc_receiver *r)
{
    if (!r) {
        return;
    }
    r->done = NULL;
    r->shutting_down = false;
    close_all(r);
    if (r->grace_timer) {
        event_free(r->grace_timer);
    }
    if (r->listener) {
        evconnlistener_free(r->listener);
    }
    nghttp2_session_callbacks_del(r->callbacks);
    o2l_free(r);
}
