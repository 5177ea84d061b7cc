/* SPDX-License-Identifier: Apache-2.0 */
/*
 * replay.h - `otel2langfuse dead-letter replay`: sends the events of a
 * dead-letter file to Langfuse again once the cause is fixed.
 *
 * The file is first renamed aside (so a running daemon starts a new one),
 * then each event is sent. Events Langfuse refuses again, events that
 * could not be sent before the give-up time, and lines that cannot be
 * read are appended to the dead-letter file again; the renamed file is
 * removed only when every line is accounted for.
 */
#ifndef O2L_REPLAY_H
#define O2L_REPLAY_H

#include <stddef.h>

#include "o2l/exporter.h"
#include "o2l/log.h"

struct o2l_replay_result {
    size_t replayed;   /* events read from the file */
    size_t delivered;  /* accepted by Langfuse */
    size_t refused;    /* refused again, or not sent in time: written back */
    size_t unreadable; /* lines that were not events: written back as is */
};

/*
 * Replays |path| through an exporter configured by |ec| (its settle
 * callback and stop behaviour are replaced). Gives up on what is not
 * delivered after a minute without progress. Returns O2L_OK (see
 * |out|), or O2L_EIO / O2L_ENOMEM when the file could not be handled
 * (logged; nothing is lost).
 */
int o2l_replay_dead_letters(const struct o2l_exporter_config *ec,
                            const char *path, const struct o2l_log *log,
                            struct o2l_replay_result *out);

#endif /* O2L_REPLAY_H */
