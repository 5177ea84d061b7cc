/* SPDX-License-Identifier: Apache-2.0 */
/*
 * encode.h - the ingestion encoder: Langfuse's model into ingestion events
 * (the JSON objects of POST /api/public/ingestion's "batch" array).
 */
#ifndef O2L_ENCODE_H
#define O2L_ENCODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "o2l/model.h"

/* Langfuse caps one event at about 1 MB; larger ones are trimmed. */
#define O2L_EVENT_MAX_BYTES (1000 * 1000)

/*
 * The marker that replaces a value removed to bring an ingestion event or
 * an OTLP item under the limit, shared by both encoders: a printf format
 * taking (const char *what, size_t bytes removed, size_t limit), at most
 * O2L_TRIM_MARKER_MAX bytes with its NUL. Metadata stays an object, the
 * marker under O2L_TRIM_METADATA_KEY. Values no longer than the marker
 * plus 64 bytes are never replaced.
 */
#define O2L_TRIM_MARKER_FMT                                                    \
    "[otel2langfuse: %s of %zu bytes removed: event over the %zu-byte limit]"
#define O2L_TRIM_MARKER_MAX   160
#define O2L_TRIM_METADATA_KEY "otel2langfuse_truncated"

/* One serialized ingestion event: {"id","type","timestamp","body"}. */
struct o2l_event {
    char *json; /* NUL-terminated, compact JSON */
    size_t len;
    char *id;         /* the envelope id, for matching 207 results */
    uint64_t tag;     /* the owner's mark (the spool request it came from) */
    int64_t born_ns;  /* when its span was received, Unix ns; 0: unknown */
    bool otlp;        /* json holds OTLP ResourceSpans bytes, not JSON text
                         (see encode_otlp.h) */
    char span_id[17]; /* the span it was made from: an observation's own
                         span (the parent span for span events), a
                         trace's envelope span; "" when unknown */
};

struct o2l_event_list {
    struct o2l_event *items;
    size_t len;
    size_t cap;
};

/*
 * Appends one event per trace and observation of |m| to |out|, a trace
 * ahead of its observations. An event over |max_event_bytes| has its
 * largest of input, output and metadata replaced with a marker string.
 * Returns O2L_OK or O2L_ENOMEM (|out| then holds what was appended).
 */
int o2l_encode_ingestion(const struct o2l_mapped *m, size_t max_event_bytes,
                         struct o2l_event_list *out);

/*
 * Moves the items of |src| to the end of |dst| and empties |src|.
 * Returns O2L_OK or O2L_ENOMEM (then nothing moved).
 */
int o2l_event_list_move(struct o2l_event_list *dst, struct o2l_event_list *src);

/* Makes room for |more| items. Returns O2L_OK or O2L_ENOMEM. */
int o2l_event_list_reserve(struct o2l_event_list *l, size_t more);

/* Frees the items and the array; leaves |l| empty. Accepts NULL. */
void o2l_event_list_clear(struct o2l_event_list *l);

/* Frees one event's strings. */
void o2l_event_free(struct o2l_event *ev);

/*
 * Writes {"batch":[e1,e2,...]} for |n| events of |evs| into a new buffer
 * (*out, o2l_malloc, owned by the caller). Returns O2L_OK or O2L_ENOMEM.
 */
int o2l_encode_batch(const struct o2l_event *evs, size_t n, char **out,
                     size_t *out_len);

#endif /* O2L_ENCODE_H */
