/* SPDX-License-Identifier: Apache-2.0 */
/*
 * exporter.c - the export stage: a bounded queue of events and a worker
 * thread that ships them in batches to one of Langfuse's two APIs, POST
 * /api/public/ingestion (JSON) or POST /api/public/otel/v1/traces (gzipped
 * OTLP protobuf), or appends them to a JSON-lines file when no Langfuse is
 * configured. Queueing, retries, splitting and dead-lettering are shared;
 * what differs per API is described by a struct output_ops.
 */
#include "o2l/exporter.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <zlib.h>

#include "o2l/common.h"
#include "o2l/encode_otlp.h"
#include "opentelemetry/proto/collector/trace/v1/trace_service.pb-c.h"

#define COMPONENT "exporter"

/* Ingestion answers are small; a bigger one is cut and fails to parse. */
#define RESPONSE_MAX_BYTES (16u * 1024u * 1024u)

/* Rejection messages are logged, so keep them to a readable size. */
#define LOG_MESSAGE_MAX 300

/* Langfuse's answer kept with a dead-lettered event, at most. */
#define DEAD_MESSAGE_MAX 2000

/* Sanity cap on a server's Retry-After hint. */
#define RETRY_AFTER_CAP_MS (10u * 60u * 1000u)

/*
 * OTLP requests stay under this many bytes as sent (gzipped): a batch
 * whose body comes out larger is split before it goes.
 */
#define OTLP_BODY_MAX_BYTES (4u * 1000u * 1000u)

/* Whole-request HTTP answers the worker tells apart. */
enum http_status {
    HTTP_OK = 200,
    HTTP_CREATED = 201,
    HTTP_MULTI_STATUS = 207,
    HTTP_BAD_REQUEST = 400,
    HTTP_UNAUTHORIZED = 401,
    HTTP_FORBIDDEN = 403,
    HTTP_NOT_FOUND = 404,
    HTTP_METHOD_NOT_ALLOWED = 405,
    HTTP_REQUEST_TIMEOUT = 408,
    HTTP_PAYLOAD_TOO_LARGE = 413,
    HTTP_TOO_MANY_REQUESTS = 429,
    HTTP_SERVER_ERROR = 500
};

/* One queued event and when it entered the queue (monotonic ms). */
struct slot {
    struct o2l_event ev;
    uint64_t queued_ms;
};

/* Ring buffer of slots; grows, never shrinks. */
struct ring {
    struct slot *s;
    size_t cap;
    size_t head;
    size_t len;
};

struct response {
    char *body;
    size_t len;
    size_t cap;
    char retry_after[64];
};

/*
 * What one Langfuse API needs from the shared delivery code: where to
 * post, the fixed headers, how big a batch is, how to build its body and
 * how to read a 2xx answer.
 */
struct output_ops {
    const char *name; /* in logs and configuration errors */
    const char *path; /* appended to the base URL */
    const char *const *headers;
    size_t n_headers;
    size_t empty_bytes;    /* a request without events */
    size_t body_max_bytes; /* built bodies over this are split; 0: none */
    /* Bytes event |ev| adds as the |index|-th of a request. */
    size_t (*event_bytes)(const struct o2l_event *ev, size_t index);
    /* Builds the request body for |n| events (o2l_malloc'd). */
    int (*build_body)(const struct slot *slots, size_t n, char **body,
                      size_t *body_len);
    /* Settles the events of a request Langfuse answered with 2xx. */
    void (*answered)(struct o2l_exporter *ex, uint64_t seq, struct slot *slots,
                     size_t n, long status, const struct response *r);
};

struct o2l_exporter {
    struct o2l_exporter_config cfg; /* strings below are our copies */
    const struct output_ops *ops;   /* the API (also sizes file batches) */
    char *base_url;
    char *public_key;
    char *secret_key;
    char *file_path;
    char *url;
    const struct o2l_log *log;

    pthread_mutex_t mu;
    pthread_cond_t cv;      /* wakes the worker */
    pthread_cond_t room_cv; /* wakes submitters waiting for room */
    pthread_t thread;
    int started;
    int joined;
    int stopping;
    int halting; /* stopping without sending another request */
    struct ring q;
    size_t q_bytes;
    struct o2l_exporter_stats st;

    /* Worker-only state. */
    CURL *curl;
    struct curl_slist *headers;
    int curl_inited;
    FILE *file;
    uint64_t retry_at_ms; /* no request before this (backoff) */
    unsigned attempt;     /* consecutive failures, for backoff */
    uint64_t last_auth_log_ms;
    int auth_logged;
    uint64_t batch_seq;
    unsigned rand_state;

    /* Read by libcurl's progress callback without the lock. */
    _Atomic uint64_t abort_at_ms; /* 0: no deadline */
};

void o2l_exporter_config_defaults(struct o2l_exporter_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->flush_interval_ms = 1000;
    cfg->batch_max_events = 500;
    cfg->batch_max_bytes = 3500000;
    cfg->queue_max_events = 100000;
    cfg->queue_max_bytes = (size_t)128 * 1024 * 1024;
    cfg->request_timeout_ms = 30000;
    cfg->retry_initial_ms = 500;
    cfg->retry_max_ms = 30000;
    cfg->retry_multiplier = 2.0;
    cfg->auth_retry_ms = 30000;
    cfg->shutdown_timeout_ms = 10000;
}

/* ---- queue ---------------------------------------------------------- */

static int ring_reserve(struct ring *r, size_t more)
{
    struct slot *s;
    size_t cap;

    if (r->len + more <= r->cap) {
        return O2L_OK;
    }
    cap = r->cap ? r->cap : 64;
    while (cap < r->len + more) {
        cap *= 2;
    }
    s = o2l_malloc(cap * sizeof(*s));
    if (!s) {
        return O2L_ENOMEM;
    }
    /* Unwrap the old contents to the start of the new array. */
    for (size_t i = 0; i < r->len; i++) {
        s[i] = r->s[(r->head + i) % r->cap];
    }
    o2l_free(r->s);
    r->s = s;
    r->cap = cap;
    r->head = 0;
    return O2L_OK;
}

static struct slot *ring_at(struct ring *r, size_t i)
{
    return &r->s[(r->head + i) % r->cap];
}

/* Callers reserve first. */
static void ring_push_back(struct ring *r, const struct slot *sl)
{
    r->s[(r->head + r->len) % r->cap] = *sl;
    r->len++;
}

static void ring_push_front(struct ring *r, const struct slot *sl)
{
    r->head = (r->head + r->cap - 1) % r->cap;
    r->s[r->head] = *sl;
    r->len++;
}

static struct slot ring_pop_front(struct ring *r)
{
    struct slot sl = r->s[r->head];

    r->head = (r->head + 1) % r->cap;
    r->len--;
    return sl;
}

/* ---- lifetime ------------------------------------------------------- */

static char *dup_or_null(const char *s)
{
    return s ? o2l_strdup(s) : NULL;
}

static int use_http(const struct o2l_exporter *ex)
{
    return ex->base_url && ex->base_url[0] && ex->public_key &&
           ex->public_key[0];
}

static int build_url(struct o2l_exporter *ex)
{
    const char *path = ex->ops->path;
    size_t n = strlen(ex->base_url);
    size_t path_len = strlen(path);

    while (n > 0 && ex->base_url[n - 1] == '/') {
        n--;
    }
    ex->url = o2l_malloc(n + path_len + 1);
    if (!ex->url) {
        return O2L_ENOMEM;
    }
    memcpy(ex->url, ex->base_url, n);
    memcpy(ex->url + n, path, path_len + 1);
    return O2L_OK;
}

static int init_sync(struct o2l_exporter *ex)
{
    pthread_condattr_t attr;
    int rc;

    if (pthread_condattr_init(&attr) != 0) {
        return O2L_ENOMEM;
    }
    /* Deadlines are monotonic: wall-clock jumps must not stall batches. */
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    rc = pthread_cond_init(&ex->cv, &attr);
    if (rc == 0) {
        rc = pthread_cond_init(&ex->room_cv, &attr);
        if (rc != 0) {
            pthread_cond_destroy(&ex->cv);
        }
    }
    pthread_condattr_destroy(&attr);
    if (rc != 0) {
        return O2L_ENOMEM;
    }
    if (pthread_mutex_init(&ex->mu, NULL) != 0) {
        pthread_cond_destroy(&ex->cv);
        pthread_cond_destroy(&ex->room_cv);
        return O2L_ENOMEM;
    }
    return O2L_OK;
}

