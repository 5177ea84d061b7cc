/* SPDX-License-Identifier: Apache-2.0 */
/*
 * replay.c - sends a dead-letter file's events to Langfuse again: the
 * ingestion events through the ingestion API, then the OTLP items through
 * the OTLP API.
 */
#include "o2l/replay.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include "o2l/common.h"
#include "o2l/deadletter.h"

#define COMPONENT "replay"

/* Give up on what is left after this long without any event settling. */
#define STALL_LIMIT_MS 60000u

/* How often the waiting loop looks at the progress. */
#define POLL_MS 100u

struct replay {
    const struct o2l_log *log;
    struct o2l_deadletter *dead; /* the live dead-letter file */
    pthread_mutex_t mu;
    bool *settled; /* per event, by tag - 1 */
    size_t n_settled;
    size_t delivered;
    size_t refused;
    bool write_failed;
    uint64_t last_progress_ms;
};

/* Exporter callback: delivered events are done, refused ones go back. */
static int on_settle(void *arg, const struct o2l_settled *items, size_t n)
{
    struct replay *rp = arg;
    bool dead = n > 0 && items[0].kind != O2L_SETTLED_DELIVERED;
    int rc = O2L_OK;

    if (dead) {
        rc = o2l_deadletter_append_settled(rp->dead, items, n,
                                           (int64_t)o2l_now_ns());
        if (rc != O2L_OK) {
            return rc;
        }
    }
    pthread_mutex_lock(&rp->mu);
    for (size_t i = 0; i < n; i++) {
        uint64_t k = items[i].ev->tag;

        if (k == 0 || rp->settled[k - 1]) {
            continue;
        }
        rp->settled[k - 1] = true;
        rp->n_settled++;
        if (dead) {
            rp->refused++;
        } else {
            rp->delivered++;
        }
    }
    rp->last_progress_ms = o2l_mono_ms();
    pthread_mutex_unlock(&rp->mu);
    return O2L_OK;
}

/* Reads the whole file; lines are split by the caller. */
static int slurp(int fd, char **out, size_t *out_len)
{
    char *buf = NULL;
    size_t len = 0;
    size_t cap = 0;

    for (;;) {
        ssize_t n;

        if (cap - len < 65536) {
            char *grown = o2l_realloc(buf, cap * 2 + 65536 + 1);

            if (!grown) {
                o2l_free(buf);
                return O2L_ENOMEM;
            }
            buf = grown;
            cap = cap * 2 + 65536;
        }
        n = read(fd, buf + len, cap - len);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            o2l_free(buf);
            return O2L_EIO;
        }
        if (n == 0) {
            break;
        }
        len += (size_t)n;
    }
    buf[len] = '\0';
    *out = buf;
    *out_len = len;
    return O2L_OK;
}

/*
 * Moves the file aside and reads it. A daemon appending at that moment
 * holds the file's lock; taking it waits for that write to end, and later
 * writers find the path gone and create a new file.
 */
static int take_file(const char *path, char **aside, char **text,
                     size_t *len, const struct o2l_log *log)
{
    size_t n = strlen(path) + 64;
    int fd;
    int rc;

    *aside = o2l_malloc(n);
    if (!*aside) {
        return O2L_ENOMEM;
    }
    snprintf(*aside, n, "%s.replaying-%ld", path, (long)getpid());
    if (rename(path, *aside) != 0) {
        rc = errno == ENOENT ? O2L_EINVAL : O2L_EIO;
        if (rc == O2L_EIO) {
            o2l_log_error(log, COMPONENT, "cannot move %s aside: %s", path,
                          strerror(errno));
        }
        return rc;
    }
    fd = open(*aside, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        o2l_log_error(log, COMPONENT, "cannot open %s: %s", *aside,
                      strerror(errno));
        return O2L_EIO;
    }
    if (flock(fd, LOCK_EX) != 0) {
        close(fd);
        return O2L_EIO;
    }
    rc = slurp(fd, text, len);
    close(fd);
    return rc;
}

struct parsed {
    struct o2l_event *evs;
    size_t n;
    size_t cap;
};

static int parsed_push(struct parsed *p, const struct o2l_event *ev)
{
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 64;
        struct o2l_event *grown = o2l_realloc(p->evs, cap * sizeof(*grown));

        if (!grown) {
            return O2L_ENOMEM;
        }
        p->evs = grown;
        p->cap = cap;
    }
    p->evs[p->n++] = *ev;
    return O2L_OK;
}

