/* SPDX-License-Identifier: Apache-2.0 */
/*
 * conv_openllmetry.c - OpenLLMetry (Traceloop): span kinds, entity names,
 * entity input/output, association properties and the flattened
 * gen_ai.prompt.N / gen_ai.completion.N messages.
 */
#include "o2l/map_conv.h"

#include <string.h>

#include "o2l/common.h"
#include "o2l/map_util.h"

bool o2l_conv_openllmetry_type(const struct o2l_map_ctx *c,
                               enum o2l_obs_type *t)
{
    const char *kind = o2l_map_attr_str(c, "traceloop.span.kind");

    if (!kind) {
        return false;
    }
    if (strcmp(kind, "workflow") == 0) {
        *t = O2L_OBS_CHAIN;
    } else if (strcmp(kind, "agent") == 0) {
        *t = O2L_OBS_AGENT;
    } else if (strcmp(kind, "tool") == 0) {
        *t = O2L_OBS_TOOL;
    } else {
        return false;
    }
    return true;
}

/* Comes after the tool rules: OpenLLMetry JS marks tool spans as tasks. */
bool o2l_conv_openllmetry_task_type(const struct o2l_map_ctx *c,
                                    enum o2l_obs_type *t)
{
    const char *kind = o2l_map_attr_str(c, "traceloop.span.kind");

    if (kind && strcmp(kind, "task") == 0) {
        *t = O2L_OBS_CHAIN;
        return true;
    }
    return false;
}

const cJSON *o2l_conv_openllmetry_name(const struct o2l_map_ctx *c)
{
    const char *kind = o2l_map_attr_str(c, "traceloop.span.kind");
    const cJSON *v;

    if (!kind) {
        return NULL;
    }
    v = o2l_map_attr(c, "traceloop.entity.name");
    if (o2l_mu_usable(v)) {
        return v;
    }
    v = o2l_map_attr(c, "traceloop.workflow.name");
    if (strcmp(kind, "workflow") == 0 && o2l_mu_usable(v)) {
        return v;
    }
    return NULL;
}

int o2l_conv_openllmetry_io_entity(struct o2l_map_ctx *c, bool output,
                                   cJSON **out)
{
    /* Traceloop JSON-encodes every entity value, scalars included. */
    return o2l_map_io_key(
        c, output ? "traceloop.entity.output" : "traceloop.entity.input", true,
        out);
}

int o2l_conv_openllmetry_io_prompt(struct o2l_map_ctx *c, bool output,
                                   cJSON **out)
{
    const char *bare = output ? "gen_ai.completion" : "gen_ai.prompt";
    const char *prefix = output ? "gen_ai.completion." : "gen_ai.prompt.";
    int rc;

    /* The bare key, one JSON value, wins over the indexed keys. */
    rc = o2l_map_io_key(c, bare, false, out);
    if (rc != O2L_OK || *out) {
        return rc;
    }
    rc = o2l_mu_flatten(c->attrs, prefix, false, &c->slots_left,
                        &c->flat_dropped, out);
    if (rc == O2L_OK && *out) {
        o2l_map_mark_used(c, prefix);
    }
    return rc;
}

int o2l_conv_openllmetry_metadata(const struct o2l_map_ctx *c, cJSON *md)
{
    return o2l_map_add_prefixed(c->attrs, "traceloop.association.properties.",
                                NULL, md);
}

int o2l_conv_openllmetry_functions(struct o2l_map_ctx *c, cJSON **out)
{
    int rc;

    rc = o2l_mu_flatten(c->attrs, "llm.request.functions.", false,
                        &c->slots_left, &c->flat_dropped, out);
    if (rc == O2L_OK && *out && !cJSON_IsArray(*out)) {
        cJSON_Delete(*out); /* not a list of definitions */
        *out = NULL;
    }
    if (rc == O2L_OK && *out) {
        o2l_map_mark_used(c, "llm.request.functions.");
        rc = o2l_mu_parse_member(*out, "parameters");
    }
    if (rc != O2L_OK) {
        cJSON_Delete(*out);
        *out = NULL;
    }
    return rc;
}
