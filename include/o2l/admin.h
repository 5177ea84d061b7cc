/* SPDX-License-Identifier: Apache-2.0 */
/*
 * admin.h - the admin listener (default 127.0.0.1:13133): liveness,
 * readiness and Prometheus metrics over plain HTTP on the receive loop.
 *
 *   GET /healthz  200 "ok\n" while the process serves.
 *   GET /readyz   200 "ready\n", or 503 "not ready: <reason>\n"
 *                 (e.g. "spool full", "stopping").
 *   GET /metrics  200, text/plain; version=0.0.4, every metric the owner
 *                 writes through the callback.
 * Other paths answer 404, other methods 405 (HEAD works like GET).
 */
#ifndef O2L_ADMIN_H
#define O2L_ADMIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "o2l/log.h"

struct event_base;
struct evbuffer;

/*
 * Fills |reason| (NUL-terminated) and returns false when not ready.
 */
typedef bool (*o2l_admin_ready_fn)(void *arg, char *reason, size_t len);

/*
 * Appends the metrics to |out|, using o2l_admin_metric() for each.
 */
typedef void (*o2l_admin_metrics_fn)(void *arg, struct evbuffer *out);

struct o2l_admin_config {
    const char *listen; /* host:port; port 0 picks a free one */
    o2l_admin_ready_fn ready;
    o2l_admin_metrics_fn metrics;
    void *arg;
};

struct o2l_admin;

/*
 * Binds and starts serving on |base|; |cfg|'s callbacks (either may be
 * NULL: always ready, no metrics) run on |base|'s thread. Returns NULL
 * with a message naming the setting (admin.listen) in |err| when the
 * address is bad or cannot be bound; a bind failure is also logged.
 */
struct o2l_admin *o2l_admin_start(struct event_base *base,
                                  const struct o2l_admin_config *cfg,
                                  const struct o2l_log *log, char *err,
                                  size_t err_len);

/* The bound port (useful with port 0). */
int o2l_admin_port(const struct o2l_admin *a);

/* Stops listening and frees. Accepts NULL. */
void o2l_admin_stop(struct o2l_admin *a);

/*
 * Writes one metric in the Prometheus text format: the HELP and TYPE lines
 * (type "counter" or "gauge") and one sample "otel2langfuse_<name> value".
 * |name| is the part after the prefix, e.g. "spans_accepted_total".
 */
void o2l_admin_metric(struct evbuffer *out, const char *name, const char *type,
                      const char *help, uint64_t value);

#endif /* O2L_ADMIN_H */
