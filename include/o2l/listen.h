/* SPDX-License-Identifier: Apache-2.0 */
/* listen.h - listen addresses (host:port): parsing, and the port bound. */
#ifndef O2L_LISTEN_H
#define O2L_LISTEN_H

#include <stddef.h>

/*
 * Splits "host:port" (or "[::1]:port") at its last colon into |host| and
 * |port|, brackets removed. Returns O2L_OK, or O2L_EINVAL when there is
 * no colon, no port, or a part does not fit its buffer.
 */
int o2l_listen_split(const char *listen, char *host, size_t host_len,
                     char *port, size_t port_len);

/* The local port a bound socket |fd| listens on, or -1. */
int o2l_listen_local_port(int fd);

#endif /* O2L_LISTEN_H */
