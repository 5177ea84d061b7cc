/* SPDX-License-Identifier: Apache-2.0 */
/*
 * deadletter.c - the append-only JSON-lines file of undeliverable events
 * (ingestion events as JSON, OTLP items as base64).
 */
#include "o2l/deadletter.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "o2l/common.h"

/* Attempts to find the file in place when a replay renames it meanwhile. */
#define REOPEN_TRIES 8

/* How long a writer waits for another writer's lock, and how often it looks. */
#define LOCK_WAIT_MS 30000u
#define LOCK_POLL_MS 5u

struct o2l_deadletter {
    char *path;
    /*
     * A failed append may have left part of a line behind. The next
     * append then starts with a newline, so the fragment stays a line of
     * its own (skipped as unparseable) instead of spoiling a whole one.
     */
    bool partial_line;
};

/* True when |path| names the file open as |fd|. */
static bool names_file(int fd, const char *path)
{
    struct stat held, named;

    return fstat(fd, &held) == 0 && stat(path, &named) == 0 &&
           held.st_dev == named.st_dev && held.st_ino == named.st_ino;
}

/*
 * Takes the lock of the file open as |fd| without blocking for long: a
 * replay holds the lock of a file it moved aside for as long as it works,
 * so a writer that opened the file just before the rename would wait for
 * the whole replay. Polling instead notices the rename. Returns 1 when
 * locked and still named |path|, 0 when |path| now names another file (or
 * none), -1 with errno set otherwise.
 */
static int lock_named(int fd, const char *path, uint64_t deadline)
{
    struct timespec ts = {0, (long)LOCK_POLL_MS * 1000000L};

    for (;;) {
        if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
            return names_file(fd, path) ? 1 : 0;
        }
        if (errno != EWOULDBLOCK && errno != EINTR) {
            return -1;
        }
        if (!names_file(fd, path)) {
            return 0;
        }
        if (o2l_mono_ms() >= deadline) {
            errno = EAGAIN;
            return -1;
        }
        nanosleep(&ts, NULL);
    }
}

int o2l_deadletter_open_locked(const char *path, int flags)
{
    uint64_t deadline = o2l_mono_ms() + LOCK_WAIT_MS;

    for (int i = 0; i < REOPEN_TRIES; i++) {
        int fd = open(path, flags | O_CLOEXEC, 0600);
        int got;
        int saved;

        if (fd < 0) {
            return -1;
        }
        got = lock_named(fd, path, deadline);
        if (got == 1) {
            return fd;
        }
        saved = errno;
        close(fd);
        if (got < 0) {
            errno = saved;
            return -1;
        }
    }
    errno = EAGAIN;
    return -1;
}

struct o2l_deadletter *o2l_deadletter_open(const char *path, char *err,
                                           size_t err_len)
{
    struct o2l_deadletter *dl;
    int fd;

    dl = o2l_calloc(1, sizeof(*dl));
    if (dl) {
        dl->path = o2l_strdup(path);
    }
    if (!dl || !dl->path) {
        snprintf(err, err_len, "dead-letter file %s: out of memory", path);
        o2l_free(dl);
        return NULL;
    }
    /* Made now, so a wrong path stops the start, not the first refusal. */
    fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, err_len, "cannot open dead-letter file %s: %s", path,
                 strerror(errno));
        o2l_free(dl->path);
        o2l_free(dl);
        return NULL;
    }
    close(fd);
    return dl;
}

