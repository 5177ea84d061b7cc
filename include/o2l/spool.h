/* SPDX-License-Identifier: Apache-2.0 */
/*
 * spool.h - the durable spool: every accepted export request is written to
 * an SQLite database (WAL mode) and synced before the receiver answers, and
 * stays there until every event made from it has been delivered or
 * dead-lettered.
 *
 * Threads:
 *  - the receive thread (the libevent loop) calls o2l_spool_append(). The
 *    append is not done on that thread: a writer thread takes every append
 *    waiting at that moment and commits them in one transaction (group
 *    commit), so one fsync serves many requests. When the commit is on
 *    disk, the append's callback runs back on the receive thread (the spool
 *    wakes the loop through an event on |base|).
 *  - the delivery thread calls o2l_spool_next() to read requests in order
 *    and o2l_spool_ack() when one is settled; acks are applied by the
 *    writer thread in its next transaction (no sync needed for them).
 *
 * A record is the request body as received after decompression, in its
 * format (protobuf or JSON), with the time it was received; the delivery
 * side decodes it again with the same receive time, so the result is the
 * same as the first decode.
 */
#ifndef O2L_SPOOL_H
#define O2L_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "o2l/log.h"

struct event_base;

struct o2l_spool_config {
    const char *dir;    /* created if missing (one level); spool.db inside */
    uint64_t max_bytes; /* cap on the bodies held; appends past it: EFULL */
    bool sync;          /* true: fsync before the callback (the default);
                           false: no fsync, for measuring its cost only */
    uint64_t reserve_bytes; /* size of the space reserve (spool.reserve);
                               0: max_bytes / 64 within 4..64 MiB, cut to
                               an eighth of a small file system */
    uint32_t max_pages;     /* 0: none; else a cap on the database file in
                               pages (PRAGMA max_page_count), so tests can run
                               out of space without filling a disk */
};

/* A stored request. |body| is owned by the record. */
struct o2l_spool_record {
    uint64_t id;         /* increasing; 0 is never used */
    int64_t received_ns; /* Unix ns */
    int format;          /* enum o2l_otlp_format, stored as an integer */
    uint32_t n_spans;    /* spans accepted from it, for counters */
    unsigned char *body;
    size_t len;
};

struct o2l_spool_stats {
    uint64_t requests_appended; /* committed since start */
    uint64_t bytes_appended;
    uint64_t spans_appended;     /* n_spans of the committed requests */
    uint64_t requests_acked;     /* deleted since start */
    uint64_t commits;            /* transactions (one fsync each) */
    uint64_t append_failures;    /* commits that failed */
    uint64_t requests_held;      /* in the spool now, incl. recovered */
    uint64_t bytes_held;         /* sum of body lengths now */
    uint64_t recovered_requests; /* found at open */
    uint64_t recovered_bytes;
    uint64_t requests_failed; /* appends answered with an error */
    uint64_t damaged_at_open; /* spool files found damaged and moved
                                 aside at open (their requests lost) */
    uint64_t reserve_bytes;   /* size of the reserve file now (0: freed) */
    bool out_of_space;        /* the disk is full: appends are refused
                                 until deletes have made room again */
};

struct o2l_spool;
struct o2l_spool_ticket;

/*
 * Runs on the receive thread when the append is committed (rc == O2L_OK)
 * or failed (O2L_EIO: the request is not stored, answer 503). Not called
 * after o2l_spool_ticket_cancel().
 */
typedef void (*o2l_spool_done_fn)(void *arg, int rc);

/*
 * Opens (or creates) the spool in cfg->dir and recovers what an earlier
 * run left: counts requests and bytes (logged by the caller from the
 * stats). A database that cannot be read is moved aside (renamed with a
 * ".corrupt-<unix time>" suffix) and a new one is started; a write-ahead
 * log with a damaged header (which SQLite would ignore silently) is moved
 * aside as "-wal.damaged-<unix time>". Both are logged as errors and
 * counted in damaged_at_open.
 *
 * The directory is locked (flock on spool.lock) for the life of the
 * spool: a second open of the same directory, from this or another
 * process, fails with a message saying so.
 *
 * Disk space: a reserve file (spool.reserve, real blocks) is kept beside
 * the database. When a write fails for want of space the spool frees the
 * reserve so the deletes of delivered requests still go through, refuses
 * appends (EFULL, out_of_space in the stats) and, once deletes and a
 * checkpoint have made room, writes the reserve again and takes appends.
 * A disk too full for the reserve at open starts in that state.
 *
 * Returns NULL with a message in |err| when the directory cannot be used.
 */
