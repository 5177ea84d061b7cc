/* SPDX-License-Identifier: Apache-2.0 */
/*
 * spool.c - the durable spool: accepted requests kept in an SQLite database
 * in WAL mode, written by one thread in group commits and read back in id
 * order by the delivery thread through a second connection.
 */
#include "o2l/spool.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <sqlite3.h>

#include "o2l/common.h"

#define COMPONENT      "spool"
#define SPOOL_DB_NAME  "spool.db"
#define SPOOL_PATH_MAX 4096
/* PRAGMA user_version of the layout below; 0 means a brand-new file. */
#define SPOOL_SCHEMA_VERSION 1
/* How long a connection waits for a lock held by the other one. */
#define SPOOL_BUSY_TIMEOUT_MS 5000
/* After a checkpoint the WAL file is cut back to this size. */
#define SPOOL_WAL_LIMIT_BYTES (64 * 1024 * 1024)
/* Part of SQLite's row size limit kept for the columns beside the body. */
#define SPOOL_ROW_OVERHEAD 64

/*
 * AUTOINCREMENT keeps ids growing even after every row was deleted: the
 * delivery side asks for "id > last", so a reused id would be skipped.
 */
static const char schema_sql[] = "CREATE TABLE IF NOT EXISTS requests ("
                                 "id INTEGER PRIMARY KEY AUTOINCREMENT,"
                                 "received_ns INTEGER NOT NULL,"
                                 "format INTEGER NOT NULL,"
                                 "n_spans INTEGER NOT NULL,"
                                 "body BLOB NOT NULL)";

static const char insert_sql[] =
    "INSERT INTO requests (received_ns, format, n_spans, body) "
    "VALUES (?1, ?2, ?3, ?4)";
static const char length_sql[] =
    "SELECT length(body) FROM requests WHERE id = ?1";
static const char delete_sql[] = "DELETE FROM requests WHERE id = ?1";
static const char next_sql[] =
    "SELECT id, received_ns, format, n_spans, body FROM requests "
    "WHERE id > ?1 ORDER BY id LIMIT 1";
static const char count_sql[] =
    "SELECT COUNT(*), COALESCE(SUM(length(body)), 0) FROM requests";

/*
 * One append on its way to disk. The body is stored right after the
 * struct. The writer thread reads the record fields and sets |rc|; |done|
 * and |arg| belong to the receive thread alone.
 */
struct o2l_spool_ticket {
    struct o2l_spool_ticket *next;
    o2l_spool_done_fn done; /* NULL once cancelled */
    void *arg;
    int rc;
    int64_t received_ns;
    int format;
    uint32_t n_spans;
    size_t len;
    unsigned char *body;
};

struct ticket_list {
    struct o2l_spool_ticket *head;
    struct o2l_spool_ticket *tail;
};

struct ack_node {
    struct ack_node *next;
    uint64_t id;
};

/* What one transaction carries and what it changed. */
struct group {
    struct o2l_spool_ticket *tickets;
    uint64_t n_tickets;
    uint64_t bytes;
    uint64_t spans;
    struct ack_node *acks;
    uint64_t n_acks;
    uint64_t n_deleted;
    uint64_t bytes_deleted;
};

struct o2l_spool {
    char *path;
    uint64_t max_bytes;
    uint64_t max_body; /* SQLite's own limit on one value */
    const struct o2l_log *log;

    /* Writer connection: used by open(), the writer thread, then close(). */
    sqlite3 *wdb;
    sqlite3_stmt *insert_stmt;
    sqlite3_stmt *length_stmt;
    sqlite3_stmt *delete_stmt;
    struct ack_node *retry_acks; /* from a failed transaction */

    /* Reader connection: the delivery thread only. */
    sqlite3 *rdb;
    sqlite3_stmt *next_stmt;

    /* Receive thread only (wake_wr is also written to by the writer). */
    struct event *wake_ev;
    int wake_rd;
    int wake_wr;
    bool started;
    bool stopped;
    pthread_t thread;

    pthread_mutex_t mu;
    pthread_cond_t work_cv;   /* wakes the writer */
    pthread_cond_t commit_cv; /* wakes o2l_spool_next() */
    bool stopping;
    struct ticket_list queue; /* waiting for a transaction */
    struct ticket_list done;  /* waiting for their callback */
    struct ack_node *acks;
    uint64_t pending_bytes; /* bodies in |queue| and in the writer's hands */
    uint64_t commit_seq;
    struct o2l_spool_stats st;
};

