/* SPDX-License-Identifier: Apache-2.0 */
/*
 * grpc_receiver.h - the OTLP/gRPC receiver: TraceService/Export and the
 * standard health check over HTTP/2, either without TLS (h2c, prior
 * knowledge) or over TLS with ALPN h2; identity or gzip messages. Runs on the
 * caller's libevent loop and feeds the same pipeline as the HTTP receiver.
 */
#ifndef O2L_GRPC_RECEIVER_H
#define O2L_GRPC_RECEIVER_H

#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>

#include "o2l/log.h"
#include "o2l/pipeline.h"

struct o2l_tls;

struct o2l_grpc_receiver_config {
    const char *listen;       /* host:port; port 0 picks a free one */
    size_t max_message_bytes; /* one request message, after decompression */
    uint32_t idle_timeout_s;  /* 0: 300; a silent connection is closed */
    struct o2l_tls *tls;      /* NULL: h2c; else TLS only (ALPN h2). Must
                                 outlive the receiver */
};

struct o2l_grpc_receiver;

/*
 * Binds and starts serving on |base|. |pipeline| and |log| must outlive
 * the receiver. Returns NULL and writes the reason to |err| (|err_len|
 * bytes) when the address cannot be bound or memory runs out.
 */
struct o2l_grpc_receiver *
o2l_grpc_receiver_start(struct event_base *base,
                        const struct o2l_grpc_receiver_config *cfg,
                        struct o2l_pipeline *pipeline,
                        const struct o2l_log *log, char *err, size_t err_len);

/* The port actually bound (useful with port 0). */
int o2l_grpc_receiver_port(const struct o2l_grpc_receiver *r);

/*
 * Starts a graceful stop: the listener closes and every connection gets
 * a GOAWAY naming the last stream it began, so those streams finish and
 * clients send new calls elsewhere. |done|(|arg|) runs once, on the loop
 * or from this call, when the last connection has closed or |grace_ms|
 * has passed (connections left then are closed). A second call ends the
 * wait at once.
 */
void o2l_grpc_receiver_shutdown(struct o2l_grpc_receiver *r, uint32_t grace_ms,
                                void (*done)(void *arg), void *arg);

/* Frees the receiver and closes its connections. Accepts NULL. */
void o2l_grpc_receiver_free(struct o2l_grpc_receiver *r);

#endif /* O2L_GRPC_RECEIVER_H */
