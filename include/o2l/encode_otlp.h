/* SPDX-License-Identifier: Apache-2.0 */
/*
 * encode_otlp.h - the OTLP output: the original spans, enriched with
 * explicit langfuse.* attributes that state the bridge's mapping, for
 * Langfuse v4 and Cloud (POST /api/public/otel/v1/traces).
 *
 * One item per observation. An item's bytes are one serialized
 * ResourceSpans holding the span's resource, its scope and that one span,
 * so that items batch by concatenation: an ExportTraceServiceRequest is,
 * for each item, the byte 0x0a (field 1, length-delimited), the item's
 * length as a varint, and the item (see o2l_otlp_request()).
 *
 * What each span carries (attribute names as Langfuse reads them):
 *  - langfuse.observation.type (lower case), .level (always), .status_message,
 *    .input, .output (a string as it is, anything else as JSON text),
 *    .metadata (JSON text of the mapped metadata, without the ingestion-only
 *    attributes/resourceAttributes/scope), .model.name, .model.parameters,
 *    .usage_details, .cost_details (JSON text), .completion_start_time (ISO),
 *    .prompt.name and .prompt.version (int, GENERATION only) — each only
 *    when the mapping has it (usage_details is written as "{}" when the
 *    agent rule dropped usage); langfuse.version, langfuse.environment;
 *  - the trace facts on every span whose trace is in the mapping:
 *    langfuse.trace.name, langfuse.user.id, langfuse.session.id,
 *    langfuse.trace.tags (string array), langfuse.release,
 *    langfuse.trace.public (bool, true or false, whenever the trace's
 *    public fact is known), langfuse.trace.metadata (JSON text);
 *    langfuse.trace.input and langfuse.trace.output on the true root only
 *    (a parentless span observation; of several, the earliest start, then
 *    the lower span id);
 *  - the original attributes (when keep_original is true), values converted
 *    back to AnyValue: strings (bytes arrived as base64 text and stay text),
 *    booleans, integral numbers that fit int64 as intValue, other numbers
 *    as doubleValue, raw JSON integers as intValue, arrays as arrayValue
 *    and objects as kvlistValue. Left out: every key
 *    named above, whether or not the span gets a value for it, so an
 *    original never overrides the mapping (so no span but the true root
 *    carries langfuse.trace.input or .output);
 *    langfuse.internal.as_root on a span with a parent; langfuse.prompt.*
 *    and ai.telemetry.metadata.langfusePrompt when there is no prompt pair.
 *    Moved into .metadata: the raw model and cost keys of a span whose
 *    usage the agent rule dropped, and gen_ai.operation.name of an
 *    invoke_agent or agent_step span that kept a model, usage or cost;
 *  - the span's own fields: trace id (the mapped one, so custom trace ids
 *    apply), span id, parent span id, name (the mapped name), kind, start
 *    and end, status (code and message), events with their attributes,
 *    and, as received, trace state, flags and links (a link's ids are
 *    never rewritten).
 *  - a size guard, the ingestion path's rule (encode.h): while the item
 *    is over max_item_bytes, the largest string value it may replace
 *    (longer than the marker plus 64 bytes) is replaced with the shared
 *    marker. It may replace the span's langfuse.* input, output and
 *    metadata values (observation, then trace ones on the true root; the
 *    marker stays inside an object for metadata) and every string it
 *    forwards as received: original span attributes (also strings inside
 *    their arrays and kvlists), span event and link attributes (the marker
 *    names the attribute's key). Of equal lengths the forwarded copy goes
 *    first. The resource and scope are never changed: an item too big
 *    through them alone is sent as it is.
 * An EVENT observation made from a span event (id "<spanId>-event-<n>")
 * becomes a zero-length INTERNAL child span at the event's time: span id =
 * the first 8 bytes of SHA-256 over that id text, parent = the span, name =
 * the event name, langfuse.observation.type = "event", plus its level,
 * status message, metadata, environment and the trace facts; no original
 * attributes (they stay on the span's event).
 */
#ifndef O2L_ENCODE_OTLP_H
#define O2L_ENCODE_OTLP_H

#include <stdbool.h>
#include <stddef.h>

#include "o2l/encode.h"
#include "o2l/model.h"
#include "o2l/span.h"

struct o2l_map_config;

struct o2l_otlp_out_config {
    bool keep_original;    /* keep the span's other attributes (default true) */
    size_t max_item_bytes; /* size guard per item; 0: O2L_EVENT_MAX_BYTES */
    /* mapping.redact for the attributes forwarded as received (span,
     * span event, link, resource and scope); NULL: nothing redacted. */
    const struct o2l_map_config *map;
};

/*
 * Encodes every observation of |m| (mapped from |ex|) as one item appended
 * to |out|, in the order of m->obs: ev.json holds the ResourceSpans bytes
 * (not text; a NUL is appended after len for safety), ev.len their length,
 * ev.id "<traceId>-<observation id>", ev.span_id the observation's span
 * (the parent span for a span event), ev.otlp = true. |cfg| NULL means the
 * defaults. No observations, no items. Reads |ex| and |m| only. Returns
 * O2L_OK or O2L_ENOMEM (then |out| may hold some items; the caller clears
 * it).
 */
int o2l_encode_otlp(const struct o2l_export *ex, const struct o2l_mapped *m,
                    const struct o2l_otlp_out_config *cfg,
                    struct o2l_event_list *out);

/*
 * Frames |n| items into one ExportTraceServiceRequest in *out
 * (o2l_malloc'd). Returns O2L_OK or O2L_ENOMEM.
 */
int o2l_otlp_request(const struct o2l_event *items, size_t n,
                     unsigned char **out, size_t *out_len);

#endif /* O2L_ENCODE_OTLP_H */
