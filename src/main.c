/* SPDX-License-Identifier: Apache-2.0 */
/* main.c - the otel2langfuse command line: serve, convert, help. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <event2/event.h>

#include "o2l/admin.h"
#include "o2l/common.h"
#include "o2l/config.h"
#include "o2l/deadletter.h"
#include "o2l/encode.h"
#include "o2l/exporter.h"
#include "o2l/grpc_receiver.h"
#include "o2l/http_receiver.h"
#include "o2l/log.h"
#include "o2l/otlp.h"
#include "o2l/pipeline.h"
#include "o2l/replay.h"
#include "o2l/spool.h"
#include "o2l/tls.h"

extern char **environ;

/* How long gRPC calls already begun may take to finish on a stop. */
#define GRPC_DRAIN_MS 5000
/* gRPC connections silent this long are closed. */
#define GRPC_IDLE_TIMEOUT_S 300
/* Time given to answers written at stop to leave before sockets close. */
#define REPLY_FLUSH_MS 200

enum exit_code {
    EXIT_OK = 0,
    EXIT_FAILURE_RUN = 1,
    EXIT_USAGE = 2
};

struct daemon {
    struct o2l_config cfg;
    struct o2l_log log;
    struct event_base *base;
    struct o2l_spool *spool;
    struct o2l_deadletter *dead;
    char *dead_path;
    struct o2l_pipeline pipeline;
    struct o2l_admin *admin;
    bool stopping;
    struct o2l_http_receiver *http;
    struct o2l_grpc_receiver *grpc;
    struct o2l_tls *http_tls; /* NULL without TLS settings */
    struct o2l_tls *grpc_tls;
    struct event *sigterm;
    struct event *sigint;
    struct event *sighup;
    const char *stop_signal;
};

static void usage(FILE *out)
{
    fprintf(
        out,
        "Usage: otel2langfuse [serve] [SETTINGS...]\n"
        "       otel2langfuse convert [FILE] [SETTINGS...]\n"
        "       otel2langfuse dead-letter replay [--file FILE] "
        "[SETTINGS...]\n"
        "       otel2langfuse --help | --version\n"
        "\n"
        "serve    receive OTLP traces (HTTP :4318, gRPC :4317) and\n"
        "         deliver them to Langfuse; the default command\n"
        "convert  map one OTLP export (JSON or protobuf, detected; stdin\n"
        "         without FILE) and print the ingestion batch it becomes\n"
        "dead-letter replay\n"
        "         send the events of the dead-letter file (or FILE) to\n"
        "         Langfuse again, after the cause is fixed; events refused\n"
        "         again go back to the dead-letter file\n"
        "\n");
    o2l_config_print_help(out);
}

/* Copies the mapping settings into the map stage's configuration. */
static void map_config_from(const struct o2l_config *cfg,
                            struct o2l_map_config *map)
{
    o2l_map_config_defaults(map);
    map->session_from_thread_id = cfg->session_from_thread_id;
    map->control_flow_exceptions =
        (const char *const *)cfg->control_flow_exceptions;
    map->trace_id_attribute = cfg->trace_id_attribute;
    map->max_flattened_slots = (size_t)cfg->max_flattened_slots;
    map->thread_id_keys = (const char *const *)cfg->thread_id_keys;
    map->drop_non_llm_spans = strcmp(cfg->non_llm_spans, "drop") == 0;
    map->llm_scopes = (const char *const *)cfg->llm_scopes;
    map->llm_key_prefixes = (const char *const *)cfg->llm_key_prefixes;
    map->redact = (const char *const *)cfg->redact;
    map->redact_marker = cfg->redact_marker;
}