static const char b64_digits[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Standard padded base64 of |len| bytes (RFC 4648), o2l_malloc'd. */
static char *b64_encode(const unsigned char *in, size_t len)
{
    char *out = o2l_malloc((len + 2) / 3 * 4 + 1);
    char *o = out;
    size_t i;

    if (!out) {
        return NULL;
    }
    for (i = 0; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 |
                     (uint32_t)in[i + 2];

        *o++ = b64_digits[v >> 18];
        *o++ = b64_digits[(v >> 12) & 0x3f];
        *o++ = b64_digits[(v >> 6) & 0x3f];
        *o++ = b64_digits[v & 0x3f];
    }
    if (i < len) {
        uint32_t v = (uint32_t)in[i] << 16;

        if (i + 1 < len) {
            v |= (uint32_t)in[i + 1] << 8;
        }
        *o++ = b64_digits[v >> 18];
        *o++ = b64_digits[(v >> 12) & 0x3f];
        *o++ = i + 1 < len ? b64_digits[(v >> 6) & 0x3f] : '=';
        *o++ = '=';
    }
    *o = '\0';
    return out;
}

static int b64_value(char c)
{
    const char *p = c ? strchr(b64_digits, c) : NULL;

    return p ? (int)(p - b64_digits) : -1;
}

/*
 * Decodes standard padded base64 into *out (o2l_malloc'd, one NUL after
 * the bytes). Returns O2L_OK, O2L_ENOMEM or O2L_EPARSE.
 */
static int b64_decode(const char *in, unsigned char **out, size_t *out_len)
{
    size_t len = strlen(in);
    size_t pad = 0;
    unsigned char *buf;
    size_t n = 0;
    uint32_t acc = 0;

    if (len % 4 != 0) {
        return O2L_EPARSE;
    }
    while (pad < 2 && pad < len && in[len - 1 - pad] == '=') {
        pad++;
    }
    buf = o2l_malloc(len / 4 * 3 + 1);
    if (!buf) {
        return O2L_ENOMEM;
    }
    for (size_t i = 0; i < len - pad; i++) {
        int v = b64_value(in[i]);

        if (v < 0) {
            o2l_free(buf);
            return O2L_EPARSE;
        }
        acc = acc << 6 | (uint32_t)v;
        if (i % 4 == 3) {
            buf[n++] = (unsigned char)(acc >> 16);
            buf[n++] = (unsigned char)(acc >> 8);
            buf[n++] = (unsigned char)acc;
            acc = 0;
        }
    }
    /* A last group of 2 or 3 digits carries 1 or 2 bytes. */
    if (pad == 2) {
        buf[n++] = (unsigned char)(acc >> 4);
    } else if (pad == 1) {
        buf[n++] = (unsigned char)(acc >> 10);
        buf[n++] = (unsigned char)(acc >> 2);
    }
    buf[n] = '\0';
    *out = buf;
    *out_len = n;
    return O2L_OK;
}

/* An OTLP item: its bytes as base64 under "otlp", with its ids. */
static bool add_otlp_item(cJSON *obj, const struct o2l_event *ev)
{
    char *b64 = b64_encode((const unsigned char *)ev->json, ev->len);
    char span_id[sizeof(ev->span_id)];
    bool ok;

    snprintf(span_id, sizeof(span_id), "%.16s", ev->span_id);
    ok = b64 && cJSON_AddStringToObject(obj, "id", ev->id ? ev->id : "") &&
         cJSON_AddStringToObject(obj, "span_id", span_id) &&
         cJSON_AddStringToObject(obj, "otlp", b64);

    o2l_free(b64);
    return ok;
}

/* "replay":{"time":now,"message":...}: what a replay did with the line. */
static bool add_replay_note(cJSON *obj, const char *message, const char *iso)
{
    cJSON *note = cJSON_AddObjectToObject(obj, "replay");

    return note && cJSON_AddStringToObject(note, "time", iso) &&
           cJSON_AddStringToObject(note, "message", message);
}

static cJSON *entry_to_json(const struct o2l_deadletter_entry *e,
                            const char *iso)
{
    const struct o2l_event *ev = e->ev;
    cJSON *obj = cJSON_CreateObject();
    cJSON *event = NULL;

    if (!obj ||
        !cJSON_AddStringToObject(obj, "time", e->time ? e->time : iso) ||
        !cJSON_AddNumberToObject(obj, "status", e->status)) {
        goto fail;
    }
    if (e->message) {
        if (!cJSON_AddStringToObject(obj, "message", e->message)) {
            goto fail;
        }
    } else if (!cJSON_AddNullToObject(obj, "message")) {
        goto fail;
    }
    if (e->replay_message && !add_replay_note(obj, e->replay_message, iso)) {
        goto fail;
    }

    if (ev && ev->otlp) {
        if (!add_otlp_item(obj, ev)) {
            goto fail;
        }
        return obj;
    }
    if (ev && ev->json) {
        event = cJSON_ParseWithLength(ev->json, ev->len);
    }
    if (event && cJSON_IsObject(event)) {
        if (!cJSON_AddItemToObject(obj, "event", event)) {
            goto fail;
        }
        event = NULL;
    } else if (!cJSON_AddStringToObject(obj, "event_raw",
                                        ev && ev->json ? ev->json : "")) {
        goto fail;
    }
    cJSON_Delete(event);
    return obj;

fail:
    cJSON_Delete(event);
    cJSON_Delete(obj);
    return NULL;
}

/* Appends |len| bytes of |s| and a newline to the growing buffer. */
static int buf_add_line(char **buf, size_t *used, size_t *cap, const char *s,
                        size_t len)
{
    size_t need = *used + len + 1;

    if (need > *cap) {
        size_t grown = *cap ? *cap * 2 : 4096;
        char *p;

        while (grown < need) {
            grown *= 2;
        }
        p = o2l_realloc(*buf, grown);
        if (!p) {
            return O2L_ENOMEM;
        }
        *buf = p;
        *cap = grown;
    }
    memcpy(*buf + *used, s, len);
    (*buf)[*used + len] = '\n';
    *used = need;
    return O2L_OK;
}

/*
 * Renders every entry as one compact line. cJSON escapes control
 * characters, so a newline in a message never splits a line.
 */
static int render_lines(const struct o2l_deadletter_entry *entries, size_t n,
                        const char *iso, bool lead_newline, char **out,
                        size_t *out_len)
{
    char *buf = NULL;
    size_t used = 0;
    size_t cap = 0;
    int rc = O2L_OK;

    if (lead_newline) {
        rc = buf_add_line(&buf, &used, &cap, "", 0);
    }
    for (size_t i = 0; i < n && rc == O2L_OK; i++) {
        cJSON *obj = entry_to_json(&entries[i], iso);
        char *line = obj ? cJSON_PrintUnformatted(obj) : NULL;

        rc = line ? buf_add_line(&buf, &used, &cap, line, strlen(line))
                  : O2L_ENOMEM;
        cJSON_free(line);
        cJSON_Delete(obj);
    }
    if (rc != O2L_OK) {
        o2l_free(buf);
        return rc;
    }
    *out = buf;
    *out_len = used;
    return O2L_OK;
}

/* Writes all of |buf|; returns the bytes written before any failure. */
static size_t write_all(int fd, const char *buf, size_t len, int *rc)
{
    size_t off = 0;

    *rc = O2L_OK;
    while (off < len) {
        ssize_t w = write(fd, buf + off, len - off);

        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            *rc = O2L_EIO;
            break;
        }
        off += (size_t)w;
    }
    return off;
}

