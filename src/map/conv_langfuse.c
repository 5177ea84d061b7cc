/* SPDX-License-Identifier: Apache-2.0 */
/*
 * conv_langfuse.c - the Langfuse SDKs' explicit langfuse.* attributes:
 * type, input/output, metadata, level, prompt and completion start.
 */
#include "o2l/map_conv.h"

#include <stdlib.h>
#include <string.h>

#include "o2l/common.h"
#include "o2l/map_util.h"

static const char *const obs_type_values[] = {
    "span",  "generation", "event",     "agent",     "tool",
    "chain", "retriever",  "embedding", "evaluator", "guardrail"};

/* Langfuse Python SDK 3.3 and older wrote "span" for generations. */
static bool old_python_generation(const struct o2l_map_ctx *c)
{
    static const char *const gen_keys[] = {
        "langfuse.observation.model.name",
        "langfuse.observation.model.parameters",
        "langfuse.observation.usage_details",
        "langfuse.observation.cost_details",
        "langfuse.observation.completion_start_time",
        "langfuse.observation.prompt.name",
        "langfuse.observation.prompt.version"};
    const char *lang = o2l_mu_str(c->res, "telemetry.sdk.language");
    const char *ver = c->scope->version;
    char *end = NULL;
    long major;
    long minor = 0;

    if (!o2l_mu_starts(c->scope->name, "langfuse-sdk") || !lang ||
        strcmp(lang, "python") != 0 || !ver[0]) {
        return false;
    }
    major = strtol(ver, &end, 10);
    if (end == ver) {
        return false;
    }
    if (*end == '.') {
        minor = strtol(end + 1, NULL, 10);
    }
    if (major > 3 || (major == 3 && minor > 3)) {
        return false;
    }
    for (size_t i = 0; i < O2L_ARRAY_LEN(gen_keys); i++) {
        if (o2l_mu_usable(o2l_map_attr(c, gen_keys[i]))) {
            return true;
        }
    }
    return false;
}

bool o2l_conv_langfuse_type(const struct o2l_map_ctx *c, enum o2l_obs_type *t)
{
    const char *v = o2l_map_attr_str(c, "langfuse.observation.type");

    if (!v) {
        return false;
    }
    if (strcmp(v, "span") == 0 && old_python_generation(c)) {
        *t = O2L_OBS_GENERATION;
        return true;
    }
    for (size_t i = 0; i < O2L_ARRAY_LEN(obs_type_values); i++) {
        if (o2l_mu_ieq(v, obs_type_values[i])) {
            *t = (enum o2l_obs_type)i;
            return true;
        }
    }
    return false;
}

int o2l_conv_langfuse_io(struct o2l_map_ctx *c, bool output, cJSON **out)
{
    return o2l_map_io_key(c,
                          output ? "langfuse.observation.output"
                                 : "langfuse.observation.input",
                          false, out);
}

/* The JSON object at |key| and the flat keys "<key>.<name>". */
static int add_json_and_flat(const cJSON *attrs, const char *key,
                             const char *flat_prefix, cJSON *md)
{
    cJSON *obj = NULL;
    int rc;

    rc = o2l_mu_object(o2l_mu_get(attrs, key), &obj);
    if (rc == O2L_OK) {
        rc = o2l_mu_merge(md, obj);
    } else {
        cJSON_Delete(obj);
    }
    if (rc != O2L_OK) {
        return rc;
    }
    return o2l_map_add_prefixed(attrs, flat_prefix, NULL, md);
}

int o2l_conv_langfuse_metadata(const struct o2l_map_ctx *c, cJSON *md)
{
    int rc;

    rc = add_json_and_flat(c->attrs, "langfuse.observation.metadata",
                           "langfuse.observation.metadata.", md);
    if (rc == O2L_OK) {
        rc = add_json_and_flat(c->attrs, "langfuse.metadata",
                               "langfuse.metadata.", md);
    }
    return rc;
}