static int load_config(struct o2l_config *cfg, int argc, char **argv, int *rest,
                       int *n_rest)
{
    char err[512];
    int rc;

    rc = o2l_config_defaults(cfg);
    if (rc == O2L_OK) {
        rc = o2l_config_load(cfg, argc, argv, environ, rest, n_rest, err,
                             sizeof(err));
    }
    if (rc == O2L_OK) {
        rc = o2l_config_validate(cfg, err, sizeof(err));
    }
    if (rc == O2L_ENOMEM) {
        fprintf(stderr, "otel2langfuse: out of memory\n");
    } else if (rc != O2L_OK) {
        fprintf(stderr, "otel2langfuse: %s\n", err);
    }
    return rc;
}

/* Reads a whole file (or stdin for NULL) into a new buffer. */
static int read_all(const char *path, unsigned char **out, size_t *out_len)
{
    FILE *f = path ? fopen(path, "rb") : stdin;
    unsigned char *buf = NULL;
    size_t cap = 0, len = 0;
    int rc = O2L_OK;

    if (!f) {
        return O2L_EIO;
    }
    for (;;) {
        size_t n;

        if (cap - len < 65536) {
            unsigned char *grown = o2l_realloc(buf, cap * 2 + 65536);

            if (!grown) {
                rc = O2L_ENOMEM;
                break;
            }
            buf = grown;
            cap = cap * 2 + 65536;
        }
        n = fread(buf + len, 1, cap - len, f);
        len += n;
        if (n == 0) {
            if (ferror(f)) {
                rc = O2L_EIO;
            }
            break;
        }
    }
    if (path) {
        fclose(f);
    }
    if (rc != O2L_OK) {
        o2l_free(buf);
        return rc;
    }
    *out = buf;
    *out_len = len;
    return O2L_OK;
}

static int cmd_convert(struct o2l_config *cfg, const char *path)
{
    struct o2l_pipeline pipeline = {0};
    struct o2l_event_list events = {0};
    struct o2l_export *ex = NULL;
    unsigned char *data = NULL;
    char *batch = NULL;
    size_t len = 0, batch_len = 0;
    char err[256] = "";
    int rc;

    rc = read_all(path, &data, &len);
    if (rc != O2L_OK) {
        fprintf(stderr, "otel2langfuse: cannot read %s: %s\n",
                path ? path : "stdin",
                rc == O2L_EIO ? strerror(errno) : o2l_strerror(rc));
        goto out;
    }
    rc = o2l_otlp_decode(data, len, o2l_otlp_sniff(data, len), o2l_now_ns(),
                         &ex, err, sizeof(err));
    if (rc != O2L_OK) {
        fprintf(stderr, "otel2langfuse: %s: %s\n", path ? path : "stdin",
                err[0] ? err : o2l_strerror(rc));
        goto out;
    }
    if (ex->rejected > 0) {
        fprintf(stderr, "otel2langfuse: %zu span(s) rejected: %s\n",
                ex->rejected, ex->error_message ? ex->error_message : "");
    }
    map_config_from(cfg, &pipeline.map);
    rc = o2l_pipeline_encode(&pipeline, ex, &events);
    if (rc == O2L_OK) {
        rc = o2l_encode_batch(events.items, events.len, &batch, &batch_len);
    }
    if (rc != O2L_OK) {
        fprintf(stderr, "otel2langfuse: %s\n", o2l_strerror(rc));
        goto out;
    }
    fwrite(batch, 1, batch_len, stdout);
    fputc('\n', stdout);

out:
    o2l_free(batch);
    o2l_event_list_clear(&events);
    o2l_export_free(ex);
    o2l_free(data);
    return rc == O2L_OK ? EXIT_OK : EXIT_FAILURE_RUN;
}

/*
 * Each connection holds a descriptor; Debian's default soft limit of 1024
 * is low for a gateway, so take what the hard limit allows.
 */
static void raise_fd_limit(const struct o2l_log *log)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= rl.rlim_max) {
        return;
    }
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
        o2l_log_warn(log, "main", "cannot raise the open-file limit: %s",
                     strerror(errno));
    }
}

static void on_grpc_drained(void *arg)
{
    struct daemon *d = arg;

    event_base_loopexit(d->base, NULL);
}