static void set_err(char *err, size_t err_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t err_len, const char *fmt, ...)
{
    va_list ap;

    if (!err || err_len == 0) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
}

static bool is_corrupt(int src)
{
    int primary = src & 0xff;

    return primary == SQLITE_NOTADB || primary == SQLITE_CORRUPT;
}

static uint64_t sub_floor(uint64_t a, uint64_t b)
{
    return a > b ? a - b : 0;
}

static void ticket_list_append(struct ticket_list *l,
                               struct o2l_spool_ticket *head)
{
    struct o2l_spool_ticket *tail = head;

    if (!head) {
        return;
    }
    while (tail->next) {
        tail = tail->next;
    }
    if (l->tail) {
        l->tail->next = head;
    } else {
        l->head = head;
    }
    l->tail = tail;
}

static void free_tickets(struct o2l_spool_ticket *t)
{
    while (t) {
        struct o2l_spool_ticket *next = t->next;

        o2l_free(t);
        t = next;
    }
}

static void free_acks(struct ack_node *a)
{
    while (a) {
        struct ack_node *next = a->next;

        o2l_free(a);
        a = next;
    }
}

/* Puts |b| after |a|; returns the joined list. */
static struct ack_node *join_acks(struct ack_node *a, struct ack_node *b)
{
    struct ack_node *last = a;

    if (!a) {
        return b;
    }
    while (last->next) {
        last = last->next;
    }
    last->next = b;
    return a;
}

/* ---- opening ------------------------------------------------------- */

/* Runs |sql| and reads up to two integers from its first row. */
static int query_ints(sqlite3 *db, const char *sql, int64_t *a, int64_t *b)
{
    sqlite3_stmt *st = NULL;
    int src;

    src = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (src != SQLITE_OK) {
        return src;
    }
    src = sqlite3_step(st);
    if (src == SQLITE_ROW) {
        if (a) {
            *a = sqlite3_column_int64(st, 0);
        }
        if (b) {
            *b = sqlite3_column_int64(st, 1);
        }
        src = SQLITE_OK;
    } else if (src == SQLITE_DONE) {
        src = SQLITE_OK;
    }
    sqlite3_finalize(st);
    return src;
}

static int open_conn(struct o2l_spool *sp, sqlite3 **db)
{
    int flags =
        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    int src;

    /* Each connection is used by one thread at a time, so no mutex. */
    src = sqlite3_open_v2(sp->path, db, flags, NULL);
    if (src != SQLITE_OK) {
        return src;
    }
    sqlite3_extended_result_codes(*db, 1);
    return sqlite3_busy_timeout(*db, SPOOL_BUSY_TIMEOUT_MS);
}

/* Switches to WAL; a file system without shared memory keeps a journal. */
static int set_wal(struct o2l_spool *sp)
{
    sqlite3_stmt *st = NULL;
    const unsigned char *mode;
    int src;

    src = sqlite3_prepare_v2(sp->wdb, "PRAGMA journal_mode=WAL", -1, &st, NULL);
    if (src != SQLITE_OK) {
        return src;
    }
    src = sqlite3_step(st);
    if (src == SQLITE_ROW) {
        mode = sqlite3_column_text(st, 0);
        if (!mode || strcmp((const char *)mode, "wal") != 0) {
            o2l_log_warn(sp->log, COMPONENT,
                         "path=%s journal_mode=%s: wal not available, "
                         "appends wait for reads",
                         sp->path, mode ? (const char *)mode : "?");
        }
        src = SQLITE_OK;
    }
    sqlite3_finalize(st);
    return src;
}

static int check_schema(struct o2l_spool *sp, char *err, size_t err_len)
{
    int64_t version = 0;
    int src;

    src = query_ints(sp->wdb, "PRAGMA user_version", &version, NULL);
    if (src != SQLITE_OK) {
        return src;
    }
    if (version > SPOOL_SCHEMA_VERSION) {
        set_err(err, err_len,
                "%s has layout version %" PRId64 ", newer than this build "
                "reads (%d)",
                sp->path, version, SPOOL_SCHEMA_VERSION);
        return SQLITE_ERROR;
    }
    src = sqlite3_exec(sp->wdb, schema_sql, NULL, NULL, NULL);
    if (src == SQLITE_OK && version == 0) {
        src =
            sqlite3_exec(sp->wdb, "PRAGMA user_version = 1", NULL, NULL, NULL);
    }
    return src;
}