/*
 * Writes |len| bytes of whole lines under the lock, in one write, and
 * syncs. Returns O2L_OK or O2L_EIO.
 */
static int write_lines(struct o2l_deadletter *dl, const char *buf, size_t len)
{
    size_t written;
    int fd;
    int rc;

    /*
     * One write() of whole lines: with O_APPEND another writer's lines
     * land before or after ours, never inside. Only a short write (disk
     * full, signal) splits it, and then the rest follows in a loop.
     */
    fd = o2l_deadletter_open_locked(dl->path, O_WRONLY | O_APPEND | O_CREAT);
    if (fd < 0) {
        return O2L_EIO;
    }
    written = write_all(fd, buf, len, &rc);
    if (rc != O2L_OK) {
        dl->partial_line = written > 0;
    } else {
        dl->partial_line = false;
        if (fsync(fd) != 0) {
            rc = O2L_EIO;
        }
    }
    close(fd); /* also drops the lock */
    return rc;
}

int o2l_deadletter_append(struct o2l_deadletter *dl,
                          const struct o2l_deadletter_entry *entries, size_t n,
                          int64_t now_ns)
{
    char iso[O2L_ISO_LEN];
    char *buf = NULL;
    size_t len = 0;
    int rc;

    if (n == 0) {
        return O2L_OK;
    }
    o2l_iso_time(now_ns > 0 ? (uint64_t)now_ns : 0, iso);
    rc = render_lines(entries, n, iso, dl->partial_line, &buf, &len);
    if (rc == O2L_OK) {
        rc = write_lines(dl, buf, len);
    }
    o2l_free(buf);
    return rc;
}

int o2l_deadletter_append_raw(struct o2l_deadletter *dl, const char *text,
                              size_t len)
{
    bool lead = dl->partial_line;
    bool trail = len > 0 && text[len - 1] != '\n';
    size_t total = lead + len + trail;
    char *buf;
    int rc;

    if (len == 0) {
        return O2L_OK;
    }
    buf = o2l_malloc(total);
    if (!buf) {
        return O2L_ENOMEM;
    }
    if (lead) {
        buf[0] = '\n';
    }
    memcpy(buf + lead, text, len);
    if (trail) {
        buf[total - 1] = '\n';
    }
    rc = write_lines(dl, buf, total);
    o2l_free(buf);
    return rc;
}

int o2l_deadletter_append_settled(struct o2l_deadletter *dl,
                                  const struct o2l_settled *items, size_t n,
                                  int64_t now_ns)
{
    struct o2l_deadletter_entry *e;
    int rc;

    if (n == 0) {
        return O2L_OK;
    }
    e = o2l_calloc(n, sizeof(*e));
    if (!e) {
        return O2L_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        e[i].ev = items[i].ev;
        e[i].status = items[i].status;
        e[i].message = items[i].message;
    }
    rc = o2l_deadletter_append(dl, e, n, now_ns);
    o2l_free(e);
    return rc;
}

void o2l_deadletter_close(struct o2l_deadletter *dl)
{
    if (!dl) {
        return;
    }
    o2l_free(dl->path);
    o2l_free(dl);
}

/*
 * Parses |len| bytes that must hold one JSON value and nothing else but
 * whitespace: two objects run together on one line are refused.
 */