static void on_stop_signal(evutil_socket_t sig, short what, void *arg)
{
    struct daemon *d = arg;

    (void)what;
    d->stop_signal = sig == SIGTERM  ? "SIGTERM"
                     : sig == SIGINT ? "SIGINT"
                                     : "SIGHUP";
    d->stopping = true;
    o2l_http_receiver_close_listener(d->http);
    if (d->grpc) {
        /* The loop stops once gRPC streams in progress have finished. */
        o2l_grpc_receiver_shutdown(d->grpc, GRPC_DRAIN_MS, on_grpc_drained, d);
    } else {
        event_base_loopexit(d->base, NULL);
    }
}

static bool grpc_enabled(const struct o2l_config *cfg)
{
    return cfg->grpc_listen && *cfg->grpc_listen &&
           strcmp(cfg->grpc_listen, "off") != 0;
}

/*
 * Loads the receivers' certificate and key, when set, before anything
 * listens: a file that cannot be used stops the start. Each receiver has
 * its own context because each negotiates its own protocol.
 */
static int load_tls(struct daemon *d)
{
    const struct o2l_config *cfg = &d->cfg;
    char err[512];

    if (!cfg->tls_cert_file || !*cfg->tls_cert_file) {
        return O2L_OK;
    }
    d->http_tls =
        o2l_tls_new(cfg->tls_cert_file, cfg->tls_key_file, O2L_TLS_ALPN_HTTP1,
                    &d->log, "http", err, sizeof(err));
    if (d->http_tls && grpc_enabled(cfg)) {
        d->grpc_tls =
            o2l_tls_new(cfg->tls_cert_file, cfg->tls_key_file, O2L_TLS_ALPN_H2,
                        &d->log, "grpc", err, sizeof(err));
    }
    if (!d->http_tls || (grpc_enabled(cfg) && !d->grpc_tls)) {
        o2l_log_error(&d->log, "main", "%s", err);
        return O2L_EINVAL;
    }
    o2l_log_info(&d->log, "main",
                 "receivers serve TLS only (TLS 1.2 or newer) with the "
                 "certificate in %s",
                 cfg->tls_cert_file);
    return O2L_OK;
}

/* Starts OTLP/gRPC unless it is turned off; logs the address bound. */
static int start_grpc(struct daemon *d)
{
    struct o2l_grpc_receiver_config gc = {0};
    const char *listen = d->cfg.grpc_listen;
    const char *colon;
    char err[512];

    if (!listen || !*listen || strcmp(listen, "off") == 0) {
        return O2L_OK;
    }
    gc.listen = listen;
    gc.max_message_bytes = (size_t)d->cfg.grpc_max_message_bytes;
    gc.idle_timeout_s = GRPC_IDLE_TIMEOUT_S;
    gc.tls = d->grpc_tls;
    d->grpc = o2l_grpc_receiver_start(d->base, &gc, &d->pipeline, &d->log, err,
                                      sizeof(err));
    if (!d->grpc) {
        o2l_log_error(&d->log, "main", "receiver grpc: %s", err);
        return O2L_EIO;
    }
    colon = strrchr(listen, ':');
    o2l_log_info(&d->log, "main", "listening grpc=%.*s:%d",
                 (int)(colon - listen), listen,
                 o2l_grpc_receiver_port(d->grpc));
    return O2L_OK;
}

/* Fills |ec| from the settings; credentials only when both are set. */
static void exporter_config_from(const struct o2l_config *cfg,
                                 struct o2l_exporter_config *ec)
{
    bool creds = cfg->public_key && *cfg->public_key;

