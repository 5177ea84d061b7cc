/* SPDX-License-Identifier: Apache-2.0 */
/* span.c - lifetime of decoded exports and integer reading of values. */
#include "o2l/span.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "o2l/common.h"

void o2l_span_clear(struct o2l_span *s)
{
    o2l_free(s->name);
    o2l_free(s->status_message);
    cJSON_Delete(s->attrs);
    for (size_t i = 0; i < s->n_events; i++) {
        o2l_free(s->events[i].name);
        cJSON_Delete(s->events[i].attrs);
    }
    o2l_free(s->events);
    o2l_free(s->trace_state);
    for (size_t i = 0; i < s->n_links; i++) {
        o2l_free(s->links[i].trace_state);
        cJSON_Delete(s->links[i].attrs);
    }
    o2l_free(s->links);
    memset(s, 0, sizeof(*s));
}

void o2l_export_free(struct o2l_export *ex)
{
    if (!ex) {
        return;
    }
    for (size_t i = 0; i < ex->n_spans; i++) {
        o2l_span_clear(&ex->spans[i]);
    }
    for (size_t i = 0; i < ex->n_scopes; i++) {
        cJSON_Delete(ex->scopes[i].resource_attrs);
        cJSON_Delete(ex->scopes[i].attrs);
        o2l_free(ex->scopes[i].name);
        o2l_free(ex->scopes[i].version);
    }
    o2l_free(ex->spans);
    o2l_free(ex->scopes);
    o2l_free(ex->error_message);
    o2l_free(ex);
}

/* Parses optional '-' then decimal digits only, with overflow checks. */
static int parse_decimal(const char *s, int64_t *out)
{
    char *end = NULL;
    long long v;

    if (!s || !*s) {
        return 0;
    }
    if (!((*s >= '0' && *s <= '9') ||
          (*s == '-' && s[1] >= '0' && s[1] <= '9'))) {
        return 0;
    }
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno != 0 || !end || *end != '\0') {
        return 0;
    }
    *out = (int64_t)v;
    return 1;
}

int o2l_json_get_int64(const cJSON *v, int allow_string, int64_t *out)
{
    double d;

    if (!v) {
        return 0;
    }
    if (cJSON_IsNumber(v)) {
        d = v->valuedouble;
        /* Only integral values inside the exactly representable range. */
        if (d != d || d < -9007199254740992.0 || d > 9007199254740992.0 ||
            d != (double)(int64_t)d) {
            return 0;
        }
        *out = (int64_t)d;
        return 1;
    }
    if (cJSON_IsRaw(v)) {
        return parse_decimal(v->valuestring, out);
    }
    if (allow_string && cJSON_IsString(v)) {
        return parse_decimal(v->valuestring, out);
    }
    return 0;
}
