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
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <sqlite3.h>

#include "o2l/common.h"

#define COMPONENT          "spool"
#define SPOOL_DB_NAME      "spool.db"
#define SPOOL_LOCK_NAME    "spool.lock"
#define SPOOL_RESERVE_NAME "spool.reserve"
#define SPOOL_PATH_MAX     4096
/* PRAGMA user_version of the layout below; 0 means a brand-new file. */
#define SPOOL_SCHEMA_VERSION 1
/* How long a connection waits for a lock held by the other one. */
#define SPOOL_BUSY_TIMEOUT_MS 5000
/*
 * The reserve: max_bytes / SPOOL_RESERVE_DIV, within these bounds; on a
 * file system smaller than SPOOL_RESERVE_FS_DIV reserves, an eighth of it
 * (but not below SPOOL_RESERVE_FLOOR).
 */
#define SPOOL_MIB            (1024ull * 1024ull)
#define SPOOL_RESERVE_MIN    (4 * SPOOL_MIB)
#define SPOOL_RESERVE_MAX    (64 * SPOOL_MIB)
#define SPOOL_RESERVE_DIV    64
#define SPOOL_RESERVE_FS_DIV 8
#define SPOOL_RESERVE_FLOOR  (64 * 1024ull)
/* Deletes per transaction while the disk is out of space. */
#define SPOOL_SHORT_ACKS 64
/* How often the writer retries deletes and looks for space. */
#define SPOOL_RETRY_MS 1000
/* A run of failed transactions is logged at most this often. */
#define SPOOL_FAIL_LOG_S 60
/* The WAL header SQLite writes (see its file format). */
#define WAL_HEADER_BYTES 32
#define WAL_MAGIC_LE     0x377f0682u
#define WAL_MAGIC_BE     0x377f0683u
#define WAL_VERSION      3007000u
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

/* What a failed transaction said, read before its rollback. */
struct failure {
    const char *step;
    int src;
    int sys_errno;
    char msg[200];
};

struct o2l_spool {
    char *path;         /* spool.db */
    char *lock_path;    /* spool.lock */
    char *reserve_path; /* spool.reserve */
    int lock_fd;        /* flock held while open */
    uint64_t max_bytes;
    uint64_t max_body;  /* SQLite's own limit on one value */
    uint64_t reserve;   /* size of the reserve when there is one */
    uint64_t group_max; /* bodies per transaction (one append at least) */
    const struct o2l_log *log;

    /* Writer thread (or open/stop/close when there is none). */
    bool reserve_held;        /* spool.reserve is there, full size */
    bool reserve_broken;      /* writing it failed other than for space */
    bool ckpt_no_space;       /* a checkpoint after a commit failed for space */
    int reserve_errno;        /* why writing the reserve failed */
    int ckpt_pages;           /* WAL frames that start a checkpoint */
    int64_t secure_delete;    /* the library's setting, back after a shortage */
    uint64_t fail_run;        /* transactions failed in a row */
    uint64_t fail_run_logged; /* fail_run at the last line logged */
    time_t fail_logged_at;

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
    struct o2l_spool_stats st; /* out_of_space: appends refused */
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

static bool is_space_errno(int e)
{
    return e == ENOSPC || e == EDQUOT || e == EFBIG;
}

/* The failure was for want of disk space (or of pages under max_pages). */
static bool is_no_space_code(int src, int sys_errno)
{
    return (src & 0xff) == SQLITE_FULL || src == SQLITE_IOERR_SHMSIZE ||
           ((src & 0xff) == SQLITE_IOERR && is_space_errno(sys_errno));
}

/*
 * After each commit of the writer connection (writer thread): a passive
 * checkpoint once the WAL holds ckpt_pages. One that fails for space is
 * noted, so appends stop before the WAL outgrows what the reserve covers.
 */
static int on_wal_commit(void *arg, sqlite3 *db, const char *name, int frames)
{
    struct o2l_spool *sp = arg;
    int src;

    if (frames < sp->ckpt_pages) {
        return SQLITE_OK;
    }
    src = sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, NULL,
                                    NULL);
    if (src != SQLITE_OK && is_no_space_code(src, sqlite3_system_errno(db))) {
        sp->ckpt_no_space = true;
    }
    return SQLITE_OK;
}