    o2l_exporter_config_defaults(ec);
    if (creds) {
        ec->base_url = cfg->base_url;
        ec->public_key = cfg->public_key;
        ec->secret_key = cfg->secret_key;
    }
    ec->file_path = cfg->file_sink;
    ec->flush_interval_ms = (uint32_t)cfg->flush_interval_ms;
    ec->batch_max_events = (size_t)cfg->batch_max_events;
    ec->batch_max_bytes = (size_t)cfg->batch_max_bytes;
    ec->queue_max_events = (size_t)cfg->queue_max_events;
    ec->queue_max_bytes = (size_t)cfg->queue_max_bytes;
    ec->request_timeout_ms = (uint32_t)cfg->request_timeout_ms;
    ec->retry_initial_ms = (uint32_t)cfg->retry_initial_ms;
    ec->retry_max_ms = (uint32_t)cfg->retry_max_ms;
    ec->retry_multiplier = cfg->retry_multiplier;
    ec->max_age_ms = cfg->max_age_s * 1000u;
    ec->auth_retry_ms = (uint32_t)cfg->auth_retry_ms;
    ec->shutdown_timeout_ms = (uint32_t)cfg->shutdown_timeout_ms;
}

/* The dead-letter file: the setting, or dead-letter.jsonl in the spool. */
static char *dead_letter_path(const struct o2l_config *cfg)
{
    static const char name[] = "/dead-letter.jsonl";
    char *path;

    if (cfg->dead_letter_file && *cfg->dead_letter_file) {
        return o2l_strdup(cfg->dead_letter_file);
    }
    path = o2l_malloc(strlen(cfg->spool_dir) + sizeof(name));
    if (path) {
        memcpy(path, cfg->spool_dir, strlen(cfg->spool_dir));
        memcpy(path + strlen(cfg->spool_dir), name, sizeof(name));
    }
    return path;
}

/* Sets up delivery: where events go, and the stages before the exporter. */
static int configure_delivery(struct daemon *d)
{
    const struct o2l_config *cfg = &d->cfg;
    struct o2l_pipeline *p = &d->pipeline;
    bool creds = cfg->public_key && *cfg->public_key;

    exporter_config_from(cfg, &p->export_cfg);
    if (!creds) {
        FILE *f;

        o2l_log_info(&d->log, "main",
                     "no Langfuse credentials: writing ingestion events to "
                     "%s as JSON lines (set LANGFUSE_PUBLIC_KEY, "
                     "LANGFUSE_SECRET_KEY and LANGFUSE_BASE_URL to deliver)",
                     cfg->file_sink);
        f = fopen(cfg->file_sink, "a");
        if (!f) {
            o2l_log_error(&d->log, "main",
                          "setting export.file_sink: cannot open %s: %s",
                          cfg->file_sink, strerror(errno));
            return O2L_EINVAL;
        }
        fclose(f);
    }
    p->output = strcmp(cfg->output, "ingestion") == 0 ? O2L_CHOOSE_INGESTION
                : strcmp(cfg->output, "otlp") == 0    ? O2L_CHOOSE_OTLP
                                                      : O2L_CHOOSE_AUTO;
    o2l_assemble_config_defaults(&p->assemble);
    p->assemble.window_ms = (uint32_t)cfg->assemble_window_ms;
    p->assemble.root_grace_ms = (uint32_t)cfg->assemble_root_grace_ms;
    p->assemble.max_traces = (size_t)cfg->assemble_max_traces;
    p->assemble.max_bytes = (size_t)cfg->assemble_max_bytes;
    p->otlp.keep_original = cfg->otlp_keep_attributes;
    p->otlp.map = &p->map;
    p->spool = d->spool;
    p->dead = d->dead;
    p->log = &d->log;
    map_config_from(cfg, &p->map);
    return O2L_OK;
}