/*
 * Splits |text| into events; lines that are not events are appended to
 * the live dead-letter file as they were. Returns O2L_OK or an error.
 */
static int parse_all(char *text, size_t len, struct replay *rp,
                     struct parsed *out, size_t *unreadable)
{
    char *p = text;
    char *end = text + len;

    while (p < end) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
        struct o2l_event ev;
        int status = 0;
        int rc;

        memset(&ev, 0, sizeof(ev));
        if (n > 0) {
            rc = o2l_deadletter_parse_line(p, n, &ev, &status);
            if (rc == O2L_OK) {
                ev.tag = out->n + 1;
                rc = parsed_push(out, &ev);
                if (rc != O2L_OK) {
                    o2l_event_free(&ev);
                    return rc;
                }
            } else if (rc == O2L_EPARSE) {
                /* Kept for a person to look at, never thrown away. */
                struct o2l_event raw = {.json = p, .len = n, .id = "?"};
                struct o2l_deadletter_entry e = {&raw, 0,
                                                 "unreadable line kept"};

                (*unreadable)++;
                if (o2l_deadletter_append(rp->dead, &e, 1,
                                          (int64_t)o2l_now_ns()) != O2L_OK) {
                    return O2L_EIO;
                }
            } else {
                return rc;
            }
        }
        p += n + 1;
    }
    return O2L_OK;
}

/*
 * Copies the events of one kind (OTLP items or ingestion events) into a
 * list the exporter may own.
 */
static int copy_events(const struct parsed *src, bool otlp,
                       struct o2l_event_list *dst)
{
    size_t n = 0;

    for (size_t i = 0; i < src->n; i++) {
        n += src->evs[i].otlp == otlp;
    }
    dst->items = o2l_calloc(n ? n : 1, sizeof(*dst->items));
    if (!dst->items) {
        return O2L_ENOMEM;
    }
    dst->cap = n;
    for (size_t i = 0; i < src->n; i++) {
        const struct o2l_event *s = &src->evs[i];
        struct o2l_event *d = &dst->items[dst->len];

        if (s->otlp != otlp) {
            continue;
        }
        /* Item bytes may hold NULs: copy by length, NUL after. */
        *d = *s;
        d->json = o2l_malloc(s->len + 1);
        d->id = o2l_strdup(s->id);
        dst->len++;
        if (!d->json || !d->id) {
            return O2L_ENOMEM;
        }
        if (s->len > 0) {
            memcpy(d->json, s->json, s->len);
        }
        d->json[s->len] = '\0';
    }
    return O2L_OK;
}

/*
 * Waits until |total| events settled or nothing moved for STALL_LIMIT_MS.
 */
static void wait_settled(struct replay *rp, size_t total)
{
    struct timespec ts = {0, (long)POLL_MS * 1000000L};

    for (;;) {
        bool done;
        bool stalled;

        pthread_mutex_lock(&rp->mu);
        done = rp->n_settled >= total;
        stalled = o2l_mono_ms() - rp->last_progress_ms > STALL_LIMIT_MS;
        pthread_mutex_unlock(&rp->mu);
        if (done || stalled) {
            return;
        }
        nanosleep(&ts, NULL);
    }
}

/* Writes back what never settled, so the next replay tries it again. */
static int write_back(struct replay *rp, const struct parsed *evs)
{
    int rc = O2L_OK;

    for (size_t i = 0; i < evs->n && rc == O2L_OK; i++) {
        struct o2l_deadletter_entry e = {
            &evs->evs[i], 0, "replay gave up: Langfuse did not take it in time"};

        if (rp->settled[i]) {
            continue;
        }
        rc = o2l_deadletter_append(rp->dead, &e, 1, (int64_t)o2l_now_ns());
        if (rc == O2L_OK) {
            rp->refused++;
        }
    }
    return rc;
}

/*
 * Sends the events of one kind through an exporter for their API and
 * waits until they settled or stalled; what did not settle is left for
 * write_back(). Returns O2L_OK, O2L_ENOMEM or the submit error.
 */