static cJSON *parse_whole(const char *text, size_t len)
{
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);

    if (!root) {
        return NULL;
    }
    for (; end < text + len; end++) {
        if (*end != ' ' && *end != '\t' && *end != '\r' && *end != '\n') {
            cJSON_Delete(root);
            return NULL;
        }
    }
    return root;
}

/* Restores an OTLP item line ("otlp", "id", "span_id") into |ev|. */
static int parse_otlp_item(const cJSON *root, struct o2l_event *ev)
{
    const cJSON *b64 = cJSON_GetObjectItemCaseSensitive(root, "otlp");
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(root, "id");
    const cJSON *span = cJSON_GetObjectItemCaseSensitive(root, "span_id");
    unsigned char *bytes = NULL;
    size_t len = 0;
    int rc;

    if (!cJSON_IsString(b64) || !cJSON_IsString(id) || !id->valuestring[0] ||
        (span && !cJSON_IsString(span))) {
        return O2L_EPARSE;
    }
    rc = b64_decode(b64->valuestring, &bytes, &len);
    if (rc != O2L_OK) {
        return rc;
    }
    ev->id = o2l_strdup(id->valuestring);
    if (!ev->id) {
        o2l_free(bytes);
        return O2L_ENOMEM;
    }
    ev->json = (char *)bytes;
    ev->len = len;
    ev->otlp = true;
    if (span) {
        snprintf(ev->span_id, sizeof(ev->span_id), "%.16s", span->valuestring);
    }
    return O2L_OK;
}

/* Restores an ingestion event line ("event") into |ev|. */
static int parse_event(const cJSON *root, struct o2l_event *ev)
{
    const cJSON *event = cJSON_GetObjectItemCaseSensitive(root, "event");
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(event, "id");
    char *json;

    if (!cJSON_IsObject(event) || !cJSON_IsString(id)) {
        return O2L_EPARSE;
    }
    /* cJSON allocates through o2l_malloc (o2l_mem_init), so |json| is ours. */
    json = cJSON_PrintUnformatted(event);
    ev->id = o2l_strdup(id->valuestring);
    if (!json || !ev->id) {
        o2l_free(json);
        o2l_event_free(ev);
        return O2L_ENOMEM;
    }
    ev->json = json;
    ev->len = strlen(json);
    return O2L_OK;
}

void o2l_deadletter_meta_clear(struct o2l_deadletter_meta *meta)
{
    if (!meta) {
        return;
    }
    o2l_free(meta->message);
    o2l_free(meta->time);
    memset(meta, 0, sizeof(*meta));
}

/* Copies "status", "message" and "time" of |root| into |meta|. */
static int read_meta(const cJSON *root, struct o2l_deadletter_meta *meta)
{
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(root, "status");
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(root, "message");
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(root, "time");

    meta->status = st->valueint;
    if (cJSON_IsString(msg)) {
        meta->message = o2l_strdup(msg->valuestring);
        if (!meta->message) {
            return O2L_ENOMEM;
        }
    }
    if (cJSON_IsString(t)) {
        meta->time = o2l_strdup(t->valuestring);
        if (!meta->time) {
            return O2L_ENOMEM;
        }
    }
    return O2L_OK;
}

/* Reads one line into |ev|; |status| and |meta| may each be NULL. */
static int read_line(const char *line, size_t len, struct o2l_event *ev,
                     int *status, struct o2l_deadletter_meta *meta)
{
    cJSON *root;
    const cJSON *st;
    int rc = O2L_EPARSE;

    memset(ev, 0, sizeof(*ev));
    if (meta) {
        memset(meta, 0, sizeof(*meta));
    }
    root = parse_whole(line, len);
    st = cJSON_GetObjectItemCaseSensitive(root, "status");
    if (!cJSON_IsObject(root) || !cJSON_IsNumber(st)) {
        goto out;
    }
    if (cJSON_GetObjectItemCaseSensitive(root, "otlp")) {
        rc = parse_otlp_item(root, ev);
    } else {
        rc = parse_event(root, ev);
    }
    if (rc == O2L_OK && meta) {
        rc = read_meta(root, meta);
        if (rc != O2L_OK) {
            o2l_deadletter_meta_clear(meta);
            o2l_event_free(ev);
            memset(ev, 0, sizeof(*ev));
        }
    }
    if (rc == O2L_OK && status) {
        *status = st->valueint;
    }

out:
    cJSON_Delete(root);
    return rc;
}

int o2l_deadletter_read_line(const char *line, size_t len, struct o2l_event *ev,
                             struct o2l_deadletter_meta *meta)
{
    return read_line(line, len, ev, NULL, meta);
}

int o2l_deadletter_parse_line(const char *line, size_t len,
                              struct o2l_event *ev, int *status)
{
    return read_line(line, len, ev, status, NULL);
}