/*
 * Opens both connections, creates the table and counts what an earlier run
 * left. On failure everything is closed again; *corrupt tells whether the
 * file itself is unreadable (so moving it aside may help).
 */
static int open_db(struct o2l_spool *sp, const struct o2l_spool_config *cfg,
                   char *err, size_t err_len, bool *corrupt)
{
    const char *sync_sql =
        cfg->sync ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=OFF";
    char limit_sql[64];
    char pages_sql[64];
    int64_t count = 0;
    int64_t bytes = 0;
    int64_t page_size = 4096;
    sqlite3 *failed_db;
    int src;

    *corrupt = false;
    failed_db = NULL;
    err[0] = '\0';
    /* A WAL cut back to the reserve's size after each checkpoint. */
    snprintf(limit_sql, sizeof(limit_sql), "PRAGMA journal_size_limit=%llu",
             (unsigned long long)sp->reserve);

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
    if (src == SQLITE_OK && cfg->max_pages > 0) {
        snprintf(pages_sql, sizeof(pages_sql), "PRAGMA max_page_count=%u",
                 (unsigned)cfg->max_pages);
        src = query_ints(sp->wdb, pages_sql, NULL, NULL);
    }
    if (src == SQLITE_OK) {
        src = check_schema(sp, err, err_len);
    }
    if (src == SQLITE_OK) {
        src = query_ints(sp->wdb, "PRAGMA page_size", &page_size, NULL);
    }
    if (src == SQLITE_OK) {
        src = query_ints(sp->wdb, "PRAGMA secure_delete", &sp->secure_delete,
                         NULL);
    }
    if (src == SQLITE_OK) {
        /*
         * Checkpoint once half a reserve is in the WAL: what a checkpoint
         * still has to copy into the database file then stays within what
         * freeing the reserve gives back. Our own hook instead of
         * SQLite's automatic one, which would hide a failure.
         */
        if (page_size <= 0) {
            page_size = 4096;
        }
        sp->ckpt_pages = (int)(sp->reserve / 2 / (uint64_t)page_size);
        sp->ckpt_pages = sp->ckpt_pages < 4 ? 4 : sp->ckpt_pages;
        sqlite3_wal_hook(sp->wdb, on_wal_commit, sp);
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
                  "path=%s damaged: unreadable (%s); moved aside as "
                  "%s.corrupt-%ld, its requests are lost, starting empty",
                  sp->path, why, sp->path, now);
    sp->st.damaged_at_open++;
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
    /* Timeouts are monotonic: a clock step must not cut them short. */
    rc = pthread_condattr_init(&attr);
    if (rc != 0) {
        pthread_mutex_destroy(&sp->mu);
        return O2L_ENOMEM;
    }
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    rc = pthread_cond_init(&sp->work_cv, &attr);
    if (rc == 0) {
        rc = pthread_cond_init(&sp->commit_cv, &attr);
        if (rc != 0) {
            pthread_cond_destroy(&sp->work_cv);
        }
    }
    pthread_condattr_destroy(&attr);
    if (rc != 0) {
        pthread_mutex_destroy(&sp->mu);
        return O2L_ENOMEM;
    }
    return O2L_OK;
}

static char *join_path(const char *dir, const char *name)
{
    size_t n = strlen(dir) + 1 + strlen(name) + 1;
    char *path;

    if (n > SPOOL_PATH_MAX) {
        return NULL;
    }
    path = o2l_malloc(n);
    if (path) {
        snprintf(path, n, "%s/%s", dir, name);
    }
    return path;
}

static int make_paths(struct o2l_spool *sp, const char *dir, char *err,
                      size_t err_len)
{
    if (strlen(dir) + sizeof("/" SPOOL_RESERVE_NAME) > SPOOL_PATH_MAX) {
        set_err(err, err_len, "spool directory path too long");
        return O2L_EINVAL;
    }
    sp->path = join_path(dir, SPOOL_DB_NAME);
    sp->lock_path = join_path(dir, SPOOL_LOCK_NAME);
    sp->reserve_path = join_path(dir, SPOOL_RESERVE_NAME);
    if (!sp->path || !sp->lock_path || !sp->reserve_path) {
        set_err(err, err_len, "out of memory");
        return O2L_ENOMEM;
    }
    return O2L_OK;
}