static void free_strings(struct o2l_exporter *ex)
{
    o2l_free(ex->base_url);
    o2l_free(ex->public_key);
    o2l_free(ex->secret_key);
    o2l_free(ex->file_path);
    o2l_free(ex->url);
}

static int copy_config(struct o2l_exporter *ex,
                       const struct o2l_exporter_config *cfg)
{
    ex->cfg = *cfg;
    ex->base_url = dup_or_null(cfg->base_url);
    ex->public_key = dup_or_null(cfg->public_key);
    ex->secret_key = dup_or_null(cfg->secret_key ? cfg->secret_key : "");
    ex->file_path = dup_or_null(cfg->file_path);
    if ((cfg->base_url && !ex->base_url) ||
        (cfg->public_key && !ex->public_key) || !ex->secret_key ||
        (cfg->file_path && !ex->file_path)) {
        return O2L_ENOMEM;
    }
    ex->cfg.base_url = ex->base_url;
    ex->cfg.public_key = ex->public_key;
    ex->cfg.secret_key = NULL; /* only ex->secret_key holds it */
    ex->cfg.file_path = ex->file_path;

    /* Zero sizes would stall or spin the worker. */
    if (ex->cfg.batch_max_events == 0) {
        ex->cfg.batch_max_events = 1;
    }
    if (ex->cfg.retry_initial_ms == 0) {
        ex->cfg.retry_initial_ms = 1;
    }
    if (ex->cfg.retry_max_ms < ex->cfg.retry_initial_ms) {
        ex->cfg.retry_max_ms = ex->cfg.retry_initial_ms;
    }
    /* Also catches NaN: a shrinking backoff would hammer Langfuse. */
    if (!(ex->cfg.retry_multiplier >= 1.0)) {
        ex->cfg.retry_multiplier = 1.0;
    }
    return O2L_OK;
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *ud);
static size_t on_header(char *data, size_t size, size_t nmemb, void *ud);
static int on_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow,
                       curl_off_t ultotal, curl_off_t ulnow);
static const struct output_ops *ops_for(enum o2l_output output);

static int setup_curl(struct o2l_exporter *ex)
{
    const char *const *fixed = ex->ops->headers;
    CURLcode cc = CURLE_OK;

    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        return O2L_EIO;
    }
    ex->curl_inited = 1;
    ex->curl = curl_easy_init();
    if (!ex->curl) {
        return O2L_EIO;
    }
    for (size_t i = 0; i < ex->ops->n_headers; i++) {
        struct curl_slist *l = curl_slist_append(ex->headers, fixed[i]);

        if (!l) {
            return O2L_ENOMEM;
        }
        ex->headers = l;
    }

    /* Options that stay the same for every request of the handle. */
    cc |= curl_easy_setopt(ex->curl, CURLOPT_URL, ex->url);
    cc |= curl_easy_setopt(ex->curl, CURLOPT_HTTPHEADER, ex->headers);
    cc |= curl_easy_setopt(ex->curl, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
    cc |= curl_easy_setopt(ex->curl, CURLOPT_USERNAME, ex->public_key);
    cc |= curl_easy_setopt(ex->curl, CURLOPT_PASSWORD, ex->secret_key);
    cc |= curl_easy_setopt(ex->curl, CURLOPT_NOSIGNAL, 1L);
    cc |= curl_easy_setopt(ex->curl, CURLOPT_TIMEOUT_MS,
                           (long)ex->cfg.request_timeout_ms);
    cc |= curl_easy_setopt(ex->curl, CURLOPT_WRITEFUNCTION, on_body);
    cc |= curl_easy_setopt(ex->curl, CURLOPT_HEADERFUNCTION, on_header);
    cc |= curl_easy_setopt(ex->curl, CURLOPT_XFERINFOFUNCTION, on_progress);
    cc |= curl_easy_setopt(ex->curl, CURLOPT_XFERINFODATA, ex);
    cc |= curl_easy_setopt(ex->curl, CURLOPT_NOPROGRESS, 0L);
    cc |= curl_easy_setopt(ex->curl, CURLOPT_TCP_KEEPALIVE, 1L);
    /*
     * Redirects are not followed: credentials would not go to another
     * host or port, and a moved Langfuse is a setting to fix. A 3xx is
     * reported as a configuration error naming where it points.
     */
    if (cc != CURLE_OK) {
        return O2L_EIO;
    }
    return O2L_OK;
}

struct o2l_exporter *o2l_exporter_create(const struct o2l_exporter_config *cfg,
                                         const struct o2l_log *log)
{
    struct o2l_exporter *ex;

    ex = o2l_calloc(1, sizeof(*ex));
    if (!ex) {
        return NULL;
    }
    if (init_sync(ex) != O2L_OK) {
        o2l_free(ex);
        return NULL;
    }
    ex->log = log;
    ex->rand_state = (unsigned)(o2l_now_ns() ^ (uintptr_t)ex);
    atomic_init(&ex->abort_at_ms, 0);

    if (copy_config(ex, cfg) != O2L_OK) {
        goto fail;
    }
    ex->ops = ops_for(ex->cfg.output);
    if (!ex->ops) {
        goto fail;
    }
    if (use_http(ex)) {
        if (build_url(ex) != O2L_OK || setup_curl(ex) != O2L_OK) {
            goto fail;
        }
    } else if (!ex->file_path || !ex->file_path[0]) {
        goto fail;
    }
    return ex;

fail:
    o2l_exporter_destroy(ex);
    return NULL;
}

/* ---- backoff -------------------------------------------------------- */

static unsigned next_rand(struct o2l_exporter *ex)
{
    /* xorshift32: enough to spread retries, no shared state. */
    unsigned x = ex->rand_state ? ex->rand_state : 0x9e3779b9u;

    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    ex->rand_state = x;
    return x;
}

/*
 * Schedules the next attempt after a failure. The ceiling grows from
 * retry_initial_ms by retry_multiplier per consecutive failure up to
 * retry_max_ms; the delay is drawn from the upper half of the ceiling,
 * so retries of many bridges spread out yet still back off. A server's
 * Retry-After hint is a floor. Returns the delay.
 */
static uint64_t backoff(struct o2l_exporter *ex, long long retry_after_ms)
{
    double ceiling = ex->cfg.retry_initial_ms;
    uint64_t cap;
    uint64_t delay;

    for (unsigned i = 0; i < ex->attempt && ceiling < ex->cfg.retry_max_ms;
         i++) {
        ceiling *= ex->cfg.retry_multiplier;
    }
    cap = ceiling >= ex->cfg.retry_max_ms ? ex->cfg.retry_max_ms
                                          : (uint64_t)ceiling;
    if (ex->attempt < 64) {
        ex->attempt++;
    }
    delay = cap - cap / 2 + next_rand(ex) % (cap / 2 + 1);
    if (retry_after_ms > 0) {
        if (retry_after_ms > RETRY_AFTER_CAP_MS) {
            retry_after_ms = RETRY_AFTER_CAP_MS;
        }
        if ((uint64_t)retry_after_ms > delay) {
            delay = (uint64_t)retry_after_ms;
        }
    }
    ex->retry_at_ms = o2l_mono_ms() + delay;
    return delay;
}

/* ---- worker: batches ------------------------------------------------ */

/*
 * Puts |n| events back at the front of the queue, in their order, so they
 * go out first once the backoff ends; |retried| of them count as retried.
 * Takes ownership of the events.
 */
