/* SPDX-License-Identifier: Apache-2.0 */
/* config.c - settings from defaults, YAML, environment and flags. */
#include "o2l/config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <yaml.h>

#include "o2l/common.h"
#include "o2l/assemble.h"
#include "o2l/exporter.h"
#include "o2l/mapper.h"

enum setting_kind {
    KIND_STRING,
    KIND_UINT,
    KIND_DOUBLE,
    KIND_BOOL,
    KIND_LIST
};

/* A setting's check beyond its kind; returns NULL or what is wrong. */
typedef const char *(*setting_check_fn)(const char *value);

struct setting {
    const char *yaml; /* dotted YAML path */
    const char *env;  /* environment variable, or NULL */
    const char *flag; /* command-line flag, or NULL */
    enum setting_kind kind;
    size_t offset;
    uint64_t min; /* KIND_UINT and KIND_DOUBLE bounds */
    uint64_t max;
    setting_check_fn check;
    const char *help;
};

static const char *check_output(const char *v)
{
    if (strcmp(v, "auto") == 0 || strcmp(v, "ingestion") == 0 ||
        strcmp(v, "otlp") == 0) {
        return NULL;
    }
    return "must be auto, ingestion or otlp";
}

static const char *check_level(const char *v)
{
    enum o2l_log_level l;

    if (o2l_log_parse_level(v, &l) == O2L_OK) {
        return NULL;
    }
    return "must be one of error, warn, info, debug, trace";
}

static const char *check_listen(const char *v)
{
    const char *colon = strrchr(v, ':');
    char *end = NULL;
    long port;

    if (!colon || colon == v) {
        return "must be host:port";
    }
    errno = 0;
    port = strtol(colon + 1, &end, 10);
    if (errno != 0 || !end || *end != '\0' || end == colon + 1 || port < 0 ||
        port > 65535) {
        return "must be host:port with a port from 0 to 65535";
    }
    return NULL;
}

/* Like check_listen; an empty value or "off" turns the receiver off. */
static const char *check_listen_or_off(const char *v)
{
    if (*v == '\0' || strcmp(v, "off") == 0) {
        return NULL;
    }
    return check_listen(v);
}

static const char *check_non_llm(const char *v)
{
    if (strcmp(v, "keep") == 0 || strcmp(v, "drop") == 0) {
        return NULL;
    }
    return "must be keep or drop";
}

static const char *check_not_empty(const char *v)
{
    return *v ? NULL : "must not be empty";
}

static const char *check_url(const char *v)
{
    if (*v == '\0' || strncasecmp(v, "http://", 7) == 0 ||
        strncasecmp(v, "https://", 8) == 0) {
        return NULL;
    }
    return "must start with http:// or https://";
}

#define OFF(field) offsetof(struct o2l_config, field)
#define MIB        (1024ull * 1024ull)

