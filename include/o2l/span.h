/* SPDX-License-Identifier: Apache-2.0 */
/*
 * span.h - one decoded OTLP export, independent of its wire format.
 *
 * The receive stage turns protobuf and JSON exports into this form; the
 * map stage reads only this form. Attribute values are cJSON values built
 * by these rules:
 *   string -> cJSON string (valid UTF-8; bad bytes and NUL became U+FFFD)
 *   bool   -> cJSON bool
 *   int    -> cJSON number when |v| < 10^15, otherwise a cJSON raw item
 *             holding the exact decimal text, because cJSON prints only
 *             15 significant digits reliably (see o2l_json_get_int64)
 *   double -> cJSON number; NaN and infinities as the strings "NaN",
 *             "Infinity", "-Infinity"
 *   array  -> cJSON array, kvlist -> cJSON object (last key wins)
 *   bytes  -> cJSON string with standard padded base64
 * Empty values are dropped, a repeated key keeps the last value.
 */
#ifndef O2L_SPAN_H
#define O2L_SPAN_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

/* OTLP Status.code values. */
enum o2l_status_code {
    O2L_STATUS_UNSET = 0,
    O2L_STATUS_OK = 1,
    O2L_STATUS_ERROR = 2
};

/* One (resource, instrumentation scope) pair that spans point to. */
struct o2l_scope {
    cJSON *resource_attrs; /* object, never NULL */
    char *name;            /* scope name, "" when absent, never NULL */
    char *version;         /* "" when absent, never NULL */
    cJSON *attrs;          /* scope attributes, object, never NULL */
};

struct o2l_span_event {
    char *name;       /* never NULL */
    uint64_t time_ns; /* unset in the input: the span's start */
    cJSON *attrs;     /* object, never NULL */
};

/*
 * A span link, kept only to be written back in OTLP output. Its ids are
 * never rewritten (custom trace ids move spans, not what they point to).
 * A link whose trace id or span id is absent, malformed or all zeros is
 * left out when decoding; the span itself stays.
 */
struct o2l_span_link {
    char trace_id[33]; /* 32 lowercase hex */
    char span_id[17];  /* 16 lowercase hex */
    char *trace_state; /* W3C tracestate text, NULL when empty */
    cJSON *attrs;      /* object, never NULL */
    uint32_t dropped_attributes_count;
    uint32_t flags; /* OTLP SpanFlags bits, 0 when unset */
};

struct o2l_span {
    char trace_id[33];  /* 32 lowercase hex */
    char span_id[17];   /* 16 lowercase hex */
    char parent_id[17]; /* 16 lowercase hex, "" for a root */
    char *name;         /* never NULL */
    int kind;           /* OTLP SpanKind, passed through */
    /* Not used by the mapping; passed through to OTLP output as
     * received. */
    char *trace_state; /* W3C tracestate text, NULL when empty */
    uint32_t flags;    /* OTLP SpanFlags bits, 0 when unset */
    struct o2l_span_link *links;
    size_t n_links;
    uint64_t start_ns; /* both filled in (see the decoding table) */
    uint64_t end_ns;
    enum o2l_status_code status_code;
    char *status_message; /* NULL when empty */
    cJSON *attrs;         /* object, never NULL */
    struct o2l_span_event *events;
    size_t n_events;
    size_t scope; /* index into o2l_export.scopes */
};

struct o2l_export {
    struct o2l_scope *scopes;
    size_t n_scopes;
    struct o2l_span *spans; /* accepted spans, duplicates collapsed */
    size_t n_spans;
    size_t rejected;     /* spans dropped for bad ids */
    char *error_message; /* first rejected span and why; NULL if none */
};

/* Frees what one span owns and zeroes it. */
void o2l_span_clear(struct o2l_span *s);

/* Frees |ex| and everything it owns. Accepts NULL. */
void o2l_export_free(struct o2l_export *ex);

/*
 * Reads an integer from a decoded value: a cJSON number with an integral
 * value, a raw item holding decimal text, or (when |allow_string|) a string
 * of decimal digits with an optional leading '-'. Returns 1 and sets *out
 * when it is one of those, 0 otherwise.
 */
int o2l_json_get_int64(const cJSON *v, int allow_string, int64_t *out);

#endif /* O2L_SPAN_H */