struct o2l_spool *o2l_spool_open(const struct o2l_spool_config *cfg,
                                 const struct o2l_log *log, char *err,
                                 size_t err_len);

/*
 * Starts the writer thread; completions are delivered on |base|'s thread
 * through an event the spool adds to |base| (removed again by stop()).
 * Appends queued before the start go into the first transaction. Returns
 * O2L_OK, O2L_EINVAL when already started or stopped, or O2L_EIO.
 */
int o2l_spool_start(struct o2l_spool *sp, struct event_base *base);

/*
 * True when an append of |len| more bytes would fit under the cap (bytes
 * held + bytes waiting for commit + len <= max_bytes), the disk is not
 * out of space and the spool is not stopping. Receive thread.
 */
bool o2l_spool_has_room(struct o2l_spool *sp, size_t len);

/*
 * Queues |rec| (id ignored; body copied) for the next commit and returns
 * O2L_OK with a ticket; |done| will run on the receive thread. Returns
 * O2L_EFULL when it would pass the cap or the disk is out of space
 * (see o2l_spool_open()), O2L_ETOOBIG when |len| alone is
 * larger than the cap, O2L_ESTOPPED when stopping, O2L_ENOMEM; then no
 * callback will run. |ticket| may be NULL when the caller never cancels.
 */
int o2l_spool_append(struct o2l_spool *sp, const struct o2l_spool_record *rec,
                     o2l_spool_done_fn done, void *arg,
                     struct o2l_spool_ticket **ticket);

/*
 * The caller no longer wants the callback (its request went away). The
 * append still completes. Receive thread only; never after the callback
 * has run. Accepts NULL.
 */
void o2l_spool_ticket_cancel(struct o2l_spool_ticket *t);

/*
 * Reads the first record with id > |after|, waiting up to |timeout_ms| for
 * one to be committed. Returns O2L_OK with |out| filled (free with
 * o2l_spool_record_clear()), O2L_ETIMEDOUT when none came in time,
 * O2L_ESTOPPED once the spool is stopping, O2L_EIO on a database error
 * (logged), O2L_ENOMEM. Delivery thread only (it has its own read
 * connection).
 */
int o2l_spool_next(struct o2l_spool *sp, uint64_t after,
                   struct o2l_spool_record *out, uint32_t timeout_ms);

/*
 * Marks request |id| settled: it is deleted in the next transaction (an id
 * already deleted is ignored). Deletes never fail with the appends they
 * were grouped with: they are written again on their own, and deletes that
 * still fail are tried again every second; acks made after stop() are
 * applied by close().
 * Any thread. Returns O2L_OK, O2L_EINVAL for id 0, or O2L_ENOMEM.
 */
int o2l_spool_ack(struct o2l_spool *sp, uint64_t id);

/*
 * Stops accepting appends, commits what is waiting (running its
 * callbacks on the calling thread, which must be the receive thread),
 * applies pending acks and stops the writer thread. o2l_spool_next()
 * returns O2L_ESTOPPED from then on, waiters included. When start() was
 * never called, the waiting appends are committed right here, on the
 * calling thread. Removes the event from |base|, so it must run before
 * the base is freed. Calling it again does nothing.
 */
void o2l_spool_stop(struct o2l_spool *sp);

void o2l_spool_stats(struct o2l_spool *sp, struct o2l_spool_stats *out);

/*
 * Stops if needed (receive thread, as for stop()), applies acks that came
 * in after the stop, closes and releases the directory's lock (the reserve
 * file stays for the next start). The delivery thread must no longer call
 * o2l_spool_next(). Accepts NULL.
 */
void o2l_spool_close(struct o2l_spool *sp);

void o2l_spool_record_clear(struct o2l_spool_record *rec);

#endif /* O2L_SPOOL_H */