static const struct setting settings[] = {
    {"langfuse.base_url", "LANGFUSE_BASE_URL", "--langfuse-base-url",
     KIND_STRING, OFF(base_url), 0, 0, check_url,
     "Langfuse URL, e.g. http://langfuse.internal:3000 (env fallback: "
     "LANGFUSE_HOST)"},
    {"langfuse.public_key", "LANGFUSE_PUBLIC_KEY", "--langfuse-public-key",
     KIND_STRING, OFF(public_key), 0, 0, NULL,
     "Langfuse public key (pk-lf-...)"},
    {"langfuse.secret_key", "LANGFUSE_SECRET_KEY", "--langfuse-secret-key",
     KIND_STRING, OFF(secret_key), 0, 0, NULL,
     "Langfuse secret key (sk-lf-...); never logged"},
    {"output", "O2L_OUTPUT", "--output", KIND_STRING, OFF(output), 0, 0,
     check_output,
     "where events go: auto (ask Langfuse: v4 and later otlp, else "
     "ingestion), ingestion (POST /api/public/ingestion, v2/v3) or otlp "
     "(POST /api/public/otel/v1/traces, v4 and Cloud)"},
    {"receivers.http.listen", "O2L_HTTP_LISTEN", "--http-listen", KIND_STRING,
     OFF(http_listen), 0, 0, check_listen, "OTLP/HTTP address (host:port)"},
    {"receivers.http.max_body_bytes", "O2L_HTTP_MAX_BODY_BYTES",
     "--http-max-body-bytes", KIND_UINT, OFF(http_max_body_bytes), 1024,
     1024 * MIB, NULL, "largest request body, after decompression"},
    {"receivers.grpc.listen", "O2L_GRPC_LISTEN", "--grpc-listen", KIND_STRING,
     OFF(grpc_listen), 0, 0, check_listen_or_off,
     "OTLP/gRPC address (host:port); empty or off disables it"},
    {"receivers.grpc.max_message_bytes", "O2L_GRPC_MAX_MESSAGE_BYTES",
     "--grpc-max-message-bytes", KIND_UINT, OFF(grpc_max_message_bytes), 1024,
     1024 * MIB, NULL, "largest gRPC request message, after decompression"},
    {"receivers.tls.cert_file", "O2L_TLS_CERT_FILE", "--tls-cert-file",
     KIND_STRING, OFF(tls_cert_file), 0, 0, NULL,
     "PEM certificate chain; with the key, both receivers serve TLS only"},
    {"receivers.tls.key_file", "O2L_TLS_KEY_FILE", "--tls-key-file",
     KIND_STRING, OFF(tls_key_file), 0, 0, NULL,
     "PEM private key (unencrypted) of receivers.tls.cert_file"},
    {"export.flush_interval_ms", "O2L_FLUSH_INTERVAL_MS", "--flush-interval-ms",
     KIND_UINT, OFF(flush_interval_ms), 1, 3600000, NULL,
     "send a partial batch after this long"},
    {"export.batch_max_events", "O2L_BATCH_MAX_EVENTS", "--batch-max-events",
     KIND_UINT, OFF(batch_max_events), 1, 100000, NULL,
     "events per ingestion request"},
    {"export.batch_max_bytes", "O2L_BATCH_MAX_BYTES", "--batch-max-bytes",
     KIND_UINT, OFF(batch_max_bytes), 4096, 3500000, NULL,
     "bytes per ingestion request (Langfuse allows 3.5 MB)"},
    {"export.queue_max_events", "O2L_QUEUE_MAX_EVENTS", "--queue-max-events",
     KIND_UINT, OFF(queue_max_events), 1, 100000000, NULL,
     "events held in memory for sending to Langfuse; when full, delivery "
     "waits for room and the rest waits in the spool"},
    {"export.queue_max_bytes", "O2L_QUEUE_MAX_BYTES", "--queue-max-bytes",
     KIND_UINT, OFF(queue_max_bytes), 4096, 64 * 1024 * MIB, NULL,
     "bytes of events held in memory for sending to Langfuse; when full, "
     "delivery waits for room and the rest waits in the spool"},
    {"export.request_timeout_ms", "O2L_REQUEST_TIMEOUT_MS",
     "--request-timeout-ms", KIND_UINT, OFF(request_timeout_ms), 100, 600000,
     NULL, "timeout of one request to Langfuse"},
    {"export.retry_initial_ms", "O2L_RETRY_INITIAL_MS", "--retry-initial-ms",
     KIND_UINT, OFF(retry_initial_ms), 1, 3600000, NULL, "first retry delay"},
    {"export.retry_multiplier", "O2L_RETRY_MULTIPLIER", "--retry-multiplier",
     KIND_DOUBLE, OFF(retry_multiplier), 1, 10, NULL,
     "growth of the retry delay per failed attempt (jittered)"},
    {"export.retry_max_ms", "O2L_RETRY_MAX_MS", "--retry-max-ms", KIND_UINT,
     OFF(retry_max_ms), 1, 86400000, NULL, "longest retry delay"},
    {"export.shutdown_timeout_ms", "O2L_SHUTDOWN_TIMEOUT_MS",
     "--shutdown-timeout-ms", KIND_UINT, OFF(shutdown_timeout_ms), 0, 3600000,
     NULL, "how long a stop may spend sending what is queued"},
    {"export.max_age_s", "O2L_MAX_AGE_S", "--max-age-s", KIND_UINT,
     OFF(max_age_s), 0, 100ull * 365 * 24 * 3600, NULL,
     "give up on an event after this long and dead-letter it; 0 retries "
     "for ever"},
    {"export.auth_retry_ms", "O2L_AUTH_RETRY_MS", "--auth-retry-ms", KIND_UINT,
     OFF(auth_retry_ms), 100, 3600000, NULL,
     "pause after a configuration error (401, 403, 404, redirect)"},
    {"export.dead_letter_file", "O2L_DEAD_LETTER_FILE", "--dead-letter-file",
     KIND_STRING, OFF(dead_letter_file), 0, 0, NULL,
     "JSON-lines file for events Langfuse refused for good (default: "
     "dead-letter.jsonl in the spool directory)"},
    {"export.otlp_keep_attributes", "O2L_OTLP_KEEP_ATTRIBUTES",
     "--otlp-keep-attributes", KIND_BOOL, OFF(otlp_keep_attributes), 0, 0, NULL,
     "otlp output: keep the spans' own attributes beside the langfuse.* "
     "ones the bridge adds"},
    {"assemble.window_ms", "O2L_ASSEMBLE_WINDOW_MS", "--assemble-window-ms",
     KIND_UINT, OFF(assemble_window_ms), 0, 600000, NULL,
     "how long spans of a trace are held for its other spans (0: no "
     "holding)"},
    {"assemble.root_grace_ms", "O2L_ASSEMBLE_ROOT_GRACE_MS",
     "--assemble-root-grace-ms", KIND_UINT, OFF(assemble_root_grace_ms), 0,
     600000, NULL, "once a trace's root span is in, release it after this"},
    {"assemble.max_traces", "O2L_ASSEMBLE_MAX_TRACES", "--assemble-max-traces",
     KIND_UINT, OFF(assemble_max_traces), 1, 10000000, NULL,
     "traces held at most; the oldest go first past it"},
    {"assemble.max_bytes", "O2L_ASSEMBLE_MAX_BYTES", "--assemble-max-bytes",
     KIND_UINT, OFF(assemble_max_bytes), 4096, 64 * 1024 * MIB, NULL,
     "request bytes held at most; the oldest traces go first past it"},
    {"spool.dir", "O2L_SPOOL_DIR", "--spool-dir", KIND_STRING, OFF(spool_dir),
     0, 0, check_not_empty,
     "directory of the durable spool (created if missing)"},
    {"spool.max_bytes", "O2L_SPOOL_MAX_BYTES", "--spool-max-bytes", KIND_UINT,
     OFF(spool_max_bytes), 4096, 1024ull * 1024 * MIB, NULL,
     "cap on spooled request bytes; at the cap receivers answer 503 / "
     "UNAVAILABLE"},
    {"spool.sync", "O2L_SPOOL_SYNC", "--spool-sync", KIND_BOOL, OFF(spool_sync),
     0, 0, NULL,
     "fsync each commit before acknowledging (turn off only to measure)"},
    {"admin.listen", "O2L_ADMIN_LISTEN", "--admin-listen", KIND_STRING,
     OFF(admin_listen), 0, 0, check_listen_or_off,
     "admin address for /healthz, /readyz, /metrics; \"off\" disables"},
    {"export.file_sink", "O2L_FILE_SINK", "--file-sink", KIND_STRING,
     OFF(file_sink), 0, 0, NULL,
     "without credentials, events are appended here as JSON lines"},
    {"log.level", "O2L_LOG_LEVEL", "--log-level", KIND_STRING, OFF(log_level),
     0, 0, check_level, "error, warn, info, debug or trace"},
    {"mapping.session_from_thread_id", "O2L_SESSION_FROM_THREAD_ID",
     "--session-from-thread-id", KIND_BOOL, OFF(session_from_thread_id), 0, 0,
     NULL, "LangGraph thread_id becomes the session (true/false)"},
    {"mapping.control_flow_exceptions", "O2L_CONTROL_FLOW_EXCEPTIONS",
     "--control-flow-exceptions", KIND_LIST, OFF(control_flow_exceptions), 0, 0,
     NULL, "exception names that are not errors (comma-separated)"},
    {"mapping.trace_id_attribute", "O2L_TRACE_ID_ATTRIBUTE",
     "--trace-id-attribute", KIND_STRING, OFF(trace_id_attribute), 0, 0, NULL,
     "span attribute holding a custom Langfuse trace id"},
    {"mapping.max_flattened_slots", "O2L_MAX_FLATTENED_SLOTS",
     "--max-flattened-slots", KIND_UINT, OFF(max_flattened_slots), 1, 10000000,
     NULL, "array slots one span may rebuild from flattened keys"},
    {"mapping.thread_id_keys", "O2L_THREAD_ID_KEYS", "--thread-id-keys",
     KIND_LIST, OFF(thread_id_keys), 0, 0, NULL,
     "lifted metadata keys read as the LangGraph thread id, the last "
     "session source (comma-separated)"},
    {"mapping.non_llm_spans", "O2L_NON_LLM_SPANS", "--non-llm-spans",
     KIND_STRING, OFF(non_llm_spans), 0, 0, check_non_llm,
     "keep, or drop spans that are not LLM-related (see mapping.llm_scopes "
     "and mapping.llm_key_prefixes)"},
    {"mapping.llm_scopes", "O2L_LLM_SCOPES", "--llm-scopes", KIND_LIST,
     OFF(llm_scopes), 0, 0, NULL,
     "scope name prefixes of LLM instrumentations (comma-separated)"},
    {"mapping.llm_key_prefixes", "O2L_LLM_KEY_PREFIXES", "--llm-key-prefixes",
     KIND_LIST, OFF(llm_key_prefixes), 0, 0, NULL,
     "attribute key prefixes that make a span LLM-related "
     "(comma-separated)"},
    {"mapping.redact", "O2L_REDACT", "--redact", KIND_LIST, OFF(redact), 0, 0,
     NULL,
     "key names whose values are replaced in input, output and metadata "
     "(comma-separated; default none)"},
    {"mapping.redact_marker", "O2L_REDACT_MARKER", "--redact-marker",
     KIND_STRING, OFF(redact_marker), 0, 0, NULL,
     "what a redacted value becomes"},
};

