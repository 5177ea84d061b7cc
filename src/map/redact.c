/* SPDX-License-Identifier: Apache-2.0 */
/*
 * redact.c - mapping.redact: the values of listed keys become a marker
 * in what the map stage writes (input, output, metadata, model
 * parameters and the ingestion-only attribute copies) and in what the
 * OTLP output forwards, also inside JSON held in a string.
 */
#include "o2l/mapper.h"

#include <string.h>

#include "o2l/common.h"
#include "o2l/map_conv.h"
#include "o2l/map_util.h"

static bool redacting(const struct o2l_map_config *cfg)
{
    return cfg && cfg->redact && cfg->redact[0];
}

bool o2l_map_is_redacted(const struct o2l_map_config *cfg, const char *key)
{
    size_t klen;

    if (!redacting(cfg) || !key) {
        return false;
    }
    klen = strlen(key);
    for (size_t i = 0; cfg->redact[i]; i++) {
        const char *name = cfg->redact[i];
        size_t nlen = strlen(name);

        if (nlen == 0 || nlen > klen ||
            memcmp(key + klen - nlen, name, nlen) != 0) {
            continue;
        }
        /* The whole key, or its end after a dot: "email" never matches
         * "user_email". */
        if (nlen == klen || key[klen - nlen - 1] == '.') {
            return true;
        }
    }
    return false;
}

/* A raw item (o2l_mu_passthrough) holding an object or an array. */
static bool raw_container(const cJSON *v)
{
    return cJSON_IsRaw(v) && v->valuestring &&
           (v->valuestring[0] == '{' || v->valuestring[0] == '[');
}

/*
 * The tree of the JSON object or array held in the string |v|, or NULL
 * (not a string, not such JSON, or no memory to parse it).
 */
static cJSON *held_tree(const cJSON *v)
{
    const char *p;

    if (!cJSON_IsString(v) || !v->valuestring) {
        return NULL;
    }
    p = v->valuestring;
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') {
        p++;
    }
    if (*p != '{' && *p != '[') {
        return NULL;
    }
    return cJSON_ParseWithOpts(p, NULL, true);
}

bool o2l_map_redact_needed(const struct o2l_map_config *cfg, const cJSON *v)
{
    if (!redacting(cfg) || !v) {
        return false;
    }
    if (raw_container(v)) {
        return true; /* its keys are only known after parsing */
    }
    if (cJSON_IsString(v)) {
        cJSON *tree = held_tree(v);
        bool needed = tree && o2l_map_redact_needed(cfg, tree);

        cJSON_Delete(tree);
        return needed;
    }
    for (const cJSON *it = v->child; it; it = it->next) {
        if ((cJSON_IsObject(v) && o2l_map_is_redacted(cfg, it->string)) ||
            o2l_map_redact_needed(cfg, it)) {
            return true;
        }
    }
    return false;
}

int o2l_map_marker(const struct o2l_map_config *cfg, cJSON **out)
{
    const char *marker =
        cfg && cfg->redact_marker ? cfg->redact_marker : O2L_MAP_REDACT_MARKER;

    *out = cJSON_CreateString(marker);
    return *out ? O2L_OK : O2L_ENOMEM;
}

/* Puts |repl| in the place of |old|, a member of |parent|, under the same
 * key; |old| is freed. */
static void replace_member(cJSON *parent, cJSON *old, cJSON *repl)
{
    if (old->string) {
        repl->string = old->string;
        repl->type |= old->type & cJSON_StringIsConst;
        old->string = NULL;
    }
    cJSON_ReplaceItemViaPointer(parent, old, repl);
}

static int redact_members(const struct o2l_map_config *cfg, cJSON *v);

/*
 * For a string holding JSON in which something is redacted: *repl = a new
 * string with the redacted JSON as compact text. Otherwise *repl = NULL.
 */
static int redacted_text(const struct o2l_map_config *cfg, const cJSON *v,
                         cJSON **repl)
{
    cJSON *tree = held_tree(v);
    char *text = NULL;
    int rc = O2L_OK;

    *repl = NULL;
    if (tree && o2l_map_redact_needed(cfg, tree)) {
        rc = redact_members(cfg, tree);
        text = rc == O2L_OK ? cJSON_PrintUnformatted(tree) : NULL;
        *repl = text ? cJSON_CreateString(text) : NULL;
        rc = rc == O2L_OK && !*repl ? O2L_ENOMEM : rc;
    }
    cJSON_free(text);
    cJSON_Delete(tree);
    return rc;
}

static int redact_members(const struct o2l_map_config *cfg, cJSON *v)
{
    cJSON *next;
    cJSON *repl;
    int rc;

    for (cJSON *it = v->child; it; it = next) {
        next = it->next;
        if (cJSON_IsObject(v) && o2l_map_is_redacted(cfg, it->string)) {
            rc = o2l_map_marker(cfg, &repl);
            if (rc != O2L_OK) {
                return rc;
            }
            replace_member(v, it, repl);
            continue;
        }
        if (cJSON_IsString(it)) {
            rc = redacted_text(cfg, it, &repl);
            if (repl) {
                replace_member(v, it, repl);
            }
            if (rc != O2L_OK) {
                return rc;
            }
            continue;
        }
        if (raw_container(it)) {
            /* The text was checked when it was made: only memory can
             * fail. */
            repl = cJSON_ParseWithOpts(it->valuestring, NULL, true);
            if (!repl) {
                return O2L_ENOMEM;
            }
            replace_member(v, it, repl);
            it = repl;
        }
        rc = redact_members(cfg, it);
        if (rc != O2L_OK) {
            return rc;
        }
    }
    return O2L_OK;
}

int o2l_map_redact(const struct o2l_map_config *cfg, cJSON **v)
{
    int rc;

    if (!redacting(cfg) || !*v) {
        return O2L_OK;
    }
    if (cJSON_IsString(*v)) {
        cJSON *repl;

        rc = redacted_text(cfg, *v, &repl);
        if (repl) {
            cJSON_Delete(*v);
            *v = repl;
        }
        return rc;
    }
    if (raw_container(*v)) {
        rc = o2l_mu_tree(v);
        if (rc != O2L_OK) {
            return rc;
        }
    }
    return redact_members(cfg, *v);
}
