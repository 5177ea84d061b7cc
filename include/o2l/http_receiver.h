/* SPDX-License-Identifier: Apache-2.0 */
/*
 * http_receiver.h - the OTLP/HTTP receiver: POST /v1/traces with protobuf
 * or JSON bodies, gzip or identity, answered as the OTLP specification
 * says, over plain HTTP/1.1 or HTTPS. Runs on the caller's libevent loop.
 */
#ifndef O2L_HTTP_RECEIVER_H
#define O2L_HTTP_RECEIVER_H

#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>

#include "o2l/log.h"
#include "o2l/pipeline.h"

struct o2l_tls;

struct o2l_http_receiver_config {
    const char *listen;      /* host:port; port 0 picks a free one */
    size_t max_body_bytes;   /* after decompression */
    uint32_t idle_timeout_s; /* slow or idle clients are dropped */
    struct o2l_tls *tls;     /* NULL: plain HTTP; else HTTPS only. Must
                                outlive the receiver */
};

struct o2l_http_receiver;

/*
 * Binds and starts serving on |base|. |pipeline| and |log| must outlive
 * the receiver. Returns NULL and writes the reason to |err| when the
 * address cannot be bound.
 */
struct o2l_http_receiver *
o2l_http_receiver_start(struct event_base *base,
                        const struct o2l_http_receiver_config *cfg,
                        struct o2l_pipeline *pipeline,
                        const struct o2l_log *log, char *err, size_t err_len);

/* The port actually bound (useful with port 0). */
int o2l_http_receiver_port(const struct o2l_http_receiver *r);

/* Stops accepting connections; requests in progress finish. */
void o2l_http_receiver_close_listener(struct o2l_http_receiver *r);

/* Frees the receiver and its connections. Accepts NULL. */
void o2l_http_receiver_free(struct o2l_http_receiver *r);

#endif /* O2L_HTTP_RECEIVER_H */