static int set_string(char **slot, const char *value)
{
    char *copy = o2l_strdup(value);

    if (!copy) {
        return O2L_ENOMEM;
    }
    o2l_free(*slot);
    *slot = copy;
    return O2L_OK;
}

static void free_list(char **list)
{
    if (!list) {
        return;
    }
    for (size_t i = 0; list[i]; i++) {
        o2l_free(list[i]);
    }
    o2l_free(list);
}

/* Splits "a, b,c" into a NULL-terminated list of trimmed, non-empty names. */
static char **split_list(const char *value)
{
    size_t n = 1, count = 0;
    const char *p = value;
    char **list;

    for (; *p; p++) {
        n += (*p == ',');
    }
    list = o2l_calloc(n + 1, sizeof(*list));
    if (!list) {
        return NULL;
    }
    p = value;
    while (*p) {
        const char *start, *end;

        while (*p == ' ' || *p == '\t' || *p == ',') {
            p++;
        }
        start = p;
        while (*p && *p != ',') {
            p++;
        }
        end = p;
        while (end > start && (end[-1] == ' ' || end[-1] == '\t')) {
            end--;
        }
        if (end > start) {
            list[count] = o2l_strndup(start, (size_t)(end - start));
            if (!list[count]) {
                free_list(list);
                return NULL;
            }
            count++;
        }
    }
    return list;
}

