/* SPDX-License-Identifier: Apache-2.0 */
/*
 * replay.c - sends a dead-letter file's events to Langfuse again: the
 * ingestion events through the ingestion API, then the OTLP items through
 * the OTLP API. Files left by replays that ended early are adopted first.
 */
#include "o2l/replay.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "o2l/common.h"
#include "o2l/deadletter.h"

#define COMPONENT "replay"

/* Give up on what is left after this long without any event settling. */
#define GIVE_UP_MS 60000u

/* How often the waiting loop looks at the progress and the stop flag. */
#define POLL_MS 100u

/*
 * What the request in flight gets once a stop is asked for; libcurl's
 * progress callback then cuts it within about a second more.
 */
#define STOP_GRACE_MS 1000u

/* Names tried for our own replaying file when an old one has our pid. */
#define ASIDE_TRIES 100

#define ASIDE_INFIX ".replaying-"

/* One event read back, with the line it came from. */
struct item {
    struct o2l_event ev;
    const char *line; /* as read (in its file's text), to put it back */
    size_t line_len;
    struct o2l_deadletter_meta meta; /* why it was first refused */
};

/* A replaying file this replay works on; |fd| holds its lock. */
struct taken {
    char *name;
    int fd;
    char *text;
    size_t len;
    bool adopted; /* left by a replay that ended early */
};

struct replay {
    const struct o2l_log *log;
    const char *path;
    const atomic_int *stop;
    uint32_t give_up_ms;
    struct o2l_deadletter *dead; /* the live dead-letter file */
    struct taken *files;
    size_t n_files;
    struct item *items;
    size_t n_items;
    size_t cap_items;
    pthread_mutex_t mu;
    bool *settled; /* per item, by tag - 1 */
    size_t n_settled;
    size_t delivered;
    size_t refused;
    uint64_t last_progress_ms;
};

static bool stop_asked(const struct replay *rp)
{
    return rp->stop && atomic_load(rp->stop) != 0;
}

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
 * Adds a replaying file whose lock |fd| holds, and reads it. Takes |name|
 * and |fd| in every case.
 */
static int add_file(struct replay *rp, char *name, int fd, bool adopted)
{
    struct taken *grown;
    struct taken *t;

    grown = o2l_realloc(rp->files, (rp->n_files + 1) * sizeof(*grown));
    if (!grown) {
        o2l_free(name);
        close(fd);
        return O2L_ENOMEM;
    }
    rp->files = grown;
    t = &rp->files[rp->n_files++];
    memset(t, 0, sizeof(*t));
    t->name = name;
    t->fd = fd;
    t->adopted = adopted;
    if (slurp(fd, &t->text, &t->len) != O2L_OK) {
        o2l_log_error(rp->log, COMPONENT, "cannot read %s: %s", name,
                      strerror(errno));
        return O2L_EIO;
    }
    return O2L_OK;
}

/*
 * A name for our replaying file. Only a process with our pid makes names
 * with it, so one that exists now was left by a dead process that had
 * it before: it is adopted like any other, and ours gets a suffix.
 */
static char *aside_name(const char *path)
{
    size_t n = strlen(path) + 64;
    char *name = o2l_malloc(n);
    struct stat st;

    if (!name) {
        return NULL;
    }
    for (int i = 0; i < ASIDE_TRIES; i++) {
        if (i == 0) {
            snprintf(name, n, "%s" ASIDE_INFIX "%ld", path, (long)getpid());
        } else {
            snprintf(name, n, "%s" ASIDE_INFIX "%ld.%d", path, (long)getpid(),
                     i);
        }
        if (lstat(name, &st) != 0 && errno == ENOENT) {
            return name;
        }
    }
    o2l_free(name);
    errno = EEXIST;
    return NULL;
}

/*
 * Locks the live file and, still holding the lock, moves it aside: a
 * daemon appending at that moment finishes first, later writers find the
 * path gone or new and create a new file, and no other replay can take
 * our file for a leftover. A missing file is not an error.
 */