bool o2l_conv_langfuse_level(const struct o2l_map_ctx *c, enum o2l_level *level)
{
    static const struct {
        const char *name;
        enum o2l_level level;
    } aliases[] = {
        {"DEBUG", O2L_LEVEL_DEBUG},     {"TRACE", O2L_LEVEL_DEBUG},
        {"VERBOSE", O2L_LEVEL_DEBUG},   {"DEFAULT", O2L_LEVEL_DEFAULT},
        {"INFO", O2L_LEVEL_DEFAULT},    {"LOG", O2L_LEVEL_DEFAULT},
        {"NOTICE", O2L_LEVEL_DEFAULT},  {"OK", O2L_LEVEL_DEFAULT},
        {"SUCCESS", O2L_LEVEL_DEFAULT}, {"WARNING", O2L_LEVEL_WARNING},
        {"WARN", O2L_LEVEL_WARNING},    {"ERROR", O2L_LEVEL_ERROR},
        {"FATAL", O2L_LEVEL_ERROR},     {"CRITICAL", O2L_LEVEL_ERROR}};
    const char *v = o2l_map_attr_str(c, "langfuse.observation.level");

    if (!v) {
        return false;
    }
    for (size_t i = 0; i < O2L_ARRAY_LEN(aliases); i++) {
        if (o2l_mu_ieq(v, aliases[i].name)) {
            *level = aliases[i].level;
            return true;
        }
    }
    return false;
}

/* A version as an integer: integral numbers and decimal-digit strings. */
static bool prompt_version(const cJSON *v, int64_t *out)
{
    if (cJSON_IsString(v)) {
        for (const char *p = v->valuestring; *p; p++) {
            if (*p < '0' || *p > '9') {
                return false;
            }
        }
    }
    return o2l_json_get_int64(v, 1, out);
}

int o2l_conv_langfuse_prompt(struct o2l_map_ctx *c)
{
    const cJSON *names[3] = {NULL, NULL, NULL};
    const cJSON *versions[3] = {NULL, NULL, NULL};
    cJSON *ai_prompt = NULL;
    const char *name = NULL;
    int64_t version = 0;
    bool have_version = false;
    int rc;

    rc = o2l_mu_value(o2l_map_attr(c, "ai.telemetry.metadata.langfusePrompt"),
                      true, &ai_prompt);
    if (rc != O2L_OK) {
        return rc;
    }
    names[0] = o2l_map_attr(c, "langfuse.observation.prompt.name");
    names[1] = o2l_map_attr(c, "langfuse.prompt.name");
    names[2] = o2l_mu_get(ai_prompt, "name");
    versions[0] = o2l_map_attr(c, "langfuse.observation.prompt.version");
    versions[1] = o2l_map_attr(c, "langfuse.prompt.version");
    versions[2] = o2l_mu_get(ai_prompt, "version");
    for (size_t i = 0; i < 3 && !name; i++) {
        if (cJSON_IsString(names[i]) && o2l_mu_usable(names[i])) {
            name = names[i]->valuestring;
        }
    }
    for (size_t i = 0; i < 3 && !have_version; i++) {
        have_version = versions[i] && prompt_version(versions[i], &version);
    }
    if (name && have_version) {
        c->obs->prompt_name = o2l_strdup(name);
        c->obs->prompt_version = version;
        if (!c->obs->prompt_name) {
            rc = O2L_ENOMEM;
        }
    }
    cJSON_Delete(ai_prompt);
    return rc;
}

int o2l_conv_langfuse_completion_start(const struct o2l_map_ctx *c,
                                       uint64_t *ns)
{
    cJSON *v = NULL;
    int rc;

    rc = o2l_mu_value(
        o2l_map_attr(c, "langfuse.observation.completion_start_time"), true,
        &v);
    if (rc == O2L_OK && cJSON_IsString(v) &&
        !o2l_mu_parse_iso(v->valuestring, ns)) {
        *ns = 0;
    }
    cJSON_Delete(v);
    return rc;
}