/* Copies a NULL-terminated list (NULL is an empty one). */
static char **dup_list(const char *const *src)
{
    size_t n = 0;
    char **list;

    while (src && src[n]) {
        n++;
    }
    list = o2l_calloc(n + 1, sizeof(*list));
    for (size_t i = 0; list && i < n; i++) {
        list[i] = o2l_strdup(src[i]);
        if (!list[i]) {
            free_list(list);
            return NULL;
        }
    }
    return list;
}

/* The mapping settings start from the map stage's own defaults. */
static int mapping_defaults(struct o2l_config *cfg)
{
    struct o2l_map_config mc;

    o2l_map_config_defaults(&mc);
    cfg->session_from_thread_id = mc.session_from_thread_id;
    cfg->max_flattened_slots = mc.max_flattened_slots;
    cfg->control_flow_exceptions = dup_list(mc.control_flow_exceptions);
    cfg->thread_id_keys = dup_list(mc.thread_id_keys);
    cfg->llm_scopes = dup_list(mc.llm_scopes);
    cfg->llm_key_prefixes = dup_list(mc.llm_key_prefixes);
    cfg->redact = dup_list(mc.redact);
    cfg->trace_id_attribute = o2l_strdup(mc.trace_id_attribute);
    cfg->redact_marker = o2l_strdup(mc.redact_marker);
    cfg->non_llm_spans = o2l_strdup(mc.drop_non_llm_spans ? "drop" : "keep");
    if (!cfg->control_flow_exceptions || !cfg->thread_id_keys ||
        !cfg->llm_scopes || !cfg->llm_key_prefixes || !cfg->redact ||
        !cfg->trace_id_attribute || !cfg->redact_marker ||
        !cfg->non_llm_spans) {
        return O2L_ENOMEM;
    }
    return O2L_OK;
}

static int apply(struct o2l_config *cfg, const struct setting *s,
                 const char *value, const char *origin, char *err,
                 size_t err_len)
{
    char *base = (char *)cfg;
    const char *why = NULL;

    if (s->check) {
        why = s->check(value);
    }
    if (!why && s->kind == KIND_UINT) {
        char *end = NULL;
        unsigned long long v;

        errno = 0;
        v = strtoull(value, &end, 10);
        if (errno != 0 || !end || *end != '\0' || end == value ||
            value[0] == '-') {
            why = "must be a whole number";
        } else if (v < s->min || v > s->max) {
            snprintf(err, err_len,
                     "setting %s (%s): %s is out of range %llu..%llu", s->yaml,
                     origin, value, (unsigned long long)s->min,
                     (unsigned long long)s->max);
            return O2L_EINVAL;
        } else {
            *(uint64_t *)(void *)(base + s->offset) = v;
            return O2L_OK;
        }
    }
    if (!why && s->kind == KIND_DOUBLE) {
        char *end = NULL;
        double v;

        errno = 0;
        v = strtod(value, &end);
        if (errno != 0 || !end || *end != '\0' || end == value || v != v) {
            why = "must be a number";
        } else if (v < (double)s->min || v > (double)s->max) {
            snprintf(err, err_len,
                     "setting %s (%s): %s is out of range %llu..%llu", s->yaml,
                     origin, value, (unsigned long long)s->min,
                     (unsigned long long)s->max);
            return O2L_EINVAL;
        } else {
            *(double *)(void *)(base + s->offset) = v;
            return O2L_OK;
        }
    }
    if (!why && s->kind == KIND_BOOL) {
        bool *slot = (bool *)(void *)(base + s->offset);

        if (strcasecmp(value, "true") == 0 || strcmp(value, "1") == 0 ||
            strcasecmp(value, "yes") == 0 || strcasecmp(value, "on") == 0) {
            *slot = true;
            return O2L_OK;
        }
        if (strcasecmp(value, "false") == 0 || strcmp(value, "0") == 0 ||
            strcasecmp(value, "no") == 0 || strcasecmp(value, "off") == 0) {
            *slot = false;
            return O2L_OK;
        }
        why = "must be true or false";
    }
    if (why && (s->offset == OFF(base_url) || s->offset == OFF(secret_key))) {
        /* These may hold a password or a key: name them, never echo. */
        snprintf(err, err_len, "setting %s (%s): the value %s", s->yaml, origin,
                 why);
        return O2L_EINVAL;
    }
    if (why) {
        snprintf(err, err_len, "setting %s (%s): \"%s\" %s", s->yaml, origin,
                 value, why);
        return O2L_EINVAL;
    }
    if (s->kind == KIND_LIST) {
        char ***slot = (char ***)(void *)(base + s->offset);
        char **list = split_list(value);

        if (!list) {
            return O2L_ENOMEM;
        }
        free_list(*slot);
        *slot = list;
        return O2L_OK;
    }
    return set_string((char **)(void *)(base + s->offset), value);
}