static int prepare_writer(struct o2l_spool *sp)
{
    int src;

    src = sqlite3_prepare_v3(sp->wdb, insert_sql, -1, SQLITE_PREPARE_PERSISTENT,
                             &sp->insert_stmt, NULL);
    if (src == SQLITE_OK) {
        src = sqlite3_prepare_v3(sp->wdb, length_sql, -1,
                                 SQLITE_PREPARE_PERSISTENT, &sp->length_stmt,
                                 NULL);
    }
    if (src == SQLITE_OK) {
        src = sqlite3_prepare_v3(sp->wdb, delete_sql, -1,
                                 SQLITE_PREPARE_PERSISTENT, &sp->delete_stmt,
                                 NULL);
    }
    return src;
}

static void close_db(struct o2l_spool *sp)
{
    sqlite3_finalize(sp->insert_stmt);
    sqlite3_finalize(sp->length_stmt);
    sqlite3_finalize(sp->delete_stmt);
    sqlite3_finalize(sp->next_stmt);
    sp->insert_stmt = NULL;
    sp->length_stmt = NULL;
    sp->delete_stmt = NULL;
    sp->next_stmt = NULL;
    /* The reader goes first so the writer's close can checkpoint. */
    sqlite3_close_v2(sp->rdb);
    sqlite3_close_v2(sp->wdb);
    sp->rdb = NULL;
    sp->wdb = NULL;
}

/*
 * Opens both connections, creates the table and counts what an earlier run
 * left. On failure everything is closed again; *corrupt tells whether the
 * file itself is unreadable (so moving it aside may help).
 */
static int open_db(struct o2l_spool *sp, bool sync, char *err, size_t err_len,
                   bool *corrupt)
{
    const char *sync_sql =
        sync ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=OFF";
    char limit_sql[64];
    int64_t count = 0;
    int64_t bytes = 0;
    sqlite3 *failed_db;
    int src;

    *corrupt = false;
    failed_db = NULL;
    err[0] = '\0';
    snprintf(limit_sql, sizeof(limit_sql), "PRAGMA journal_size_limit=%d",
             SPOOL_WAL_LIMIT_BYTES);

    src = open_conn(sp, &sp->wdb);
    if (src == SQLITE_OK) {
        src = set_wal(sp);
    }
    if (src == SQLITE_OK) {
        src = sqlite3_exec(sp->wdb, sync_sql, NULL, NULL, NULL);
    }
    if (src == SQLITE_OK) {
        src = sqlite3_exec(sp->wdb, limit_sql, NULL, NULL, NULL);
    }
    if (src == SQLITE_OK) {
        src = check_schema(sp, err, err_len);
    }
    if (src == SQLITE_OK) {
        src = query_ints(sp->wdb, count_sql, &count, &bytes);
    }
    if (src == SQLITE_OK) {
        src = prepare_writer(sp);
    }
    if (src != SQLITE_OK) {
        failed_db = sp->wdb;
        goto fail;
    }

    src = open_conn(sp, &sp->rdb);
    if (src == SQLITE_OK) {
        src =
            sqlite3_prepare_v3(sp->rdb, next_sql, -1, SQLITE_PREPARE_PERSISTENT,
                               &sp->next_stmt, NULL);
    }
    if (src != SQLITE_OK) {
        failed_db = sp->rdb;
        goto fail;
    }

    sp->max_body = (uint64_t)sqlite3_limit(sp->wdb, SQLITE_LIMIT_LENGTH, -1);
    sp->max_body = sub_floor(sp->max_body, SPOOL_ROW_OVERHEAD);
    sp->st.recovered_requests = count > 0 ? (uint64_t)count : 0;
    sp->st.recovered_bytes = bytes > 0 ? (uint64_t)bytes : 0;
    sp->st.requests_held = sp->st.recovered_requests;
    sp->st.bytes_held = sp->st.recovered_bytes;
    return O2L_OK;

fail:
    *corrupt = is_corrupt(src);
    if (!err[0]) {
        set_err(err, err_len, "cannot open %s: %s", sp->path,
                failed_db ? sqlite3_errmsg(failed_db) : sqlite3_errstr(src));
    }
    close_db(sp);
    return O2L_EIO;
}

