/* SPDX-License-Identifier: Apache-2.0 */
/*
 * deadletter.h - the dead-letter file: events Langfuse refused for good
 * (or that outlived the configured maximum age), one JSON object per line:
 *
 *   {"time":"2026-12-03T10:00:00.000000Z","status":400,
 *    "message":"...","event":{...the ingestion event as sent...}}
 *
 * "message" is null when there was none. An event whose json does not
 * parse as an object is kept as a string under "event_raw" instead. An
 * OTLP item (ev->otlp, see encode_otlp.h) is kept as its bytes in standard
 * base64 with its ids instead of "event":
 *
 *   {"time":"...","status":400,"message":"...","id":"<traceId>-<obs id>",
 *    "span_id":"<16 hex digits or empty>","otlp":"<base64>"}
 *
 * "time", "status" and "message" always say when and why the event was
 * first refused. A replay that gives up on an event keeps them and adds
 * what happened to it in "replay" (after "message"):
 *
 *   "replay":{"time":"...","message":"gave up after 60 s without progress"}
 *
 * Written by the delivery thread; each write is a single write() of whole
 * lines to a file opened with O_APPEND, so a replay running beside the
 * daemon never interleaves with it. A line is on disk (fsync) before
 * o2l_deadletter_append() returns, because the spool forgets the request
 * right after.
 *
 * Locking: every writer holds an exclusive flock() on the file while it
 * appends. A replay takes the same lock, renames the file aside
 * (<file>.replaying-<pid>) while holding it and keeps holding it until it
 * has removed that file, so a replaying file nobody holds was left by a
 * replay that ended early.
 */
#ifndef O2L_DEADLETTER_H
#define O2L_DEADLETTER_H

#include <stddef.h>
#include <stdint.h>

#include "o2l/encode.h"
#include "o2l/exporter.h"

/* One line to write. */
struct o2l_deadletter_entry {
    const struct o2l_event *ev; /* embedded as "event" (or "otlp") */
    int status;                 /* Langfuse's status; 0 when none */
    const char *message;        /* Langfuse's message or our reason */
    const char *time;           /* "time" as first recorded; NULL: now */
    const char *replay_message; /* NULL: no "replay"; else its "message"
                                   (its "time" is now) */
};

/* What a line says besides its event (see o2l_deadletter_read_line()). */
struct o2l_deadletter_meta {
    int status;
    char *message; /* NULL when null or missing */
    char *time;    /* NULL when missing */
};

struct o2l_deadletter;

/*
 * Opens |path| for appending (created 0600 if missing; its directory must
 * exist). Returns NULL with a message in |err|.
 */
struct o2l_deadletter *o2l_deadletter_open(const char *path, char *err,
                                           size_t err_len);

/*
 * Appends |n| lines (time = |now_ns|, Unix ns) in one write and syncs.
 * Returns O2L_OK, O2L_ENOMEM or O2L_EIO (then nothing may be assumed
 * written and the caller must keep the events).
 */
int o2l_deadletter_append(struct o2l_deadletter *dl,
                          const struct o2l_deadletter_entry *entries, size_t n,
                          int64_t now_ns);

/*
 * Appends |len| bytes of whole lines exactly as they are (a newline is
 * added when the last one lacks it), in one write, and syncs: a line put
 * back unchanged. Returns O2L_OK, O2L_ENOMEM or O2L_EIO.
 */
int o2l_deadletter_append_raw(struct o2l_deadletter *dl, const char *text,
                              size_t len);

/*
 * Appends the exporter's refused or expired events |items| (status and
 * message taken from each), as o2l_deadletter_append() does.
 */
int o2l_deadletter_append_settled(struct o2l_deadletter *dl,
                                  const struct o2l_settled *items, size_t n,
                                  int64_t now_ns);

void o2l_deadletter_close(struct o2l_deadletter *dl);

/*
 * Reads one line of a dead-letter file back into an event: json is
 * "event" re-serialized compactly, id its "id"; both are owned by |ev|
 * (o2l_event_free). An "otlp" line becomes an item again: otlp = true,
 * json the decoded bytes (len of them, a NUL after), id and span_id the
 * stored ones. |status| (may be NULL) gets the recorded status.
 * Returns O2L_OK, O2L_ENOMEM, or O2L_EPARSE for a line that is not such
 * an object (an "event_raw" line included); |ev| is then empty.
 */
int o2l_deadletter_parse_line(const char *line, size_t len,
                              struct o2l_event *ev, int *status);

/*
 * Like o2l_deadletter_parse_line(), and also fills |meta| (may be NULL)
 * with the line's "status", "message" and "time" (o2l_malloc'd; release
 * with o2l_deadletter_meta_clear(), also after an error).
 */
int o2l_deadletter_read_line(const char *line, size_t len, struct o2l_event *ev,
                             struct o2l_deadletter_meta *meta);

/* Frees what |meta| holds and empties it. Accepts NULL. */
void o2l_deadletter_meta_clear(struct o2l_deadletter_meta *meta);

/*
 * Opens |path| with the open(2) |flags| (O_CLOEXEC is added, files are
 * created 0600) and takes the lock every writer of a dead-letter file
 * takes. Once it holds the lock it makes sure |path| still names the
 * file it opened, and opens again if a replay moved it aside meanwhile; a
 * file that was moved aside is never waited for. Waits at most 30 s for
 * another writer. Returns the descriptor (closing it drops the lock), or
 * -1 with errno set: ENOENT when |path| does not exist (without O_CREAT),
 * EAGAIN when the lock did not come in time.
 */
int o2l_deadletter_open_locked(const char *path, int flags);

#endif /* O2L_DEADLETTER_H */
