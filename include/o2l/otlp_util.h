/* SPDX-License-Identifier: Apache-2.0 */
/*
 * otlp_util.h - helpers shared by the protobuf and JSON OTLP decoders:
 * hex and base64, UTF-8 cleaning, id checks, attribute building and the
 * export builder that applies the decoding rules common to both formats.
 */
#ifndef O2L_OTLP_UTIL_H
#define O2L_OTLP_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "o2l/span.h"

#define O2L_OTLP_TRACE_ID_BYTES 16
#define O2L_OTLP_SPAN_ID_BYTES  8

/* Writes |n| bytes as 2 * |n| lowercase hex digits plus a NUL. */
void o2l_otlp_hex_encode(const uint8_t *in, size_t n, char *out);

/*
 * Decodes |len| hex digits (any case) into |out| (room for |cap| bytes).
 * Returns 1 and sets *out_len, or 0 for an odd length, a non-hex character
 * or too little room.
 */
int o2l_otlp_hex_decode(const char *in, size_t len, uint8_t *out, size_t cap,
                        size_t *out_len);

/*
 * Decodes base64 in the standard or the URL-safe alphabet, with or without
 * '=' padding. Returns 1 and sets *out_len, or 0 when |in| is not base64
 * or decodes to more than |cap| bytes.
 */
int o2l_otlp_base64_decode(const char *in, size_t len, uint8_t *out, size_t cap,
                           size_t *out_len);

/*
 * Encodes |n| bytes as standard padded base64. Returns a NUL-terminated
 * string from o2l_malloc, or NULL when out of memory.
 */
char *o2l_otlp_base64_encode(const uint8_t *in, size_t n);

/* Returns 1 when |s| (|n| bytes) is valid UTF-8 without NUL characters. */
int o2l_otlp_utf8_is_clean(const char *s, size_t n);

/*
 * Returns a NUL-terminated copy of |s| (|n| bytes) from o2l_malloc in which
 * each maximal invalid UTF-8 subsequence and each NUL became U+FFFD, or
 * NULL when out of memory.
 */
char *o2l_otlp_utf8_dup(const char *s, size_t n);

enum o2l_otlp_id {
    O2L_OTLP_ID_OK = 0,
    O2L_OTLP_ID_EMPTY = 1, /* absent or zero length */
    O2L_OTLP_ID_ZERO = 2,  /* right length, all bytes zero */
    O2L_OTLP_ID_BAD = 3    /* wrong length or undecodable */
};

/*
 * Checks a binary id of |n| bytes that should be |want| bytes long and
 * writes it as lowercase hex to |hex| (2 * |want| + 1 bytes) when OK.
 */
enum o2l_otlp_id o2l_otlp_id_from_bytes(const uint8_t *b, size_t n, size_t want,
                                        char *hex);

/*
 * The same for an OTLP/JSON id: exactly 2 * |want| hex digits in any case,
 * otherwise base64 (either alphabet, padding optional) of |want| bytes.
 */
enum o2l_otlp_id o2l_otlp_id_from_text(const char *s, size_t n, size_t want,
                                       char *hex);

/*
 * Parse decimal text of exactly |n| bytes digit by digit. The unsigned form
 * takes digits only, the signed form an optional leading '-'. Return 1 and
 * set *out, or 0 on any other character, an empty text or overflow.
 */
int o2l_otlp_parse_u64(const char *s, size_t n, uint64_t *out);
int o2l_otlp_parse_i64(const char *s, size_t n, int64_t *out);

/*
 * Value constructors following the rules in span.h. Each returns NULL when
 * out of memory. o2l_otlp_json_take_string takes ownership of |s| (an
 * o2l_malloc string) and frees it on failure.
 */
cJSON *o2l_otlp_json_int(int64_t v);
cJSON *o2l_otlp_json_double(double v);
cJSON *o2l_otlp_json_take_string(char *s);

