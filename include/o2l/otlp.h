/* SPDX-License-Identifier: Apache-2.0 */
/*
 * otlp.h - decodes OTLP ExportTraceServiceRequest bodies (protobuf or
 * OTLP/JSON) into struct o2l_export, and encodes the OTLP answers.
 */
#ifndef O2L_OTLP_H
#define O2L_OTLP_H

#include <stddef.h>
#include <stdint.h>

#include "o2l/span.h"

enum o2l_otlp_format {
    O2L_OTLP_PROTOBUF = 0,
    O2L_OTLP_JSON = 1
};

/*
 * Decodes one export. |now_ns| is used for spans that have neither a start
 * nor an end time. Spans with bad ids are dropped and counted in
 * (*out)->rejected with a reason in (*out)->error_message; the rest go on.
 * Duplicate (trace id, span id) pairs collapse into the last one.
 *
 * Returns O2L_OK with *out owned by the caller (free with
 * o2l_export_free), O2L_EPARSE when the body is not a valid export (a
 * message is written to |err|, |err_len| bytes, when |err| is not NULL),
 * or O2L_ENOMEM.
 */
int o2l_otlp_decode(const void *buf, size_t len, enum o2l_otlp_format fmt,
                    uint64_t now_ns, struct o2l_export **out, char *err,
                    size_t err_len);

/* Guesses the format of a file: JSON when it starts with '{' after
 * whitespace, protobuf otherwise. */
enum o2l_otlp_format o2l_otlp_sniff(const void *buf, size_t len);

/*
 * Encodes an ExportTraceServiceResponse in |fmt|. With |rejected| == 0 the
 * partial_success field is left out. On O2L_OK *out is allocated with
 * o2l_malloc and owned by the caller.
 */
int o2l_otlp_encode_response(enum o2l_otlp_format fmt, int64_t rejected,
                             const char *message, char **out, size_t *out_len);

/*
 * Encodes a google.rpc.Status with |code| and |message| in |fmt|, the body
 * OTLP/HTTP returns with 4xx and 5xx answers.
 */
int o2l_otlp_encode_status(enum o2l_otlp_format fmt, int code,
                           const char *message, char **out, size_t *out_len);

#endif /* O2L_OTLP_H */