static int take_live(struct replay *rp)
{
    char *name;
    int fd;

    fd = o2l_deadletter_open_locked(rp->path, O_RDONLY);
    if (fd < 0) {
        if (errno == ENOENT) {
            return O2L_OK;
        }
        o2l_log_error(rp->log, COMPONENT, "cannot open %s: %s", rp->path,
                      strerror(errno));
        return O2L_EIO;
    }
    name = aside_name(rp->path);
    if (!name) {
        o2l_log_error(rp->log, COMPONENT, "no name to move %s aside: %s",
                      rp->path, strerror(errno));
        close(fd);
        return O2L_EIO;
    }
    if (rename(rp->path, name) != 0) {
        o2l_log_error(rp->log, COMPONENT, "cannot move %s aside: %s", rp->path,
                      strerror(errno));
        o2l_free(name);
        close(fd);
        return O2L_EIO;
    }
    return add_file(rp, name, fd, false);
}

/*
 * The pid in a leftover's name: |entry| must be |base| ASIDE_INFIX
 * <digits>, optionally followed by .<digits>. Returns -1 when it is not
 * such a name.
 */
static long leftover_pid(const char *base, const char *entry)
{
    size_t blen = strlen(base);
    const char *p;
    char *end;
    long pid;

    if (strncmp(entry, base, blen) != 0 ||
        strncmp(entry + blen, ASIDE_INFIX, strlen(ASIDE_INFIX)) != 0) {
        return -1;
    }
    p = entry + blen + strlen(ASIDE_INFIX);
    if (*p < '0' || *p > '9') {
        return -1;
    }
    errno = 0;
    pid = strtol(p, &end, 10);
    if (errno != 0 || pid <= 0) {
        return -1;
    }
    if (*end == '.' && end[1] >= '0' && end[1] <= '9') {
        strtol(end + 1, &end, 10);
    }
    return *end == '\0' ? pid : -1;
}

static bool is_ours(const struct replay *rp, const char *name)
{
    for (size_t i = 0; i < rp->n_files; i++) {
        if (strcmp(rp->files[i].name, name) == 0) {
            return true;
        }
    }
    return false;
}

/*
 * Adopts one leftover if nobody holds its lock. The lock decides, not the
 * pid: a live replay always holds its file's lock, and a pid that is
 * alive without holding it belongs to another process now. Takes |name|.
 */
static int adopt_one(struct replay *rp, char *name, long pid)
{
    struct stat held, named;
    int fd = open(name, O_RDONLY | O_CLOEXEC);
    bool gone;

    if (fd < 0) {
        /* Removed meanwhile by the replay that finished it. */
        o2l_free(name);
        return O2L_OK;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        /* Not necessarily the pid in the name: it may have adopted it. */
        o2l_log_info(rp->log, COMPONENT,
                     "leaving %s alone: another running replay holds it", name);
        goto skip;
    }
    /* Another adopter may have finished and removed it just before. */
    if (fstat(fd, &held) != 0 || stat(name, &named) != 0 ||
        held.st_dev != named.st_dev || held.st_ino != named.st_ino) {
        goto skip;
    }
    gone = kill((pid_t)pid, 0) != 0 && errno == ESRCH;
    o2l_log_warn(rp->log, COMPONENT, "adopting %s: %s", name,
                 gone ? "the replay that made it is gone"
                      : "its pid is alive but does not hold the file, so "
                        "it is not a replay any more");
    return add_file(rp, name, fd, true);

skip:
    close(fd);
    o2l_free(name);
    return O2L_OK;
}

/* Looks for <file>.replaying-<pid> files beside |rp->path| to adopt. */
static int adopt_leftovers(struct replay *rp)
{
    const char *slash = strrchr(rp->path, '/');
    const char *base = slash ? slash + 1 : rp->path;
    char *dir = slash ? o2l_strndup(rp->path, (size_t)(slash - rp->path) + 1)
                      : o2l_strdup("./");
    struct dirent *de;
    DIR *d;
    int rc = O2L_OK;

    if (!dir) {
        return O2L_ENOMEM;
    }
    d = opendir(dir);
    if (!d) {
        o2l_log_warn(rp->log, COMPONENT,
                     "cannot look for files of unfinished replays in %s: %s",
                     dir, strerror(errno));
        o2l_free(dir);
        return O2L_OK;
    }
    while (rc == O2L_OK && (de = readdir(d)) != NULL) {
        long pid = leftover_pid(base, de->d_name);
        size_t n;
        char *name;

        if (pid < 0) {
            continue;
        }
        n = strlen(dir) + strlen(de->d_name) + 1;
        name = o2l_malloc(n);
        if (!name) {
            rc = O2L_ENOMEM;
            break;
        }
        /* "./x" for a bare path would not match our own name: strip it. */
        snprintf(name, n, "%s%s", slash ? dir : "", de->d_name);
        if (is_ours(rp, name)) {
            o2l_free(name);
            continue;
        }
        rc = adopt_one(rp, name, pid);
    }
    closedir(d);
    o2l_free(dir);
    return rc;
}