/* Renames spool.db and its WAL and shared-memory files out of the way. */
static int move_aside(struct o2l_spool *sp, const char *why, char *err,
                      size_t err_len)
{
    static const char *const suffixes[] = {"", "-wal", "-shm"};
    long now = (long)time(NULL);
    char from[SPOOL_PATH_MAX];
    char to[SPOOL_PATH_MAX + 32];

    for (size_t i = 0; i < O2L_ARRAY_LEN(suffixes); i++) {
        snprintf(from, sizeof(from), "%s%s", sp->path, suffixes[i]);
        snprintf(to, sizeof(to), "%s.corrupt-%ld", from, now);
        if (rename(from, to) != 0 && (errno != ENOENT || i == 0)) {
            set_err(err, err_len, "cannot move unreadable %s aside: %s", from,
                    strerror(errno));
            return O2L_EIO;
        }
    }
    o2l_log_error(sp->log, COMPONENT,
                  "path=%s unreadable (%s); moved aside as %s.corrupt-%ld, "
                  "its requests are lost, starting empty",
                  sp->path, why, sp->path, now);
    return O2L_OK;
}

static int use_dir(const char *dir, char *err, size_t err_len)
{
    struct stat sb;

    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        set_err(err, err_len, "cannot create spool directory %s: %s", dir,
                strerror(errno));
        return O2L_EIO;
    }
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        set_err(err, err_len, "spool directory %s is not a directory", dir);
        return O2L_EIO;
    }
    return O2L_OK;
}

static int init_sync(struct o2l_spool *sp)
{
    pthread_condattr_t attr;
    int rc;

    if (pthread_mutex_init(&sp->mu, NULL) != 0) {
        return O2L_ENOMEM;
    }
    if (pthread_cond_init(&sp->work_cv, NULL) != 0) {
        pthread_mutex_destroy(&sp->mu);
        return O2L_ENOMEM;
    }
    /* Read timeouts are monotonic: a clock step must not cut them short. */
    rc = pthread_condattr_init(&attr);
    if (rc == 0) {
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
        rc = pthread_cond_init(&sp->commit_cv, &attr);
        pthread_condattr_destroy(&attr);
    }
    if (rc != 0) {
        pthread_cond_destroy(&sp->work_cv);
        pthread_mutex_destroy(&sp->mu);
        return O2L_ENOMEM;
    }
    return O2L_OK;
}

static int make_path(struct o2l_spool *sp, const char *dir, char *err,
                     size_t err_len)
{
    size_t n = strlen(dir) + sizeof("/" SPOOL_DB_NAME);

    if (n > SPOOL_PATH_MAX) {
        set_err(err, err_len, "spool directory path too long");
        return O2L_EINVAL;
    }
    sp->path = o2l_malloc(n);
    if (!sp->path) {
        set_err(err, err_len, "out of memory");
        return O2L_ENOMEM;
    }
    snprintf(sp->path, n, "%s/%s", dir, SPOOL_DB_NAME);
    return O2L_OK;
}

struct o2l_spool *o2l_spool_open(const struct o2l_spool_config *cfg,
                                 const struct o2l_log *log, char *err,
                                 size_t err_len)
{
    struct o2l_spool *sp;
    char why[256];
    bool corrupt;

    set_err(err, err_len, "%s", "");
    if (!cfg || !cfg->dir || !cfg->dir[0]) {
        set_err(err, err_len, "no spool directory given");
        return NULL;
    }
    if (sqlite3_threadsafe() == 0) {
        set_err(err, err_len, "libsqlite3 was built without thread support");
        return NULL;
    }
    if (use_dir(cfg->dir, err, err_len) != O2L_OK) {
        return NULL;
    }
    sp = o2l_calloc(1, sizeof(*sp));
    if (!sp) {
        set_err(err, err_len, "out of memory");
        return NULL;
    }
    sp->max_bytes = cfg->max_bytes;
    sp->log = log;
    sp->wake_rd = -1;
    sp->wake_wr = -1;
    if (make_path(sp, cfg->dir, err, err_len) != O2L_OK) {
        goto fail_path;
    }
    if (init_sync(sp) != O2L_OK) {
        set_err(err, err_len, "out of memory");
        goto fail_sync;
    }

    if (open_db(sp, cfg->sync, why, sizeof(why), &corrupt) != O2L_OK) {
        if (!corrupt || move_aside(sp, why, err, err_len) != O2L_OK ||
            open_db(sp, cfg->sync, why, sizeof(why), &corrupt) != O2L_OK) {
            if (err && err_len > 0 && !err[0]) {
                set_err(err, err_len, "%s", why);
            }
            goto fail_db;
        }
    }
    return sp;

fail_db:
    pthread_cond_destroy(&sp->commit_cv);
    pthread_cond_destroy(&sp->work_cv);
    pthread_mutex_destroy(&sp->mu);
fail_sync:
    o2l_free(sp->path);
fail_path:
    o2l_free(sp);
    return NULL;
}

/* ---- the writer ---------------------------------------------------- */