static int replay_pass(struct replay *rp,
                       const struct o2l_exporter_config *base,
                       const struct parsed *evs, bool otlp)
{
    struct o2l_exporter_config cfg = *base;
    struct o2l_exporter *ex = NULL;
    struct o2l_event_list list = {0};
    size_t target;
    int rc;

    rc = copy_events(evs, otlp, &list);
    if (rc != O2L_OK || list.len == 0) {
        goto out;
    }
    cfg.output = otlp ? O2L_OUTPUT_OTLP : O2L_OUTPUT_INGESTION;
    /* The file may hold more than the daemon's queue allows. */
    if (cfg.queue_max_events < list.len) {
        cfg.queue_max_events = list.len;
    }
    ex = o2l_exporter_create(&cfg, rp->log);
    if (!ex || o2l_exporter_start(ex) != O2L_OK) {
        rc = O2L_ENOMEM;
        goto out;
    }
    pthread_mutex_lock(&rp->mu);
    /* Earlier passes' exporters are gone: only this pass still settles. */
    target = rp->n_settled + list.len;
    rp->last_progress_ms = o2l_mono_ms();
    pthread_mutex_unlock(&rp->mu);
    rc = o2l_exporter_submit(ex, &list);
    if (rc != O2L_OK) {
        goto out;
    }
    wait_settled(rp, target);
    o2l_exporter_stop(ex);

out:
    o2l_exporter_destroy(ex);
    o2l_event_list_clear(&list);
    return rc;
}

int o2l_replay_dead_letters(const struct o2l_exporter_config *ec,
                            const char *path, const struct o2l_log *log,
                            struct o2l_replay_result *out)
{
    struct o2l_exporter_config cfg = *ec;
    struct parsed evs = {0};
    struct replay rp;
    char err[512];
    char *aside = NULL;
    char *text = NULL;
    size_t len = 0;
    size_t items = 0;
    int rc;

    memset(out, 0, sizeof(*out));
    memset(&rp, 0, sizeof(rp));
    rp.log = log;
    pthread_mutex_init(&rp.mu, NULL);

    rc = take_file(path, &aside, &text, &len, log);
    if (rc == O2L_EINVAL) {
        o2l_log_info(log, COMPONENT, "nothing to replay: %s does not exist",
                     path);
        rc = O2L_OK;
        goto out;
    }
    if (rc != O2L_OK) {
        goto out;
    }
    rp.dead = o2l_deadletter_open(path, err, sizeof(err));
    if (!rp.dead) {
        o2l_log_error(log, COMPONENT, "%s", err);
        rc = O2L_EIO;
        goto out;
    }
    rc = parse_all(text, len, &rp, &evs, &out->unreadable);
    if (rc != O2L_OK) {
        goto out;
    }
    out->replayed = evs.n;
    for (size_t i = 0; i < evs.n; i++) {
        items += evs.evs[i].otlp;
    }
    o2l_log_info(log, COMPONENT,
                 "replaying events=%zu (otlp_items=%zu) from %s", evs.n, items,
                 path);
    if (evs.n > 0) {
        rp.settled = o2l_calloc(evs.n, sizeof(*rp.settled));
        if (!rp.settled) {
            rc = O2L_ENOMEM;
            goto out;
        }
        cfg.on_settle = on_settle;
        cfg.settle_arg = &rp;
        /* The owner's callback would get our argument: not wanted here. */
        cfg.on_type_refused = NULL;
        cfg.leave_queued_on_stop = true;
        cfg.max_age_ms = 0;
        cfg.queue_max_bytes = (size_t)-1;
        rc = replay_pass(&rp, &cfg, &evs, false);
        if (rc == O2L_OK) {
            rc = replay_pass(&rp, &cfg, &evs, true);
        }
        if (rc != O2L_OK) {
            goto out;
        }
        rc = write_back(&rp, &evs);
        if (rc != O2L_OK) {
            goto out;
        }
    }
    out->delivered = rp.delivered;
    out->refused = rp.refused;
    /* Every line is delivered or written back: the old file can go. */
    if (unlink(aside) != 0) {
        o2l_log_warn(log, COMPONENT, "cannot remove %s: %s", aside,
                     strerror(errno));
    }
    o2l_log_info(log, COMPONENT,
                 "done delivered=%zu refused_again=%zu unreadable=%zu",
                 out->delivered, out->refused, out->unreadable);

out:
    if (rc != O2L_OK && aside) {
        o2l_log_error(log, COMPONENT,
                      "replay stopped: %s; the events are kept in %s",
                      o2l_strerror(rc), aside);
    }
    for (size_t i = 0; i < evs.n; i++) {
        o2l_event_free(&evs.evs[i]);
    }
    o2l_free(evs.evs);
    o2l_free(rp.settled);
    o2l_deadletter_close(rp.dead);
    o2l_free(text);
    o2l_free(aside);
    pthread_mutex_destroy(&rp.mu);
    return rc;
}