static int push_item(struct replay *rp, const struct item *it)
{
    if (o2l_grow(&rp->items, &rp->cap_items, rp->n_items, sizeof(*rp->items),
                 64) != O2L_OK) {
        return O2L_ENOMEM;
    }
    rp->items[rp->n_items++] = *it;
    return O2L_OK;
}

/*
 * Splits one file's text into items; lines that are not events are
 * appended to the live dead-letter file as they are. Returns O2L_OK or
 * an error.
 */
static int parse_file(struct replay *rp, const struct taken *t,
                      size_t *unreadable)
{
    const char *p = t->text;
    const char *end = t->text + t->len;

    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
        struct item it;
        int rc;

        memset(&it, 0, sizeof(it));
        if (n > 0) {
            rc = o2l_deadletter_read_line(p, n, &it.ev, &it.meta);
            if (rc == O2L_OK) {
                it.ev.tag = rp->n_items + 1;
                it.line = p;
                it.line_len = n;
                rc = push_item(rp, &it);
                if (rc != O2L_OK) {
                    o2l_event_free(&it.ev);
                    o2l_deadletter_meta_clear(&it.meta);
                    return rc;
                }
            } else if (rc == O2L_EPARSE) {
                /* Kept for a person to look at, never thrown away. */
                (*unreadable)++;
                if (o2l_deadletter_append_raw(rp->dead, p, n) != O2L_OK) {
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
static int copy_events(const struct replay *rp, bool otlp,
                       struct o2l_event_list *dst)
{
    size_t n = 0;

    for (size_t i = 0; i < rp->n_items; i++) {
        n += rp->items[i].ev.otlp == otlp;
    }
    dst->items = o2l_calloc(n ? n : 1, sizeof(*dst->items));
    if (!dst->items) {
        return O2L_ENOMEM;
    }
    dst->cap = n;
    for (size_t i = 0; i < rp->n_items; i++) {
        const struct o2l_event *s = &rp->items[i].ev;
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
 * Waits until |total| events settled, nothing moved for the give-up time,
 * or a stop is asked for.
 */
static void wait_settled(struct replay *rp, size_t total)
{
    struct timespec ts = {0, (long)POLL_MS * 1000000L};

    for (;;) {
        bool done;
        bool stalled;

        pthread_mutex_lock(&rp->mu);
        done = rp->n_settled >= total;
        stalled = o2l_mono_ms() - rp->last_progress_ms > rp->give_up_ms;
        pthread_mutex_unlock(&rp->mu);
        if (done || stalled || stop_asked(rp)) {
            return;
        }
        /* A signal cuts the sleep short; the loop looks again. */
        nanosleep(&ts, NULL);
    }
}

/*
 * Sends the events of one kind through an exporter for their API and
 * waits until they settled, stalled or a stop was asked for; what did not
 * settle is left for write_back(). Returns O2L_OK, O2L_ENOMEM or the
 * submit error.
 */
static int replay_pass(struct replay *rp,
                       const struct o2l_exporter_config *base, bool otlp)
{
    struct o2l_exporter_config cfg = *base;
    struct o2l_exporter *ex = NULL;
    struct o2l_event_list list = {0};
    size_t target;
    int rc;

    if (stop_asked(rp)) {
        return O2L_OK;
    }
    rc = copy_events(rp, otlp, &list);
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
    if (stop_asked(rp)) {
        /* Asked to stop: no new request, the one in flight may finish. */
        o2l_exporter_stop_now(ex);
    } else {
        o2l_exporter_stop(ex);
    }

out:
    o2l_exporter_destroy(ex);
    o2l_event_list_clear(&list);
    return rc;
}

/* Puts the lines of what never settled back unchanged: asked to stop. */
static int put_back_unchanged(struct replay *rp, size_t *count)
{
    char *buf;
    size_t len = 0;
    size_t cap = 0;
    int rc;

    for (size_t i = 0; i < rp->n_items; i++) {
        cap += rp->settled[i] ? 0 : rp->items[i].line_len + 1;
    }
    if (cap == 0) {
        return O2L_OK;
    }
    buf = o2l_malloc(cap);
    if (!buf) {
        return O2L_ENOMEM;
    }
    for (size_t i = 0; i < rp->n_items; i++) {
        const struct item *it = &rp->items[i];

        if (rp->settled[i]) {
            continue;
        }
        memcpy(buf + len, it->line, it->line_len);
        len += it->line_len;
        buf[len++] = '\n';
        (*count)++;
    }
    rc = o2l_deadletter_append_raw(rp->dead, buf, len);
    o2l_free(buf);
    if (rc != O2L_OK) {
        *count = 0;
    }
    return rc;
}

/*
 * Writes back what never settled in the give-up time, with the time,
 * status and message of its first refusal and the give-up as "replay".
 */
static int write_back_given_up(struct replay *rp)
{
    struct o2l_deadletter_entry *e;
    char why[96];
    size_t n = 0;
    int rc;

    e = o2l_calloc(rp->n_items ? rp->n_items : 1, sizeof(*e));
    if (!e) {
        return O2L_ENOMEM;
    }
    snprintf(why, sizeof(why), "gave up after %u s without progress",
             (unsigned)((rp->give_up_ms + 999u) / 1000u));
    for (size_t i = 0; i < rp->n_items; i++) {
        const struct item *it = &rp->items[i];

        if (rp->settled[i]) {
            continue;
        }
        e[n].ev = &it->ev;
        e[n].status = it->meta.status;
        e[n].message = it->meta.message;
        e[n].time = it->meta.time;
        e[n].replay_message = why;
        n++;
    }
    rc = o2l_deadletter_append(rp->dead, e, n, (int64_t)o2l_now_ns());
    if (rc == O2L_OK) {
        rp->refused += n;
    }
    o2l_free(e);
    return rc;
}

/* Reads every taken file into items; counts what was adopted. */
static int parse_files(struct replay *rp, struct o2l_replay_result *out)
{
    size_t adopted_files = 0;

    for (size_t i = 0; i < rp->n_files; i++) {
        const struct taken *t = &rp->files[i];
        size_t before = rp->n_items;
        int rc = parse_file(rp, t, &out->unreadable);

        if (rc != O2L_OK) {
            return rc;
        }
        if (t->adopted) {
            out->adopted += rp->n_items - before;
            adopted_files++;
        }
    }
    if (adopted_files > 0) {
        o2l_log_warn(rp->log, COMPONENT,
                     "adopted events=%zu from files=%zu left by replays "
                     "that ended early",
                     out->adopted, adopted_files);
    }
    return O2L_OK;
}

/*
 * Removes the taken files (when every line is accounted for) and drops
 * their locks; the name goes before the lock, so nobody adopts a file
 * that is done.
 */
static void release_files(struct replay *rp, bool remove)
{
    for (size_t i = 0; i < rp->n_files; i++) {
        struct taken *t = &rp->files[i];

        if (remove && unlink(t->name) != 0) {
            o2l_log_warn(rp->log, COMPONENT, "cannot remove %s: %s", t->name,
                         strerror(errno));
        }
        if (!remove) {
            o2l_log_error(rp->log, COMPONENT,
                          "the events of %s stay there; the next replay "
                          "takes them",
                          t->name);
        }
        close(t->fd);
        o2l_free(t->name);
        o2l_free(t->text);
    }
    o2l_free(rp->files);
    rp->files = NULL;
    rp->n_files = 0;
}

/* Sends everything read, then writes back what did not settle. */
static int send_all(struct replay *rp, const struct o2l_exporter_config *ec,
                    struct o2l_replay_result *out)
{
    struct o2l_exporter_config cfg = *ec;
    int rc;

    rp->settled = o2l_calloc(rp->n_items, sizeof(*rp->settled));
    if (!rp->settled) {
        return O2L_ENOMEM;
    }
    cfg.on_settle = on_settle;
    cfg.settle_arg = rp;
    /* The owner's callback would get our argument: not wanted here. */
    cfg.on_type_refused = NULL;
    cfg.leave_queued_on_stop = true;
    cfg.shutdown_timeout_ms = STOP_GRACE_MS;
    cfg.max_age_ms = 0;
    cfg.queue_max_bytes = (size_t)-1;
    rc = replay_pass(rp, &cfg, false);
    if (rc == O2L_OK) {
        rc = replay_pass(rp, &cfg, true);
    }
    if (rc != O2L_OK) {
        return rc;
    }
    /* The exporters are gone: nothing settles any more. */
    out->interrupted = stop_asked(rp) && rp->n_settled < rp->n_items;
    if (out->interrupted) {
        return put_back_unchanged(rp, &out->returned);
    }
    return write_back_given_up(rp);
}

int o2l_replay_dead_letters(const struct o2l_exporter_config *ec,
                            const char *path,
                            const struct o2l_replay_options *opt,
                            const struct o2l_log *log,
                            struct o2l_replay_result *out)
{
    struct replay rp;
    char err[512];
    size_t items = 0;
    int rc;

    memset(out, 0, sizeof(*out));
    memset(&rp, 0, sizeof(rp));
    rp.log = log;
    rp.path = path;
    rp.stop = opt ? opt->stop : NULL;
    rp.give_up_ms = opt && opt->give_up_ms ? opt->give_up_ms : GIVE_UP_MS;
    pthread_mutex_init(&rp.mu, NULL);

    rc = take_live(&rp);
    if (rc == O2L_OK) {
        rc = adopt_leftovers(&rp);
    }
    if (rc != O2L_OK) {
        goto out;
    }
    if (rp.n_files == 0) {
        o2l_log_info(log, COMPONENT, "nothing to replay: %s does not exist",
                     path);
        goto out;
    }
    rp.dead = o2l_deadletter_open(path, err, sizeof(err));
    if (!rp.dead) {
        o2l_log_error(log, COMPONENT, "%s", err);
        rc = O2L_EIO;
        goto out;
    }
    rc = parse_files(&rp, out);
    if (rc != O2L_OK) {
        goto out;
    }
    out->replayed = rp.n_items;
    for (size_t i = 0; i < rp.n_items; i++) {
        items += rp.items[i].ev.otlp;
    }
    o2l_log_info(log, COMPONENT,
                 "replaying events=%zu (otlp_items=%zu, adopted=%zu) from %s",
                 rp.n_items, items, out->adopted, path);
    if (rp.n_items > 0) {
        rc = send_all(&rp, ec, out);
        if (rc != O2L_OK) {
            goto out;
        }
    }
    out->delivered = rp.delivered;
    out->refused = rp.refused;
    if (out->interrupted) {
        o2l_log_warn(log, COMPONENT,
                     "interrupted: delivered=%zu refused_again=%zu; "
                     "events=%zu not delivered went back to %s unchanged",
                     out->delivered, out->refused, out->returned, path);
    } else {
        o2l_log_info(log, COMPONENT,
                     "done delivered=%zu refused_again=%zu unreadable=%zu",
                     out->delivered, out->refused, out->unreadable);
    }

out:
    if (rc != O2L_OK && rp.n_files > 0) {
        o2l_log_error(log, COMPONENT, "replay stopped: %s", o2l_strerror(rc));
    }
    /* Every line is delivered or written back: the files can go. */
    release_files(&rp, rc == O2L_OK);
    for (size_t i = 0; i < rp.n_items; i++) {
        o2l_event_free(&rp.items[i].ev);
        o2l_deadletter_meta_clear(&rp.items[i].meta);
    }
    o2l_free(rp.items);
    o2l_free(rp.settled);
    o2l_deadletter_close(rp.dead);
    pthread_mutex_destroy(&rp.mu);
    return rc;
}
