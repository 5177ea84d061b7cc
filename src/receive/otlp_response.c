/* SPDX-License-Identifier: Apache-2.0 */
/* otlp_response.c - encodes OTLP export answers and google.rpc.Status. */
#include "o2l/otlp.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "o2l/common.h"
#include "o2l/otlp_util.h"
#include "google/rpc/status.pb-c.h"
#include "opentelemetry/proto/collector/trace/v1/trace_service.pb-c.h"

/* Packs |msg| into a new o2l_malloc buffer. */
static int pack(const ProtobufCMessage *msg, char **out, size_t *out_len)
{
    size_t n = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf;

    buf = o2l_malloc(n);
    if (!buf) {
        return O2L_ENOMEM;
    }
    *out_len = protobuf_c_message_pack(msg, buf);
    *out = (char *)buf;
    return O2L_OK;
}

/* Prints |root| compactly into a new o2l_malloc string; frees |root|. */
static int print_json(cJSON *root, char **out, size_t *out_len)
{
    char *text;
    int rc = O2L_OK;

    if (!root) {
        return O2L_ENOMEM;
    }
    text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!text) {
        return O2L_ENOMEM;
    }
    /* cJSON may allocate with its own hooks; hand back o2l memory. */
    *out_len = strlen(text);
    *out = o2l_strndup(text, *out_len);
    if (!*out) {
        rc = O2L_ENOMEM;
    }
    cJSON_free(text);
    return rc;
}

int o2l_otlp_encode_response(enum o2l_otlp_format fmt, int64_t rejected,
                             const char *message, char **out, size_t *out_len)
{
    Opentelemetry__Proto__Collector__Trace__V1__ExportTraceServiceResponse resp =
        OPENTELEMETRY__PROTO__COLLECTOR__TRACE__V1__EXPORT_TRACE_SERVICE_RESPONSE__INIT;
    Opentelemetry__Proto__Collector__Trace__V1__ExportTracePartialSuccess partial =
        OPENTELEMETRY__PROTO__COLLECTOR__TRACE__V1__EXPORT_TRACE_PARTIAL_SUCCESS__INIT;
    char *clean = NULL;
    char count[24];
    cJSON *root = NULL;
    cJSON *ps;
    int rc;

    *out = NULL;
    *out_len = 0;
    if (rejected != 0) {
        clean = o2l_otlp_utf8_dup(message ? message : "",
                                  message ? strlen(message) : 0);
        if (!clean) {
            return O2L_ENOMEM;
        }
    }

    if (fmt == O2L_OTLP_PROTOBUF) {
        if (rejected != 0) {
            partial.rejected_spans = rejected;
            partial.error_message = clean;
            resp.partial_success = &partial;
        }
        rc = pack(&resp.base, out, out_len);
        goto out;
    }

    /* OTLP/JSON writes 64-bit integers as decimal strings. */
    root = cJSON_CreateObject();
    if (root && rejected != 0) {
        snprintf(count, sizeof(count), "%" PRId64, rejected);
        ps = cJSON_AddObjectToObject(root, "partialSuccess");
        if (!ps || !cJSON_AddStringToObject(ps, "rejectedSpans", count) ||
            !cJSON_AddStringToObject(ps, "errorMessage", clean)) {
            cJSON_Delete(root);
            root = NULL;
        }
    }
    rc = print_json(root, out, out_len);

out:
    o2l_free(clean);
    return rc;
}

int o2l_otlp_encode_status(enum o2l_otlp_format fmt, int code,
                           const char *message, char **out, size_t *out_len)
{
    Google__Rpc__Status st = GOOGLE__RPC__STATUS__INIT;
    char *clean;
    cJSON *root = NULL;
    int rc;

    *out = NULL;
    *out_len = 0;
    clean = o2l_otlp_utf8_dup(message ? message : "",
                              message ? strlen(message) : 0);
    if (!clean) {
        return O2L_ENOMEM;
    }

    if (fmt == O2L_OTLP_PROTOBUF) {
        st.code = code;
        st.message = clean;
        rc = pack(&st.base, out, out_len);
        goto out;
    }

    root = cJSON_CreateObject();
    if (root && (!cJSON_AddNumberToObject(root, "code", code) ||
                 !cJSON_AddStringToObject(root, "message", clean))) {
        cJSON_Delete(root);
        root = NULL;
    }
    rc = print_json(root, out, out_len);

out:
    o2l_free(clean);
    return rc;
}