static void put_back(struct o2l_exporter *ex, struct slot *slots, size_t n,
                     size_t retried)
{
    pthread_mutex_lock(&ex->mu);
    if (ring_reserve(&ex->q, n) != O2L_OK) {
        o2l_log_error(ex->log, COMPONENT,
                      "out of memory re-queueing events=%zu; dropped", n);
        for (size_t i = 0; i < n; i++) {
            o2l_event_free(&slots[i].ev);
        }
        ex->st.events_dropped += n;
        pthread_mutex_unlock(&ex->mu);
        return;
    }
    for (size_t i = n; i > 0; i--) {
        ring_push_front(&ex->q, &slots[i - 1]);
        ex->q_bytes += slots[i - 1].ev.len;
    }
    ex->st.events_retried += retried;
    pthread_mutex_unlock(&ex->mu);
}

static void requeue_front(struct o2l_exporter *ex, struct slot *slots, size_t n)
{
    put_back(ex, slots, n, n);
}

static void count(struct o2l_exporter *ex, uint64_t *counter, uint64_t n)
{
    pthread_mutex_lock(&ex->mu);
    *counter += n;
    pthread_mutex_unlock(&ex->mu);
}

static void free_slots(struct slot *slots, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        o2l_event_free(&slots[i].ev);
    }
}

/* Tells the owner |n| events were delivered, counts and frees them. */
static void settle_delivered(struct o2l_exporter *ex, struct slot *slots,
                             size_t n)
{
    struct o2l_settled *items;

    if (n == 0) {
        return;
    }
    if (ex->cfg.on_settle) {
        items = o2l_calloc(n, sizeof(*items));
        if (items) {
            for (size_t i = 0; i < n; i++) {
                items[i].ev = &slots[i].ev;
                items[i].kind = O2L_SETTLED_DELIVERED;
            }
            ex->cfg.on_settle(ex->cfg.settle_arg, items, n);
            o2l_free(items);
        } else {
            /* The owner keeps the request and sends it again later. */
            o2l_log_error(ex->log, COMPONENT,
                          "out of memory settling events=%zu; they will be "
                          "sent again",
                          n);
        }
    }
    count(ex, &ex->st.events_delivered, n);
    free_slots(slots, n);
}

/*
 * Hands events that will never be delivered to the owner (the dead-letter
 * file). |items| describes slots[0..n) in order. Frees and counts them on
 * success; when the owner cannot keep them they are queued again and
 * tried after a backoff, so nothing goes to nowhere.
 */
static bool settle_dead(struct o2l_exporter *ex, uint64_t seq,
                        struct slot *slots, struct o2l_settled *items, size_t n)
{
    size_t expired = 0;
    uint64_t delay;

    if (n == 0) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        items[i].ev = &slots[i].ev;
        expired += items[i].kind == O2L_SETTLED_EXPIRED;
    }
    if (ex->cfg.on_settle &&
        ex->cfg.on_settle(ex->cfg.settle_arg, items, n) != O2L_OK) {
        delay = backoff(ex, -1);
        o2l_log_error(ex->log, COMPONENT,
                      "batch=%llu cannot dead-letter events=%zu; kept, retry "
                      "in %llums",
                      (unsigned long long)seq, n, (unsigned long long)delay);
        requeue_front(ex, slots, n);
        return true;
    }
    pthread_mutex_lock(&ex->mu);
    ex->st.events_rejected += n - expired;
    ex->st.events_expired += expired;
    pthread_mutex_unlock(&ex->mu);
    free_slots(slots, n);
    return false;
}

static int write_file(struct o2l_exporter *ex, struct slot *slots, size_t n)
{
    if (!ex->file) {
        ex->file = fopen(ex->file_path, "a");
        if (!ex->file) {
            return O2L_EIO;
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (fwrite(slots[i].ev.json, 1, slots[i].ev.len, ex->file) !=
                slots[i].ev.len ||
            fputc('\n', ex->file) == EOF) {
            return O2L_EIO;
        }
    }
    /*
     * On disk before the spool forgets the request these came from. A
     * sink that cannot be synced (EINVAL: /dev/null, a pipe) has nothing
     * to make durable.
     */
    if (fflush(ex->file) != 0 ||
        (fsync(fileno(ex->file)) != 0 && errno != EINVAL)) {
        return O2L_EIO;
    }
    return O2L_OK;
}

static void send_file(struct o2l_exporter *ex, uint64_t seq, struct slot *slots,
                      size_t n)
{
    uint64_t delay;
    int err;

    if (write_file(ex, slots, n) == O2L_OK) {
        ex->attempt = 0;
        settle_delivered(ex, slots, n);
        o2l_log_debug(ex->log, COMPONENT, "batch=%llu wrote events=%zu",
                      (unsigned long long)seq, n);
        return;
    }

    /* A half-written batch is written again: lines are idempotent. */
    err = errno;
    if (ex->file) {
        fclose(ex->file);
        ex->file = NULL;
    }
    delay = backoff(ex, -1);
    o2l_log_warn(ex->log, COMPONENT,
                 "batch=%llu cannot write %s errno=%d; retry in %llums",
                 (unsigned long long)seq, ex->file_path, err,
                 (unsigned long long)delay);
    requeue_front(ex, slots, n);
}

/* ---- worker: HTTP --------------------------------------------------- */

static size_t on_body(char *data, size_t size, size_t nmemb, void *ud)
{
    struct response *r = ud;
    size_t n = size * nmemb;
    size_t keep = n;
    char *p;

    if (r->len + keep > RESPONSE_MAX_BYTES) {
        keep = RESPONSE_MAX_BYTES - r->len;
    }
    if (keep == 0) {
        return n;
    }
    if (r->len + keep + 1 > r->cap) {
        size_t cap = r->cap ? r->cap : 4096;

        while (cap < r->len + keep + 1) {
            cap *= 2;
        }
        p = o2l_realloc(r->body, cap);
        if (!p) {
            return 0; /* aborts the transfer; the batch is retried */
        }
        r->body = p;
        r->cap = cap;
    }
    memcpy(r->body + r->len, data, keep);
    r->len += keep;
    r->body[r->len] = '\0';
    return n;
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *ud)
{
    static const char name[] = "retry-after:";
    struct response *r = ud;
    size_t n = size * nmemb;
    size_t v;
    size_t end;

    if (n <= sizeof(name) - 1 ||
        strncasecmp(data, name, sizeof(name) - 1) != 0) {
        return n;
    }
    v = sizeof(name) - 1;
    while (v < n && (data[v] == ' ' || data[v] == '\t')) {
        v++;
    }
    end = n;
    while (end > v && (data[end - 1] == '\r' || data[end - 1] == '\n' ||
                       data[end - 1] == ' ')) {
        end--;
    }
    if (end - v >= sizeof(r->retry_after)) {
        end = v + sizeof(r->retry_after) - 1;
    }
    memcpy(r->retry_after, data + v, end - v);
    r->retry_after[end - v] = '\0';
    return n;
}

static int on_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow,
                       curl_off_t ultotal, curl_off_t ulnow)
{
    struct o2l_exporter *ex = ud;
    uint64_t deadline = atomic_load(&ex->abort_at_ms);

    (void)dltotal;
    (void)dlnow;
    (void)ultotal;
    (void)ulnow;
    /* Non-zero aborts the transfer: shutdown time is over. */
    return deadline != 0 && o2l_mono_ms() >= deadline;
}

/* Copies |s| into |out| with control characters made visible as '?'. */
static const char *log_safe(const char *s, char *out, size_t cap)
{
    size_t i;

    if (!s) {
        return "-";
    }
    for (i = 0; s[i] && i + 1 < cap; i++) {
        out[i] = (unsigned char)s[i] < 0x20 ? '?' : s[i];
    }
    out[i] = '\0';
    return out;
}

/* True for the event types Langfuse v4 still ingests: scores, SDK logs. */
static bool still_ingested(const struct o2l_event *ev)
{
    cJSON *doc = cJSON_ParseWithLength(ev->json, ev->len);
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(doc, "type");
    bool yes = false;

    if (cJSON_IsString(type)) {
        yes = strncmp(type->valuestring, "score", 5) == 0 ||
              strcmp(type->valuestring, "sdk-log") == 0;
    }
    cJSON_Delete(doc);
    return yes;
}