int o2l_config_defaults(struct o2l_config *cfg)
{
    static const char *const strings[][2] = {
        {"output", "auto"},
        {"receivers.http.listen", "0.0.0.0:4318"},
        {"receivers.grpc.listen", "0.0.0.0:4317"},
        {"export.file_sink", "otel2langfuse-events.jsonl"},
        {"spool.dir", "otel2langfuse-spool"},
        {"admin.listen", "127.0.0.1:13133"},
        {"log.level", "info"},
    };
    struct o2l_exporter_config ec;
    char err[256];

    memset(cfg, 0, sizeof(*cfg));
    cfg->http_max_body_bytes = 64 * MIB;
    cfg->grpc_max_message_bytes = 4 * MIB;
    /* The exporter owns its defaults; the settings start from them. */
    o2l_exporter_config_defaults(&ec);
    cfg->flush_interval_ms = ec.flush_interval_ms;
    cfg->batch_max_events = ec.batch_max_events;
    cfg->batch_max_bytes = ec.batch_max_bytes;
    cfg->queue_max_events = ec.queue_max_events;
    cfg->queue_max_bytes = ec.queue_max_bytes;
    cfg->request_timeout_ms = ec.request_timeout_ms;
    cfg->retry_initial_ms = ec.retry_initial_ms;
    cfg->retry_max_ms = ec.retry_max_ms;
    cfg->shutdown_timeout_ms = ec.shutdown_timeout_ms;
    cfg->retry_multiplier = ec.retry_multiplier;
    cfg->auth_retry_ms = ec.auth_retry_ms;
    cfg->spool_max_bytes = 1024 * MIB;
    cfg->spool_sync = true;
    cfg->otlp_keep_attributes = true;
    {
        struct o2l_assemble_config ac;

        o2l_assemble_config_defaults(&ac);
        cfg->assemble_window_ms = ac.window_ms;
        cfg->assemble_root_grace_ms = ac.root_grace_ms;
        cfg->assemble_max_traces = ac.max_traces;
        cfg->assemble_max_bytes = ac.max_bytes;
    }
    if (mapping_defaults(cfg) != O2L_OK) {
        return O2L_ENOMEM;
    }
    for (size_t i = 0; i < O2L_ARRAY_LEN(strings); i++) {
        for (size_t j = 0; j < O2L_ARRAY_LEN(settings); j++) {
            if (strcmp(settings[j].yaml, strings[i][0]) == 0 &&
                apply(cfg, &settings[j], strings[i][1], "default", err,
                      sizeof(err)) != O2L_OK) {
                return O2L_ENOMEM;
            }
        }
    }
    return O2L_OK;
}

static const struct setting *find_yaml(const char *path)
{
    for (size_t i = 0; i < O2L_ARRAY_LEN(settings); i++) {
        if (strcmp(settings[i].yaml, path) == 0) {
            return &settings[i];
        }
    }
    return NULL;
}

/* An empty value, ~ or null, written without quotes. */
static bool is_yaml_null(const yaml_node_t *v)
{
    const char *s = (const char *)v->data.scalar.value;

    if (v->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) {
        return false;
    }
    return v->data.scalar.length == 0 || strcmp(s, "~") == 0 ||
           strcmp(s, "null") == 0 || strcmp(s, "Null") == 0 ||
           strcmp(s, "NULL") == 0;
}

