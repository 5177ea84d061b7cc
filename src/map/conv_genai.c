/* SPDX-License-Identifier: Apache-2.0 */
/*
 * conv_genai.c - the OpenTelemetry GenAI conventions (gen_ai.*), old and
 * new: operation names, tool keys, message attributes and the content
 * span events of versions 1.26 to 1.37.
 */
#include "o2l/map_conv.h"

#include <stdio.h>
#include <string.h>

#include "o2l/common.h"
#include "o2l/map_util.h"

static const struct {
    const char *op;
    enum o2l_obs_type type;
} operations[] = {
    {"chat", O2L_OBS_GENERATION},
    {"completion", O2L_OBS_GENERATION},
    {"text_completion", O2L_OBS_GENERATION},
    {"generate_content", O2L_OBS_GENERATION},
    {"generate", O2L_OBS_GENERATION},
    {"embeddings", O2L_OBS_EMBEDDING},
    {"embedding", O2L_OBS_EMBEDDING},
    {"invoke_agent", O2L_OBS_AGENT},
    {"create_agent", O2L_OBS_AGENT},
    {"execute_tool", O2L_OBS_TOOL},
    {"retrieval", O2L_OBS_RETRIEVER},
    {"invoke_workflow", O2L_OBS_CHAIN},
};

static const char *const content_events[] = {
    "gen_ai.client.inference.operation.details",
    "gen_ai.system.message",
    "gen_ai.user.message",
    "gen_ai.assistant.message",
    "gen_ai.tool.message",
    "gen_ai.choice",
    "gen_ai.content.prompt",
    "gen_ai.content.completion"};

bool o2l_conv_genai_type(const struct o2l_map_ctx *c, enum o2l_obs_type *t)
{
    const char *op = o2l_map_attr_str(c, "gen_ai.operation.name");

    if (!op) {
        return false;
    }
    for (size_t i = 0; i < O2L_ARRAY_LEN(operations); i++) {
        if (strcmp(op, operations[i].op) == 0) {
            *t = operations[i].type;
            return true;
        }
    }
    return false;
}

bool o2l_conv_genai_tool_type(const struct o2l_map_ctx *c, enum o2l_obs_type *t)
{
    if (o2l_mu_usable(o2l_map_attr(c, "gen_ai.tool.name")) ||
        o2l_mu_usable(o2l_map_attr(c, "gen_ai.tool.call.id"))) {
        *t = O2L_OBS_TOOL;
        return true;
    }
    return false;
}

bool o2l_conv_genai_is_content_event(const char *name)
{
    for (size_t i = 0; i < O2L_ARRAY_LEN(content_events); i++) {
        if (strcmp(name, content_events[i]) == 0) {
            return true;
        }
    }
    return false;
}

static const struct o2l_span_event *find_event(const struct o2l_span *s,
                                               const char *name)
{
    for (size_t i = 0; i < s->n_events; i++) {
        if (strcmp(s->events[i].name, name) == 0) {
            return &s->events[i];
        }
    }
    return NULL;
}

/* True when a message list already holds a system message. */
static bool has_system(const cJSON *messages)
{
    const cJSON *m;

    cJSON_ArrayForEach(m, messages)
    {
        const char *role = o2l_mu_str(m, "role");

        if (role && strcmp(role, "system") == 0) {
            return true;
        }
    }
    return false;
}

/* System instructions as message content: text parts joined into one
 * string, anything else kept as the list. */