/*
 * Langfuse v4 keeps the ingestion API for scores and SDK logs; trace and
 * observation events get a per-event 400 saying their type is "not
 * accepted". True for such a refusal when the owner asked to hear of it.
 */
static bool type_refused(const struct o2l_exporter *ex,
                         const struct o2l_event *ev,
                         const struct o2l_event_result *res)
{
    if (!ex->cfg.on_type_refused || res->outcome != O2L_OUTCOME_REJECTED ||
        res->status != HTTP_BAD_REQUEST || !res->message ||
        !strcasestr(res->message, "not accepted")) {
        return false;
    }
    return !still_ingested(ev);
}

/*
 * Events refused for their type: sending them again cannot help and
 * dead-lettering would bury them, so they stay queued and delivery pauses
 * as after a configuration error while the owner moves to the OTLP
 * output. Called once per pause.
 */
static void pause_for_type(struct o2l_exporter *ex, uint64_t seq, size_t n)
{
    uint64_t until = o2l_mono_ms() + ex->cfg.auth_retry_ms;

    if (ex->retry_at_ms < until) {
        ex->retry_at_ms = until;
    }
    o2l_log_error(ex->log, COMPONENT,
                  "batch=%llu Langfuse refuses this event type on the "
                  "ingestion API (v4 or later) events=%zu; kept, retry in "
                  "%ums",
                  (unsigned long long)seq, n, ex->cfg.auth_retry_ms);
    ex->cfg.on_type_refused(ex->cfg.settle_arg);
}

/* How the events of one answered request were sorted. */
struct tally {
    size_t delivered;
    size_t rejected;
    size_t retry; /* per-event 5xx or 429: sent again after a backoff */
    size_t back;  /* the retried ones plus those refused for their type */
};

/*
 * The tail of handle_results(): the first t->back events of |back| go to
 * the front of the queue. |kept| says the dead-letter hand-over failed.
 */
static void finish_results(struct o2l_exporter *ex, uint64_t seq,
                           struct slot *back, const struct tally *t, bool kept)
{
    uint64_t delay;

    if (t->retry == 0) {
        if (!kept) {
            ex->attempt = 0; /* a failing dead-letter file backs off */
        }
        o2l_log_debug(ex->log, COMPONENT,
                      "batch=%llu sent delivered=%zu rejected=%zu kept=%zu",
                      (unsigned long long)seq, t->delivered, t->rejected,
                      t->back);
    } else {
        delay = backoff(ex, -1);
        o2l_log_warn(ex->log, COMPONENT,
                     "batch=%llu retry in %llums events=%zu delivered=%zu "
                     "rejected=%zu",
                     (unsigned long long)seq, (unsigned long long)delay,
                     t->retry, t->delivered, t->rejected);
    }
    if (t->back > 0) {
        put_back(ex, back, t->back, t->retry);
    }
    if (t->back > t->retry) {
        pause_for_type(ex, seq, t->back - t->retry);
    }
}

static void handle_results(struct o2l_exporter *ex, uint64_t seq,
                           struct slot *slots, size_t n,
                           struct o2l_event_result *res)
{
    struct slot *done = NULL;
    struct slot *dead = NULL;
    struct o2l_settled *why = NULL;
    struct tally t = {0};
    bool kept;
    uint64_t delay;
    char msg[LOG_MESSAGE_MAX];

    done = o2l_malloc(n * sizeof(*done));
    dead = o2l_malloc(n * sizeof(*dead));
    why = o2l_calloc(n, sizeof(*why));
    if (!done || !dead || !why) {
        /* Sending the whole batch again is safe: ids make it idempotent. */
        delay = backoff(ex, -1);
        o2l_log_error(ex->log, COMPONENT,
                      "batch=%llu out of memory reading results; retry in "
                      "%llums",
                      (unsigned long long)seq, (unsigned long long)delay);
        requeue_front(ex, slots, n);
        goto out;
    }

    /*
     * Sort the events by outcome, keeping their order within each. Those
     * to send again and those refused for their type both go back, in
     * their order, to the front of |slots|.
     */
    for (size_t i = 0; i < n; i++) {
        if (type_refused(ex, &slots[i].ev, &res[i])) {
            slots[t.back++] = slots[i];
            continue;
        }
        switch (res[i].outcome) {
        case O2L_OUTCOME_OK:
            done[t.delivered++] = slots[i];
            break;
        case O2L_OUTCOME_REJECTED:
            o2l_log_warn(ex->log, COMPONENT,
                         "batch=%llu event rejected id=%s status=%d "
                         "message=%s",
                         (unsigned long long)seq, slots[i].ev.id, res[i].status,
                         log_safe(res[i].message, msg, sizeof(msg)));
            why[t.rejected].kind = O2L_SETTLED_REJECTED;
            why[t.rejected].status = res[i].status;
            why[t.rejected].message = res[i].message;
            dead[t.rejected++] = slots[i];
            break;
        case O2L_OUTCOME_RETRY:
            slots[t.back++] = slots[i];
            t.retry++;
            break;
        }
    }
    settle_delivered(ex, done, t.delivered);
    kept = settle_dead(ex, seq, dead, why, t.rejected);
    finish_results(ex, seq, slots, &t, kept);

out:
    o2l_free(done);
    o2l_free(dead);
    o2l_free(why);
}

