/* SPDX-License-Identifier: Apache-2.0 */
/*
 * replay.h - `otel2langfuse dead-letter replay`: sends the events of a
 * dead-letter file to Langfuse again once the cause is fixed.
 *
 * The file is locked and renamed aside to <file>.replaying-<pid> (so a
 * running daemon starts a new one); the replay holds that lock until it
 * has removed the file. Replaying files that nobody holds, left by a
 * replay that was killed, are adopted and sent along. Then each event is
 * sent. Events Langfuse refuses again, events that could not be sent
 * before the give-up time, events not sent because the replay was asked
 * to stop, and lines that cannot be read are appended to the dead-letter
 * file again; the replaying files are removed only when every line is
 * accounted for.
 */
#ifndef O2L_REPLAY_H
#define O2L_REPLAY_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "o2l/exporter.h"
#include "o2l/log.h"

struct o2l_replay_options {
    /*
     * Set non-zero (by a signal handler or another thread) to stop soon:
     * the request in flight gets about a second, then what is not
     * delivered goes back to the dead-letter file unchanged. NULL: never.
     */
    const atomic_int *stop;
    uint32_t give_up_ms; /* give up after this long without progress;
                            0: a minute */
};

struct o2l_replay_result {
    size_t replayed;   /* events read from the files */
    size_t adopted;    /* of them, from files of replays that ended early */
    size_t delivered;  /* accepted by Langfuse */
    size_t refused;    /* refused again, or given up on: written back */
    size_t returned;   /* not delivered when asked to stop: written back
                          unchanged */
    size_t unreadable; /* lines that were not events: written back as is */
    bool interrupted;  /* the stop flag ended the replay */
};

/*
 * Replays |path| through an exporter configured by |ec| (its settle
 * callback and stop behaviour are replaced). |opt| may be NULL (defaults).
 * Returns O2L_OK (see |out|; out->interrupted when stopped early), or
 * O2L_EIO / O2L_ENOMEM when the files could not be handled (logged;
 * nothing is lost: the next replay adopts what is left).
 */
int o2l_replay_dead_letters(const struct o2l_exporter_config *ec,
                            const char *path,
                            const struct o2l_replay_options *opt,
                            const struct o2l_log *log,
                            struct o2l_replay_result *out);

#endif /* O2L_REPLAY_H */
