/* SPDX-License-Identifier: Apache-2.0 */
/*
 * assemble.h - the assemble stage: spans read back from the spool are held
 * per trace for a short window, so that facts found on any span of a
 * trace (a session on a child, a user in LangGraph metadata, tags from
 * several spans) reach the trace and, in OTLP output, every span of it.
 *
 * A trace is released when
 *  - its window has passed since its first span arrived (window_ms), or
 *  - its true root (a span without a parent) has arrived and root_grace_ms
 *    has passed since, or
 *  - the stage holds more than max_traces traces or max_bytes bytes of
 *    requests (the oldest traces go first), or
 *  - the stage is flushed (at stop, nothing is released: what is held is
 *    still in the spool and is read again at the next start).
 *
 * Released spans are mapped together, trace by trace. A span that arrives
 * after its trace was released is held and released on its own; the facts
 * of the released trace are remembered for a while (facts_ttl_ms) and
 * laid under the late span's own, so in OTLP output it carries the same
 * user, session, name and tags. Spans already released are never sent
 * again for a late fact.
 *
 * Custom trace ids: when the spans of an original trace
 * were mapped to another trace id, the stage remembers that id for the
 * original trace id, as long as it remembers facts (the same ttl and
 * bound), and gives it to later spans of that trace that do not name one
 * themselves, so they join the same Langfuse trace.
 *
 * Duplicate spans: a span whose (trace id as received,
 * span id) the stage already holds replaces the held one, which is
 * dropped unsent; the later arrival wins, as within one export.
 *
 * The stage owns the decoded requests: each spool request stays loaded
 * until every span of it is released.
 *
 * Single-threaded: the delivery thread only.
 */
#ifndef O2L_ASSEMBLE_H
#define O2L_ASSEMBLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "o2l/model.h"
#include "o2l/span.h"

struct o2l_assemble_config {
    uint32_t window_ms;     /* default 3000 */
    uint32_t root_grace_ms; /* default 300 */
    size_t max_traces;      /* default 10000 */
    size_t max_bytes;       /* default 64 MiB, request bytes held */
    uint32_t facts_ttl_ms;  /* default 600000 */
};

void o2l_assemble_config_defaults(struct o2l_assemble_config *cfg);

struct o2l_assemble;

/* Returns the stage (|cfg| NULL: the defaults), or NULL when out of
 * memory. */
struct o2l_assemble *o2l_assemble_new(const struct o2l_assemble_config *cfg);

/*
 * Takes |ex| (decoded from spool request |id|, |bytes| long) and holds its
 * spans, each under the trace id it arrived with. A span the stage already
 * holds (same trace id and span id) replaces the held copy. The stage owns
 * |ex| from now on, also on error; on O2L_ENOMEM none of its spans is held.
 * A request without spans, or whose every held span was replaced by later
 * copies, is wholly released (reported by the next o2l_assemble_done()).
 * |now_ms| is a monotonic clock, never going back.
 * Returns O2L_OK or O2L_ENOMEM.
 */
int o2l_assemble_add(struct o2l_assemble *a, uint64_t id, size_t bytes,
                     struct o2l_export *ex, uint64_t now_ms);

struct o2l_release_index;

/*
 * A set of released spans, as one export the mapper can read, with the
 * spool request each span came from. ex.spans and ex.scopes are new arrays
 * of shallow copies: the strings and cJSON values inside still belong to
 * the held requests, which stay loaded until o2l_assemble_done(). Spans
 * are grouped by trace (traces in order of first arrival), in arrival
 * order within a trace; ex.rejected is 0 and ex.error_message NULL.
 * A span of an original trace for which a custom trace id is remembered
 * carries that id as its trace_id here (the held span keeps its own);
 * o2l_assemble_facts() then names the original in otel_trace_id.
 */
struct o2l_release {
    struct o2l_export ex;  /* spans grouped by trace; do not free its parts */
    uint64_t *request_ids; /* request_ids[i] for ex.spans[i] */
    struct o2l_release_index *index; /* private: span id lookup */
};

/*
 * Fills |out| with the traces due at |now_ms| (all held traces when
 * |all|). Returns O2L_OK (out->ex.n_spans may be 0: nothing due) or
 * O2L_ENOMEM (nothing released, the stage unchanged). Call
 * o2l_assemble_done() after the release is mapped and encoded, and
 * before the next release: one release at a time.
 */
int o2l_assemble_release(struct o2l_assemble *a, uint64_t now_ms, bool all,
                         struct o2l_release *out);

/* The spool request that span |span_id| of |rel| came from, or 0. When
 * two traces of the release hold the same span id, the first one's. */
uint64_t o2l_release_request(const struct o2l_release *rel,
                             const char *span_id);

/*
 * After mapping the open release into |m|: first, for each observation of
 * a span of that release mapped to a trace id other than the one the span
 * arrived with, remembers that trace id for the original one (later spans
 * follow it), and gives the observations of spans that the release moved
 * to a remembered id the metadata key otel_trace_id = the original id.
 * Then remembers the trace facts of |m| (name, user, session, release,
 * version, environment, tags, metadata, public; keyed by the mapped trace
 * id) for late spans, and lays remembered facts under
 * the facts of traces that were released before: a missing value is
 * filled in, an environment of "default" (on the trace and its
 * observations) takes the remembered one, tags become the union, and
 * metadata keys |m| lacks are added. What |m| gains is allocated so that
 * o2l_mapped_free() frees it. Facts are forgotten facts_ttl_ms after they
 * were last stored, or when more than 4 * max_traces traces are
 * remembered (the least recently stored first). Returns O2L_OK or
 * O2L_ENOMEM (then some traces of |m| may be merged and remembered,
 * others not).
 */
int o2l_assemble_facts(struct o2l_assemble *a, struct o2l_mapped *m,
                       uint64_t now_ms);

/*
 * Ends a release: frees its arrays (|rel| may be NULL), and every request
 * none of whose spans is held any longer. Returns through |ids|
 * (o2l_malloc'd, *n_ids entries, in the order they were wholly released;
 * NULL and 0 when there are none) the requests that are now wholly
 * released. Returns O2L_OK or O2L_ENOMEM: the release is freed all the
 * same, and those requests are returned by a later call.
 */
int o2l_assemble_done(struct o2l_assemble *a, struct o2l_release *rel,
                      uint64_t **ids, size_t *n_ids);

/* Milliseconds until the next trace is due (0: due now, also when a
 * bound is crossed), or UINT32_MAX when none is held. */
uint32_t o2l_assemble_next_due(const struct o2l_assemble *a, uint64_t now_ms);

/* How much is held, for metrics: traces, spans, and bytes of requests
 * with spans still held. Any pointer may be NULL. */
void o2l_assemble_counts(const struct o2l_assemble *a, size_t *traces,
                         size_t *spans, size_t *bytes);

/* Frees the stage and every request it holds. End an open release with
 * o2l_assemble_done() first. Accepts NULL. */
void o2l_assemble_free(struct o2l_assemble *a);

#endif /* O2L_ASSEMBLE_H */