/* Performs one POST of |body|. Fills |r| and *status. */
static CURLcode post_body(struct o2l_exporter *ex, const char *body,
                          size_t body_len, struct response *r, long *status)
{
    CURLcode cc;

    *status = 0;
    curl_easy_setopt(ex->curl, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(ex->curl, CURLOPT_POSTFIELDSIZE_LARGE,
                     (curl_off_t)body_len);
    curl_easy_setopt(ex->curl, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(ex->curl, CURLOPT_HEADERDATA, r);
    cc = curl_easy_perform(ex->curl);
    if (cc == CURLE_OK) {
        curl_easy_getinfo(ex->curl, CURLINFO_RESPONSE_CODE, status);
    }
    /* The handle must not point at the body once the caller frees it. */
    curl_easy_setopt(ex->curl, CURLOPT_POSTFIELDS, NULL);
    return cc;
}

/*
 * Answers no retry soon can fix (bad keys, a wrong base URL, a redirect):
 * nothing is dropped, delivery pauses, and the operator is told once per
 * pause what to change.
 */
static void config_failed(struct o2l_exporter *ex, uint64_t seq, long status)
{
    uint64_t now = o2l_mono_ms();
    const char *loc = NULL;
    char why[160];

    if (status == HTTP_UNAUTHORIZED || status == HTTP_FORBIDDEN) {
        snprintf(why, sizeof(why), "Langfuse rejected the credentials");
    } else if (status >= 300 && status < 400) {
        curl_easy_getinfo(ex->curl, CURLINFO_REDIRECT_URL, &loc);
        /* Scheme, host and path only: a query may carry a token. */
        snprintf(why, sizeof(why),
                 "Langfuse answered with a redirect to %.*s; set the base "
                 "URL to that address",
                 loc ? (int)strcspn(loc, "?#") : 6, loc ? loc : "(none)");
    } else {
        snprintf(why, sizeof(why), "no %s API at %.100s; check the base URL",
                 ex->ops->name, ex->url);
    }
    if (!ex->auth_logged ||
        now - ex->last_auth_log_ms >= ex->cfg.auth_retry_ms) {
        o2l_log_error(ex->log, COMPONENT,
                      "batch=%llu configuration error: %s status=%ld; retry "
                      "in %ums",
                      (unsigned long long)seq, why, status,
                      ex->cfg.auth_retry_ms);
        ex->auth_logged = 1;
        ex->last_auth_log_ms = now;
    }
    ex->retry_at_ms = now + ex->cfg.auth_retry_ms;
}

static void send_http(struct o2l_exporter *ex, uint64_t seq, struct slot *slots,
                      size_t n);

/* False once a stop means no further request may begin. */
static bool may_send(struct o2l_exporter *ex)
{
    bool ok;

    pthread_mutex_lock(&ex->mu);
    ok = !ex->halting;
    pthread_mutex_unlock(&ex->mu);
    return ok;
}

/* Langfuse refused one event as a whole request: it is dead-lettered. */
static void reject_single(struct o2l_exporter *ex, uint64_t seq,
                          struct slot *slot, long status,
                          const struct response *r)
{
    struct o2l_settled why = {0};
    char msg[LOG_MESSAGE_MAX];
    char *text = NULL;

    if (r->len > 0) {
        size_t len = r->len < DEAD_MESSAGE_MAX ? r->len : DEAD_MESSAGE_MAX;

        text = o2l_malloc(len + 1);
        if (text) {
            memcpy(text, r->body, len);
            text[len] = '\0';
        }
    }
    o2l_log_error(ex->log, COMPONENT,
                  "batch=%llu event rejected id=%s status=%ld message=%s",
                  (unsigned long long)seq, slot->ev.id, status,
                  log_safe(text, msg, sizeof(msg)));
    why.kind = O2L_SETTLED_REJECTED;
    why.status = (int)status;
    why.message = text;
    settle_dead(ex, seq, slot, &why, 1);
    o2l_free(text);
}

/*
 * Sends the two halves of a batch one after the other. When the first
 * half ends in a backoff (or a stop began), the second waits its turn in
 * the queue instead of going out at once.
 */
static void send_halves(struct o2l_exporter *ex, uint64_t seq,
                        struct slot *slots, size_t n)
{
    bool hold;

    send_http(ex, seq, slots, n / 2);
    pthread_mutex_lock(&ex->mu);
    hold = ex->retry_at_ms > o2l_mono_ms() || ex->halting;
    pthread_mutex_unlock(&ex->mu);
    if (hold) {
        requeue_front(ex, slots + n / 2, n - n / 2);
        return;
    }
    send_http(ex, seq, slots + n / 2, n - n / 2);
}

/* Whole-request answers other than 2xx. */
static void handle_status(struct o2l_exporter *ex, uint64_t seq,
                          struct slot *slots, size_t n, long status,
                          const struct response *r)
{
    long long hint;
    uint64_t delay;

    if (status == HTTP_UNAUTHORIZED || status == HTTP_FORBIDDEN ||
        status == HTTP_NOT_FOUND || status == HTTP_METHOD_NOT_ALLOWED ||
        (status >= 300 && status < 400)) {
        config_failed(ex, seq, status);
        requeue_front(ex, slots, n);
        return;
    }
    if (status == HTTP_TOO_MANY_REQUESTS || status == HTTP_REQUEST_TIMEOUT ||
        status >= HTTP_SERVER_ERROR) {
        hint = o2l_retry_after_ms(r->retry_after[0] ? r->retry_after : NULL,
                                  (int64_t)(o2l_now_ns() / 1000000000u));
        delay = backoff(ex, hint);
        o2l_log_warn(ex->log, COMPONENT,
                     "batch=%llu retry in %llums status=%ld events=%zu",
                     (unsigned long long)seq, (unsigned long long)delay, status,
                     n);
        requeue_front(ex, slots, n);
        return;
    }
    if (status == HTTP_PAYLOAD_TOO_LARGE && n > 1) {
        /* Halves go out on their own; each may split again. */
        o2l_log_warn(ex->log, COMPONENT,
                     "batch=%llu too large for Langfuse; splitting "
                     "events=%zu",
                     (unsigned long long)seq, n);
        send_halves(ex, seq, slots, n);
        return;
    }
    if (status < 400 || status >= 500) {
        /* An answer Langfuse does not give (e.g. 204 from a proxy). */
        delay = backoff(ex, -1);
        o2l_log_warn(ex->log, COMPONENT,
                     "batch=%llu unexpected status=%ld; retry in %llums "
                     "events=%zu",
                     (unsigned long long)seq, status, (unsigned long long)delay,
                     n);
        requeue_front(ex, slots, n);
        return;
    }
    if (n > 1) {
        /*
         * 400 or another refusal of the whole request: usually one event
         * Langfuse cannot take. Halving isolates it, so the rest of the
         * batch is delivered and only the culprit is dead-lettered.
         */
        o2l_log_warn(ex->log, COMPONENT,
                     "batch=%llu refused by Langfuse status=%ld; splitting "
                     "events=%zu to find the cause",
                     (unsigned long long)seq, status, n);
        send_halves(ex, seq, slots, n);
        return;
    }
    reject_single(ex, seq, slots, status, r);
}

static void send_http(struct o2l_exporter *ex, uint64_t seq, struct slot *slots,
                      size_t n)
{
    struct response r;
    char *body = NULL;
    size_t body_len = 0;
    long status = 0;
    CURLcode cc = CURLE_OUT_OF_MEMORY;

    memset(&r, 0, sizeof(r));
    if (!may_send(ex)) {
        /* The halves of a split wait in the queue for the owner. */
        put_back(ex, slots, n, 0);
        return;
    }
    if (ex->ops->build_body(slots, n, &body, &body_len) == O2L_OK) {
        if (n > 1 && ex->ops->body_max_bytes > 0 &&
            body_len > ex->ops->body_max_bytes) {
            /* Langfuse would answer 413: split without asking. */
            o2l_log_warn(ex->log, COMPONENT,
                         "batch=%llu request of bytes=%zu too large; "
                         "splitting events=%zu",
                         (unsigned long long)seq, body_len, n);
            o2l_free(body);
            body = NULL;
            send_halves(ex, seq, slots, n);
            goto out;
        }
        cc = post_body(ex, body, body_len, &r, &status);
    }
    pthread_mutex_lock(&ex->mu);
    ex->st.requests_sent++;
    if (cc != CURLE_OK || (status != HTTP_OK && status != HTTP_CREATED &&
                           status != HTTP_MULTI_STATUS)) {
        ex->st.requests_failed++;
    }
    pthread_mutex_unlock(&ex->mu);

    if (cc != CURLE_OK) {
        uint64_t delay = backoff(ex, -1);

        o2l_log_warn(ex->log, COMPONENT,
                     "batch=%llu retry in %llums error=\"%s\" events=%zu",
                     (unsigned long long)seq, (unsigned long long)delay,
                     curl_easy_strerror(cc), n);
        requeue_front(ex, slots, n);
        goto out;
    }
    if (status != HTTP_OK && status != HTTP_CREATED &&
        status != HTTP_MULTI_STATUS) {
        handle_status(ex, seq, slots, n, status, &r);
        goto out;
    }
    ex->ops->answered(ex, seq, slots, n, status, &r);

out:
    o2l_free(body);
    o2l_free(r.body);
}

/* ---- worker: loop --------------------------------------------------- */

/*
 * Takes the next batch from the front of the queue: at most
 * batch_max_events events whose request (before any compression) stays
 * within batch_max_bytes, and always at least one so that an outsized
 * event still leaves. Called with the lock held.
 */
static size_t take_batch(struct o2l_exporter *ex, struct slot *out)
{
    size_t bytes = ex->ops->empty_bytes;
    size_t n = 0;

    while (ex->q.len > 0 && n < ex->cfg.batch_max_events) {
        struct slot *sl = ring_at(&ex->q, 0);
        size_t add = ex->ops->event_bytes(&sl->ev, n);

        if (n > 0 && bytes + add > ex->cfg.batch_max_bytes) {
            break;
        }
        bytes += add;
        out[n] = ring_pop_front(&ex->q);
        ex->q_bytes -= out[n].ev.len;
        n++;
    }
    return n;
}

/* Waits on |cv| (monotonic clock) until |at_ms| at the latest. */
static void wait_until(struct o2l_exporter *ex, pthread_cond_t *cv,
                       uint64_t at_ms)
{
    struct timespec ts;

    ts.tv_sec = (time_t)(at_ms / 1000u);
    ts.tv_nsec = (long)(at_ms % 1000u) * 1000000L;
    pthread_cond_timedwait(cv, &ex->mu, &ts);
}

static void drop_leftovers(struct o2l_exporter *ex)
{
    size_t n = ex->q.len;

    while (ex->q.len > 0) {
        struct slot sl = ring_pop_front(&ex->q);

        o2l_event_free(&sl.ev);
    }
    ex->q_bytes = 0;
    if (ex->cfg.leave_queued_on_stop) {
        ex->st.events_left += n;
        return;
    }
    ex->st.events_dropped += n;
    if (n > 0) {
        o2l_log_error(ex->log, COMPONENT,
                      "stopped with events=%zu still queued; dropped", n);
    }
}

/*
 * Moves the events of |slots| older than max_age_ms to the owner as
 * expired and compacts the rest to the front. Returns how many remain.
 */
static size_t expire_old(struct o2l_exporter *ex, uint64_t seq,
                         struct slot *slots, size_t n)
{
    int64_t limit;
    struct slot *old = NULL;
    struct o2l_settled *why = NULL;
    size_t keep = 0;
    size_t n_old = 0;
    char reason[96];

    if (ex->cfg.max_age_ms == 0) {
        return n;
    }
    limit = (int64_t)o2l_now_ns() - (int64_t)(ex->cfg.max_age_ms * 1000000u);
    for (size_t i = 0; i < n; i++) {
        n_old += slots[i].ev.born_ns != 0 && slots[i].ev.born_ns < limit;
    }
    if (n_old == 0) {
        return n;
    }
    old = o2l_malloc(n_old * sizeof(*old));
    why = o2l_calloc(n_old, sizeof(*why));
    if (!old || !why) {
        /* Sent once more instead; expiry waits for memory. */
        o2l_free(old);
        o2l_free(why);
        return n;
    }
    snprintf(reason, sizeof(reason),
             "not delivered within export.max_age_s (%llus)",
             (unsigned long long)(ex->cfg.max_age_ms / 1000u));
    n_old = 0;
    for (size_t i = 0; i < n; i++) {
        if (slots[i].ev.born_ns != 0 && slots[i].ev.born_ns < limit) {
            why[n_old].kind = O2L_SETTLED_EXPIRED;
            why[n_old].message = reason;
            old[n_old++] = slots[i];
        } else {
            slots[keep++] = slots[i];
        }
    }
    o2l_log_error(ex->log, COMPONENT,
                  "batch=%llu events=%zu expired: %s; dead-lettered",
                  (unsigned long long)seq, n_old, reason);
    settle_dead(ex, seq, old, why, n_old);
    o2l_free(old);
    o2l_free(why);
    return keep;
}

/*
 * Decides, with the lock held, whether a batch may go now. Returns 0 and
 * fills *wake_ms (0: wait for a signal) when it may not.
 */
static int batch_ready(struct o2l_exporter *ex, uint64_t now, uint64_t *wake)
{
    uint64_t due;

    *wake = 0;
    if (ex->q.len == 0) {
        return 0;
    }
    due = ring_at(&ex->q, 0)->queued_ms + ex->cfg.flush_interval_ms;
    /* A full batch, or a queue that cannot grow into one, goes now. */
    if (ex->stopping || ex->q.len >= ex->cfg.batch_max_events ||
        ex->q_bytes >= ex->cfg.batch_max_bytes ||
        ex->q.len >= ex->cfg.queue_max_events ||
        ex->q_bytes >= ex->cfg.queue_max_bytes) {
        due = now;
    }
    if (ex->retry_at_ms > due) {
        due = ex->retry_at_ms;
    }
    if (now >= due) {
        return 1;
    }
    *wake = due;
    return 0;
}

static void *worker_main(void *arg)
{
    struct o2l_exporter *ex = arg;
    struct slot *batch;

    batch = o2l_malloc(ex->cfg.batch_max_events * sizeof(*batch));
    pthread_mutex_lock(&ex->mu);
    for (;;) {
        uint64_t now = o2l_mono_ms();
        uint64_t deadline = atomic_load(&ex->abort_at_ms);
        uint64_t wake;
        uint64_t seq;
        size_t n;

        if (ex->stopping && (ex->q.len == 0 || now >= deadline)) {
            break;
        }
        /*
         * The owner keeps what is queued: a stop never waits out a
         * backoff or a pause for it (they last until the next start).
         */
        if (ex->halting || (ex->stopping && ex->cfg.leave_queued_on_stop &&
                            ex->retry_at_ms > now)) {
            break;
        }
        if (!batch_ready(ex, now, &wake)) {
            if (ex->stopping && (wake == 0 || wake > deadline)) {
                wake = deadline;
            }
            if (wake == 0) {
                pthread_cond_wait(&ex->cv, &ex->mu);
            } else {
                wait_until(ex, &ex->cv, wake);
            }
            continue;
        }
        if (!batch) {
            /* No memory for the batch array: try again shortly. */
            pthread_mutex_unlock(&ex->mu);
            batch = o2l_malloc(ex->cfg.batch_max_events * sizeof(*batch));
            pthread_mutex_lock(&ex->mu);
            if (!batch) {
                wait_until(ex, &ex->cv, now + ex->cfg.retry_initial_ms);
            }
            continue;
        }

        n = take_batch(ex, batch);
        seq = ++ex->batch_seq;
        pthread_cond_broadcast(&ex->room_cv);
        pthread_mutex_unlock(&ex->mu);
        n = expire_old(ex, seq, batch, n);
        if (n == 0) {
            pthread_mutex_lock(&ex->mu);
            continue;
        }
        if (use_http(ex)) {
            send_http(ex, seq, batch, n);
        } else {
            send_file(ex, seq, batch, n);
        }
        pthread_mutex_lock(&ex->mu);
    }
    drop_leftovers(ex);
    pthread_mutex_unlock(&ex->mu);
    o2l_free(batch);
    return NULL;
}

/* ---- public API ----------------------------------------------------- */

int o2l_exporter_start(struct o2l_exporter *ex)
{
    if (ex->started) {
        return O2L_OK;
    }
    if (pthread_create(&ex->thread, NULL, worker_main, ex) != 0) {
        return O2L_EIO;
    }
    ex->started = 1;
    o2l_log_info(ex->log, COMPONENT, "started sink=%s",
                 use_http(ex) ? ex->ops->name : "file");
    return O2L_OK;
}

size_t o2l_exporter_queue_max_events(const struct o2l_exporter *ex)
{
    return ex->cfg.queue_max_events;
}

bool o2l_exporter_accepting(struct o2l_exporter *ex)
{
    bool ok;

    pthread_mutex_lock(&ex->mu);
    ok = !ex->stopping && ex->q.len < ex->cfg.queue_max_events &&
         ex->q_bytes < ex->cfg.queue_max_bytes;
    pthread_mutex_unlock(&ex->mu);
    return ok;
}

static size_t list_bytes(const struct o2l_event_list *events)
{
    size_t bytes = 0;

    for (size_t i = 0; i < events->len; i++) {
        bytes += events->items[i].len;
    }
    return bytes;
}

/* Queues all of |events| (lock held, room checked). */
static int enqueue(struct o2l_exporter *ex, struct o2l_event_list *events,
                   size_t bytes)
{
    uint64_t now = o2l_mono_ms();
    int was_empty;
    int rc;

    /* Room for a batch coming back keeps re-queueing allocation-free. */
    rc = ring_reserve(&ex->q, events->len + ex->cfg.batch_max_events);
    if (rc != O2L_OK) {
        return rc;
    }
    was_empty = ex->q.len == 0;
    for (size_t i = 0; i < events->len; i++) {
        struct slot sl = {events->items[i], now};

        ring_push_back(&ex->q, &sl);
    }
    ex->q_bytes += bytes;
    ex->st.events_queued += events->len;
    /* The worker sleeps without a deadline only on an empty queue. */
    if ((was_empty && events->len > 0) ||
        ex->q.len >= ex->cfg.batch_max_events ||
        ex->q_bytes >= ex->cfg.batch_max_bytes ||
        ex->q.len >= ex->cfg.queue_max_events) {
        pthread_cond_signal(&ex->cv);
    }
    o2l_free(events->items);
    memset(events, 0, sizeof(*events));
    return O2L_OK;
}

static bool fits(const struct o2l_exporter *ex, size_t n, size_t bytes)
{
    return ex->q.len + n <= ex->cfg.queue_max_events &&
           ex->q_bytes + bytes <= ex->cfg.queue_max_bytes;
}

int o2l_exporter_submit(struct o2l_exporter *ex, struct o2l_event_list *events)
{
    size_t bytes = list_bytes(events);
    int rc;

    pthread_mutex_lock(&ex->mu);
    if (ex->stopping) {
        rc = O2L_ESTOPPED;
    } else if (events->len > ex->cfg.queue_max_events ||
               bytes > ex->cfg.queue_max_bytes) {
        /* More than the whole queue holds: retrying would never help. */
        rc = O2L_ETOOBIG;
    } else if (!fits(ex, events->len, bytes)) {
        rc = O2L_EFULL;
    } else {
        rc = enqueue(ex, events, bytes);
    }
    pthread_mutex_unlock(&ex->mu);
    return rc;
}

int o2l_exporter_submit_wait(struct o2l_exporter *ex,
                             struct o2l_event_list *events, uint32_t timeout_ms)
{
    uint64_t deadline = o2l_mono_ms() + timeout_ms;
    size_t bytes = list_bytes(events);
    int rc;

    pthread_mutex_lock(&ex->mu);
    for (;;) {
        if (ex->stopping) {
            rc = O2L_ESTOPPED;
            break;
        }
        if (ex->q.len == 0 || fits(ex, events->len, bytes)) {
            rc = enqueue(ex, events, bytes);
            break;
        }
        if (o2l_mono_ms() >= deadline) {
            rc = O2L_ETIMEDOUT;
            break;
        }
        wait_until(ex, &ex->room_cv, deadline);
    }
    pthread_mutex_unlock(&ex->mu);
    return rc;
}

/* Both stops: |halt| sends no request that has not begun. */
static int stop(struct o2l_exporter *ex, bool halt)
{
    int rc = O2L_OK;

    pthread_mutex_lock(&ex->mu);
    if (halt) {
        ex->halting = 1;
    }
    if (!ex->stopping) {
        ex->stopping = 1;
        /* One last try now, even inside a backoff or Retry-After wait. */
        if (!ex->cfg.leave_queued_on_stop && !halt) {
            ex->retry_at_ms = 0;
        }
        atomic_store(&ex->abort_at_ms,
                     o2l_mono_ms() + ex->cfg.shutdown_timeout_ms + 1);
    }
    pthread_cond_broadcast(&ex->cv);
    pthread_cond_broadcast(&ex->room_cv);
    pthread_mutex_unlock(&ex->mu);

    if (ex->started && !ex->joined) {
        pthread_join(ex->thread, NULL);
        ex->joined = 1;
    }

    pthread_mutex_lock(&ex->mu);
    if (!ex->started) {
        /* Never started: everything queued stays behind. */
        drop_leftovers(ex);
    }
    if (ex->st.events_dropped > 0) {
        rc = O2L_ESTOPPED;
    }
    pthread_mutex_unlock(&ex->mu);

    if (ex->file) {
        fclose(ex->file);
        ex->file = NULL;
    }
    o2l_log_info(ex->log, COMPONENT,
                 "stopped delivered=%llu rejected=%llu expired=%llu "
                 "left_for_next_start=%llu dropped=%llu",
                 (unsigned long long)ex->st.events_delivered,
                 (unsigned long long)ex->st.events_rejected,
                 (unsigned long long)ex->st.events_expired,
                 (unsigned long long)ex->st.events_left,
                 (unsigned long long)ex->st.events_dropped);
    return rc;
}

int o2l_exporter_stop(struct o2l_exporter *ex)
{
    return stop(ex, false);
}

int o2l_exporter_stop_now(struct o2l_exporter *ex)
{
    return stop(ex, true);
}

void o2l_exporter_stats(struct o2l_exporter *ex, struct o2l_exporter_stats *out)
{
    pthread_mutex_lock(&ex->mu);
    *out = ex->st;
    out->queue_events = ex->q.len;
    out->queue_bytes = ex->q_bytes;
    pthread_mutex_unlock(&ex->mu);
}

void o2l_exporter_destroy(struct o2l_exporter *ex)
{
    if (!ex) {
        return;
    }
    if (ex->started && !ex->joined) {
        o2l_exporter_stop(ex);
    }
    while (ex->q.len > 0) {
        struct slot sl = ring_pop_front(&ex->q);

        o2l_event_free(&sl.ev);
    }
    o2l_free(ex->q.s);
    if (ex->file) {
        fclose(ex->file);
    }
    if (ex->curl) {
        curl_easy_cleanup(ex->curl);
    }
    curl_slist_free_all(ex->headers);
    if (ex->curl_inited) {
        curl_global_cleanup();
    }
    pthread_cond_destroy(&ex->cv);
    pthread_cond_destroy(&ex->room_cv);
    pthread_mutex_destroy(&ex->mu);
    free_strings(ex);
    o2l_free(ex);
}

/* ---- outputs -------------------------------------------------------- */

/* The events of |slots| side by side, as the encoders take them. */
static struct o2l_event *slot_events(const struct slot *slots, size_t n)
{
    struct o2l_event *evs = o2l_malloc(n * sizeof(*evs));

    if (evs) {
        for (size_t i = 0; i < n; i++) {
            evs[i] = slots[i].ev;
        }
    }
    return evs;
}

static size_t ingestion_event_bytes(const struct o2l_event *ev, size_t index)
{
    return ev->len + (index > 0); /* a comma between events */
}

static int ingestion_body(const struct slot *slots, size_t n, char **body,
                          size_t *body_len)
{
    struct o2l_event *evs = slot_events(slots, n);
    int rc;

    if (!evs) {
        return O2L_ENOMEM;
    }
    rc = o2l_encode_batch(evs, n, body, body_len);
    o2l_free(evs);
    return rc;
}

/* A 2xx from the ingestion API: the per-event results decide. */
static void ingestion_answered(struct o2l_exporter *ex, uint64_t seq,
                               struct slot *slots, size_t n, long status,
                               const struct response *r)
{
    struct o2l_event_result *res = NULL;
    const char **ids = NULL;
    int rc;

    ids = o2l_malloc(n * sizeof(*ids));
    res = o2l_calloc(n, sizeof(*res));
    if (!ids || !res) {
        rc = O2L_ENOMEM;
    } else {
        for (size_t i = 0; i < n; i++) {
            ids[i] = slots[i].ev.id;
        }
        rc = o2l_ingestion_parse_results(r->body, r->len, ids, n, res);
    }
    if (rc != O2L_OK) {
        uint64_t delay = backoff(ex, -1);

        o2l_log_warn(ex->log, COMPONENT,
                     "batch=%llu unreadable answer status=%ld bytes=%zu; "
                     "retry in %llums",
                     (unsigned long long)seq, status, r->len,
                     (unsigned long long)delay);
        requeue_front(ex, slots, n);
        goto out;
    }
    handle_results(ex, seq, slots, n, res);
    o2l_event_results_clear(res, n);

out:
    o2l_free(res);
    o2l_free(ids);
}

/* An item's framing: tag 0x0a, its length as a varint, then the bytes. */
static size_t otlp_event_bytes(const struct o2l_event *ev, size_t index)
{
    size_t bytes = 1 + ev->len;
    size_t v = ev->len;

    (void)index;
    do {
        bytes++;
        v >>= 7;
    } while (v > 0);
    return bytes;
}

static voidpf zlib_alloc(voidpf opaque, uInt items, uInt size)
{
    (void)opaque;
    return o2l_calloc(items, size);
}

static void zlib_free(voidpf opaque, voidpf p)
{
    (void)opaque;
    o2l_free(p);
}

/*
 * Compresses |len| bytes of |in| into one gzip member (RFC 1952) in *out
 * (o2l_malloc'd). Returns O2L_OK, O2L_ENOMEM or O2L_ETOOBIG.
 */
static int gzip_bytes(const unsigned char *in, size_t len, unsigned char **out,
                      size_t *out_len)
{
    unsigned char *buf = NULL;
    z_stream zs;
    uLong cap;
    int rc = O2L_OK;

    if (len > UINT32_MAX / 2) {
        return O2L_ETOOBIG;
    }
    memset(&zs, 0, sizeof(zs));
    zs.zalloc = zlib_alloc;
    zs.zfree = zlib_free;
    /* Window bits 15 + 16: a gzip header and trailer, not zlib's. */
    if (deflateInit2(&zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8,
                     Z_DEFAULT_STRATEGY) != Z_OK) {
        return O2L_ENOMEM;
    }
    /* deflateBound() covers the gzip wrapper: one call always finishes. */
    cap = deflateBound(&zs, (uLong)len);
    buf = o2l_malloc(cap);
    if (!buf) {
        rc = O2L_ENOMEM;
        goto out;
    }
    zs.next_in = (Bytef *)in;
    zs.avail_in = (uInt)len;
    zs.next_out = buf;
    zs.avail_out = (uInt)cap;
    if (deflate(&zs, Z_FINISH) != Z_STREAM_END) {
        rc = O2L_ENOMEM;
        goto out;
    }
    *out = buf;
    *out_len = (size_t)zs.total_out;
    buf = NULL;

out:
    deflateEnd(&zs);
    o2l_free(buf);
    return rc;
}

static int otlp_body(const struct slot *slots, size_t n, char **body,
                     size_t *body_len)
{
    struct o2l_event *evs = slot_events(slots, n);
    unsigned char *raw = NULL;
    unsigned char *gz = NULL;
    size_t raw_len = 0;
    int rc;

    if (!evs) {
        return O2L_ENOMEM;
    }
    rc = o2l_otlp_request(evs, n, &raw, &raw_len);
    if (rc == O2L_OK) {
        rc = gzip_bytes(raw, raw_len, &gz, body_len);
    }
    if (rc == O2L_OK) {
        *body = (char *)gz;
    }
    o2l_free(raw);
    o2l_free(evs);
    return rc;
}

static void *pb_alloc(void *arg, size_t n)
{
    (void)arg;
    return o2l_malloc(n);
}

static void pb_free(void *arg, void *p)
{
    (void)arg;
    o2l_free(p);
}

/* A JSON int64 is a string in proto3's JSON mapping, or a plain number. */
static long long json_count(const cJSON *v)
{
    char *end = NULL;
    long long n;

    if (cJSON_IsNumber(v)) {
        /* Clamped: converting a double past LLONG_MAX is undefined. */
        if (v->valuedouble >= 1e18) {
            return 1000000000000000000LL;
        }
        return v->valuedouble > 0 ? (long long)v->valuedouble : 0;
    }
    if (!cJSON_IsString(v)) {
        return 0;
    }
    errno = 0;
    n = strtoll(v->valuestring, &end, 10);
    if (errno != 0 || end == v->valuestring || *end != '\0' || n < 0) {
        return 0;
    }
    return n;
}

/* The field |camel|, or its proto name |snake|, of |obj|. */
static const cJSON *json_field(const cJSON *obj, const char *camel,
                               const char *snake)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, camel);

    return v ? v : cJSON_GetObjectItemCaseSensitive(obj, snake);
}