/* Opens the spool and the dead-letter file; says what an old run left. */
static int open_spool(struct daemon *d)
{
    struct o2l_spool_config sc = {0};
    struct o2l_spool_stats st;
    char err[512];

    sc.dir = d->cfg.spool_dir;
    sc.max_bytes = d->cfg.spool_max_bytes;
    sc.sync = d->cfg.spool_sync;
    d->spool = o2l_spool_open(&sc, &d->log, err, sizeof(err));
    if (!d->spool) {
        o2l_log_error(&d->log, "main", "setting spool.dir: %s", err);
        return O2L_EINVAL;
    }
    o2l_spool_stats(d->spool, &st);
    if (st.recovered_requests > 0) {
        o2l_log_info(&d->log, "main",
                     "spool recovered requests=%llu bytes=%llu from an "
                     "earlier run; delivering them first",
                     (unsigned long long)st.recovered_requests,
                     (unsigned long long)st.recovered_bytes);
    }
    if (!d->cfg.spool_sync) {
        o2l_log_warn(&d->log, "main",
                     "spool.sync is off: acknowledged requests can be lost "
                     "in a power cut or kernel crash");
    }
    d->dead_path = dead_letter_path(&d->cfg);
    if (!d->dead_path) {
        return O2L_ENOMEM;
    }
    d->dead = o2l_deadletter_open(d->dead_path, err, sizeof(err));
    if (!d->dead) {
        o2l_log_error(&d->log, "main", "setting export.dead_letter_file: %s",
                      err);
        return O2L_EINVAL;
    }
    return O2L_OK;
}

static bool daemon_ready(void *arg, char *reason, size_t len)
{
    struct daemon *d = arg;

    if (d->stopping) {
        snprintf(reason, len, "stopping");
        return false;
    }
    return o2l_pipeline_ready(&d->pipeline, reason, len);
}

static void daemon_metrics(void *arg, struct evbuffer *out)
{
    struct daemon *d = arg;

    o2l_pipeline_write_metrics(&d->pipeline, out);
}

static int start_admin(struct daemon *d)
{
    struct o2l_admin_config ac = {0};
    const char *listen = d->cfg.admin_listen;
    char err[512];

    if (!listen || !*listen || strcmp(listen, "off") == 0) {
        return O2L_OK;
    }
    ac.listen = listen;
    ac.ready = daemon_ready;
    ac.metrics = daemon_metrics;
    ac.arg = d;
    d->admin = o2l_admin_start(d->base, &ac, &d->log, err, sizeof(err));
    if (!d->admin) {
        o2l_log_error(&d->log, "main", "admin: %s", err);
        return O2L_EIO;
    }
    return O2L_OK;
}

/* Runs the loop a moment so answers written during the stop go out. */
static void flush_replies(struct daemon *d)
{
    struct timeval tv = {0, REPLY_FLUSH_MS * 1000};

    event_base_loopexit(d->base, &tv);
    event_base_dispatch(d->base);
}