/*
 * One daemon per spool directory: two would both deliver everything. The
 * flock goes with the open file, so it is released however the process
 * ends.
 */
static int take_lock(struct o2l_spool *sp, const char *dir, char *err,
                     size_t err_len)
{
    sp->lock_fd = open(sp->lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (sp->lock_fd < 0) {
        set_err(err, err_len, "cannot open the lock file %s: %s", sp->lock_path,
                strerror(errno));
        return O2L_EIO;
    }
    if (flock(sp->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;

        close(sp->lock_fd);
        sp->lock_fd = -1;
        if (e == EWOULDBLOCK) {
            set_err(err, err_len,
                    "%s is in use: another otel2langfuse holds its lock "
                    "(%s); give each daemon a spool directory of its own",
                    dir, sp->lock_path);
        } else {
            set_err(err, err_len, "cannot lock %s: %s", sp->lock_path,
                    strerror(e));
        }
        return O2L_EIO;
    }
    return O2L_OK;
}

static uint64_t fs_avail(const char *dir, uint64_t *total)
{
    struct statvfs vs;

    if (statvfs(dir, &vs) != 0) {
        if (total) {
            *total = 0;
        }
        return UINT64_MAX;
    }
    if (total) {
        *total = (uint64_t)vs.f_blocks * (uint64_t)vs.f_frsize;
    }
    return (uint64_t)vs.f_bavail * (uint64_t)vs.f_frsize;
}

static void size_reserve(struct o2l_spool *sp,
                         const struct o2l_spool_config *cfg, const char *dir)
{
    uint64_t total = 0;
    uint64_t r;

    if (cfg->reserve_bytes > 0) {
        r = cfg->reserve_bytes;
    } else {
        r = cfg->max_bytes / SPOOL_RESERVE_DIV;
        r = r < SPOOL_RESERVE_MIN ? SPOOL_RESERVE_MIN : r;
        r = r > SPOOL_RESERVE_MAX ? SPOOL_RESERVE_MAX : r;
        fs_avail(dir, &total);
        if (total > 0 && r > total / SPOOL_RESERVE_FS_DIV) {
            r = total / SPOOL_RESERVE_FS_DIV;
            r = r < SPOOL_RESERVE_FLOOR ? SPOOL_RESERVE_FLOOR : r;
            o2l_log_warn(sp->log, COMPONENT,
                         "dir=%s is on a small file system (%llu bytes): "
                         "space reserve cut to %llu bytes",
                         dir, (unsigned long long)total, (unsigned long long)r);
        }
    }
    sp->reserve = r;
    sp->group_max = r / 4 > 0 ? r / 4 : 1;
}

/*
 * Writes spool.reserve in full (zeros, synced: real blocks, not a sparse
 * file). Returns O2L_OK, O2L_EFULL when the disk has no room for it (the
 * partial file is removed) or O2L_EIO.
 */
static int make_reserve(struct o2l_spool *sp)
{
    static const unsigned char zeros[64 * 1024];
    struct stat sb;
    uint64_t done = 0;
    int rc = O2L_OK;
    int fd;

    fd = open(sp->reserve_path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        sp->reserve_errno = errno;
        rc = is_space_errno(errno) ? O2L_EFULL : O2L_EIO;
        goto out;
    }
    /* Kept from an earlier run: nothing to write. */
    if (fstat(fd, &sb) == 0 && (uint64_t)sb.st_size == sp->reserve &&
        (uint64_t)sb.st_blocks * 512u >= sp->reserve) {
        close(fd);
        goto out;
    }
    errno = 0;
    while (done < sp->reserve) {
        size_t n = sizeof(zeros);
        ssize_t w;

        if (sp->reserve - done < n) {
            n = (size_t)(sp->reserve - done);
        }
        w = pwrite(fd, zeros, n, (off_t)done);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            rc = (w == 0 || is_space_errno(errno)) ? O2L_EFULL : O2L_EIO;
            break;
        }
        done += (uint64_t)w;
    }
    if (rc == O2L_OK && ftruncate(fd, (off_t)sp->reserve) != 0) {
        rc = O2L_EIO;
    }
    if (rc == O2L_OK && fsync(fd) != 0) {
        rc = is_space_errno(errno) ? O2L_EFULL : O2L_EIO;
    }
    if (rc != O2L_OK) {
        sp->reserve_errno = errno;
    }
    close(fd);
    if (rc != O2L_OK) {
        unlink(sp->reserve_path);
    }
out:
    sp->reserve_held = rc == O2L_OK;
    pthread_mutex_lock(&sp->mu);
    sp->st.reserve_bytes = rc == O2L_OK ? sp->reserve : 0;
    pthread_mutex_unlock(&sp->mu);
    return rc;
}

static void release_reserve(struct o2l_spool *sp)
{
    if (!sp->reserve_held) {
        return;
    }
    sp->reserve_held = false;
    if (unlink(sp->reserve_path) != 0 && errno != ENOENT) {
        o2l_log_error(sp->log, COMPONENT, "cannot remove the reserve %s: %s",
                      sp->reserve_path, strerror(errno));
        return;
    }
    pthread_mutex_lock(&sp->mu);
    sp->st.reserve_bytes = 0;
    pthread_mutex_unlock(&sp->mu);
    o2l_log_warn(sp->log, COMPONENT,
                 "path=%s freed the %llu-byte space reserve so delivered "
                 "requests can still be deleted",
                 sp->reserve_path, (unsigned long long)sp->reserve);
}

static uint32_t read_be32(const unsigned char *b)
{
    return ((uint32_t)b[0] << 24) | ((uint32_t)b[1] << 16) |
           ((uint32_t)b[2] << 8) | (uint32_t)b[3];
}

static uint32_t read_le32(const unsigned char *b)
{
    return ((uint32_t)b[3] << 24) | ((uint32_t)b[2] << 16) |
           ((uint32_t)b[1] << 8) | (uint32_t)b[0];
}

/* Why the WAL header in |h| is not one SQLite would use, or NULL. */
static const char *wal_header_problem(const unsigned char *h)
{
    uint32_t magic = read_be32(h);
    uint32_t page_size = read_be32(h + 8);
    bool big = magic == WAL_MAGIC_BE;
    uint32_t s1 = 0;
    uint32_t s2 = 0;

    if (magic != WAL_MAGIC_LE && magic != WAL_MAGIC_BE) {
        return "not a write-ahead log header";
    }
    if (read_be32(h + 4) != WAL_VERSION) {
        return "unknown write-ahead log version";
    }
    /* 1 stands for 65536. */
    if (page_size != 1 && (page_size < 512 || page_size > 32768 ||
                           (page_size & (page_size - 1)) != 0)) {
        return "bad page size in the header";
    }
    for (int i = 0; i < 24; i += 8) {
        uint32_t x0 = big ? read_be32(h + i) : read_le32(h + i);
        uint32_t x1 = big ? read_be32(h + i + 4) : read_le32(h + i + 4);

        s1 += x0 + s2;
        s2 += x1 + s1;
    }
    if (s1 != read_be32(h + 24) || s2 != read_be32(h + 28)) {
        return "header checksum does not match";
    }
    return NULL;
}

/*
 * SQLite reads a write-ahead log with a damaged header as empty and then
 * overwrites it: every commit in it would be gone without a word. Such a
 * log is moved aside (kept for inspection) and reported instead. An empty
 * log is normal (a checkpoint cut it back).
 */
static void check_wal(struct o2l_spool *sp)
{
    unsigned char h[WAL_HEADER_BYTES];
    char from[SPOOL_PATH_MAX + 8];
    char to[SPOOL_PATH_MAX + 48];
    const char *why = NULL;
    long now = (long)time(NULL);
    struct stat sb;
    ssize_t n;
    int fd;

    snprintf(from, sizeof(from), "%s-wal", sp->path);
    fd = open(from, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return;
    }
    if (fstat(fd, &sb) != 0 || sb.st_size == 0) {
        close(fd);
        return;
    }
    if (sb.st_size < WAL_HEADER_BYTES) {
        why = "shorter than its header";
    } else {
        do {
            n = pread(fd, h, sizeof(h), 0);
        } while (n < 0 && errno == EINTR);
        why = n == (ssize_t)sizeof(h) ? wal_header_problem(h)
                                      : "header unreadable";
    }
    close(fd);
    if (!why) {
        return;
    }
    snprintf(to, sizeof(to), "%s.damaged-%ld", from, now);
    if (rename(from, to) != 0) {
        o2l_log_error(sp->log, COMPONENT,
                      "path=%s damaged (%s, %lld bytes) and cannot be moved "
                      "aside: %s; the requests it held are lost",
                      from, why, (long long)sb.st_size, strerror(errno));
    } else {
        o2l_log_error(sp->log, COMPONENT,
                      "path=%s damaged (%s, %lld bytes); moved aside as %s, "
                      "the requests it held are lost",
                      from, why, (long long)sb.st_size, to);
    }
    /* The index of the old log means nothing now. */
    snprintf(from, sizeof(from), "%s-shm", sp->path);
    unlink(from);
    sp->st.damaged_at_open++;
}

/* Reserve at open; a disk too full for it starts out of space. */
static int open_reserve(struct o2l_spool *sp, const char *dir, char *err,
                        size_t err_len)
{
    int rc = make_reserve(sp);

    /* Room for the reserve but not for the WAL beside it: as good as full. */
    if (rc == O2L_OK && fs_avail(dir, NULL) < sp->reserve) {
        sp->st.out_of_space = true;
        o2l_log_error(sp->log, COMPONENT,
                      "path=%s out of disk space (less than %llu bytes free "
                      "beside the reserve): requests are refused until "
                      "there is room",
                      sp->path, (unsigned long long)sp->reserve);
        return O2L_OK;
    }

    if (rc == O2L_EFULL) {
        sp->st.out_of_space = true;
        o2l_log_error(sp->log, COMPONENT,
                      "path=%s no room for the %llu-byte space reserve: "
                      "requests are refused until there is",
                      sp->reserve_path, (unsigned long long)sp->reserve);
        return O2L_OK;
    }
    if (rc != O2L_OK) {
        set_err(err, err_len, "cannot write the space reserve %s: %s",
                sp->reserve_path, strerror(sp->reserve_errno));
    }
    return rc;
}

static void free_spool(struct o2l_spool *sp)
{
    if (sp->lock_fd >= 0) {
        close(sp->lock_fd);
    }
    o2l_free(sp->path);
    o2l_free(sp->lock_path);
    o2l_free(sp->reserve_path);
    o2l_free(sp);
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
    sp->lock_fd = -1;
    if (make_paths(sp, cfg->dir, err, err_len) != O2L_OK ||
        take_lock(sp, cfg->dir, err, err_len) != O2L_OK) {
        free_spool(sp);
        return NULL;
    }
    if (init_sync(sp) != O2L_OK) {
        set_err(err, err_len, "out of memory");
        free_spool(sp);
        return NULL;
    }
    size_reserve(sp, cfg, cfg->dir);
    check_wal(sp);

    if (open_db(sp, cfg, why, sizeof(why), &corrupt) != O2L_OK) {
        if (!corrupt || move_aside(sp, why, err, err_len) != O2L_OK ||
            open_db(sp, cfg, why, sizeof(why), &corrupt) != O2L_OK) {
            if (err && err_len > 0 && !err[0]) {
                set_err(err, err_len, "%s", why);
            }
            goto fail_db;
        }
    }
    if (open_reserve(sp, cfg->dir, err, err_len) != O2L_OK) {
        close_db(sp);
        goto fail_db;
    }
    return sp;

fail_db:
    pthread_cond_destroy(&sp->commit_cv);
    pthread_cond_destroy(&sp->work_cv);
    pthread_mutex_destroy(&sp->mu);
    free_spool(sp);
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

static bool is_no_space(const struct failure *f)
{
    return is_no_space_code(f->src, f->sys_errno);
}

/*
 * One transaction with every insert and delete of |g|. Returns the SQLite
 * code; on failure |fail| says what went wrong and nothing of |g| is kept.
 */
static int write_group(struct o2l_spool *sp, struct group *g,
                       struct failure *fail)
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
        return SQLITE_OK;
    }

    fail->step = step;
    fail->src = src;
    fail->sys_errno = sqlite3_system_errno(sp->wdb);
    snprintf(fail->msg, sizeof(fail->msg), "%s", sqlite3_errmsg(sp->wdb));
    sqlite3_reset(sp->insert_stmt);
    sqlite3_reset(sp->length_stmt);
    sqlite3_reset(sp->delete_stmt);
    /* Some errors end the transaction by themselves. */
    if (!sqlite3_get_autocommit(sp->wdb)) {
        sqlite3_exec(sp->wdb, "ROLLBACK", NULL, NULL, NULL);
    }
    g->n_deleted = 0;
    g->bytes_deleted = 0;
    return src;
}