/*
 * Appends |val| to the object |obj| under |key|. Takes ownership of both
 * (an o2l_malloc key and a detached item) and frees them on failure.
 * Repeated keys are resolved later by o2l_otlp_attrs_finish.
 */
int o2l_otlp_attrs_add(cJSON *obj, char *key, cJSON *val);

/*
 * Removes all but the last member of each repeated key of |obj|, keeping
 * the order of the survivors. Runs in O(n log n). Returns O2L_OK or
 * O2L_ENOMEM (the object is unchanged then).
 */
int o2l_otlp_attrs_finish(cJSON *obj);

/*
 * Collects spans and scopes into a struct o2l_export while a decoder walks
 * its input, and applies the rules shared by both formats: rejection
 * counting, time defaults and duplicate collapsing.
 */
struct o2l_otlp_builder {
    struct o2l_export *ex;
    size_t cap_spans;
    size_t cap_scopes;
    size_t seen; /* spans met so far, rejected ones included */
    uint64_t now_ns;
};

int o2l_otlp_builder_init(struct o2l_otlp_builder *b, uint64_t now_ns);

/*
 * Adds a scope; takes ownership of every argument (frees them on failure).
 * NULL objects become empty ones, NULL strings become "". The new scope's
 * index is b->ex->n_scopes - 1 on O2L_OK.
 */
int o2l_otlp_builder_add_scope(struct o2l_otlp_builder *b, cJSON *res_attrs,
                               char *name, char *version, cJSON *attrs);

/*
 * Returns a zeroed span appended to the export (already counted in
 * n_spans, so o2l_export_free cleans it after a failure), or NULL when out
 * of memory. Fill it, then call o2l_otlp_builder_end_span.
 */
struct o2l_span *o2l_otlp_builder_new_span(struct o2l_otlp_builder *b);

/*
 * Fills in defaults of the last span: missing attribute objects, its
 * times and its events' times. Returns O2L_OK or O2L_ENOMEM.
 */
int o2l_otlp_builder_end_span(struct o2l_otlp_builder *b);

/*
 * Counts a rejected span (number |ordinal| in the request, from 0, named
 * |name| of |name_len| bytes) and keeps the first reason as the export's
 * error message. Returns O2L_OK or O2L_ENOMEM.
 */
int o2l_otlp_builder_reject(struct o2l_otlp_builder *b, size_t ordinal,
                            const char *name, size_t name_len,
                            const char *reason);

/*
 * Checks the span's ids (raw forms from the input, NULL/0 when absent):
 * on success writes them into |s|; otherwise rejects the span through
 * o2l_otlp_builder_reject and returns 1 (or O2L_ENOMEM). Binary ids when
 * |binary|, OTLP/JSON text otherwise. Returns 0 when the ids are good.
 */
int o2l_otlp_builder_check_ids(struct o2l_otlp_builder *b, int binary,
                               const void *trace, size_t trace_len,
                               const void *span, size_t span_len,
                               const void *parent, size_t parent_len,
                               const char *name, size_t name_len,
                               char *trace_hex, char *span_hex,
                               char *parent_hex);

/*
 * Collapses duplicate (trace id, span id) pairs into the last one and
 * hands the export over to *out. The builder is empty afterwards.
 */
int o2l_otlp_builder_finish(struct o2l_otlp_builder *b,
                            struct o2l_export **out);

/* Frees whatever the builder holds. */
void o2l_otlp_builder_abort(struct o2l_otlp_builder *b);

/* The two decoders behind o2l_otlp_decode, with the same contract. */
int o2l_otlp_decode_pb(const void *buf, size_t len, uint64_t now_ns,
                       struct o2l_export **out, char *err, size_t err_len);
int o2l_otlp_decode_json(const void *buf, size_t len, uint64_t now_ns,
                         struct o2l_export **out, char *err, size_t err_len);

#endif /* O2L_OTLP_UTIL_H */