/* Leaves the statement un-reset on failure so its message survives. */
static int insert_ticket(struct o2l_spool *sp, const struct o2l_spool_ticket *t)
{
    sqlite3_stmt *st = sp->insert_stmt;
    int src;

    src = sqlite3_bind_int64(st, 1, t->received_ns);
    if (src == SQLITE_OK) {
        src = sqlite3_bind_int(st, 2, t->format);
    }
    if (src == SQLITE_OK) {
        src = sqlite3_bind_int64(st, 3, t->n_spans);
    }
    if (src == SQLITE_OK) {
        /* The body outlives the statement step: no copy needed. */
        src = sqlite3_bind_blob64(st, 4, t->body, t->len, SQLITE_STATIC);
    }
    if (src != SQLITE_OK) {
        return src;
    }
    src = sqlite3_step(st);
    if (src != SQLITE_DONE) {
        return src;
    }
    sqlite3_reset(st);
    return SQLITE_OK;
}

/* Deletes row |id| if it is there and adds its size to |g|. */
static int delete_acked(struct o2l_spool *sp, uint64_t id, struct group *g)
{
    int64_t len;
    int src;

    if (id > INT64_MAX) {
        return SQLITE_OK;
    }
    sqlite3_bind_int64(sp->length_stmt, 1, (sqlite3_int64)id);
    src = sqlite3_step(sp->length_stmt);
    if (src == SQLITE_DONE) {
        /* Already gone: acked twice. */
        sqlite3_reset(sp->length_stmt);
        return SQLITE_OK;
    }
    if (src != SQLITE_ROW) {
        return src;
    }
    len = sqlite3_column_int64(sp->length_stmt, 0);
    sqlite3_reset(sp->length_stmt);

    sqlite3_bind_int64(sp->delete_stmt, 1, (sqlite3_int64)id);
    src = sqlite3_step(sp->delete_stmt);
    if (src != SQLITE_DONE) {
        return src;
    }
    sqlite3_reset(sp->delete_stmt);
    g->n_deleted++;
    g->bytes_deleted += len > 0 ? (uint64_t)len : 0;
    return SQLITE_OK;
}