static long long json_rejected_spans(const char *body, size_t len, char *msg,
                                     size_t cap)
{
    cJSON *doc = cJSON_ParseWithLength(body, len);
    const cJSON *ps = json_field(doc, "partialSuccess", "partial_success");
    const cJSON *em = json_field(ps, "errorMessage", "error_message");
    long long n = json_count(json_field(ps, "rejectedSpans", "rejected_spans"));

    if (cJSON_IsString(em)) {
        snprintf(msg, cap, "%s", em->valuestring);
    }
    cJSON_Delete(doc);
    return n;
}

static long long pb_rejected_spans(const char *body, size_t len, char *msg,
                                   size_t cap)
{
    ProtobufCAllocator alloc = {pb_alloc, pb_free, NULL};
    Opentelemetry__Proto__Collector__Trace__V1__ExportTraceServiceResponse *rsp;
    long long n = 0;

    rsp =
        opentelemetry__proto__collector__trace__v1__export_trace_service_response__unpack(
            &alloc, len, (const uint8_t *)body);
    if (rsp && rsp->partial_success) {
        n = rsp->partial_success->rejected_spans;
        if (rsp->partial_success->error_message) {
            snprintf(msg, cap, "%s", rsp->partial_success->error_message);
        }
    }
    if (rsp) {
        opentelemetry__proto__collector__trace__v1__export_trace_service_response__free_unpacked(
            rsp, &alloc);
    }
    return n > 0 ? n : 0;
}