/* True when |path| is a group of settings, like "langfuse". */
static bool is_section(const char *path)
{
    size_t n = strlen(path);

    for (size_t i = 0; i < O2L_ARRAY_LEN(settings); i++) {
        if (strncmp(settings[i].yaml, path, n) == 0 &&
            settings[i].yaml[n] == '.') {
            return true;
        }
    }
    return false;
}

/* Joins a YAML sequence of scalars with commas, for list settings. */
static int join_sequence(yaml_document_t *doc, yaml_node_t *seq, char *buf,
                         size_t buf_len)
{
    size_t used = 0;

    buf[0] = '\0';
    for (yaml_node_item_t *it = seq->data.sequence.items.start;
         it < seq->data.sequence.items.top; it++) {
        yaml_node_t *item = yaml_document_get_node(doc, *it);
        int n;

        if (!item || item->type != YAML_SCALAR_NODE) {
            return O2L_EINVAL;
        }
        n = snprintf(buf + used, buf_len - used, "%s%s", used ? "," : "",
                     (const char *)item->data.scalar.value);
        if (n < 0 || (size_t)n >= buf_len - used) {
            return O2L_EINVAL;
        }
        used += (size_t)n;
    }
    return O2L_OK;
}

static int yaml_walk(struct o2l_config *cfg, yaml_document_t *doc,
                     yaml_node_t *map, const char *prefix, const char *file,
                     char *err, size_t err_len)
{
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start;
         p < map->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(doc, p->key);
        yaml_node_t *v = yaml_document_get_node(doc, p->value);
        char path[256], origin[300], joined[4096];
        const struct setting *s;
        int rc;

        if (!k || !v || k->type != YAML_SCALAR_NODE) {
            snprintf(err, err_len, "config %s: keys must be plain names", file);
            return O2L_EINVAL;
        }
        snprintf(path, sizeof(path), "%s%s%s", prefix, *prefix ? "." : "",
                 (const char *)k->data.scalar.value);
        if (v->type == YAML_SCALAR_NODE && is_yaml_null(v) &&
            (find_yaml(path) || is_section(path))) {
            /* "langfuse:" with only comments below it: nothing to set. */
            continue;
        }
        if (v->type == YAML_MAPPING_NODE) {
            rc = yaml_walk(cfg, doc, v, path, file, err, err_len);
            if (rc != O2L_OK) {
                return rc;
            }
            continue;
        }
        s = find_yaml(path);
        if (!s) {
            snprintf(err, err_len, "config %s line %zu: unknown setting %s",
                     file, k->start_mark.line + 1, path);
            return O2L_EINVAL;
        }
        snprintf(origin, sizeof(origin), "%s line %zu", file,
                 v->start_mark.line + 1);
        if (v->type == YAML_SEQUENCE_NODE && s->kind == KIND_LIST) {
            if (join_sequence(doc, v, joined, sizeof(joined)) != O2L_OK) {
                snprintf(err, err_len,
                         "setting %s (%s): must be a list of "
                         "names",
                         path, origin);
                return O2L_EINVAL;
            }
            rc = apply(cfg, s, joined, origin, err, err_len);
        } else if (v->type == YAML_SCALAR_NODE) {
            rc = apply(cfg, s, (const char *)v->data.scalar.value, origin, err,
                       err_len);
        } else {
            snprintf(err, err_len, "setting %s (%s): must be a single value",
                     path, origin);
            rc = O2L_EINVAL;
        }
        if (rc != O2L_OK) {
            return rc;
        }
    }
    return O2L_OK;
}

static int load_yaml(struct o2l_config *cfg, const char *file, char *err,
                     size_t err_len)
{
    yaml_parser_t parser;
    yaml_document_t doc;
    yaml_node_t *root;
    FILE *f;
    int rc = O2L_OK;

    f = fopen(file, "rb");
    if (!f) {
        snprintf(err, err_len, "config %s: cannot open: %s", file,
                 strerror(errno));
        return O2L_EINVAL;
    }
    if (!yaml_parser_initialize(&parser)) {
        fclose(f);
        return O2L_ENOMEM;
    }
    yaml_parser_set_input_file(&parser, f);
    if (!yaml_parser_load(&parser, &doc)) {
        snprintf(err, err_len, "config %s line %zu: %s", file,
                 parser.problem_mark.line + 1,
                 parser.problem ? parser.problem : "invalid YAML");
        yaml_parser_delete(&parser);
        fclose(f);
        return O2L_EINVAL;
    }
    root = yaml_document_get_root_node(&doc);
    if (root && root->type == YAML_MAPPING_NODE) {
        rc = yaml_walk(cfg, &doc, root, "", file, err, err_len);
    } else if (root && !(root->type == YAML_SCALAR_NODE &&
                         root->data.scalar.length == 0)) {
        snprintf(err, err_len, "config %s: the top level must be a mapping",
                 file);
        rc = O2L_EINVAL;
    }
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    fclose(f);
    return rc;
}