static time_t mono_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec;
}

/*
 * Stops appends for want of space: frees the reserve so deletes still go
 * through. Logged once per episode.
 */
static void enter_out_of_space(struct o2l_spool *sp)
{
    bool was;

    pthread_mutex_lock(&sp->mu);
    was = sp->st.out_of_space;
    sp->st.out_of_space = true;
    pthread_mutex_unlock(&sp->mu);
    if (!was) {
        /*
         * Builds with secure delete write every freed page again (zeros):
         * a delete would need as much room as the row. Not while short.
         */
        query_ints(sp->wdb, "PRAGMA secure_delete=FAST", NULL, NULL);
        o2l_log_error(sp->log, COMPONENT,
                      "path=%s out of disk space: requests are refused "
                      "(503, not ready) until delivered requests are "
                      "deleted and there is room again",
                      sp->path);
    }
    release_reserve(sp);
}

/*
 * A failed transaction: the first of a run is logged, then one line a
 * minute with the count, so a disk that stays broken does not flood the
 * log.
 */
static void note_failure(struct o2l_spool *sp, const struct group *g,
                         const struct failure *fail)
{
    time_t now = mono_s();

    sp->fail_run++;
    if (sp->fail_run == 1 || now - sp->fail_logged_at >= SPOOL_FAIL_LOG_S) {
        char run[96] = "";

        if (sp->fail_run > 1) {
            snprintf(run, sizeof(run),
                     " (%" PRIu64 " failed transactions in a row, %" PRIu64
                     " not logged)",
                     sp->fail_run, sp->fail_run - sp->fail_run_logged - 1);
        }
        o2l_log_error(sp->log, COMPONENT,
                      "path=%s %s failed requests=%" PRIu64 " bytes=%" PRIu64
                      " acks=%" PRIu64 ": %s%s",
                      sp->path, fail->step, g->n_tickets, g->bytes, g->n_acks,
                      fail->msg, run);
        sp->fail_logged_at = now;
        sp->fail_run_logged = sp->fail_run;
    }
    if (is_no_space(fail)) {
        enter_out_of_space(sp);
    }
}

