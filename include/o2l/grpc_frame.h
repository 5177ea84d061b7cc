/* SPDX-License-Identifier: Apache-2.0 */
/*
 * grpc_frame.h - the pieces of gRPC that need no socket: the
 * length-prefixed message framing carried in HTTP/2 DATA frames (a 1-byte
 * compressed flag, a 4-byte big-endian length, then the message), gzip
 * message decompression with a size bound, and the encodings of the
 * grpc-message and grpc-status-details-bin trailers.
 */
#ifndef O2L_GRPC_FRAME_H
#define O2L_GRPC_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Bytes in front of every message: flag + 32-bit length. */
#define O2L_GRPC_FRAME_PREFIX_LEN 5

/*
 * Collects the one message of a unary call from the request's DATA, as
 * it arrives. Never holds more than max_message_bytes +
 * O2L_GRPC_FRAME_PREFIX_LEN bytes. Fields are private.
 */
struct o2l_grpc_frame_reader {
    size_t max_message_bytes;
    unsigned char prefix[O2L_GRPC_FRAME_PREFIX_LEN];
    size_t prefix_len;
    size_t message_len; /* announced by the prefix */
    bool compressed;
    unsigned char *buf;
    size_t buf_len;
    size_t buf_cap;
    bool complete; /* the message has been read in full */
};

/* Prepares |r| for one call; |max_message_bytes| bounds the message. */
void o2l_grpc_frame_reader_init(struct o2l_grpc_frame_reader *r,
                                size_t max_message_bytes);

/*
 * Takes the next |len| bytes of the request body. Returns O2L_OK,
 * O2L_ETOOBIG when a prefix announces a message longer than the limit
 * (found before anything of it is buffered), O2L_EPARSE when the flag
 * byte is not 0 or 1 or bytes follow the first message, or O2L_ENOMEM.
 * After an error the reader only accepts o2l_grpc_frame_reader_clear().
 */
int o2l_grpc_frame_reader_feed(struct o2l_grpc_frame_reader *r,
                               const void *data, size_t len);

/*
 * Ends the body. Returns O2L_OK with the message in *msg (|*len| bytes,
 * owned by |r|, valid until clear) and its compressed flag, or
 * O2L_EPARSE when the body held no message or ended inside one (a length
 * prefix longer than the data).
 */
int o2l_grpc_frame_reader_finish(struct o2l_grpc_frame_reader *r,
                                 const unsigned char **msg, size_t *len,
                                 bool *compressed);

/* Bytes the reader holds now. */
size_t o2l_grpc_frame_reader_buffered(const struct o2l_grpc_frame_reader *r);

/* Frees what |r| holds; |r| may be initialised again. */
void o2l_grpc_frame_reader_clear(struct o2l_grpc_frame_reader *r);

/*
 * Writes |len| bytes of |msg| as one uncompressed length-prefixed message
 * into a new o2l_malloc buffer. Returns O2L_OK, O2L_ETOOBIG (over 4 GiB)
 * or O2L_ENOMEM.
 */
int o2l_grpc_frame_encode(const void *msg, size_t len, unsigned char **out,
                          size_t *out_len);

/*
 * Percent-encodes |s| for the grpc-message trailer: bytes outside
 * printable ASCII, and '%', become %XX. Returns an o2l_malloc string or
 * NULL when out of memory.
 */
char *o2l_grpc_frame_percent_encode(const char *s);

/*
 * Builds the grpc-status-details-bin value: a google.rpc.Status with
 * |code| and |message| and, when |retry_delay_s| > 0, a
 * google.rpc.RetryInfo detail, in base64 without padding. Returns an
 * o2l_malloc string in *out, O2L_OK or O2L_ENOMEM.
 */
int o2l_grpc_frame_status_details(int code, const char *message,
                                  int64_t retry_delay_s, char **out);

#endif /* O2L_GRPC_FRAME_H */