static const char *env_get(char **envp, const char *name)
{
    size_t n = strlen(name);

    for (size_t i = 0; envp && envp[i]; i++) {
        if (strncmp(envp[i], name, n) == 0 && envp[i][n] == '=') {
            return envp[i] + n + 1;
        }
    }
    return NULL;
}

static int load_env(struct o2l_config *cfg, char **envp, char *err,
                    size_t err_len)
{
    const char *host = env_get(envp, "LANGFUSE_HOST");
    char origin[64];
    int rc;

    /* The Langfuse SDKs' older name, used when the newer one is absent. */
    if (host && *host && !env_get(envp, "LANGFUSE_BASE_URL")) {
        rc = apply(cfg, find_yaml("langfuse.base_url"), host,
                   "environment LANGFUSE_HOST", err, err_len);
        if (rc != O2L_OK) {
            return rc;
        }
    }
    for (size_t i = 0; i < O2L_ARRAY_LEN(settings); i++) {
        const char *v = env_get(envp, settings[i].env);

        /* Empty is unset, except where it is a value of its own. */
        if (!v || (!*v && settings[i].check != check_listen_or_off)) {
            continue;
        }
        snprintf(origin, sizeof(origin), "environment %s", settings[i].env);
        rc = apply(cfg, &settings[i], v, origin, err, err_len);
        if (rc != O2L_OK) {
            return rc;
        }
    }
    return O2L_OK;
}

/* Matches "--flag value" and "--flag=value"; returns the value or NULL. */
static const char *flag_value(int argc, char **argv, int *i, const char *flag)
{
    size_t n = strlen(flag);

    if (strncmp(argv[*i], flag, n) != 0) {
        return NULL;
    }
    if (argv[*i][n] == '=') {
        return argv[*i] + n + 1;
    }
    if (argv[*i][n] == '\0' && *i + 1 < argc) {
        (*i)++;
        return argv[*i];
    }
    return NULL;
}

int o2l_config_load(struct o2l_config *cfg, int argc, char **argv, char **envp,
                    int *rest, int *n_rest, char *err, size_t err_len)
{
    const char *file = env_get(envp, "O2L_CONFIG");
    int rc;

    /* The file comes first, whatever the position of --config. */
    for (int i = 0; i < argc; i++) {
        const char *v = flag_value(argc, argv, &i, "--config");

        if (v) {
            file = v;
        }
    }
    if (file && *file) {
        rc = set_string(&cfg->config_file, file);
        if (rc == O2L_OK) {
            rc = load_yaml(cfg, file, err, err_len);
        }
        if (rc != O2L_OK) {
            return rc;
        }
    }
    rc = load_env(cfg, envp, err, err_len);
    if (rc != O2L_OK) {
        return rc;
    }

    *n_rest = 0;
    for (int i = 0; i < argc; i++) {
        const char *v = NULL;
        const struct setting *s = NULL;
        char origin[96];
        int start = i;

        if (flag_value(argc, argv, &i, "--config")) {
            continue;
        }
        for (size_t j = 0; j < O2L_ARRAY_LEN(settings) && !v; j++) {
            i = start;
            v = flag_value(argc, argv, &i, settings[j].flag);
            s = &settings[j];
        }
        if (!v) {
            i = start;
            for (size_t j = 0; j < O2L_ARRAY_LEN(settings); j++) {
                if (strcmp(argv[i], settings[j].flag) == 0) {
                    snprintf(err, err_len,
                             "setting %s (flag %s): needs a "
                             "value",
                             settings[j].yaml, settings[j].flag);
                    return O2L_EINVAL;
                }
            }
            rest[(*n_rest)++] = i;
            continue;
        }
        snprintf(origin, sizeof(origin), "flag %s", s->flag);
        rc = apply(cfg, s, v, origin, err, err_len);
        if (rc != O2L_OK) {
            return rc;
        }
    }
    return O2L_OK;
}

