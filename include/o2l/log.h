/* SPDX-License-Identifier: Apache-2.0 */
/* log.h - leveled, one-line structured logs for the daemon layer. */
#ifndef O2L_LOG_H
#define O2L_LOG_H

#include <stdio.h>

enum o2l_log_level {
    O2L_LOG_ERROR = 0, /* a request or batch is lost */
    O2L_LOG_WARN,      /* degraded, retrying */
    O2L_LOG_INFO,      /* start, stop, configuration summary */
    O2L_LOG_DEBUG,     /* per batch */
    O2L_LOG_TRACE      /* per frame */
};

struct o2l_log {
    enum o2l_log_level level;
    FILE *out; /* stderr when NULL */
};

/* Parses "error".."trace" (any case). Returns O2L_OK or O2L_EINVAL. */
int o2l_log_parse_level(const char *s, enum o2l_log_level *out);

/*
 * Writes one line: UTC time with milliseconds, level, component, then the
 * formatted message. Thread-safe (one fputs per line). Callers must never
 * pass secrets or payload bodies.
 */
void o2l_log_write(const struct o2l_log *log, enum o2l_log_level level,
                   const char *component, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#define O2L_LOG_AT(log, lvl, comp, ...)                                        \
    do {                                                                       \
        if ((log) && (lvl) <= (log)->level) {                                  \
            o2l_log_write((log), (lvl), (comp), __VA_ARGS__);                  \
        }                                                                      \
    } while (0)

#define o2l_log_error(log, comp, ...)                                          \
    O2L_LOG_AT(log, O2L_LOG_ERROR, comp, __VA_ARGS__)
#define o2l_log_warn(log, comp, ...)                                           \
    O2L_LOG_AT(log, O2L_LOG_WARN, comp, __VA_ARGS__)
#define o2l_log_info(log, comp, ...)                                           \
    O2L_LOG_AT(log, O2L_LOG_INFO, comp, __VA_ARGS__)
#define o2l_log_debug(log, comp, ...)                                          \
    O2L_LOG_AT(log, O2L_LOG_DEBUG, comp, __VA_ARGS__)
#define o2l_log_trace(log, comp, ...)                                          \
    O2L_LOG_AT(log, O2L_LOG_TRACE, comp, __VA_ARGS__)

#endif /* O2L_LOG_H */