static int cmd_serve(struct daemon *d)
{
    struct o2l_http_receiver_config hc = {0};
    const char *colon;
    char admin_addr[300] = "off";
    char err[512];
    int rc;

    signal(SIGPIPE, SIG_IGN);
    raise_fd_limit(&d->log);
    o2l_config_log(&d->cfg, &d->log);
    if (load_tls(d) != O2L_OK) {
        return EXIT_USAGE;
    }
    d->base = event_base_new();
    if (!d->base) {
        o2l_log_error(&d->log, "main", "cannot create the event loop");
        return EXIT_FAILURE_RUN;
    }
    rc = open_spool(d);
    if (rc == O2L_OK) {
        rc = configure_delivery(d);
    }
    if (rc == O2L_EINVAL) {
        return EXIT_USAGE;
    }
    if (rc != O2L_OK) {
        return EXIT_FAILURE_RUN;
    }
    if (o2l_spool_start(d->spool, d->base) != O2L_OK ||
        o2l_pipeline_start(&d->pipeline) != O2L_OK) {
        o2l_log_error(&d->log, "main", "cannot start the delivery threads");
        return EXIT_FAILURE_RUN;
    }

    hc.listen = d->cfg.http_listen;
    hc.max_body_bytes = (size_t)d->cfg.http_max_body_bytes;
    hc.idle_timeout_s = 30;
    hc.tls = d->http_tls;
    d->http = o2l_http_receiver_start(d->base, &hc, &d->pipeline, &d->log, err,
                                      sizeof(err));
    if (!d->http) {
        o2l_log_error(&d->log, "main", "receiver http: %s", err);
        return EXIT_FAILURE_RUN;
    }
    if (start_grpc(d) != O2L_OK || start_admin(d) != O2L_OK) {
        return EXIT_FAILURE_RUN;
    }
    d->sigterm = evsignal_new(d->base, SIGTERM, on_stop_signal, d);
    d->sigint = evsignal_new(d->base, SIGINT, on_stop_signal, d);
    /* A closed terminal: stop cleanly rather than die with the queue. */
    d->sighup = evsignal_new(d->base, SIGHUP, on_stop_signal, d);
    if (!d->sigterm || !d->sigint || !d->sighup ||
        evsignal_add(d->sigterm, NULL) != 0 ||
        evsignal_add(d->sigint, NULL) != 0 ||
        evsignal_add(d->sighup, NULL) != 0) {
        o2l_log_error(&d->log, "main", "cannot install signal handlers");
        return EXIT_FAILURE_RUN;
    }
    if (d->admin) {
        colon = strrchr(d->cfg.admin_listen, ':');
        snprintf(admin_addr, sizeof(admin_addr), "%.*s:%d",
                 (int)(colon - d->cfg.admin_listen), d->cfg.admin_listen,
                 o2l_admin_port(d->admin));
    }
    colon = strrchr(d->cfg.http_listen, ':');
    o2l_log_info(
        &d->log, "main", "otel2langfuse %s listening http=%.*s:%d admin=%s",
        O2L_VERSION, (int)(colon - d->cfg.http_listen), d->cfg.http_listen,
        o2l_http_receiver_port(d->http), admin_addr);

    event_base_dispatch(d->base);

    o2l_log_info(&d->log, "main",
                 "stopping on %s: answering stored requests, finishing the "
                 "request in flight; the rest stays in the spool",
                 d->stop_signal ? d->stop_signal : "loop exit");
    d->stopping = true;
    /* Requests waiting for the disk are answered, then the answers sent. */
    o2l_pipeline_stop_intake(&d->pipeline);
    flush_replies(d);
    o2l_pipeline_stop(&d->pipeline);
    return EXIT_OK;
}

/* Set by SIGINT, SIGTERM or SIGHUP during a replay. */
static atomic_int replay_stop;

static void on_replay_signal(int sig)
{
    atomic_store(&replay_stop, sig);
}

/* A signal stops the replay, which puts back what it did not deliver. */
static int catch_replay_signals(void)
{
    static const int sigs[] = {SIGINT, SIGTERM, SIGHUP};
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_replay_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
        if (sigaction(sigs[i], &sa, NULL) != 0) {
            return -1;
        }
    }
    return 0;
}

static int cmd_replay(struct daemon *d, const char *file)
{
    struct o2l_replay_options opt = {&replay_stop, 0};
    struct o2l_exporter_config ec;
    struct o2l_replay_result res;
    char *path = NULL;
    int rc;

    if (!d->cfg.public_key || !*d->cfg.public_key) {
        fprintf(stderr,
                "otel2langfuse: dead-letter replay needs Langfuse "
                "credentials (LANGFUSE_PUBLIC_KEY, LANGFUSE_SECRET_KEY, "
                "LANGFUSE_BASE_URL)\n");
        return EXIT_USAGE;
    }
    path = file ? o2l_strdup(file) : dead_letter_path(&d->cfg);
    if (!path) {
        return EXIT_FAILURE_RUN;
    }
    if (catch_replay_signals() != 0) {
        o2l_log_error(&d->log, "main", "cannot install signal handlers");
        o2l_free(path);
        return EXIT_FAILURE_RUN;
    }
    exporter_config_from(&d->cfg, &ec);
    rc = o2l_replay_dead_letters(&ec, path, &opt, &d->log, &res);
    o2l_free(path);
    if (rc != O2L_OK) {
        return EXIT_FAILURE_RUN;
    }
    printf("replayed=%zu adopted=%zu delivered=%zu refused_again=%zu "
           "put_back=%zu unreadable=%zu%s\n",
           res.replayed, res.adopted, res.delivered, res.refused, res.returned,
           res.unreadable, res.interrupted ? " interrupted" : "");
    return !res.interrupted && res.delivered == res.replayed &&
                   res.unreadable == 0
               ? EXIT_OK
               : EXIT_FAILURE_RUN;
}