/*
 * Reads partial_success.rejected_spans of an OTLP answer (JSON or
 * protobuf; an empty or unreadable body rejects nothing) and copies its
 * error message into |msg|.
 */
static long long otlp_rejected_spans(const struct response *r, char *msg,
                                     size_t cap)
{
    size_t i = 0;

    msg[0] = '\0';
    while (i < r->len && (r->body[i] == ' ' || r->body[i] == '\t' ||
                          r->body[i] == '\r' || r->body[i] == '\n')) {
        i++;
    }
    if (i == r->len) {
        return 0;
    }
    if (r->body[i] == '{') {
        return json_rejected_spans(r->body, r->len, msg, cap);
    }
    return pb_rejected_spans(r->body, r->len, msg, cap);
}

/*
 * A 2xx from the OTLP API takes the whole request. Spans it rejects
 * anyway (partial success) are only counted: the answer does not say
 * which, so every item counts as delivered.
 */
static void otlp_answered(struct o2l_exporter *ex, uint64_t seq,
                          struct slot *slots, size_t n, long status,
                          const struct response *r)
{
    char text[LOG_MESSAGE_MAX];
    char msg[LOG_MESSAGE_MAX];
    long long rejected = otlp_rejected_spans(r, text, sizeof(text));

    if (rejected > 0) {
        o2l_log_warn(ex->log, COMPONENT,
                     "batch=%llu Langfuse rejected spans=%lld of items=%zu "
                     "status=%ld message=%s; counted as delivered",
                     (unsigned long long)seq, rejected, n, status,
                     log_safe(text[0] ? text : NULL, msg, sizeof(msg)));
    }
    ex->attempt = 0;
    settle_delivered(ex, slots, n);
    o2l_log_debug(ex->log, COMPONENT, "batch=%llu sent items=%zu",
                  (unsigned long long)seq, n);
}