static int instructions_content(cJSON *instr, cJSON **out)
{
    const cJSON *part;
    size_t len = 0;
    char *text;
    size_t pos = 0;

    *out = NULL;
    if (!cJSON_IsArray(instr)) {
        *out = cJSON_Duplicate(instr, 1);
        return *out ? O2L_OK : O2L_ENOMEM;
    }
    cJSON_ArrayForEach(part, instr)
    {
        const char *type = o2l_mu_str(part, "type");
        const cJSON *content = o2l_mu_get(part, "content");

        if (!type || strcmp(type, "text") != 0 || !cJSON_IsString(content)) {
            *out = cJSON_Duplicate(instr, 1);
            return *out ? O2L_OK : O2L_ENOMEM;
        }
        len += strlen(content->valuestring) + 1;
    }
    text = o2l_malloc(len + 1);
    if (!text) {
        return O2L_ENOMEM;
    }
    cJSON_ArrayForEach(part, instr)
    {
        const char *s = o2l_mu_get(part, "content")->valuestring;
        size_t n = strlen(s);

        if (pos > 0) {
            text[pos++] = '\n';
        }
        memcpy(text + pos, s, n);
        pos += n;
    }
    text[pos] = '\0';
    *out = cJSON_CreateString(text);
    o2l_free(text);
    return *out ? O2L_OK : O2L_ENOMEM;
}

/* Puts the system instructions in front of |messages| (an array). */
int o2l_conv_genai_prepend_system(cJSON *messages, const cJSON *instr_attr)
{
    cJSON *instr = NULL;
    cJSON *content = NULL;
    cJSON *msg = NULL;
    int rc;

    if (!cJSON_IsArray(messages) || has_system(messages)) {
        return O2L_OK;
    }
    rc = o2l_mu_value(instr_attr, false, &instr);
    if (rc != O2L_OK || !instr) {
        return rc;
    }
    rc = instructions_content(instr, &content);
    if (rc != O2L_OK) {
        goto out;
    }
    msg = cJSON_CreateObject();
    if (!msg) {
        rc = O2L_ENOMEM;
        goto out;
    }
    rc = o2l_mu_add_str(msg, "role", "system", false);
    if (rc == O2L_OK) {
        rc = o2l_mu_add(msg, "content", content, false);
        content = NULL;
    }
    if (rc == O2L_OK && !cJSON_InsertItemInArray(messages, 0, msg)) {
        rc = O2L_ENOMEM;
    }
    if (rc == O2L_OK) {
        msg = NULL;
    }

out:
    cJSON_Delete(msg);
    cJSON_Delete(content);
    cJSON_Delete(instr);
    return rc;
}

int o2l_conv_genai_io_details_event(struct o2l_map_ctx *c, bool output,
                                    cJSON **out)
{
    const struct o2l_span_event *ev;
    int rc;

    *out = NULL;
    ev = find_event(c->span, "gen_ai.client.inference.operation.details");
    if (!ev) {
        return O2L_OK;
    }
    rc = o2l_mu_value(o2l_mu_get(ev->attrs, output ? "gen_ai.output.messages"
                                                   : "gen_ai.input.messages"),
                      false, out);
    if (rc == O2L_OK && *out && !output) {
        rc = o2l_conv_genai_prepend_system(
            *out, o2l_mu_get(ev->attrs, "gen_ai.system_instructions"));
    }
    return rc;
}

/* {role, ...attributes} of one message event; values JSON-parsed. */
static int event_message(const struct o2l_span_event *ev, const char *role,
                         cJSON **out)
{
    cJSON *msg = cJSON_CreateObject();
    cJSON *v;
    int rc = O2L_OK;

    *out = NULL;
    if (!msg) {
        return O2L_ENOMEM;
    }
    if (role) {
        rc = o2l_mu_add_str(msg, "role", role, false);
    }
    for (const cJSON *a = ev->attrs->child; a && rc == O2L_OK; a = a->next) {
        rc = o2l_mu_value(a, false, &v);
        if (rc == O2L_OK && v) {
            rc = o2l_mu_add(msg, a->string, v, false);
        }
    }
    if (rc != O2L_OK) {
        cJSON_Delete(msg);
        return rc;
    }
    *out = msg;
    return O2L_OK;
}

