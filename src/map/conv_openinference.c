/* SPDX-License-Identifier: Apache-2.0 */
/*
 * conv_openinference.c - OpenInference: span kinds, input.value and
 * output.value with their MIME types, the flattened message lists, the
 * metadata JSON and tool schemas.
 */
#include "o2l/map_conv.h"

#include <string.h>

#include "o2l/common.h"
#include "o2l/map_util.h"

static const struct {
    const char *kind;
    enum o2l_obs_type type;
} kinds[] = {
    {"LLM", O2L_OBS_GENERATION},      {"CHAIN", O2L_OBS_CHAIN},
    {"TOOL", O2L_OBS_TOOL},           {"AGENT", O2L_OBS_AGENT},
    {"RETRIEVER", O2L_OBS_RETRIEVER}, {"EMBEDDING", O2L_OBS_EMBEDDING},
    {"GUARDRAIL", O2L_OBS_GUARDRAIL}, {"EVALUATOR", O2L_OBS_EVALUATOR},
    {"RERANKER", O2L_OBS_RETRIEVER},  {"PROMPT", O2L_OBS_CHAIN},
};

bool o2l_conv_openinference_type(const struct o2l_map_ctx *c,
                                 enum o2l_obs_type *t)
{
    const char *kind = o2l_map_attr_str(c, "openinference.span.kind");

    if (!kind) {
        return false;
    }
    for (size_t i = 0; i < O2L_ARRAY_LEN(kinds); i++) {
        if (o2l_mu_ieq(kind, kinds[i].kind)) {
            *t = kinds[i].type;
            return true;
        }
    }
    return false;
}

int o2l_conv_openinference_io_value(struct o2l_map_ctx *c, bool output,
                                    cJSON **out)
{
    const char *key = output ? "output.value" : "input.value";
    const char *mime =
        o2l_map_attr_str(c, output ? "output.mime_type" : "input.mime_type");
    const cJSON *v = o2l_map_attr(c, key);

    *out = NULL;
    if (!o2l_mu_usable(v)) {
        return O2L_OK;
    }
    if (mime && cJSON_IsString(v) && o2l_mu_starts(mime, "text/plain")) {
        /* Declared text stays text even when it looks like JSON. */
        o2l_map_mark_used(c, key);
        *out = cJSON_Duplicate(v, 1);
        return *out ? O2L_OK : O2L_ENOMEM;
    }
    return o2l_map_io_key(c, key,
                          mime && o2l_mu_starts(mime, "application/json"), out);
}

int o2l_conv_openinference_io_messages(struct o2l_map_ctx *c, bool output,
                                       cJSON **out)
{
    const char *prefix =
        output ? "llm.output_messages." : "llm.input_messages.";
    int rc;

    rc = o2l_mu_flatten(c->attrs, prefix, true, &c->slots_left,
                        &c->flat_dropped, out);
    if (rc == O2L_OK && *out) {
        o2l_map_mark_used(c, prefix);
    }
    return rc;
}

int o2l_conv_openinference_metadata(const struct o2l_map_ctx *c, cJSON *md)
{
    cJSON *obj = NULL;
    int rc;

    rc = o2l_mu_object(o2l_map_attr(c, "metadata"), &obj);
    if (rc != O2L_OK) {
        cJSON_Delete(obj);
        return rc;
    }
    return o2l_mu_merge(md, obj);
}

int o2l_conv_openinference_tools(struct o2l_map_ctx *c, cJSON **out)
{
    cJSON *rebuilt = NULL;
    cJSON *tools = NULL;
    cJSON *schema;
    const cJSON *t;
    int rc;

    *out = NULL;
    rc = o2l_mu_flatten(c->attrs, "llm.tools.", true, &c->slots_left,
                        &c->flat_dropped, &rebuilt);
    if (rc != O2L_OK || !cJSON_IsArray(rebuilt)) {
        goto out;
    }
    o2l_map_mark_used(c, "llm.tools.");
    tools = cJSON_CreateArray();
    if (!tools) {
        rc = O2L_ENOMEM;
        goto out;
    }
    cJSON_ArrayForEach(t, rebuilt)
    {
        const cJSON *js = o2l_mu_get(t, "json_schema");

        rc = o2l_mu_value(js ? js : t, false, &schema);
        if (rc != O2L_OK) {
            goto out;
        }
        if (schema && !cJSON_AddItemToArray(tools, schema)) {
            cJSON_Delete(schema);
            rc = O2L_ENOMEM;
            goto out;
        }
    }
    if (tools->child) {
        *out = tools;
        tools = NULL;
    }

out:
    cJSON_Delete(tools);
    cJSON_Delete(rebuilt);
    return rc;
}

int o2l_conv_openinference_documents(struct o2l_map_ctx *c, cJSON **out)
{
    int rc;

    rc = o2l_mu_flatten(c->attrs, "retrieval.documents.", true, &c->slots_left,
                        &c->flat_dropped, out);
    if (rc == O2L_OK && *out) {
        o2l_map_mark_used(c, "retrieval.documents.");
        rc = o2l_mu_parse_member(*out, "metadata");
    }
    if (rc != O2L_OK) {
        cJSON_Delete(*out);
        *out = NULL;
    }
    return rc;
}
