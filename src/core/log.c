/* SPDX-License-Identifier: Apache-2.0 */
/* log.c - one-line logs with a UTC millisecond timestamp. */
#include "o2l/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "o2l/common.h"

static const char *const level_names[] = {"error", "warn", "info", "debug",
                                          "trace"};

int o2l_log_parse_level(const char *s, enum o2l_log_level *out)
{
    for (size_t i = 0; i < O2L_ARRAY_LEN(level_names); i++) {
        if (strcasecmp(s, level_names[i]) == 0) {
            *out = (enum o2l_log_level)i;
            return O2L_OK;
        }
    }
    if (strcasecmp(s, "warning") == 0) {
        *out = O2L_LOG_WARN;
        return O2L_OK;
    }
    return O2L_EINVAL;
}

void o2l_log_write(const struct o2l_log *log, enum o2l_log_level level,
                   const char *component, const char *fmt, ...)
{
    char line[2048];
    char iso[O2L_ISO_LEN];
    va_list ap;
    int n;

    /* Milliseconds are enough for logs: cut the ISO time at 3 digits. */
    o2l_iso_time(o2l_now_ns(), iso);
    iso[23] = 'Z';
    iso[24] = '\0';

    n = snprintf(line, sizeof(line), "%s %s %s ", iso, level_names[level],
                 component);
    if (n < 0 || (size_t)n >= sizeof(line)) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    /*
     * Messages quote span names and peer input: control characters would
     * let a client forge log lines or drive a terminal, so they become '?'.
     */
    n = (int)strnlen(line, sizeof(line) - 2);
    for (int i = 0; i < n; i++) {
        unsigned char c = (unsigned char)line[i];

        if (c < 0x20 || c == 0x7f) {
            line[i] = '?';
        }
    }
    /* One fputs per line keeps lines whole across threads. */
    line[n] = '\n';
    line[n + 1] = '\0';
    fputs(line, log->out ? log->out : stderr);
    fflush(log->out ? log->out : stderr);
}