static void note_success(struct o2l_spool *sp)
{
    /* The commit went in, but the disk is as good as full. */
    if (sp->ckpt_no_space) {
        sp->ckpt_no_space = false;
        o2l_log_debug(sp->log, COMPONENT,
                      "path=%s checkpoint failed for want of space", sp->path);
        enter_out_of_space(sp);
    }
    if (sp->fail_run > 0) {
        o2l_log_info(sp->log, COMPONENT,
                     "path=%s writes work again after %" PRIu64
                     " failed transactions",
                     sp->path, sp->fail_run);
    }
    sp->fail_run = 0;
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
    } else if (g->n_tickets > 0) {
        sp->st.append_failures++;
        sp->st.requests_failed += g->n_tickets;
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

/* Free pages inside the database: room for rows without a bigger file. */
static uint64_t db_free_bytes(struct o2l_spool *sp)
{
    int64_t pages = 0;
    int64_t size = 0;

    if (query_ints(sp->wdb, "PRAGMA freelist_count", &pages, NULL) !=
            SQLITE_OK ||
        query_ints(sp->wdb, "PRAGMA page_size", &size, NULL) != SQLITE_OK ||
        pages <= 0 || size <= 0) {
        return 0;
    }
    return (uint64_t)pages * (uint64_t)size;
}

static bool out_of_space(struct o2l_spool *sp)
{
    bool v;

    pthread_mutex_lock(&sp->mu);
    v = sp->st.out_of_space;
    pthread_mutex_unlock(&sp->mu);
    return v;
}

/*
 * After commits, and every SPOOL_RETRY_MS while short of space or without
 * a reserve.
 *
 * Short of space: an empty spool gives its file's space back (VACUUM),
 * the WAL's goes back with a TRUNCATE checkpoint. Appends go through the
 * WAL first, so free pages inside the database do not help them: once the
 * disk has room for the reserve and as much again for the WAL, the reserve
 * is written and appends are taken again.
 *
 * Otherwise, without a reserve: writes it when the disk has room for it.
 */
static void recover_space(struct o2l_spool *sp)
{
    const char *dir_end;
    char dir[SPOOL_PATH_MAX];
    bool short_now;
    uint64_t held;
    uint64_t need;
    int src;

    pthread_mutex_lock(&sp->mu);
    short_now = sp->st.out_of_space;
    held = sp->st.requests_held;
    pthread_mutex_unlock(&sp->mu);
    if (!short_now && (sp->reserve_held || sp->reserve_broken)) {
        return;
    }
    dir_end = strrchr(sp->path, '/');
    snprintf(dir, sizeof(dir), "%.*s", dir_end ? (int)(dir_end - sp->path) : 1,
             dir_end ? sp->path : ".");
    if (short_now) {
        if (held == 0 && db_free_bytes(sp) > 0) {
            src = sqlite3_exec(sp->wdb, "VACUUM", NULL, NULL, NULL);
            o2l_log_debug(sp->log, COMPONENT, "path=%s vacuum: %s", sp->path,
                          src == SQLITE_OK ? "done" : sqlite3_errmsg(sp->wdb));
        }
        /* Only the writer writes; reads are short: the wait is bounded. */
        src = sqlite3_wal_checkpoint_v2(sp->wdb, NULL,
                                        SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
        if (src != SQLITE_OK) {
            o2l_log_debug(sp->log, COMPONENT, "path=%s checkpoint: %s",
                          sp->path, sqlite3_errmsg(sp->wdb));
            return;
        }
    }
    need = sp->reserve_held || sp->reserve_broken ? 0 : sp->reserve;
    need += short_now ? sp->reserve : 0;
    if (fs_avail(dir, NULL) < need) {
        return;
    }
    if (!sp->reserve_held && !sp->reserve_broken &&
        make_reserve(sp) == O2L_EIO) {
        sp->reserve_broken = true;
        o2l_log_error(sp->log, COMPONENT,
                      "path=%s cannot write the space reserve; going on "
                      "without one",
                      sp->reserve_path);
    }
    if (!short_now || (!sp->reserve_held && !sp->reserve_broken)) {
        return;
    }
    pthread_mutex_lock(&sp->mu);
    sp->st.out_of_space = false;
    pthread_mutex_unlock(&sp->mu);
    {
        char sql[48];

        snprintf(sql, sizeof(sql), "PRAGMA secure_delete=%d",
                 sp->secure_delete == 1   ? 1
                 : sp->secure_delete == 2 ? 2
                                          : 0);
        query_ints(sp->wdb, sql, NULL, NULL);
    }
    o2l_log_info(sp->log, COMPONENT,
                 "path=%s room again (reserve back, %llu bytes free on "
                 "disk): taking requests",
                 sp->path, (unsigned long long)fs_avail(dir, NULL));
}

/* Cuts |*list| after |n| nodes; returns the rest. */
static struct ack_node *split_acks(struct ack_node *list, uint64_t n)
{
    struct ack_node *rest;

    for (uint64_t i = 1; list && i < n; i++) {
        list = list->next;
    }
    if (!list) {
        return NULL;
    }
    rest = list->next;
    list->next = NULL;
    return rest;
}

/*
 * Deletes |acks| in transactions of their own (small ones while short of
 * space). When the disk is full the reserve is freed and the delete tried
 * again; what still fails is kept for the next try.
 */
static void commit_acks(struct o2l_spool *sp, struct ack_node *acks)
{
    bool deleted = false;

    while (acks) {
        struct ack_node *rest;
        struct failure fail;
        struct group g;
        int src;

        memset(&g, 0, sizeof(g));
        rest =
            split_acks(acks, out_of_space(sp) ? SPOOL_SHORT_ACKS : UINT64_MAX);
        g.acks = acks;
        for (struct ack_node *a = acks; a; a = a->next) {
            g.n_acks++;
        }
        src = write_group(sp, &g, &fail);
        if (src != SQLITE_OK && is_no_space(&fail) && sp->reserve_held) {
            enter_out_of_space(sp);
            src = write_group(sp, &g, &fail);
        }
        if (src != SQLITE_OK) {
            note_failure(sp, &g, &fail);
            sp->retry_acks = join_acks(acks, rest);
            break;
        }
        note_success(sp);
        publish_group(sp, &g, O2L_OK);
        deleted = deleted || g.n_deleted > 0;
        free_acks(acks);
        acks = rest;
    }
    if (deleted || out_of_space(sp)) {
        recover_space(sp);
    }
}

/*
 * Commits what is queued at this moment (up to group_max bytes of bodies,
 * one append at least), plus acks left over from a failed transaction.
 * Writer thread, or the caller of stop()/close() when there is no writer
 * thread.
 */
static void commit_queued(struct o2l_spool *sp)
{
    struct o2l_spool_ticket *last = NULL;
    struct failure fail;
    struct group g;
    int src;

    memset(&g, 0, sizeof(g));
    pthread_mutex_lock(&sp->mu);
    g.tickets = sp->queue.head;
    for (struct o2l_spool_ticket *t = sp->queue.head; t; t = t->next) {
        if (last && g.bytes + t->len > sp->group_max) {
            break;
        }
        g.n_tickets++;
        g.bytes += t->len;
        g.spans += t->n_spans;
        last = t;
    }
    if (last) {
        sp->queue.head = last->next;
        if (!sp->queue.head) {
            sp->queue.tail = NULL;
        }
        last->next = NULL;
    }
    g.acks = sp->acks;
    sp->acks = NULL;
    pthread_mutex_unlock(&sp->mu);

    g.acks = join_acks(sp->retry_acks, g.acks);
    sp->retry_acks = NULL;
    if (!g.tickets) {
        if (g.acks) {
            commit_acks(sp, g.acks);
        }
        return;
    }
    for (struct ack_node *a = g.acks; a; a = a->next) {
        g.n_acks++;
    }

    src = write_group(sp, &g, &fail);
    for (struct o2l_spool_ticket *t = g.tickets; t; t = t->next) {
        t->rc = src == SQLITE_OK ? O2L_OK : O2L_EIO;
    }
    if (src == SQLITE_OK) {
        note_success(sp);
        free_acks(g.acks);
        publish_group(sp, &g, O2L_OK);
        wake_loop(sp);
        recover_space(sp);
        return;
    }
    note_failure(sp, &g, &fail);
    /* The 503s go out before the deletes are tried again. */
    publish_group(sp, &g, O2L_EIO);
    wake_loop(sp);
    /* Deletes must not fail with the appends they were grouped with. */
    if (g.acks) {
        commit_acks(sp, g.acks);
    }
}

/* Something to try again later even with nothing new queued. Lock held. */
static bool writer_has_retry(const struct o2l_spool *sp)
{
    return sp->retry_acks || sp->st.out_of_space ||
           (!sp->reserve_held && !sp->reserve_broken);
}

static void *writer_main(void *arg)
{
    struct o2l_spool *sp = arg;
    struct timespec deadline;
    bool timed_out;

    pthread_mutex_lock(&sp->mu);
    for (;;) {
        timed_out = false;
        if (writer_has_retry(sp)) {
            deadline_in(&deadline, SPOOL_RETRY_MS);
        }
        while (!sp->stopping && !sp->queue.head && !sp->acks && !timed_out) {
            if (!writer_has_retry(sp)) {
                pthread_cond_wait(&sp->work_cv, &sp->mu);
            } else if (pthread_cond_timedwait(&sp->work_cv, &sp->mu,
                                              &deadline) == ETIMEDOUT) {
                timed_out = true;
            }
        }
        /* Stopping: leave once what was queued is written. */
        if (sp->stopping && !sp->queue.head && !sp->acks) {
            break;
        }
        pthread_mutex_unlock(&sp->mu);
        commit_queued(sp);
        if (timed_out) {
            recover_space(sp);
        }
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
    ok = !sp->stopping && !sp->st.out_of_space && room_locked(sp, len);
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
    } else if (sp->st.out_of_space || !room_locked(sp, rec->len)) {
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
    /* The lock goes last: the database is closed by then. */
    free_spool(sp);
}

void o2l_spool_record_clear(struct o2l_spool_record *rec)
{
    if (!rec) {
        return;
    }
    o2l_free(rec->body);
    memset(rec, 0, sizeof(*rec));
}