int o2l_config_validate(const struct o2l_config *cfg, char *err, size_t err_len)
{
    bool has_pk = cfg->public_key && *cfg->public_key;
    bool has_sk = cfg->secret_key && *cfg->secret_key;

    if (has_pk != has_sk) {
        snprintf(err, err_len,
                 "setting %s: set both langfuse.public_key and "
                 "langfuse.secret_key, or neither",
                 has_pk ? "langfuse.secret_key" : "langfuse.public_key");
        return O2L_EINVAL;
    }
    if (has_pk && !(cfg->base_url && *cfg->base_url)) {
        snprintf(err, err_len,
                 "setting langfuse.base_url: required with credentials "
                 "(LANGFUSE_BASE_URL or LANGFUSE_HOST)");
        return O2L_EINVAL;
    }
    if ((cfg->tls_cert_file && *cfg->tls_cert_file) !=
        (cfg->tls_key_file && *cfg->tls_key_file)) {
        snprintf(err, err_len,
                 "setting %s: set both receivers.tls.cert_file and "
                 "receivers.tls.key_file, or neither",
                 cfg->tls_cert_file && *cfg->tls_cert_file
                     ? "receivers.tls.key_file"
                     : "receivers.tls.cert_file");
        return O2L_EINVAL;
    }
    if (cfg->retry_initial_ms > cfg->retry_max_ms) {
        snprintf(err, err_len,
                 "setting export.retry_initial_ms: larger "
                 "than export.retry_max_ms");
        return O2L_EINVAL;
    }
    if (cfg->non_llm_spans && strcmp(cfg->non_llm_spans, "drop") == 0 &&
        !(cfg->llm_scopes && cfg->llm_scopes[0]) &&
        !(cfg->llm_key_prefixes && cfg->llm_key_prefixes[0])) {
        snprintf(err, err_len,
                 "setting mapping.non_llm_spans: drop needs "
                 "mapping.llm_scopes or mapping.llm_key_prefixes, else "
                 "every span is dropped");
        return O2L_EINVAL;
    }
    return O2L_OK;
}

void o2l_config_print_help(FILE *out)
{
    fprintf(out, "Settings (flag, environment variable, YAML key):\n");
    for (size_t i = 0; i < O2L_ARRAY_LEN(settings); i++) {
        fprintf(out, "  %-28s %-28s %s\n      %s\n", settings[i].flag,
                settings[i].env, settings[i].yaml, settings[i].help);
    }
    fprintf(out, "  %-28s %-28s\n      %s\n", "--config FILE", "O2L_CONFIG",
            "YAML file read before the environment and the flags");
}

static size_t list_len(char *const *list)
{
    size_t n = 0;

    while (list && list[n]) {
        n++;
    }
    return n;
}

/* Copies |url| without a user:password@ part, which may hold secrets. */
static const char *url_for_log(const char *url, char *buf, size_t len)
{
    const char *scheme = strstr(url, "://");
    const char *host = scheme ? scheme + 3 : url;
    size_t authority = strcspn(host, "/?#");
    const char *at = NULL;

    /* The last '@' of the authority ends the user part ("u:p@ss@host"). */
    for (size_t i = 0; i < authority; i++) {
        if (host[i] == '@') {
            at = host + i;
        }
    }
    if (!at) {
        return url;
    }
    snprintf(buf, len, "%.*s***@%s", (int)(host - url), url, at + 1);
    return buf;
}

void o2l_config_log(const struct o2l_config *cfg, const struct o2l_log *log)
{
    bool creds = cfg->public_key && *cfg->public_key;
    char url[512];

    o2l_log_info(log, "config",
                 "output=%s http=%s grpc=%s tls=%s langfuse=%s public_key=%s "
                 "flush_interval_ms=%llu batch_max_events=%llu "
                 "queue_max_events=%llu spool=%s spool_max_bytes=%llu "
                 "sync=%s admin=%s config_file=%s",
                 cfg->output, cfg->http_listen,
                 *cfg->grpc_listen ? cfg->grpc_listen : "off",
                 cfg->tls_cert_file && *cfg->tls_cert_file ? cfg->tls_cert_file
                                                           : "off",
                 creds ? url_for_log(cfg->base_url, url, sizeof(url))
                       : "(none: file sink)",
                 creds ? cfg->public_key : "(none)",
                 (unsigned long long)cfg->flush_interval_ms,
                 (unsigned long long)cfg->batch_max_events,
                 (unsigned long long)cfg->queue_max_events, cfg->spool_dir,
                 (unsigned long long)cfg->spool_max_bytes,
                 cfg->spool_sync ? "on" : "off",
                 *cfg->admin_listen ? cfg->admin_listen : "off",
                 cfg->config_file ? cfg->config_file : "(none)");
    o2l_log_info(log, "config",
                 "mapping non_llm_spans=%s session_from_thread_id=%s "
                 "redact_keys=%zu",
                 cfg->non_llm_spans, cfg->session_from_thread_id ? "on" : "off",
                 list_len(cfg->redact));
}

void o2l_config_free(struct o2l_config *cfg)
{
    if (!cfg) {
        return;
    }
    for (size_t i = 0; i < O2L_ARRAY_LEN(settings); i++) {
        void *slot = (char *)cfg + settings[i].offset;

        if (settings[i].kind == KIND_STRING) {
            o2l_free(*(char **)slot);
            *(char **)slot = NULL;
        } else if (settings[i].kind == KIND_LIST) {
            free_list(*(char ***)slot);
            *(char ***)slot = NULL;
        }
    }
    o2l_free(cfg->config_file);
    cfg->config_file = NULL;
}
