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
 * proxy in front may). Returns O2L_OK, O2L_EIO (no connection, timeout),
 * O2L_EHTTP (an answer other than 200) or O2L_EPARSE (no version in the
 * answer). Never logs the secret key.
 */
int o2l_langfuse_version(const char *base_url, const char *public_key,
                         const char *secret_key, uint32_t timeout_ms,
                         char *version, size_t len);

/* The major version of a version text ("4.1.0" -> 4, "v3" -> 3), or -1. */
int o2l_version_major(const char *version);

#endif /* O2L_HEALTH_H */
