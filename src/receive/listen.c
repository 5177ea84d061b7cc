/* SPDX-License-Identifier: Apache-2.0 */
/* listen.c - parsing of receiver listen addresses. */
#include "o2l/listen.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "o2l/common.h"

int o2l_listen_split(const char *listen, char *host, size_t host_len,
                     char *port, size_t port_len)
{
    const char *colon = strrchr(listen, ':');
    size_t n;

    if (!colon || strlen(colon + 1) == 0 || strlen(colon + 1) >= port_len) {
        return O2L_EINVAL;
    }
    n = (size_t)(colon - listen);
    /* [::1]:4317 style: the brackets go */
    if (n >= 2 && listen[0] == '[' && listen[n - 1] == ']') {
        listen++;
        n -= 2;
    }
    if (n >= host_len) {
        return O2L_EINVAL;
    }
    memcpy(host, listen, n);
    host[n] = '\0';
    snprintf(port, port_len, "%s", colon + 1);
    return O2L_OK;
}

int o2l_listen_local_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);

    if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0) {
        return -1;
    }
    if (ss.ss_family == AF_INET6) {
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    }
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}