/* The role of a per-message event: gen_ai.<role>.message. */
static bool message_role(const char *name, char *role, size_t role_size)
{
    static const char *const names[] = {"system", "user", "assistant", "tool"};
    char want[48];

    for (size_t i = 0; i < O2L_ARRAY_LEN(names); i++) {
        snprintf(want, sizeof(want), "gen_ai.%s.message", names[i]);
        if (strcmp(name, want) == 0) {
            snprintf(role, role_size, "%s", names[i]);
            return true;
        }
    }
    return false;
}

int o2l_conv_genai_io_message_events(struct o2l_map_ctx *c, bool output,
                                     cJSON **out)
{
    cJSON *list = NULL;
    cJSON *msg;
    char role[16];
    size_t count = 0;
    int rc = O2L_OK;

    *out = NULL;
    for (size_t i = 0; i < c->span->n_events; i++) {
        const struct o2l_span_event *ev = &c->span->events[i];
        bool match = output ? strcmp(ev->name, "gen_ai.choice") == 0
                            : message_role(ev->name, role, sizeof(role));

        if (!match) {
            continue;
        }
        if (!list) {
            list = cJSON_CreateArray();
            if (!list) {
                return O2L_ENOMEM;
            }
        }
        rc = event_message(ev, output ? NULL : role, &msg);
        if (rc != O2L_OK) {
            goto out;
        }
        if (!cJSON_AddItemToArray(list, msg)) {
            cJSON_Delete(msg);
            rc = O2L_ENOMEM;
            goto out;
        }
        count++;
    }
    if (output && count == 1) {
        /* One choice is an object, several are a list. */
        *out = cJSON_DetachItemFromArray(list, 0);
    } else if (count > 0) {
        *out = list;
        list = NULL;
    }

out:
    cJSON_Delete(list);
    return rc;
}

int o2l_conv_genai_io_content_events(struct o2l_map_ctx *c, bool output,
                                     cJSON **out)
{
    const struct o2l_span_event *ev;

    *out = NULL;
    ev = find_event(c->span, output ? "gen_ai.content.completion"
                                    : "gen_ai.content.prompt");
    if (!ev) {
        return O2L_OK;
    }
    return o2l_mu_value(
        o2l_mu_get(ev->attrs, output ? "gen_ai.completion" : "gen_ai.prompt"),
        false, out);
}

int o2l_conv_genai_io_messages(struct o2l_map_ctx *c, bool output, cJSON **out)
{
    int rc;

    rc = o2l_map_io_key(
        c, output ? "gen_ai.output.messages" : "gen_ai.input.messages", false,
        out);
    if (rc == O2L_OK && *out && !output &&
        o2l_map_attr(c, "gen_ai.system_instructions")) {
        o2l_map_mark_used(c, "gen_ai.system_instructions");
        rc = o2l_mu_tree(out);
    }
    if (rc == O2L_OK && *out && !output) {
        rc = o2l_conv_genai_prepend_system(
            *out, o2l_map_attr(c, "gen_ai.system_instructions"));
    }
    return rc;
}

int o2l_conv_genai_io_tool_call(struct o2l_map_ctx *c, bool output, cJSON **out)
{
    return o2l_map_io_key(
        c, output ? "gen_ai.tool.call.result" : "gen_ai.tool.call.arguments",
        false, out);
}

bool o2l_conv_genai_first_chunk(const struct o2l_map_ctx *c, uint64_t *ns)
{
    static const char *const keys[] = {
        "gen_ai.response.time_to_first_chunk",
        "gen_ai.client.operation.time_to_first_chunk"};
    double secs;

    for (size_t i = 0; i < O2L_ARRAY_LEN(keys); i++) {
        if (o2l_mu_number(o2l_map_attr(c, keys[i]), &secs) && secs >= 0 &&
            secs < 1e9) {
            *ns = c->span->start_ns + (uint64_t)(secs * 1e9);
            return true;
        }
    }
    return false;
}
