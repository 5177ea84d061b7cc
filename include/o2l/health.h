/* SPDX-License-Identifier: Apache-2.0 */
/*
 * health.h - asks a Langfuse server which version it runs
 * (GET {base_url}/api/public/health answers {"status":"OK","version":"..."}),
 * so that the output can be chosen: v4 and later take OTLP, earlier
 * versions the ingestion API.
 */
#ifndef O2L_HEALTH_H
#define O2L_HEALTH_H

#include <stddef.h>
#include <stdint.h>

/*
 * Fetches the version text into |version| (NUL-terminated, cut to fit).
 * Basic auth with the keys when given (the route does not need it, but a
 * proxy in front may). Returns:
 *  - O2L_OK: a 2xx with a version;
 *  - O2L_EPARSE: a 2xx without one, and O2L_EHTTP: a 404 (no health
 *    route) - both the answer of a server older than the route;
 *  - O2L_EIO: the server could not be asked and may be later: no
 *    connection, a timeout, a 5xx, a 429 or any other answer.
 * *status (when not NULL) gets the HTTP status, 0 when none came. Never
 * logs the secret key.
 */
int o2l_langfuse_version(const char *base_url, const char *public_key,
                         const char *secret_key, uint32_t timeout_ms,
                         char *version, size_t len, int *status);

/* The major version of a version text ("4.1.0" -> 4, "v3" -> 3), or -1. */
int o2l_version_major(const char *version);

#endif /* O2L_HEALTH_H */