static void daemon_free(struct daemon *d)
{
    if (d->sigterm) {
        event_free(d->sigterm);
    }
    if (d->sigint) {
        event_free(d->sigint);
    }
    if (d->sighup) {
        event_free(d->sighup);
    }
    o2l_admin_stop(d->admin);
    /* Answers waiting for the spool first: they refer to the receivers. */
    if (d->spool) {
        o2l_pipeline_stop_intake(&d->pipeline);
    }
    o2l_http_receiver_free(d->http);
    o2l_grpc_receiver_free(d->grpc);
    /* After the receivers: their connections refer to these. */
    o2l_tls_free(d->http_tls);
    o2l_tls_free(d->grpc_tls);
    o2l_pipeline_free(&d->pipeline);
    o2l_spool_close(d->spool);
    o2l_deadletter_close(d->dead);
    o2l_free(d->dead_path);
    if (d->base) {
        event_base_free(d->base);
    }
    o2l_config_free(&d->cfg);
}

int main(int argc, char **argv)
{
    struct daemon d;
    const char *command = "serve";
    const char *file = NULL;
    bool replay = false;
    int *rest;
    int n_rest = 0;
    int code = EXIT_OK;
    enum o2l_log_level level = O2L_LOG_INFO;

    memset(&d, 0, sizeof(d));
    o2l_mem_init();
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return EXIT_OK;
        }
        if (strcmp(argv[i], "--version") == 0) {
            printf("otel2langfuse %s\n", O2L_VERSION);
            return EXIT_OK;
        }
    }
    rest = calloc((size_t)argc + 1, sizeof(*rest));
    if (!rest) {
        return EXIT_FAILURE_RUN;
    }
    if (load_config(&d.cfg, argc - 1, argv + 1, rest, &n_rest) != O2L_OK) {
        code = EXIT_USAGE;
        goto out;
    }
    /* What is left: the command and, for convert, the file. */
    for (int i = 0; i < n_rest; i++) {
        const char *a = argv[1 + rest[i]];

        if (i == 0 && (strcmp(a, "serve") == 0 || strcmp(a, "convert") == 0 ||
                       strcmp(a, "dead-letter") == 0)) {
            command = a;
        } else if (strcmp(command, "dead-letter") == 0 && i == 1 &&
                   strcmp(a, "replay") == 0) {
            replay = true;
        } else if (replay && !file && strcmp(a, "--file") == 0 &&
                   i + 1 < n_rest) {
            file = argv[1 + rest[++i]];
        } else if (strcmp(command, "convert") == 0 && !file &&
                   (a[0] != '-' || strcmp(a, "-") == 0)) {
            file = strcmp(a, "-") == 0 ? NULL : a;
        } else {
            fprintf(stderr, "otel2langfuse: unknown argument %s (see --help)\n",
                    a);
            code = EXIT_USAGE;
            goto out;
        }
    }
    o2l_log_parse_level(d.cfg.log_level, &level);
    d.log.level = level;
    d.log.out = stderr;

    if (strcmp(command, "convert") == 0) {
        code = cmd_convert(&d.cfg, file);
    } else if (strcmp(command, "dead-letter") == 0) {
        if (!replay) {
            fprintf(stderr, "otel2langfuse: dead-letter needs a subcommand: "
                            "replay (see --help)\n");
            code = EXIT_USAGE;
        } else {
            code = cmd_replay(&d, file);
        }
    } else {
        code = cmd_serve(&d);
    }

out:
    free(rest);
    daemon_free(&d);
    return code;
}