/* One transaction with every insert and delete of |g|. */
static int write_group(struct o2l_spool *sp, struct group *g)
{
    const char *step = "begin";
    int src;

    src = sqlite3_exec(sp->wdb, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    for (struct o2l_spool_ticket *t = g->tickets; src == SQLITE_OK && t;
         t = t->next) {
        step = "insert";
        src = insert_ticket(sp, t);
    }
    for (struct ack_node *a = g->acks; src == SQLITE_OK && a; a = a->next) {
        step = "delete";
        src = delete_acked(sp, a->id, g);
    }
    if (src == SQLITE_OK) {
        step = "commit";
        src = sqlite3_exec(sp->wdb, "COMMIT", NULL, NULL, NULL);
    }
    if (src == SQLITE_OK) {
        return O2L_OK;
    }

    o2l_log_error(sp->log, COMPONENT,
                  "path=%s %s failed requests=%" PRIu64 " bytes=%" PRIu64
                  " acks=%" PRIu64 ": %s",
                  sp->path, step, g->n_tickets, g->bytes, g->n_acks,
                  sqlite3_errmsg(sp->wdb));
    sqlite3_reset(sp->insert_stmt);
    sqlite3_reset(sp->length_stmt);
    sqlite3_reset(sp->delete_stmt);
    /* Some errors end the transaction by themselves. */
    if (!sqlite3_get_autocommit(sp->wdb)) {
        sqlite3_exec(sp->wdb, "ROLLBACK", NULL, NULL, NULL);
    }
    g->n_deleted = 0;
    g->bytes_deleted = 0;
    return O2L_EIO;
}

static void publish_group(struct o2l_spool *sp, const struct group *g, int rc)
{
    pthread_mutex_lock(&sp->mu);
    sp->pending_bytes = sub_floor(sp->pending_bytes, g->bytes);
    if (rc == O2L_OK) {
        sp->st.commits++;
        sp->st.requests_appended += g->n_tickets;
        sp->st.bytes_appended += g->bytes;
        sp->st.spans_appended += g->spans;
        sp->st.requests_held += g->n_tickets;
        sp->st.bytes_held += g->bytes;
        sp->st.requests_acked += g->n_deleted;
        sp->st.requests_held = sub_floor(sp->st.requests_held, g->n_deleted);
        sp->st.bytes_held = sub_floor(sp->st.bytes_held, g->bytes_deleted);
        sp->commit_seq++;
        pthread_cond_broadcast(&sp->commit_cv);
    } else {
        sp->st.append_failures++;
    }
    ticket_list_append(&sp->done, g->tickets);
    pthread_mutex_unlock(&sp->mu);
}

static void wake_loop(struct o2l_spool *sp)
{
    const unsigned char byte = 1;
    ssize_t n;

    if (sp->wake_wr < 0) {
        return;
    }
    /* A full pipe (EAGAIN) already has the loop's attention. */
    do {
        n = write(sp->wake_wr, &byte, 1);
    } while (n < 0 && errno == EINTR);
}

/*
 * Commits everything queued at this moment, plus acks left over from a
 * failed transaction. Writer thread, or the caller of stop()/close() when
 * there is no writer thread.
 */
static void commit_queued(struct o2l_spool *sp)
{
    struct group g;
    int rc;

    memset(&g, 0, sizeof(g));
    pthread_mutex_lock(&sp->mu);
    g.tickets = sp->queue.head;
    sp->queue.head = NULL;
    sp->queue.tail = NULL;
    g.acks = sp->acks;
    sp->acks = NULL;
    pthread_mutex_unlock(&sp->mu);

    g.acks = join_acks(sp->retry_acks, g.acks);
    sp->retry_acks = NULL;
    if (!g.tickets && !g.acks) {
        return;
    }
    for (struct o2l_spool_ticket *t = g.tickets; t; t = t->next) {
        g.n_tickets++;
        g.bytes += t->len;
        g.spans += t->n_spans;
    }
    for (struct ack_node *a = g.acks; a; a = a->next) {
        g.n_acks++;
    }

    rc = write_group(sp, &g);
    if (rc == O2L_OK) {
        free_acks(g.acks);
    } else {
        /* Retried with the next transaction. */
        sp->retry_acks = g.acks;
    }
    for (struct o2l_spool_ticket *t = g.tickets; t; t = t->next) {
        t->rc = rc;
    }
    publish_group(sp, &g, rc);
    if (g.tickets) {
        wake_loop(sp);
    }
}

static void *writer_main(void *arg)
{
    struct o2l_spool *sp = arg;

    pthread_mutex_lock(&sp->mu);
    for (;;) {
        while (!sp->stopping && !sp->queue.head && !sp->acks) {
            pthread_cond_wait(&sp->work_cv, &sp->mu);
        }
        /* Stopping: leave once what was queued is written. */
        if (!sp->queue.head && !sp->acks) {
            break;
        }
        pthread_mutex_unlock(&sp->mu);
        commit_queued(sp);
        pthread_mutex_lock(&sp->mu);
    }
    pthread_mutex_unlock(&sp->mu);
    return NULL;
}

/* ---- the receive thread -------------------------------------------- */

/* Runs the callbacks of finished appends and frees their tickets. */
static void dispatch_done(struct o2l_spool *sp)
{
    struct o2l_spool_ticket *t;

    pthread_mutex_lock(&sp->mu);
    t = sp->done.head;
    sp->done.head = NULL;
    sp->done.tail = NULL;
    pthread_mutex_unlock(&sp->mu);

    while (t) {
        struct o2l_spool_ticket *next = t->next;

        /* Read now: an earlier callback may have cancelled this one. */
        if (t->done) {
            t->done(t->arg, t->rc);
        }
        o2l_free(t);
        t = next;
    }
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    unsigned char buf[64];
    ssize_t n;

    (void)what;
    do {
        n = read(fd, buf, sizeof(buf));
    } while (n > 0 || (n < 0 && errno == EINTR));
    dispatch_done(arg);
}

static void remove_wake(struct o2l_spool *sp)
{
    if (sp->wake_ev) {
        event_free(sp->wake_ev);
        sp->wake_ev = NULL;
    }
    if (sp->wake_rd >= 0) {
        close(sp->wake_rd);
        sp->wake_rd = -1;
    }
    if (sp->wake_wr >= 0) {
        close(sp->wake_wr);
        sp->wake_wr = -1;
    }
}

int o2l_spool_start(struct o2l_spool *sp, struct event_base *base)
{
    sigset_t all;
    sigset_t old;
    int fds[2];
    int rc;

    if (!sp || !base || sp->started || sp->stopped) {
        return O2L_EINVAL;
    }
    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) {
        o2l_log_error(sp->log, COMPONENT, "cannot create wake pipe: %s",
                      strerror(errno));
        return O2L_EIO;
    }
    sp->wake_rd = fds[0];
    sp->wake_wr = fds[1];
    sp->wake_ev = event_new(base, fds[0], EV_READ | EV_PERSIST, on_wake, sp);
    if (!sp->wake_ev || event_add(sp->wake_ev, NULL) != 0) {
        o2l_log_error(sp->log, COMPONENT, "cannot add wake event");
        remove_wake(sp);
        return O2L_EIO;
    }

    /* Signals belong to the loop's thread, not to the writer. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pthread_create(&sp->thread, NULL, writer_main, sp);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        o2l_log_error(sp->log, COMPONENT, "cannot start writer thread: %s",
                      strerror(rc));
        remove_wake(sp);
        return O2L_EIO;
    }
    sp->started = true;
    return O2L_OK;
}

/* bytes held + bytes waiting + len <= max_bytes; lock held. */
static bool room_locked(const struct o2l_spool *sp, uint64_t len)
{
    uint64_t used = sp->st.bytes_held + sp->pending_bytes;

    return len <= sp->max_bytes && used <= sp->max_bytes - len;
}

bool o2l_spool_has_room(struct o2l_spool *sp, size_t len)
{
    bool ok;

    pthread_mutex_lock(&sp->mu);
    ok = !sp->stopping && room_locked(sp, len);
    pthread_mutex_unlock(&sp->mu);
    return ok;
}

static struct o2l_spool_ticket *make_ticket(const struct o2l_spool_record *rec,
                                            o2l_spool_done_fn done, void *arg)
{
    struct o2l_spool_ticket *t;

    t = o2l_malloc(sizeof(*t) + rec->len);
    if (!t) {
        return NULL;
    }
    memset(t, 0, sizeof(*t));
    t->done = done;
    t->arg = arg;
    t->received_ns = rec->received_ns;
    t->format = rec->format;
    t->n_spans = rec->n_spans;
    t->len = rec->len;
    t->body = (unsigned char *)(t + 1);
    if (rec->len > 0) {
        memcpy(t->body, rec->body, rec->len);
    }
    return t;
}

int o2l_spool_append(struct o2l_spool *sp, const struct o2l_spool_record *rec,
                     o2l_spool_done_fn done, void *arg,
                     struct o2l_spool_ticket **ticket)
{
    struct o2l_spool_ticket *t;
    int rc = O2L_OK;

    if (ticket) {
        *ticket = NULL;
    }
    if (!sp || !rec || (!rec->body && rec->len > 0)) {
        return O2L_EINVAL;
    }
    if (rec->len > sp->max_bytes || rec->len > sp->max_body) {
        return O2L_ETOOBIG;
    }
    t = make_ticket(rec, done, arg);
    if (!t) {
        return O2L_ENOMEM;
    }

    pthread_mutex_lock(&sp->mu);
    if (sp->stopping) {
        rc = O2L_ESTOPPED;
    } else if (!room_locked(sp, rec->len)) {
        rc = O2L_EFULL;
    } else {
        ticket_list_append(&sp->queue, t);
        sp->pending_bytes += rec->len;
        pthread_cond_signal(&sp->work_cv);
    }
    pthread_mutex_unlock(&sp->mu);

    if (rc != O2L_OK) {
        o2l_free(t);
        return rc;
    }
    /* Only this thread frees tickets, so |t| is still valid here. */
    if (ticket) {
        *ticket = t;
    }
    return O2L_OK;
}

void o2l_spool_ticket_cancel(struct o2l_spool_ticket *t)
{
    if (t) {
        t->done = NULL;
    }
}

void o2l_spool_stop(struct o2l_spool *sp)
{
    if (!sp || sp->stopped) {
        return;
    }
    sp->stopped = true;

    pthread_mutex_lock(&sp->mu);
    sp->stopping = true;
    pthread_cond_broadcast(&sp->work_cv);
    pthread_cond_broadcast(&sp->commit_cv);
    pthread_mutex_unlock(&sp->mu);

    if (sp->started) {
        pthread_join(sp->thread, NULL);
    } else {
        commit_queued(sp);
    }
    dispatch_done(sp);
    remove_wake(sp);
}

/* ---- the delivery thread ------------------------------------------- */

static int fill_record(sqlite3_stmt *st, struct o2l_spool_record *out)
{
    const void *blob;
    int len;

    blob = sqlite3_column_blob(st, 4);
    len = sqlite3_column_bytes(st, 4);
    if (len < 0 || (!blob && len > 0)) {
        return O2L_ENOMEM;
    }
    out->body = o2l_malloc((size_t)len);
    if (!out->body) {
        return O2L_ENOMEM;
    }
    if (len > 0) {
        memcpy(out->body, blob, (size_t)len);
    }
    out->len = (size_t)len;
    out->id = (uint64_t)sqlite3_column_int64(st, 0);
    out->received_ns = sqlite3_column_int64(st, 1);
    out->format = sqlite3_column_int(st, 2);
    out->n_spans = (uint32_t)sqlite3_column_int64(st, 3);
    return O2L_OK;
}

static int read_next(struct o2l_spool *sp, uint64_t after,
                     struct o2l_spool_record *out, bool *found)
{
    sqlite3_stmt *st = sp->next_stmt;
    int rc = O2L_OK;
    int src;

    *found = false;
    if (after >= INT64_MAX) {
        return O2L_OK;
    }
    sqlite3_bind_int64(st, 1, (sqlite3_int64)after);
    src = sqlite3_step(st);
    if (src == SQLITE_ROW) {
        rc = fill_record(st, out);
        *found = rc == O2L_OK;
    } else if (src != SQLITE_DONE) {
        o2l_log_error(sp->log, COMPONENT,
                      "path=%s read after=%" PRIu64 " failed: %s", sp->path,
                      after, sqlite3_errmsg(sp->rdb));
        rc = O2L_EIO;
    }
    /* Ends the read transaction so the next read sees new commits. */
    sqlite3_reset(st);
    return rc;
}

static void deadline_in(struct timespec *ts, uint32_t timeout_ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += (time_t)(timeout_ms / 1000u);
    ts->tv_nsec += (long)(timeout_ms % 1000u) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

int o2l_spool_next(struct o2l_spool *sp, uint64_t after,
                   struct o2l_spool_record *out, uint32_t timeout_ms)
{
    struct timespec deadline;
    bool stopping;
    bool changed;
    bool found;
    uint64_t seq;
    int rc;

    memset(out, 0, sizeof(*out));
    deadline_in(&deadline, timeout_ms);
    for (;;) {
        pthread_mutex_lock(&sp->mu);
        stopping = sp->stopping;
        seq = sp->commit_seq;
        pthread_mutex_unlock(&sp->mu);
        if (stopping) {
            return O2L_ESTOPPED;
        }

        rc = read_next(sp, after, out, &found);
        if (rc != O2L_OK || found) {
            return rc;
        }

        /* A commit after |seq| was read may hold the record: look again. */
        pthread_mutex_lock(&sp->mu);
        while (!sp->stopping && sp->commit_seq == seq) {
            if (pthread_cond_timedwait(&sp->commit_cv, &sp->mu, &deadline) ==
                ETIMEDOUT) {
                break;
            }
        }
        stopping = sp->stopping;
        changed = sp->commit_seq != seq;
        pthread_mutex_unlock(&sp->mu);
        if (stopping) {
            return O2L_ESTOPPED;
        }
        if (!changed) {
            return O2L_ETIMEDOUT;
        }
    }
}

int o2l_spool_ack(struct o2l_spool *sp, uint64_t id)
{
    struct ack_node *a;

    if (!sp || id == 0) {
        return O2L_EINVAL;
    }
    a = o2l_malloc(sizeof(*a));
    if (!a) {
        return O2L_ENOMEM;
    }
    a->id = id;

    pthread_mutex_lock(&sp->mu);
    a->next = sp->acks;
    sp->acks = a;
    pthread_cond_signal(&sp->work_cv);
    pthread_mutex_unlock(&sp->mu);
    return O2L_OK;
}

/* ---- any thread ---------------------------------------------------- */

void o2l_spool_stats(struct o2l_spool *sp, struct o2l_spool_stats *out)
{
    pthread_mutex_lock(&sp->mu);
    *out = sp->st;
    pthread_mutex_unlock(&sp->mu);
}

void o2l_spool_close(struct o2l_spool *sp)
{
    if (!sp) {
        return;
    }
    o2l_spool_stop(sp);
    /* Acks that came in after the writer left. */
    commit_queued(sp);
    dispatch_done(sp);

    close_db(sp);
    free_tickets(sp->queue.head);
    free_tickets(sp->done.head);
    free_acks(sp->acks);
    free_acks(sp->retry_acks);
    pthread_cond_destroy(&sp->commit_cv);
    pthread_cond_destroy(&sp->work_cv);
    pthread_mutex_destroy(&sp->mu);
    o2l_free(sp->path);
    o2l_free(sp);
}

void o2l_spool_record_clear(struct o2l_spool_record *rec)
{
    if (!rec) {
        return;
    }
    o2l_free(rec->body);
    memset(rec, 0, sizeof(*rec));
}