static const char *const ingestion_headers[] = {
    "Content-Type: application/json",
    "x-langfuse-sdk-name: otel2langfuse",
    "x-langfuse-sdk-version: " O2L_VERSION,
    /* Large bodies would otherwise wait for a 100-continue. */
    "Expect:",
};

static const char *const otlp_headers[] = {
    "Content-Type: application/x-protobuf",
    "Content-Encoding: gzip",
    "x-langfuse-ingestion-version: 4",
    "x-langfuse-sdk-name: otel2langfuse",
    "x-langfuse-sdk-version: " O2L_VERSION,
    "Expect:",
};

static const struct output_ops ingestion_ops = {
    .name = "ingestion",
    .path = "/api/public/ingestion",
    .headers = ingestion_headers,
    .n_headers = O2L_ARRAY_LEN(ingestion_headers),
    .empty_bytes = sizeof("{\"batch\":[]}") - 1,
    .body_max_bytes = 0,
    .event_bytes = ingestion_event_bytes,
    .build_body = ingestion_body,
    .answered = ingestion_answered,
};

static const struct output_ops otlp_ops = {
    .name = "otlp",
    .path = "/api/public/otel/v1/traces",
    .headers = otlp_headers,
    .n_headers = O2L_ARRAY_LEN(otlp_headers),
    .empty_bytes = 0,
    .body_max_bytes = OTLP_BODY_MAX_BYTES,
    .event_bytes = otlp_event_bytes,
    .build_body = otlp_body,
    .answered = otlp_answered,
};

static const struct output_ops *ops_for(enum o2l_output output)
{
    switch (output) {
    case O2L_OUTPUT_INGESTION:
        return &ingestion_ops;
    case O2L_OUTPUT_OTLP:
        return &otlp_ops;
    }
    return NULL;
}
