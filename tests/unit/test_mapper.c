/* SPDX-License-Identifier: Apache-2.0 */
/* test_mapper.c - the map stage: spans built by hand into Langfuse's model. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "o2l/common.h"
#include "o2l/map_util.h"
#include "o2l/mapper.h"

#define MAX_SPANS  32
#define MAX_SCOPES 8

#define T1  "0af7651916cd43dd8448eb211c80319c"
#define T2  "11111111111111111111111111111111"
#define SEC 1000000000ULL
#define T0  (1700000000ULL * SEC)

/* ---- building exports by hand ------------------------------------------ */

static struct o2l_export *ex_new(void)
{
    struct o2l_export *ex = o2l_calloc(1, sizeof(*ex));

    assert_non_null(ex);
    ex->spans = o2l_calloc(MAX_SPANS, sizeof(*ex->spans));
    ex->scopes = o2l_calloc(MAX_SCOPES, sizeof(*ex->scopes));
    assert_non_null(ex->spans);
    assert_non_null(ex->scopes);
    return ex;
}

static size_t add_scope(struct o2l_export *ex, const char *name,
                        const char *version, const char *res_json)
{
    struct o2l_scope *sc = &ex->scopes[ex->n_scopes];

    assert_true(ex->n_scopes < MAX_SCOPES);
    sc->name = o2l_strdup(name);
    sc->version = o2l_strdup(version);
    sc->attrs = cJSON_CreateObject();
    sc->resource_attrs =
        res_json ? cJSON_Parse(res_json) : cJSON_CreateObject();
    assert_non_null(sc->resource_attrs);
    return ex->n_scopes++;
}

/* |attrs_json| is the attribute object written as JSON. */
static struct o2l_span *add_span(struct o2l_export *ex, size_t scope,
                                 const char *trace, const char *id,
                                 const char *parent, const char *name,
                                 uint64_t start, uint64_t end,
                                 const char *attrs_json)
{
    struct o2l_span *s = &ex->spans[ex->n_spans++];

    assert_true(ex->n_spans <= MAX_SPANS);
    snprintf(s->trace_id, sizeof(s->trace_id), "%s", trace);
    snprintf(s->span_id, sizeof(s->span_id), "%s", id);
    snprintf(s->parent_id, sizeof(s->parent_id), "%s", parent ? parent : "");
    s->name = o2l_strdup(name);
    s->start_ns = start;
    s->end_ns = end;
    s->scope = scope;
    s->attrs = cJSON_Parse(attrs_json ? attrs_json : "{}");
    assert_non_null(s->attrs);
    return s;
}

static void add_event(struct o2l_span *s, const char *name, uint64_t t,
                      const char *attrs_json)
{
    struct o2l_span_event *evs;

    evs = o2l_realloc(s->events, (s->n_events + 1) * sizeof(*evs));
    assert_non_null(evs);
    s->events = evs;
    evs[s->n_events].name = o2l_strdup(name);
    evs[s->n_events].time_ns = t;
    evs[s->n_events].attrs = cJSON_Parse(attrs_json ? attrs_json : "{}");
    assert_non_null(evs[s->n_events].attrs);
    s->n_events++;
}

static struct o2l_mapped *map_with(const struct o2l_export *ex,
                                   const struct o2l_map_config *cfg)
{
    struct o2l_mapped *m = NULL;

    assert_int_equal(o2l_map_export(ex, cfg, &m), O2L_OK);
    assert_non_null(m);
    return m;
}

static struct o2l_mapped *map(const struct o2l_export *ex)
{
    struct o2l_map_config cfg;

    o2l_map_config_defaults(&cfg);
    return map_with(ex, &cfg);
}

/* One span with |attrs_json| in scope "test", mapped. */
static struct o2l_mapped *map_one(const char *scope, const char *attrs_json,
                                  struct o2l_export **ex_out)
{
    struct o2l_export *ex = ex_new();
    size_t sc = add_scope(ex, scope ? scope : "test", "", NULL);

    add_span(ex, sc, T1, "aaaaaaaaaaaaaaaa", NULL, "op", T0, T0 + SEC,
             attrs_json);
    *ex_out = ex;
    return map(ex);
}

static const struct o2l_observation *find_obs(const struct o2l_mapped *m,
                                              const char *id)
{
    for (size_t i = 0; i < m->n_obs; i++) {
        if (strcmp(m->obs[i].id, id) == 0) {
            return &m->obs[i];
        }
    }
    fail_msg("no observation %s", id);
    return NULL;
}

/* Compact JSON of |v| compared with |want|. */
static void assert_json(const cJSON *v, const char *want)
{
    char *got;

    assert_non_null(v);
    got = cJSON_PrintUnformatted(v);
    assert_non_null(got);
    if (strcmp(got, want) != 0) {
        print_error("got  %s\nwant %s\n", got, want);
    }
    assert_string_equal(got, want);
    o2l_free(got);
}

static void done(struct o2l_mapped *m, struct o2l_export *ex)
{
    o2l_mapped_free(m);
    o2l_export_free(ex);
}

/* ---- whole traces ------------------------------------------------------ */

static struct o2l_export *langgraph_export(void)
{
    struct o2l_export *ex = ex_new();
    size_t sc =
        add_scope(ex, "openinference.instrumentation.langchain", "0.1.0",
                  "{\"service.name\":\"bot\","
                  "\"deployment.environment\":\"Langfuse-Prod\"}");
    struct o2l_span *s;

    add_span(ex, sc, T1, "1000000000000001", NULL, "LangGraph", T0,
             T0 + 10 * SEC,
             "{\"openinference.span.kind\":\"CHAIN\","
             "\"input.value\":\"{\\\"messages\\\":[[\\\"user\\\",\\\"hi\\\"]]}"
             "\",\"input.mime_type\":\"application/json\","
             "\"output.value\":\"done\",\"output.mime_type\":\"text/plain\","
             "\"metadata\":\"{\\\"thread_id\\\":\\\"thread-7\\\","
             "\\\"user_id\\\":\\\"alice\\\"}\"}");
    add_span(ex, sc, T1, "1000000000000002", "1000000000000001", "agent",
             T0 + 1 * SEC, T0 + 5 * SEC,
             "{\"openinference.span.kind\":\"CHAIN\","
             "\"metadata\":\"{\\\"langgraph_node\\\":\\\"agent\\\","
             "\\\"langgraph_step\\\":1,\\\"thread_id\\\":\\\"thread-7\\\"}\"}");
    add_span(ex, sc, T1, "1000000000000003", "1000000000000002", "ChatOpenAI",
             T0 + 2 * SEC, T0 + 4 * SEC,
             "{\"openinference.span.kind\":\"LLM\","
             "\"llm.model_name\":\"gpt-4o-mini-2024-07-18\","
             "\"llm.input_messages.0.message.role\":\"system\","
             "\"llm.input_messages.0.message.content\":\"be brief\","
             "\"llm.input_messages.1.message.role\":\"user\","
             "\"llm.input_messages.1.message.content\":\"weather?\","
             "\"llm.output_messages.0.message.role\":\"assistant\","
             "\"llm.output_messages.0.message.tool_calls.0.tool_call."
             "function.name\":\"get_weather\","
             "\"llm.output_messages.0.message.tool_calls.0.tool_call."
             "function.arguments\":\"{\\\"city\\\":\\\"Paris\\\"}\","
             "\"llm.token_count.prompt\":120,"
             "\"llm.token_count.completion\":30,"
             "\"llm.token_count.total\":150,"
             "\"llm.token_count.prompt_details.cache_read\":20,"
             "\"llm.invocation_parameters\":\"{\\\"temperature\\\":0.2,"
             "\\\"stop\\\":[\\\"x\\\"]}\","
             "\"input.value\":\"{\\\"messages\\\":[[]]}\","
             "\"input.mime_type\":\"application/json\","
             "\"metadata\":\"{\\\"langgraph_node\\\":\\\"agent\\\"}\"}");
    add_span(ex, sc, T1, "1000000000000004", "1000000000000001", "tools",
             T0 + 6 * SEC, T0 + 8 * SEC,
             "{\"openinference.span.kind\":\"CHAIN\","
             "\"metadata\":\"{\\\"langgraph_node\\\":\\\"tools\\\"}\"}");
    s = add_span(ex, sc, T1, "1000000000000005", "1000000000000004",
                 "get_weather", T0 + 6 * SEC, T0 + 7 * SEC,
                 "{\"openinference.span.kind\":\"TOOL\","
                 "\"tool.name\":\"get_weather\","
                 "\"input.value\":\"{\\\"city\\\":\\\"Paris\\\"}\","
                 "\"output.value\":\"sunny\"}");
    (void)s;
    return ex;
}

static void test_mapper_langgraph_openinference_trace(void **state)
{
    struct o2l_export *ex = langgraph_export();
    struct o2l_mapped *m = map(ex);
    const struct o2l_trace *t;
    const struct o2l_observation *o;

    (void)state;
    assert_int_equal(m->n_traces, 1);
    assert_int_equal(m->n_obs, 5);
    t = &m->traces[0];
    assert_string_equal(t->id, T1);
    assert_string_equal(t->envelope_id, T1 "-trace-1000000000000001");
    assert_string_equal(t->name, "LangGraph");
    assert_string_equal(t->user_id, "alice");
    assert_string_equal(t->session_id, "thread-7");
    assert_string_equal(t->environment, "prod");
    assert_true(t->timestamp_ns == T0);
    assert_true(t->envelope_ns == T0 + 10 * SEC);
    assert_json(t->input, "{\"messages\":[[\"user\",\"hi\"]]}");
    assert_json(t->output, "\"done\"");

    o = find_obs(m, "1000000000000001");
    assert_int_equal(o->type, O2L_OBS_CHAIN);
    assert_string_equal(o->parent_id, "");
    /* trace-create carries the root observation's metadata underneath. */
    assert_non_null(t->ingest_metadata);
    assert_true(cJSON_Compare(t->ingest_metadata, o->metadata, 1));
    assert_string_equal(o->environment, "prod");
    assert_string_equal(o->trace_id, T1);

    o = find_obs(m, "1000000000000002");
    assert_int_equal(o->type, O2L_OBS_CHAIN);
    assert_string_equal(o->name, "agent");
    assert_string_equal(o->parent_id, "1000000000000001");
    assert_json(o->metadata,
                "{\"langgraph_node\":\"agent\","
                "\"langgraph_step\":1,\"thread_id\":\"thread-7\"}");

    o = find_obs(m, "1000000000000003");
    assert_int_equal(o->type, O2L_OBS_GENERATION);
    assert_string_equal(o->parent_id, "1000000000000002");
    assert_string_equal(o->model, "gpt-4o-mini-2024-07-18");
    assert_json(o->input, "[{\"role\":\"system\",\"content\":\"be brief\"},"
                          "{\"role\":\"user\",\"content\":\"weather?\"}]");
    assert_json(o->output,
                "[{\"role\":\"assistant\",\"tool_calls\":[{\"function\":"
                "{\"name\":\"get_weather\",\"arguments\":"
                "\"{\\\"city\\\":\\\"Paris\\\"}\"}}]}]");
    assert_json(o->usage_details, "{\"input\":100,\"output\":30,\"total\":150,"
                                  "\"input_cached_tokens\":20}");
    assert_json(o->model_parameters,
                "{\"temperature\":0.2,\"stop\":\"[\\\"x\\\"]\"}");
    assert_true(o->envelope_ns == T0 + 4 * SEC);

    o = find_obs(m, "1000000000000004");
    assert_string_equal(o->name, "tools");
    assert_int_equal(o->type, O2L_OBS_CHAIN);

    o = find_obs(m, "1000000000000005");
    assert_int_equal(o->type, O2L_OBS_TOOL);
    assert_string_equal(o->parent_id, "1000000000000004");
    assert_json(o->input, "{\"city\":\"Paris\"}");
    assert_json(o->output, "\"sunny\"");
    assert_null(o->usage_details);
    done(m, ex);
}

static void test_mapper_langfuse_sdk_trace(void **state)
{
    struct o2l_export *ex = ex_new();
    size_t sc = add_scope(ex, "langfuse-sdk", "3.6.1",
                          "{\"telemetry.sdk.language\":\"python\"}");
    struct o2l_mapped *m;
    const struct o2l_observation *o;
    const struct o2l_trace *t;

    (void)state;
    add_span(ex, sc, T1, "2000000000000001", NULL, "handler", T0, T0 + 5 * SEC,
             "{\"langfuse.observation.type\":\"span\","
             "\"langfuse.trace.name\":\"chat-request\","
             "\"langfuse.user.id\":\"u-1\",\"langfuse.session.id\":\"s-1\","
             "\"langfuse.trace.tags\":[\"b\",\"a\"],"
             "\"langfuse.environment\":\"langfuse-staging\","
             "\"langfuse.release\":\"r42\",\"langfuse.version\":\"v3\","
             "\"langfuse.trace.public\":true,"
             "\"langfuse.trace.metadata.team\":\"core\","
             "\"langfuse.observation.input\":\"{\\\"q\\\":1}\","
             "\"langfuse.observation.metadata.k\":\"v\"}");
    add_span(ex, sc, T1, "2000000000000002", "2000000000000001", "llm",
             T0 + SEC, T0 + 3 * SEC,
             "{\"langfuse.observation.type\":\"generation\","
             "\"langfuse.observation.model.name\":\"gpt-4o\","
             "\"langfuse.observation.model.parameters\":"
             "\"{\\\"max_tokens\\\":100}\","
             "\"langfuse.observation.usage_details\":"
             "\"{\\\"input\\\":10,\\\"output\\\":5,\\\"bad\\\":-1,"
             "\\\"f\\\":1.5}\","
             "\"langfuse.observation.cost_details\":"
             "\"{\\\"total\\\":\\\"0.25\\\",\\\"x\\\":\\\"abc\\\"}\","
             "\"langfuse.observation.completion_start_time\":"
             "\"\\\"2023-11-14T22:13:21.5Z\\\"\","
             "\"langfuse.observation.prompt.name\":\"p\","
             "\"langfuse.observation.prompt.version\":\"3\","
             "\"langfuse.observation.level\":\"warn\","
             "\"langfuse.observation.status_message\":\"slow\","
             "\"langfuse.user.id\":\"u-1\",\"langfuse.trace.tags\":\"c, a\"}");
    m = map(ex);
    t = &m->traces[0];
    assert_string_equal(t->name, "chat-request");
    assert_string_equal(t->user_id, "u-1");
    assert_string_equal(t->session_id, "s-1");
    assert_string_equal(t->environment, "staging");
    assert_string_equal(t->release, "r42");
    assert_string_equal(t->version, "v3");
    assert_int_equal(t->public_flag, 1);
    assert_json(t->tags, "[\"a\",\"b\",\"c\"]");
    assert_json(t->metadata, "{\"team\":\"core\"}");
    assert_json(t->input, "{\"q\":1}");

    o = find_obs(m, "2000000000000001");
    assert_int_equal(o->type, O2L_OBS_SPAN);
    assert_json(o->metadata, "{\"k\":\"v\"}");
    assert_string_equal(o->version, "v3");
    /* Langfuse SDK scopes send no "attributes". */
    assert_null(cJSON_GetObjectItem(o->ingest_metadata, "attributes"));
    assert_non_null(cJSON_GetObjectItem(o->ingest_metadata, "scope"));

    o = find_obs(m, "2000000000000002");
    assert_int_equal(o->type, O2L_OBS_GENERATION);
    assert_string_equal(o->model, "gpt-4o");
    assert_json(o->model_parameters, "{\"max_tokens\":100}");
    assert_json(o->usage_details, "{\"input\":10,\"output\":5}");
    assert_json(o->cost_details, "{\"total\":0.25}");
    assert_string_equal(o->prompt_name, "p");
    assert_int_equal(o->prompt_version, 3);
    assert_int_equal(o->level, O2L_LEVEL_WARNING);
    assert_string_equal(o->status_message, "slow");
    assert_true(o->completion_start_ns == 1700000001500000000ULL);
    assert_string_equal(o->environment, "staging");
    done(m, ex);
}

static void test_mapper_openllmetry_trace(void **state)
{
    struct o2l_export *ex = ex_new();
    size_t sc = add_scope(ex, "opentelemetry.instrumentation.langchain",
                          "0.40.0", NULL);
    struct o2l_mapped *m;
    const struct o2l_observation *o;
    const struct o2l_trace *t;

    (void)state;
    add_span(ex, sc, T1, "3000000000000001", NULL, "LangGraph.workflow", T0,
             T0 + 9 * SEC,
             "{\"traceloop.span.kind\":\"workflow\","
             "\"traceloop.workflow.name\":\"LangGraph\","
             "\"traceloop.entity.name\":\"LangGraph\","
             "\"traceloop.entity.input\":\"{\\\"inputs\\\":{\\\"q\\\":1}}\","
             "\"traceloop.entity.output\":\"\\\"final\\\"\","
             "\"traceloop.association.properties.thread_id\":\"th-1\","
             "\"traceloop.association.properties.user_id\":\"bob\"}");
    add_span(ex, sc, T1, "3000000000000002", "3000000000000001", "agent.task",
             T0 + SEC, T0 + 5 * SEC,
             "{\"traceloop.span.kind\":\"task\","
             "\"traceloop.entity.name\":\"agent\","
             "\"traceloop.workflow.name\":\"LangGraph\"}");
    add_span(ex, sc, T1, "3000000000000003", "3000000000000002",
             "ChatOpenAI.chat", T0 + 2 * SEC, T0 + 4 * SEC,
             "{\"llm.request.type\":\"chat\","
             "\"gen_ai.request.model\":\"gpt-4o\","
             "\"gen_ai.response.model\":\"gpt-4o-2024-08-06\","
             "\"gen_ai.request.temperature\":0.5,"
             "\"gen_ai.prompt.0.role\":\"user\","
             "\"gen_ai.prompt.0.content\":\"hello\","
             "\"gen_ai.prompt.2.role\":\"user\","
             "\"gen_ai.prompt.2.content\":\"again\","
             "\"gen_ai.completion.0.role\":\"assistant\","
             "\"gen_ai.completion.0.content\":\"hi\","
             "\"gen_ai.usage.prompt_tokens\":11,"
             "\"gen_ai.usage.completion_tokens\":7,"
             "\"llm.usage.total_tokens\":18,"
             "\"traceloop.entity.input\":\"ignored for generations\"}");
    add_span(ex, sc, T1, "3000000000000004", "3000000000000002",
             "get_weather.tool", T0 + 5 * SEC, T0 + 6 * SEC,
             "{\"traceloop.span.kind\":\"tool\","
             "\"traceloop.entity.name\":\"get_weather\"}");
    m = map(ex);
    t = &m->traces[0];
    assert_string_equal(t->name, "LangGraph");
    assert_string_equal(t->user_id, "bob");
    assert_string_equal(t->session_id, "th-1");
    assert_json(t->input, "{\"inputs\":{\"q\":1}}");
    assert_json(t->output, "\"final\"");

    o = find_obs(m, "3000000000000001");
    assert_int_equal(o->type, O2L_OBS_CHAIN);
    assert_string_equal(o->name, "LangGraph");
    assert_json(o->metadata, "{\"thread_id\":\"th-1\",\"user_id\":\"bob\"}");
    o = find_obs(m, "3000000000000002");
    assert_int_equal(o->type, O2L_OBS_CHAIN);
    assert_string_equal(o->name, "agent");
    o = find_obs(m, "3000000000000003");
    assert_int_equal(o->type, O2L_OBS_GENERATION);
    assert_string_equal(o->name, "ChatOpenAI.chat");
    assert_string_equal(o->model, "gpt-4o-2024-08-06");
    assert_json(o->input, "[{\"role\":\"user\",\"content\":\"hello\"},"
                          "{\"role\":\"user\",\"content\":\"again\"}]");
    assert_json(o->output, "[{\"role\":\"assistant\",\"content\":\"hi\"}]");
    assert_json(o->usage_details, "{\"input\":11,\"output\":7,\"total\":18}");
    assert_json(o->model_parameters, "{\"temperature\":0.5}");
    o = find_obs(m, "3000000000000004");
    assert_int_equal(o->type, O2L_OBS_TOOL);
    assert_string_equal(o->name, "get_weather");
    done(m, ex);
}

/* ---- rule groups ------------------------------------------------------- */

static void test_mapper_type_steps(void **state)
{
    static const struct {
        const char *scope;
        const char *attrs;
        enum o2l_obs_type want;
    } cases[] = {
        {NULL,
         "{\"langfuse.observation.type\":\"agent\","
         "\"openinference.span.kind\":\"LLM\"}",
         O2L_OBS_AGENT},
        {NULL,
         "{\"langfuse.observation.type\":\"weird\","
         "\"openinference.span.kind\":\"RETRIEVER\"}",
         O2L_OBS_RETRIEVER},
        {NULL, "{\"openinference.span.kind\":\"RERANKER\"}", O2L_OBS_RETRIEVER},
        {NULL, "{\"openinference.span.kind\":\"PROMPT\"}", O2L_OBS_CHAIN},
        {NULL,
         "{\"openinference.span.kind\":\"UNKNOWN\","
         "\"llm.model_name\":\"m\"}",
         O2L_OBS_GENERATION},
        {NULL,
         "{\"traceloop.span.kind\":\"workflow\","
         "\"gen_ai.operation.name\":\"invoke_agent\"}",
         O2L_OBS_CHAIN},
        {NULL, "{\"gen_ai.operation.name\":\"chat\"}", O2L_OBS_GENERATION},
        {NULL, "{\"gen_ai.operation.name\":\"embeddings\"}", O2L_OBS_EMBEDDING},
        {NULL, "{\"gen_ai.operation.name\":\"invoke_agent\"}", O2L_OBS_AGENT},
        {NULL, "{\"gen_ai.operation.name\":\"execute_tool\"}", O2L_OBS_TOOL},
        {NULL, "{\"gen_ai.operation.name\":\"retrieval\"}", O2L_OBS_RETRIEVER},
        {NULL, "{\"gen_ai.operation.name\":\"invoke_workflow\"}",
         O2L_OBS_CHAIN},
        {NULL, "{\"gen_ai.tool.name\":\"x\"}", O2L_OBS_TOOL},
        {NULL, "{\"traceloop.span.kind\":\"task\",\"gen_ai.tool.name\":\"t\"}",
         O2L_OBS_TOOL},
        {NULL, "{\"traceloop.span.kind\":\"task\"}", O2L_OBS_CHAIN},
        {NULL, "{\"gen_ai.request.model\":\"m\"}", O2L_OBS_GENERATION},
        {NULL, "{\"model\":\"m\"}", O2L_OBS_GENERATION},
        {NULL,
         "{\"langsmith.span.kind\":\"retriever\","
         "\"gen_ai.operation.name\":\"embeddings\"}",
         O2L_OBS_RETRIEVER},
        {NULL, "{\"mlflow.spanType\":\"\\\"CHAT_MODEL\\\"\"}",
         O2L_OBS_GENERATION},
        {NULL,
         "{\"operation.name\":\"ai.generateText.doGenerate x\","
         "\"ai.model.id\":\"m\"}",
         O2L_OBS_GENERATION},
        {NULL, "{\"operation.name\":\"ai.toolCall x\"}", O2L_OBS_TOOL},
        {NULL, "{\"genkit:metadata:subtype\":\"embedder\"}", O2L_OBS_EMBEDDING},
        {NULL, "{\"flue.task.id\":\"1\"}", O2L_OBS_AGENT},
        {NULL, "{\"other\":1}", O2L_OBS_SPAN},
        /* Langfuse Python 3.3 wrote "span" for generations. */
        {"langfuse-sdk",
         "{\"langfuse.observation.type\":\"span\","
         "\"langfuse.observation.model.name\":\"m\"}",
         O2L_OBS_SPAN},
    };
    struct o2l_export *ex;
    struct o2l_mapped *m;

    (void)state;
    for (size_t i = 0; i < O2L_ARRAY_LEN(cases); i++) {
        m = map_one(cases[i].scope, cases[i].attrs, &ex);
        if ((int)m->obs[0].type != (int)cases[i].want) {
            fail_msg("case %zu: type %d, want %d", i, (int)m->obs[0].type,
                     (int)cases[i].want);
        }
        done(m, ex);
    }
}

static void test_mapper_old_python_sdk_generation(void **state)
{
    struct o2l_export *ex = ex_new();
    size_t sc = add_scope(ex, "langfuse-sdk", "3.3.0",
                          "{\"telemetry.sdk.language\":\"python\"}");
    struct o2l_mapped *m;

    (void)state;
    add_span(ex, sc, T1, "aaaaaaaaaaaaaaaa", NULL, "x", T0, T0 + 1,
             "{\"langfuse.observation.type\":\"span\","
             "\"langfuse.observation.usage_details\":\"{\\\"input\\\":1}\"}");
    m = map(ex);
    assert_int_equal(m->obs[0].type, O2L_OBS_GENERATION);
    assert_json(m->obs[0].usage_details, "{\"input\":1}");
    done(m, ex);
}

static void test_mapper_names(void **state)
{
    static const struct {
        const char *attrs;
        const char *want;
    } cases[] = {
        {"{\"gen_ai.tool.name\":\"search\"}", "search"},
        {"{\"traceloop.span.kind\":\"task\","
         "\"traceloop.entity.name\":\"agent\"}",
         "agent"},
        {"{\"traceloop.span.kind\":\"workflow\","
         "\"traceloop.workflow.name\":\"flow\"}",
         "flow"},
        {"{\"traceloop.span.kind\":\"task\","
         "\"traceloop.workflow.name\":\"flow\"}",
         "op"},
        {"{\"traceloop.entity.name\":\"no kind\"}", "op"},
        {"{\"ai.operationId\":\"ai.generateText\","
         "\"ai.telemetry.functionId\":\"fn\"}",
         "fn:ai.generateText"},
        {"{\"logfire.msg\":42}", "42"},
    };
    struct o2l_export *ex;
    struct o2l_mapped *m;

    (void)state;
    for (size_t i = 0; i < O2L_ARRAY_LEN(cases); i++) {
        m = map_one(NULL, cases[i].attrs, &ex);
        assert_string_equal(m->obs[0].name, cases[i].want);
        done(m, ex);
    }
}

static void test_mapper_level_and_status(void **state)
{
    struct o2l_export *ex = ex_new();
    size_t sc = add_scope(ex, "test", "", NULL);
    struct o2l_span *s;
    struct o2l_mapped *m;
    const struct o2l_observation *o;

    (void)state;
    /* Error status with an exception event and no message. */
    s = add_span(ex, sc, T1, "a000000000000001", NULL, "a", T0, T0 + 1, NULL);
    s->status_code = O2L_STATUS_ERROR;
    add_event(s, "exception", T0,
              "{\"exception.type\":\"ValueError\","
              "\"exception.message\":\"bad\"}");
    /* LangGraph interrupt: control flow, not failure. */
    s = add_span(ex, sc, T1, "a000000000000002", NULL, "b", T0, T0 + 1, NULL);
    s->status_code = O2L_STATUS_ERROR;
    add_event(s, "exception", T0,
              "{\"exception.type\":\"langgraph.errors.GraphInterrupt\"}");
    /* Control flow seen in the status message. */
    s = add_span(ex, sc, T1, "a000000000000003", NULL, "c", T0, T0 + 1, NULL);
    s->status_code = O2L_STATUS_ERROR;
    s->status_message = o2l_strdup("Command(goto='x')");
    /* error.type alone; explicit level wins over the status. */
    s = add_span(ex, sc, T1, "a000000000000004", NULL, "d", T0, T0 + 1,
                 "{\"error.type\":\"timeout\","
                 "\"langfuse.observation.level\":\"Debug\"}");
    s->status_code = O2L_STATUS_ERROR;
    /* Aliases. */
    add_span(ex, sc, T1, "a000000000000005", NULL, "e", T0, T0 + 1,
             "{\"langfuse.observation.level\":\"fatal\"}");
    add_span(ex, sc, T1, "a000000000000006", NULL, "f", T0, T0 + 1,
             "{\"langfuse.observation.level\":\"bogus\"}");
    m = map(ex);

    o = find_obs(m, "a000000000000001");
    assert_int_equal(o->level, O2L_LEVEL_ERROR);
    assert_string_equal(o->status_message, "ValueError: bad");
    o = find_obs(m, "a000000000000002");
    assert_int_equal(o->level, O2L_LEVEL_DEFAULT);
    assert_string_equal(o->status_message, "langgraph.errors.GraphInterrupt");
    o = find_obs(m, "a000000000000003");
    assert_int_equal(o->level, O2L_LEVEL_DEFAULT);
    assert_string_equal(o->status_message, "Command(goto='x')");
    o = find_obs(m, "a000000000000004");
    assert_int_equal(o->level, O2L_LEVEL_DEBUG);
    assert_string_equal(o->status_message, "timeout");
    o = find_obs(m, "a000000000000005");
    assert_int_equal(o->level, O2L_LEVEL_ERROR);
    o = find_obs(m, "a000000000000006");
    assert_int_equal(o->level, O2L_LEVEL_DEFAULT);
    assert_null(o->status_message);
    done(m, ex);
}

static void test_mapper_input_output_order(void **state)
{
    struct o2l_export *ex;
    struct o2l_mapped *m;

    (void)state;
    /* Each side separately: output from messages, input from input.value. */
    m = map_one(NULL,
                "{\"input.value\":\"question\","
                "\"llm.output_messages.0.message.content\":\"answer\"}",
                &ex);
    assert_int_equal(m->obs[0].type, O2L_OBS_SPAN);
    assert_json(m->obs[0].input, "\"question\"");
    assert_json(m->obs[0].output, "[{\"content\":\"answer\"}]");
    done(m, ex);

    /* text/plain stays a string; an unparsable JSON-looking string too. */
    m = map_one(NULL,
                "{\"input.value\":\"{\\\"a\\\":1}\","
                "\"input.mime_type\":\"text/plain\","
                "\"output.value\":\"{\\\"cut\\\": \"}",
                &ex);
    assert_json(m->obs[0].input, "\"{\\\"a\\\":1}\"");
    assert_json(m->obs[0].output, "\"{\\\"cut\\\": \"");
    done(m, ex);

    /* GENERATION: message lists come before input.value; empty JSON is not
     * usable and falls through. */
    m = map_one(NULL,
                "{\"openinference.span.kind\":\"LLM\","
                "\"langfuse.observation.input\":\"{}\","
                "\"input.value\":\"raw\","
                "\"gen_ai.input.messages\":\"[{\\\"role\\\":\\\"user\\\","
                "\\\"parts\\\":[]}]\","
                "\"gen_ai.system_instructions\":\"[{\\\"type\\\":"
                "\\\"text\\\",\\\"content\\\":\\\"a\\\"},{\\\"type\\\":"
                "\\\"text\\\",\\\"content\\\":\\\"b\\\"}]\","
                "\"output.value\":\"out\"}",
                &ex);
    assert_json(m->obs[0].input, "[{\"role\":\"system\",\"content\":\"a\\nb\"},"
                                 "{\"role\":\"user\",\"parts\":[]}]");
    assert_json(m->obs[0].output, "\"out\"");
    done(m, ex);

    /* Tool definitions move into a generation's input. */
    m = map_one(NULL,
                "{\"gen_ai.operation.name\":\"chat\","
                "\"gen_ai.input.messages\":\"[{\\\"role\\\":\\\"user\\\"}]\","
                "\"gen_ai.tool.definitions\":\"[{\\\"name\\\":\\\"t\\\"}]\"}",
                &ex);
    assert_json(m->obs[0].input, "{\"messages\":[{\"role\":\"user\"}],"
                                 "\"tools\":[{\"name\":\"t\"}]}");
    done(m, ex);

    m = map_one(
        NULL,
        "{\"openinference.span.kind\":\"LLM\","
        "\"input.value\":\"hi\","
        "\"llm.tools.0.tool.json_schema\":\"{\\\"name\\\":\\\"t\\\"}\"}",
        &ex);
    assert_json(m->obs[0].input,
                "{\"prompt\":\"hi\",\"tools\":[{\"name\":\"t\"}]}");
    done(m, ex);

    /* Tool calls: step 21. */
    m = map_one(NULL,
                "{\"gen_ai.operation.name\":\"execute_tool\","
                "\"gen_ai.tool.call.arguments\":\"{\\\"x\\\":1}\","
                "\"gen_ai.tool.call.result\":\"ok\"}",
                &ex);
    assert_json(m->obs[0].input, "{\"x\":1}");
    assert_json(m->obs[0].output, "\"ok\"");
    done(m, ex);
}

static void test_mapper_content_events(void **state)
{
    struct o2l_export *ex = ex_new();
    size_t sc = add_scope(ex, "test", "", NULL);
    struct o2l_span *s;
    struct o2l_mapped *m;
    const struct o2l_observation *o;

    (void)state;
    s = add_span(ex, sc, T1, "b000000000000001", NULL, "chat", T0, T0 + SEC,
                 "{\"gen_ai.operation.name\":\"chat\"}");
    add_event(s, "gen_ai.system.message", T0, "{\"content\":\"sys\"}");
    add_event(s, "gen_ai.user.message", T0, "{\"content\":\"hi\"}");
    add_event(s, "custom", T0 + 5, "{\"k\":\"v\"}");
    add_event(s, "gen_ai.choice", T0,
              "{\"index\":0,\"message\":"
              "\"{\\\"content\\\":\\\"yo\\\"}\"}");
    add_event(s, "exception", T0 + 7, "{\"exception.message\":\"boom\"}");
    m = map(ex);
    assert_int_equal(m->n_obs, 3);
    o = find_obs(m, "b000000000000001");
    assert_json(o->input, "[{\"role\":\"system\",\"content\":\"sys\"},"
                          "{\"role\":\"user\",\"content\":\"hi\"}]");
    assert_json(o->output, "{\"index\":0,\"message\":{\"content\":\"yo\"}}");
    /* Ids count the skipped content events. */
    o = find_obs(m, "b000000000000001-event-2");
    assert_int_equal(o->type, O2L_OBS_EVENT);
    assert_string_equal(o->name, "custom");
    assert_string_equal(o->parent_id, "b000000000000001");
    assert_true(o->start_ns == T0 + 5);
    assert_true(o->end_ns == 0);
    assert_true(o->envelope_ns == T0 + 5);
    assert_int_equal(o->level, O2L_LEVEL_DEFAULT);
    assert_json(o->metadata, "{\"k\":\"v\"}");
    assert_string_equal(o->environment, "default");
    assert_string_equal(o->trace_id, T1);
    o = find_obs(m, "b000000000000001-event-4");
    assert_int_equal(o->level, O2L_LEVEL_ERROR);
    assert_string_equal(o->status_message, "boom");
    done(m, ex);
}

static void test_mapper_flattened_keys(void **state)
{
    cJSON *attrs = cJSON_Parse(
        "{\"p.3.a\":1,\"p.1.a\":2,\"p.1.b.0\":\"x\",\"p.1.b\":\"leaf\","
        "\"p.7\":\"scalar\",\"p.2.tool_calls.0.tool_call.id\":\"c\","
        "\"p.4000000000.a\":1,\"q\":1}");
    cJSON *out = NULL;
    size_t left = 100;
    size_t dropped = 0;

    (void)state;
    assert_non_null(attrs);
    assert_int_equal(o2l_mu_flatten(attrs, "p.", true, &left, &dropped, &out),
                     O2L_OK);
    /* Gaps closed in index order; deeper keys beat a leaf; the huge index
     * is over the budget and costs nothing. */
    assert_json(out, "[{\"a\":2,\"b\":[\"x\"]},{\"tool_calls\":[{\"id\":"
                     "\"c\"}]},{\"a\":1},\"scalar\"]");
    assert_int_equal(dropped, 1);
    assert_int_equal(left, 100 - 8 - 1 - 1);
    cJSON_Delete(out);

    /* A budget too small for the highest index drops that key only. */
    left = 6;
    dropped = 0;
    assert_int_equal(o2l_mu_flatten(attrs, "p.", false, &left, &dropped, &out),
                     O2L_OK);
    assert_json(out, "[{\"a\":2,\"b\":[\"x\"]},{\"tool_calls\":[{\"tool_call\":"
                     "{\"id\":\"c\"}}]},{\"a\":1}]");
    assert_int_equal(dropped, 2);
    cJSON_Delete(out);

    assert_int_equal(
        o2l_mu_flatten(attrs, "none.", true, &left, &dropped, &out), O2L_OK);
    assert_null(out);
    cJSON_Delete(attrs);
}

static void test_mapper_bare_prompt_wins(void **state)
{
    struct o2l_export *ex;
    struct o2l_mapped *m;

    (void)state;
    m = map_one(NULL,
                "{\"gen_ai.prompt\":\"[{\\\"role\\\":\\\"user\\\"}]\","
                "\"gen_ai.prompt.0.role\":\"ignored\"}",
                &ex);
    assert_json(m->obs[0].input, "[{\"role\":\"user\"}]");
    done(m, ex);
}

static void test_mapper_usage_buckets(void **state)
{
    struct o2l_usage_cands *u = o2l_calloc(1, sizeof(*u));
    cJSON *v = cJSON_CreateNumber(0);
    cJSON *out = NULL;

    (void)state;
    assert_non_null(u);
#define ADD(name, n, pass)                                                     \
    do {                                                                       \
        cJSON_SetNumberValue(v, n);                                            \
        o2l_usage_add(u, NULL, name, v, pass);                                 \
    } while (0)

    /* Cached and cache-creation parts leave input; reasoning leaves
     * output; the later alias is not sent; a pass-through key keeps its
     * name without "details.". */
    ADD("input_tokens", 1000, true);
    ADD("prompt_tokens", 900, true);
    ADD("output_tokens", 300, true);
    ADD("cache_read.input_tokens", 200, true);
    ADD("cache_creation.input_tokens", 100, true);
    ADD("reasoning.output_tokens", 50, true);
    ADD("details.accepted_prediction_tokens", 4, true);
    ADD("text_tokens", 999, true);
    assert_int_equal(o2l_usage_buckets(u, &out), O2L_OK);
    assert_json(out, "{\"input\":600,\"output\":250,\"total\":1200,"
                     "\"input_cached_tokens\":200,"
                     "\"input_cache_creation\":100,"
                     "\"output_reasoning_tokens\":50,"
                     "\"accepted_prediction_tokens\":4}");
    cJSON_Delete(out);

    /* Parts larger than input: the provider already excluded them. */
    memset(u, 0, sizeof(*u));
    ADD("prompt_tokens", 10, true);
    ADD("cached_tokens", 50, true);
    ADD("total_tokens", 77, true);
    assert_int_equal(o2l_usage_buckets(u, &out), O2L_OK);
    assert_json(out, "{\"input\":10,\"total\":77,"
                     "\"input_cached_tokens\":50}");
    cJSON_Delete(out);

    /* Non-numeric values and negatives are ignored; nothing left. */
    memset(u, 0, sizeof(*u));
    cJSON_Delete(v);
    v = cJSON_CreateString("{'cached': 3}");
    o2l_usage_add(u, NULL, "input_token_details", v, true);
    cJSON_Delete(v);
    v = cJSON_CreateNumber(-3);
    o2l_usage_add(u, NULL, "input_tokens", v, true);
    cJSON_Delete(v);
    v = cJSON_CreateString("12");
    o2l_usage_add(u, NULL, "outputTokens", v, false);
    assert_int_equal(o2l_usage_buckets(u, &out), O2L_OK);
    assert_json(out, "{\"output\":12,\"total\":12}");
    cJSON_Delete(out);

    /* Objects are flattened with '.'; only aliases from non-generic
     * sources. */
    memset(u, 0, sizeof(*u));
    cJSON_Delete(v);
    v = cJSON_Parse("{\"openai\":{\"cachedPromptTokens\":5,"
                    "\"acceptedPredictionTokens\":2,\"other\":9}}");
    o2l_usage_add(u, NULL, NULL, v, false);
    assert_int_equal(o2l_usage_buckets(u, &out), O2L_OK);
    assert_json(out, "{\"input_cached_tokens\":5,"
                     "\"accepted_prediction_tokens\":2}");
    cJSON_Delete(out);
#undef ADD
    cJSON_Delete(v);
    o2l_free(u);
}

static void test_mapper_usage_from_span_keys(void **state)
{
    struct o2l_export *ex;
    struct o2l_mapped *m;

    (void)state;
    m = map_one(NULL,
                "{\"gen_ai.operation.name\":\"chat\","
                "\"gen_ai.usage.input_tokens\":100,"
                "\"gen_ai.usage.output_tokens\":40,"
                "\"gen_ai.usage.cache_read.input_tokens\":30,"
                "\"gen_ai.usage.reasoning.output_tokens\":10,"
                "\"gen_ai.usage.cost\":0.5,"
                "\"gen_ai.response.time_to_first_chunk\":0.25}",
                &ex);
    assert_json(m->obs[0].usage_details,
                "{\"input\":70,\"output\":30,\"total\":140,"
                "\"input_cached_tokens\":30,\"output_reasoning_tokens\":10}");
    assert_json(m->obs[0].cost_details, "{\"total\":0.5}");
    assert_true(m->obs[0].completion_start_ns == T0 + SEC / 4);
    done(m, ex);

    /* Huge counts saturate instead of overflowing; infinity is no cost. */
    m = map_one(NULL,
                "{\"gen_ai.operation.name\":\"chat\","
                "\"gen_ai.usage.input_tokens\":\"9223372036854775807\","
                "\"gen_ai.usage.output_tokens\":1,"
                "\"gen_ai.usage.cache_read.input_tokens\":"
                "\"9223372036854775807\","
                "\"langfuse.observation.cost_details\":"
                "\"{\\\"total\\\":1e400,\\\"input\\\":2}\"}",
                &ex);
    assert_json(m->obs[0].usage_details,
                "{\"input\":0,\"output\":1,\"total\":9223372036854775807,"
                "\"input_cached_tokens\":9223372036854775807}");
    assert_json(m->obs[0].cost_details, "{\"input\":2}");
    done(m, ex);

    /* OpenInference cost split and AI SDK milliseconds. */
    m = map_one(NULL,
                "{\"openinference.span.kind\":\"LLM\","
                "\"llm.cost.total\":\"0.3\",\"llm.cost.prompt\":0.1,"
                "\"llm.cost.completion\":0.2,"
                "\"ai.response.msToFirstChunk\":1.5}",
                &ex);
    assert_json(m->obs[0].cost_details,
                "{\"total\":0.3,\"input\":0.1,\"output\":0.2}");
    assert_true(m->obs[0].completion_start_ns == T0 + 1500000);
    done(m, ex);
}

static void test_mapper_fields_only_for_their_type(void **state)
{
    struct o2l_export *ex;
    struct o2l_mapped *m;

    (void)state;
    m = map_one(NULL,
                "{\"openinference.span.kind\":\"CHAIN\","
                "\"llm.token_count.prompt\":5,\"llm.cost.total\":1,"
                "\"langfuse.observation.prompt.name\":\"p\","
                "\"langfuse.observation.prompt.version\":1,"
                "\"langfuse.observation.completion_start_time\":"
                "\"2023-11-14T22:13:21Z\"}",
                &ex);
    assert_int_equal(m->obs[0].type, O2L_OBS_CHAIN);
    assert_null(m->obs[0].model);
    assert_json(m->obs[0].usage_details, "{\"input\":5,\"total\":5}");
    assert_null(m->obs[0].prompt_name); /* GENERATION only */
    done(m, ex);

    m = map_one(NULL,
                "{\"langfuse.observation.type\":\"span\","
                "\"llm.token_count.prompt\":5,\"llm.model_name\":\"m\","
                "\"langfuse.observation.completion_start_time\":"
                "\"2023-11-14T22:13:21Z\"}",
                &ex);
    assert_int_equal(m->obs[0].type, O2L_OBS_SPAN);
    assert_null(m->obs[0].usage_details);
    assert_null(m->obs[0].model);
    assert_null(m->obs[0].cost_details);
    assert_true(m->obs[0].completion_start_ns == 0);
    done(m, ex);

    m = map_one(NULL, "{\"langfuse.observation.type\":\"event\"}", &ex);
    assert_int_equal(m->obs[0].type, O2L_OBS_EVENT);
    assert_true(m->obs[0].end_ns == 0);
    done(m, ex);

    /* A prompt name alone, or a non-integer version, sends neither. */
    m = map_one(NULL,
                "{\"gen_ai.operation.name\":\"chat\","
                "\"langfuse.observation.prompt.name\":\"p\","
                "\"langfuse.observation.prompt.version\":\"v1\"}",
                &ex);
    assert_null(m->obs[0].prompt_name);
    done(m, ex);

    m = map_one(NULL,
                "{\"gen_ai.operation.name\":\"chat\","
                "\"ai.telemetry.metadata.langfusePrompt\":"
                "\"{\\\"name\\\":\\\"q\\\",\\\"version\\\":2.0}\"}",
                &ex);
    assert_string_equal(m->obs[0].prompt_name, "q");
    assert_int_equal(m->obs[0].prompt_version, 2);
    done(m, ex);
}

static void test_mapper_agent_does_not_double_count(void **state)
{
    struct o2l_export *ex = ex_new();
    size_t sc = add_scope(ex, "test", "", NULL);
    struct o2l_mapped *m;

    (void)state;
    /* Agent with a generation below it: loses model, usage and cost. */
    add_span(ex, sc, T1, "c000000000000001", NULL, "invoke_agent", T0, T0 + 9,
             "{\"gen_ai.operation.name\":\"invoke_agent\","
             "\"gen_ai.request.model\":\"m\","
             "\"gen_ai.usage.input_tokens\":10,\"gen_ai.usage.cost\":1}");
    add_span(ex, sc, T1, "c000000000000002", "c000000000000001", "step", T0,
             T0 + 8, NULL);
    add_span(ex, sc, T1, "c000000000000003", "c000000000000002", "chat", T0,
             T0 + 7,
             "{\"gen_ai.operation.name\":\"chat\","
             "\"gen_ai.usage.input_tokens\":10}");
    /* Agent without usage below: keeps everything. */
    add_span(ex, sc, T2, "c000000000000004", NULL, "agent", T0, T0 + 9,
             "{\"openinference.span.kind\":\"AGENT\","
             "\"llm.model_name\":\"m\",\"llm.token_count.prompt\":3}");
    add_span(ex, sc, T2, "c000000000000005", "c000000000000004", "tool", T0,
             T0 + 2, "{\"openinference.span.kind\":\"TOOL\"}");
    m = map(ex);
    assert_int_equal(m->n_traces, 2);
    assert_null(find_obs(m, "c000000000000001")->usage_details);
    assert_null(find_obs(m, "c000000000000001")->model);
    assert_null(find_obs(m, "c000000000000001")->cost_details);
    assert_non_null(find_obs(m, "c000000000000003")->usage_details);
    assert_string_equal(find_obs(m, "c000000000000004")->model, "m");
    assert_non_null(find_obs(m, "c000000000000004")->usage_details);
    done(m, ex);
}

static void test_mapper_trace_facts(void **state)
{
    struct o2l_export *ex = ex_new();
    size_t sc = add_scope(ex, "test", "", "{\"langfuse.release\":\"res-r\"}");
    size_t sc2 = add_scope(ex, "test", "", "{\"service.version\":\"9.9\"}");
    struct o2l_mapped *m;
    const struct o2l_trace *t;
    char long_name[1200 * 2 + 64];
    char attrs[sizeof(long_name) + 64];
    size_t n = 0;

    (void)state;
    /* 1100 two-byte characters: cut to 1000 code points. */
    for (int i = 0; i < 1100; i++) {
        long_name[n++] = (char)0xC3;
        long_name[n++] = (char)0xA9;
    }
    long_name[n] = '\0';
    snprintf(attrs, sizeof(attrs), "{\"langfuse.trace.name\":\"%s\"}",
             long_name);
    /* A child that starts first, flagged as root: not the true root. */
    add_span(ex, sc, T1, "d000000000000009", "d000000000000001", "child",
             T0 - 5, T0 + 1,
             "{\"langfuse.internal.as_root\":true,"
             "\"langfuse.environment\":\"child-env\","
             "\"tag.tags\":[\"x\",\"y\"],\"langfuse.tags\":\"[\\\"z\\\"]\","
             "\"enduser.id\":\"weak-user\","
             "\"langfuse.trace.metadata\":\"{\\\"a\\\":\\\"child\\\","
             "\\\"b\\\":2}\"}");
    add_span(ex, sc2, T1, "d000000000000002", NULL, "second-root", T0, T0 + 2,
             NULL);
    add_span(ex, sc2, T1, "d000000000000001", NULL, "root", T0, T0 + 3,
             "{\"langfuse.trace.metadata.a\":\"root\","
             "\"langfuse.public\":\"false\",\"tag.tags\":\"y,,w \"}");
    add_span(ex, sc, T1, "d000000000000003", "d000000000000001", "named",
             T0 + 1, T0 + 2, attrs);
    m = map(ex);
    t = &m->traces[0];
    /* Earliest start, then lowest span id. */
    assert_string_equal(t->envelope_id, T1 "-trace-d000000000000001");
    assert_true(t->timestamp_ns == T0);
    assert_true(t->envelope_ns == T0 + 3);
    assert_int_equal(strlen(t->name), 2000);
    /* The flagged child's environment is not the trace's. */
    assert_string_equal(t->environment, "default");
    assert_string_equal(t->user_id, "weak-user");
    assert_json(t->tags, "[\"w\",\"x\",\"y\",\"z\"]");
    assert_string_equal(t->release, "res-r");
    assert_string_equal(t->version, "9.9");
    assert_int_equal(t->public_flag, 0);
    assert_json(t->metadata, "{\"a\":\"root\",\"b\":2}");
    assert_null(t->session_id);
    assert_string_equal(find_obs(m, "d000000000000002")->environment,
                        "default");
    done(m, ex);
}

static void test_mapper_trace_without_root(void **state)
{
    struct o2l_export *ex = ex_new();
    size_t sc = add_scope(ex, "test", "", NULL);
    struct o2l_mapped *m;
    const struct o2l_trace *t;
    struct o2l_map_config cfg;

    (void)state;
    add_span(ex, sc, T1, "e000000000000002", "ffffffffffffffff", "b", T0 + 5,
             T0 + 9, "{\"metadata\":\"{\\\"thread_id\\\":\\\"th\\\"}\"}");
    add_span(ex, sc, T1, "e000000000000001", "ffffffffffffffff", "a", T0 + 2,
             T0 + 3, "{\"input.value\":\"in\"}");
    m = map(ex);
    t = &m->traces[0];
    assert_string_equal(t->envelope_id, T1 "-trace-e000000000000001");
    assert_true(t->timestamp_ns == T0 + 2);
    assert_null(t->name);
    assert_null(t->input);
    assert_string_equal(t->session_id, "th");
    assert_string_equal(t->environment, "default");
    done(m, ex);

    /* Sessions from thread_id can be switched off. */
    ex = ex_new();
    sc = add_scope(ex, "test", "", NULL);
    add_span(ex, sc, T1, "e000000000000002", NULL, "b", T0, T0 + 1,
             "{\"metadata\":\"{\\\"thread_id\\\":\\\"th\\\"}\"}");
    o2l_map_config_defaults(&cfg);
    cfg.session_from_thread_id = false;
    m = map_with(ex, &cfg);
    assert_null(m->traces[0].session_id);
    done(m, ex);
}

static void test_mapper_custom_trace_ids(void **state)
{
    struct o2l_export *ex = ex_new();
    size_t sc = add_scope(ex, "test", "", NULL);
    struct o2l_mapped *m;
    const struct o2l_observation *o;
    struct o2l_span *s;

    (void)state;
    /* Two processes join one trace through the same seed. */
    add_span(ex, sc, T1, "f000000000000001", NULL, "first", T0, T0 + 1,
             "{\"langfuse.trace.id\":\"my-session-seed\"}");
    s = add_span(ex, sc, T2, "f000000000000002", NULL, "second", T0 + 1, T0 + 2,
                 NULL);
    add_event(s, "note", T0 + 1, NULL);
    add_span(ex, sc, T2, "f000000000000003", "f000000000000002", "c", T0 + 1,
             T0 + 2, "{\"langfuse.trace.id\":\"my-session-seed\"}");
    /* UUID and hex forms. */
    add_span(ex, sc, "22222222222222222222222222222222", "f000000000000004",
             NULL, "u", T0, T0 + 1,
             "{\"langfuse.trace.id\":"
             "\"6BA7B810-9DAD-11D1-80B4-00C04FD430C8\"}");
    add_span(ex, sc, "33333333333333333333333333333333", "f000000000000005",
             NULL, "h", T0, T0 + 1,
             "{\"langfuse.trace.id\":\"ABCDEFABCDEFABCDEFABCDEFABCDEF12\"}");
    add_span(ex, sc, "44444444444444444444444444444444", "f000000000000006",
             NULL, "n", T0, T0 + 1, "{\"langfuse.trace.id\":12345}");
    add_span(ex, sc, "55555555555555555555555555555555", "f000000000000007",
             NULL, "z", T0, T0 + 1,
             "{\"langfuse.trace.id\":\"00000000000000000000000000000000\"}");
    m = map(ex);
    assert_int_equal(m->n_traces, 5);
    o = find_obs(m, "f000000000000001");
    assert_string_equal(o->trace_id, "59a0a87594fb6910e3d63b914184fe74");
    assert_json(cJSON_GetObjectItem(o->metadata, "otel_trace_id"),
                "\"" T1 "\"");
    o = find_obs(m, "f000000000000002");
    assert_string_equal(o->trace_id, "59a0a87594fb6910e3d63b914184fe74");
    assert_json(cJSON_GetObjectItem(o->metadata, "otel_trace_id"),
                "\"" T2 "\"");
    o = find_obs(m, "f000000000000002-event-0");
    assert_string_equal(o->trace_id, "59a0a87594fb6910e3d63b914184fe74");
    assert_non_null(cJSON_GetObjectItem(o->metadata, "otel_trace_id"));
    for (size_t i = 0; i < m->n_traces; i++) {
        if (strcmp(m->traces[i].id, "59a0a87594fb6910e3d63b914184fe74") == 0) {
            /* The earliest root is the true root. */
            assert_string_equal(m->traces[i].name, "first");
        }
    }
    assert_string_equal(find_obs(m, "f000000000000004")->trace_id,
                        "6ba7b8109dad11d180b400c04fd430c8");
    assert_string_equal(find_obs(m, "f000000000000005")->trace_id,
                        "abcdefabcdefabcdefabcdefabcdef12");
    assert_string_equal(find_obs(m, "f000000000000006")->trace_id,
                        "5994471abb01112afcc18159f6cc74b4");
    assert_string_equal(find_obs(m, "f000000000000007")->trace_id,
                        "55555555555555555555555555555555");
    assert_null(find_obs(m, "f000000000000007")->metadata);
    done(m, ex);
}

static void test_mapper_environment_rules(void **state)
{
    static const char *const cases[][2] = {
        {"langfuse-test", "test"},
        {"langfuse", "default"},
        {"Prod", "prod"},
        {"LANGFUSE_langfuse-x", "x"},
        {"has space", "default"},
        {"", "default"},
        {"0123456789012345678901234567890123456789xyz",
         "0123456789012345678901234567890123456789"}};
    char *out = NULL;

    (void)state;
    for (size_t i = 0; i < O2L_ARRAY_LEN(cases); i++) {
        assert_int_equal(o2l_mu_environment(cases[i][0], &out), O2L_OK);
        assert_string_equal(out, cases[i][1]);
        o2l_free(out);
    }
}

static void test_mapper_metadata_and_attributes(void **state)
{
    struct o2l_export *ex;
    struct o2l_mapped *m;
    const struct o2l_observation *o;

    (void)state;
    m = map_one(NULL,
                "{\"langfuse.observation.metadata\":\"{\\\"k\\\":1}\","
                "\"langfuse.metadata.k\":\"loses\","
                "\"ai.telemetry.metadata.userId\":\"skip\","
                "\"ai.telemetry.metadata.extra\":\"[1,2]\","
                "\"metadata\":\"{\\\"langgraph_node\\\":\\\"n\\\"}\","
                "\"traceloop.association.properties.tenant\":\"t\","
                "\"input.value\":\"in\",\"custom.key\":true}",
                &ex);
    o = &m->obs[0];
    assert_json(o->metadata, "{\"k\":1,\"extra\":[1,2],"
                             "\"langgraph_node\":\"n\",\"tenant\":\"t\"}");
    assert_json(o->ingest_metadata, "{\"attributes\":{\"custom.key\":true},"
                                    "\"scope\":{\"name\":\"test\"}}");
    done(m, ex);
}

static void test_mapper_sha256(void **state)
{
    static const char hex[] = "0123456789abcdef";
    char text[100];
    uint8_t d[32];
    char got[65];

    (void)state;
    memset(text, 'a', sizeof(text));
    o2l_mu_sha256(text, sizeof(text), d);
    for (int i = 0; i < 32; i++) {
        got[2 * i] = hex[d[i] >> 4];
        got[2 * i + 1] = hex[d[i] & 15];
    }
    got[64] = '\0';
    assert_string_equal(
        got,
        "2816597888e4a0d3a36b82b83316ab32680eb8f00f8cd3b904d681246d285a0e");
    o2l_mu_sha256("", 0, d);
    assert_int_equal(d[0], 0xe3);
    assert_int_equal(d[31], 0x55);
}

static void test_mapper_iso_times(void **state)
{
    uint64_t ns = 0;

    (void)state;
    assert_true(o2l_mu_parse_iso("2023-11-14T22:13:20Z", &ns));
    assert_true(ns == T0);
    assert_true(o2l_mu_parse_iso("2023-11-14T23:13:20.123456789+01:00", &ns));
    assert_true(ns == T0 + 123456789);
    assert_false(o2l_mu_parse_iso("2023-11-14T22:13:20", &ns));
    assert_false(o2l_mu_parse_iso("yesterday", &ns));
}

static void test_mapper_empty_export(void **state)
{
    struct o2l_export *ex = ex_new();
    struct o2l_mapped *m = map(ex);

    (void)state;
    assert_int_equal(m->n_traces, 0);
    assert_int_equal(m->n_obs, 0);
    done(m, ex);
}

/* Input and output JSON is checked and compacted, never re-parsed. */
static void test_mapper_passthrough_json_text(void **state)
{
    static const struct {
        const char *in;
        const char *want; /* NULL: left out; "=": kept as the text */
    } cases[] = {
        {" { \"a\" : [1, 2.50, -0e+3, true, null] ,\"b\":\"x y\\n\\u00e9\"} ",
         "{\"a\":[1,2.50,-0e+3,true,null],\"b\":\"x y\\n\\u00e9\"}"},
        {"[12345678901234567890]", "[12345678901234567890]"},
        {"{}", NULL},
        {" [ ] ", NULL},
        {"{\"a\":", "="},
        {"[1,]", "="},
        {"{\"a\":01}", "="},
        {"[\"\\x\"]", "="},
        {"[1] tail", "="},
        {"plain text", "="},
    };
    char deep[2201];
    cJSON *v, *out;

    (void)state;
    for (size_t i = 0; i < O2L_ARRAY_LEN(cases); i++) {
        v = cJSON_CreateString(cases[i].in);
        assert_int_equal(o2l_mu_passthrough(v, false, &out), O2L_OK);
        if (!cases[i].want) {
            assert_null(out);
        } else if (strcmp(cases[i].want, "=") == 0) {
            assert_true(cJSON_IsString(out));
            assert_string_equal(out->valuestring, cases[i].in);
        } else {
            assert_true(cJSON_IsRaw(out));
            assert_string_equal(out->valuestring, cases[i].want);
        }
        cJSON_Delete(out);
        cJSON_Delete(v);
    }

    /* Nesting past cJSON's own limit stays text rather than recursing. */
    memset(deep, '[', 1100);
    memset(deep + 1100, ']', 1100);
    deep[2200] = '\0';
    v = cJSON_CreateString(deep);
    assert_int_equal(o2l_mu_passthrough(v, false, &out), O2L_OK);
    assert_true(cJSON_IsString(out));
    cJSON_Delete(out);
    cJSON_Delete(v);

    /* An edited value becomes a tree again. */
    v = cJSON_CreateString("[{\"role\":\"user\"}]");
    assert_int_equal(o2l_mu_passthrough(v, false, &out), O2L_OK);
    assert_true(o2l_mu_is_list(out));
    assert_int_equal(o2l_mu_tree(&out), O2L_OK);
    assert_true(cJSON_IsArray(out));
    assert_string_equal(out->child->child->valuestring, "user");
    cJSON_Delete(out);
    cJSON_Delete(v);
}

/* ---- mapping options --------------------------------------------------- */

/* A trace whose root is plain HTTP work: an LLM call under a database
 * span under the root, and a second trace with no LLM span at all. */
static struct o2l_export *mixed_export(void)
{
    struct o2l_export *ex = ex_new();
    size_t web =
        add_scope(ex, "opentelemetry.instrumentation.fastapi", "", NULL);
    size_t oi = add_scope(ex, "openinference.instrumentation.openai", "", NULL);
    size_t gk = add_scope(ex, "genkit-tracer", "", NULL);
    struct o2l_span *s;

    add_span(ex, web, T1, "e000000000000001", NULL, "GET /chat", T0,
             T0 + 9 * SEC, "{\"http.method\":\"GET\",\"user.id\":\"u-1\"}");
    add_span(ex, oi, T1, "e000000000000002", "e000000000000001", "agent",
             T0 + 1, T0 + 8 * SEC,
             "{\"openinference.span.kind\":\"AGENT\","
             "\"llm.token_count.prompt\":3,\"llm.model_name\":\"m\"}");
    s = add_span(ex, web, T1, "e000000000000003", "e000000000000002", "SELECT",
                 T0 + 2, T0 + 7 * SEC, "{\"db.system\":\"pg\"}");
    add_event(s, "retry", T0 + 3, NULL);
    add_span(ex, web, T1, "e000000000000004", "e000000000000003", "chat",
             T0 + 3, T0 + 6 * SEC,
             "{\"gen_ai.operation.name\":\"chat\","
             "\"gen_ai.usage.input_tokens\":10,"
             "\"langfuse.trace.name\":\"explicit\"}");
    add_span(ex, gk, T1, "e000000000000005", "e000000000000001", "flow", T0 + 4,
             T0 + 5 * SEC, NULL);
    add_span(ex, web, T2, "e000000000000006", NULL, "GET /health", T0, T0 + 1,
             NULL);
    return ex;
}

static void test_mapper_keeps_non_llm_spans_by_default(void **state)
{
    struct o2l_export *ex = mixed_export();
    struct o2l_mapped *m;

    (void)state;
    m = map(ex);
    assert_int_equal(m->n_traces, 2);
    assert_int_equal(m->n_obs, 7);
    assert_int_equal(m->spans_dropped, 0);
    assert_string_equal(find_obs(m, "e000000000000003-event-0")->name, "retry");
    done(m, ex);
}

static void test_mapper_drops_non_llm_spans(void **state)
{
    struct o2l_export *ex = mixed_export();
    struct o2l_map_config cfg;
    struct o2l_mapped *m;
    const struct o2l_trace *t;

    (void)state;
    o2l_map_config_defaults(&cfg);
    cfg.drop_non_llm_spans = true;
    m = map_with(ex, &cfg);
    /* The root, the database span (and its event) and the whole second
     * trace are gone; the genkit-tracer span stays by its scope. */
    assert_int_equal(m->spans_dropped, 3);
    assert_int_equal(m->n_traces, 1);
    assert_int_equal(m->n_obs, 3);
    find_obs(m, "e000000000000002");
    find_obs(m, "e000000000000005");
    /* Children keep their dropped parent. */
    assert_string_equal(find_obs(m, "e000000000000004")->parent_id,
                        "e000000000000003");
    /* The agent rule still sees the generation below the dropped span. */
    assert_true(find_obs(m, "e000000000000002")->usage_dropped);
    assert_null(find_obs(m, "e000000000000002")->usage_details);
    t = &m->traces[0];
    /* The dropped root is still the true root: its facts and start count,
     * the name comes only from the explicit key, input and output from
     * none. */
    assert_string_equal(t->id, T1);
    assert_string_equal(t->envelope_id, T1 "-trace-e000000000000001");
    assert_true(t->timestamp_ns == T0);
    assert_string_equal(t->user_id, "u-1");
    assert_string_equal(t->name, "explicit");
    assert_null(t->input);
    assert_null(t->output);
    o2l_mapped_free(m);

    /* Without the explicit key the trace has no name. */
    cJSON_DeleteItemFromObject(ex->spans[3].attrs, "langfuse.trace.name");
    m = map_with(ex, &cfg);
    assert_null(m->traces[0].name);
    o2l_mapped_free(m);

    /* Only the listed scopes and key prefixes count as LLM-related. */
    {
        static const char *const scopes[] = {"opentelemetry.instrumentation.",
                                             NULL};
        static const char *const prefixes[] = {"db.", NULL};

        cfg.llm_scopes = scopes;
        cfg.llm_key_prefixes = prefixes;
        m = map_with(ex, &cfg);
        assert_int_equal(m->spans_dropped, 2); /* openinference, genkit */
        assert_int_equal(m->n_traces, 2);
        o2l_mapped_free(m);
    }
    o2l_export_free(ex);
}

static void test_mapper_thread_id_keys(void **state)
{
    static const char *const keys[] = {"conversation", "thread_id", NULL};
    static const char *const none[] = {NULL};
    struct o2l_export *ex = ex_new();
    size_t sc = add_scope(ex, "test", "", NULL);
    struct o2l_map_config cfg;
    struct o2l_mapped *m;

    (void)state;
    add_span(ex, sc, T1, "f000000000000001", NULL, "graph", T0, T0 + 1,
             "{\"metadata\":\"{\\\"thread_id\\\":\\\"t-1\\\","
             "\\\"conversation\\\":\\\"c-1\\\"}\"}");
    o2l_map_config_defaults(&cfg);
    m = map_with(ex, &cfg);
    assert_string_equal(m->traces[0].session_id, "t-1");
    o2l_mapped_free(m);

    cfg.thread_id_keys = keys;
    m = map_with(ex, &cfg);
    assert_string_equal(m->traces[0].session_id, "c-1");
    o2l_mapped_free(m);

    cfg.session_from_thread_id = false;
    m = map_with(ex, &cfg);
    assert_null(m->traces[0].session_id);
    o2l_mapped_free(m);

    cfg.session_from_thread_id = true;
    cfg.thread_id_keys = none;
    m = map_with(ex, &cfg);
    assert_null(m->traces[0].session_id);
    o2l_mapped_free(m);
    o2l_export_free(ex);
}

static void test_mapper_redaction_matches_key_names(void **state)
{
    static const char *const names[] = {"email", "user.token", NULL};
    struct o2l_map_config cfg;

    (void)state;
    o2l_map_config_defaults(&cfg);
    assert_false(o2l_map_is_redacted(&cfg, "email"));
    assert_false(o2l_map_is_redacted(NULL, "email"));
    cfg.redact = names;
    assert_true(o2l_map_is_redacted(&cfg, "email"));
    assert_true(o2l_map_is_redacted(&cfg, "user.email"));
    assert_true(o2l_map_is_redacted(&cfg, "user.token"));
    assert_true(o2l_map_is_redacted(&cfg, "app.user.token"));
    assert_false(o2l_map_is_redacted(&cfg, "user_email"));
    assert_false(o2l_map_is_redacted(&cfg, "emails"));
    assert_false(o2l_map_is_redacted(&cfg, "Email"));
    assert_false(o2l_map_is_redacted(&cfg, "token"));
    assert_false(o2l_map_is_redacted(&cfg, "appuser.token"));
    assert_false(o2l_map_is_redacted(&cfg, NULL));
}

static struct o2l_export *secret_export(void)
{
    struct o2l_export *ex = ex_new();
    size_t sc = add_scope(ex, "test", "",
                          "{\"service.name\":\"bot\","
                          "\"deploy\":{\"secret\":\"s3\"}}");
    struct o2l_span *s;

    s = add_span(
        ex, sc, T1, "a100000000000001", NULL, "chat", T0, T0 + SEC,
        "{\"openinference.span.kind\":\"LLM\",\"llm.model_name\":\"m\","
        "\"user.id\":\"u-1\",\"input.value\":\"my password is x\","
        "\"output.value\":\"{\\\"email\\\":\\\"a@b\\\",\\\"items\\\":"
        "[{\\\"secret\\\":1,\\\"ok\\\":2}]}\","
        "\"output.mime_type\":\"application/json\","
        "\"llm.invocation_parameters\":\"{\\\"api_key\\\":\\\"k\\\","
        "\\\"temperature\\\":1}\","
        "\"metadata\":\"{\\\"email\\\":\\\"x\\\",\\\"user_id\\\":\\\"u\\\"}\","
        "\"traceloop.association.properties.secret\":\"p\","
        "\"langfuse.trace.metadata\":\"{\\\"email\\\":\\\"t\\\"}\","
        "\"app.email\":\"e\",\"custom\":{\"nested\":{\"secret\":\"s\"}},"
        "\"note\":\"{\\\"secret\\\":2}\"}");
    add_event(s, "login", T0 + 1, "{\"email\":\"ev\",\"ok\":true}");
    return ex;
}

static void test_mapper_redaction(void **state)
{
    static const char *const names[] = {"email",       "secret",  "api_key",
                                        "input.value", "user.id", NULL};
    struct o2l_export *ex = secret_export();
    struct o2l_map_config cfg;
    struct o2l_mapped *m;
    const struct o2l_observation *o;
    const struct o2l_trace *t;

    (void)state;
    /* Off by default: everything as sent. */
    m = map(ex);
    assert_json(o2l_mu_get(m->obs[0].metadata, "email"), "\"x\"");
    assert_string_equal(m->obs[0].input->valuestring, "my password is x");
    o2l_mapped_free(m);

    o2l_map_config_defaults(&cfg);
    cfg.redact = names;
    cfg.redact_marker = "***";
    m = map_with(ex, &cfg);
    o = find_obs(m, "a100000000000001");
    t = &m->traces[0];
    /* Taken from a redacted attribute: the whole value. */
    assert_json(o->input, "\"***\"");
    /* Keys inside values, at any depth and inside arrays. */
    assert_json(o->output, "{\"email\":\"***\",\"items\":[{\"secret\":\"***\","
                           "\"ok\":2}]}");
    assert_json(o->metadata, "{\"email\":\"***\",\"user_id\":\"u\","
                             "\"secret\":\"***\"}");
    assert_json(o->model_parameters, "{\"api_key\":\"***\",\"temperature\":1}");
    /* Keys read by other fields stay in "attributes", parsed and
     * redacted like the rest. */
    assert_json(o2l_mu_get(o->ingest_metadata, "attributes"),
                "{\"openinference.span.kind\":\"LLM\",\"llm.model_name\":\"m\","
                "\"user.id\":\"***\",\"output.mime_type\":\"application/json\","
                "\"llm.invocation_parameters\":{\"api_key\":\"***\","
                "\"temperature\":1},\"langfuse.trace.metadata\":"
                "{\"email\":\"***\"},\"app.email\":\"***\","
                "\"custom\":{\"nested\":{\"secret\":\"***\"}},"
                "\"note\":{\"secret\":\"***\"}}");
    assert_json(o2l_mu_get(o->ingest_metadata, "resourceAttributes"),
                "{\"service.name\":\"bot\",\"deploy\":{\"secret\":\"***\"}}");
    assert_json(find_obs(m, "a100000000000001-event-0")->metadata,
                "{\"email\":\"***\",\"ok\":true}");
    /* The trace's input and metadata too, but never its ids. */
    assert_json(t->input, "\"***\"");
    assert_json(t->metadata, "{\"email\":\"***\"}");
    assert_json(o2l_mu_get(t->ingest_metadata, "secret"), "\"***\"");
    assert_string_equal(t->user_id, "u-1");
    /* The export itself is left alone. */
    assert_string_equal(
        o2l_mu_str(
            o2l_mu_get(o2l_mu_get(ex->spans[0].attrs, "custom"), "nested"),
            "secret"),
        "s");
    assert_string_equal(
        o2l_mu_str(o2l_mu_get(ex->scopes[0].resource_attrs, "deploy"),
                   "secret"),
        "s3");
    done(m, ex);
}

/* JSON kept as text (a text/plain value, a string inside a parsed
 * value) is looked into as well. */
static void test_mapper_redaction_inside_text(void **state)
{
    static const char *const names[] = {"email", NULL};
    struct o2l_export *ex = ex_new();
    size_t sc = add_scope(ex, "test", "", NULL);
    struct o2l_map_config cfg;
    struct o2l_mapped *m;

    (void)state;
    add_span(ex, sc, T1, "aaaaaaaaaaaaaaaa", NULL, "op", T0, T0 + SEC,
             "{\"output.value\":\"{\\\"email\\\":\\\"a@x\\\",\\\"n\\\":1}\","
             "\"output.mime_type\":\"text/plain\","
             "\"input.value\":\"{\\\"s\\\":\\\"{\\\\\\\"email\\\\\\\":1}\\\"}\","
             "\"input.mime_type\":\"application/json\"}");
    o2l_map_config_defaults(&cfg);
    cfg.redact = names;
    m = map_with(ex, &cfg);
    assert_json(m->obs[0].output, "\"{\\\"email\\\":\\\"[REDACTED]\\\",\\\"n\\\":1}\"");
    assert_json(m->obs[0].input, "{\"s\":\"{\\\"email\\\":\\\"[REDACTED]\\\"}\"}");
    done(m, ex);
}

static void test_mapper_redaction_of_raw_and_explicit_trace_io(void **state)
{
    static const char *const names[] = {"langfuse.trace.output", "key", NULL};
    struct o2l_map_config cfg;
    struct o2l_export *ex = ex_new();
    size_t sc = add_scope(ex, "test", "", NULL);
    struct o2l_mapped *m;
    cJSON *v;

    (void)state;
    add_span(ex, sc, T1, "a200000000000001", NULL, "root", T0, T0 + 1,
             "{\"langfuse.trace.output\":\"done\","
             "\"langfuse.observation.input\":"
             "\"[{\\\"key\\\":1,\\\"more\\\":[{\\\"key\\\":2}]}]\"}");
    o2l_map_config_defaults(&cfg);
    cfg.redact = names;
    m = map_with(ex, &cfg);
    assert_json(m->traces[0].output, "\"[REDACTED]\"");
    assert_json(m->obs[0].input, "[{\"key\":\"[REDACTED]\",\"more\":"
                                 "[{\"key\":\"[REDACTED]\"}]}]");
    done(m, ex);

    /* Raw JSON items inside a tree are parsed and redacted as well. */
    v = cJSON_CreateObject();
    assert_non_null(v);
    cJSON_AddItemToObject(v, "a", cJSON_CreateRaw("{\"key\":1,\"b\":2}"));
    cJSON_AddItemToObject(v, "n", cJSON_CreateRaw("12345678901234567890"));
    assert_int_equal(o2l_map_redact(&cfg, &v), O2L_OK);
    assert_json(v, "{\"a\":{\"key\":\"[REDACTED]\",\"b\":2},"
                   "\"n\":12345678901234567890}");
    cJSON_Delete(v);
}

static void test_mapper_retrieval_documents(void **state)
{
    struct o2l_export *ex;
    struct o2l_mapped *m;
    const struct o2l_observation *o;

    (void)state;
    m = map_one(NULL,
                "{\"openinference.span.kind\":\"RETRIEVER\","
                "\"input.value\":\"q\","
                "\"retrieval.documents.0.document.id\":\"d1\","
                "\"retrieval.documents.0.document.content\":\"text\","
                "\"retrieval.documents.0.document.score\":0.5,"
                "\"retrieval.documents.0.document.metadata\":"
                "\"{\\\"src\\\":\\\"wiki\\\"}\","
                "\"retrieval.documents.2.document.content\":\"t2\"}",
                &ex);
    o = &m->obs[0];
    assert_int_equal(o->type, O2L_OBS_RETRIEVER);
    assert_json(o->input, "\"q\"");
    assert_json(o->output, "[{\"id\":\"d1\",\"content\":\"text\",\"score\":0.5,"
                           "\"metadata\":{\"src\":\"wiki\"}},"
                           "{\"content\":\"t2\"}]");
    assert_json(o2l_mu_get(o->ingest_metadata, "attributes"),
                "{\"openinference.span.kind\":\"RETRIEVER\"}");
    done(m, ex);

    /* Another output step wins; the documents stay as attributes. */
    m = map_one(NULL,
                "{\"openinference.span.kind\":\"RETRIEVER\","
                "\"output.value\":\"summary\","
                "\"retrieval.documents.0.document.id\":\"d1\"}",
                &ex);
    assert_json(m->obs[0].output, "\"summary\"");
    assert_json(o2l_mu_get(m->obs[0].ingest_metadata, "attributes"),
                "{\"openinference.span.kind\":\"RETRIEVER\","
                "\"retrieval.documents.0.document.id\":\"d1\"}");
    done(m, ex);
}

static void test_mapper_request_functions_become_tools(void **state)
{
    struct o2l_export *ex;
    struct o2l_mapped *m;

    (void)state;
    m = map_one(NULL,
                "{\"gen_ai.request.model\":\"gpt\","
                "\"gen_ai.prompt.0.role\":\"user\","
                "\"gen_ai.prompt.0.content\":\"weather?\","
                "\"llm.request.functions.0.name\":\"get_weather\","
                "\"llm.request.functions.0.description\":\"d\","
                "\"llm.request.functions.0.parameters\":"
                "\"{\\\"type\\\":\\\"object\\\"}\"}",
                &ex);
    assert_int_equal(m->obs[0].type, O2L_OBS_GENERATION);
    assert_json(m->obs[0].input,
                "{\"messages\":[{\"role\":\"user\",\"content\":\"weather?\"}],"
                "\"tools\":[{\"name\":\"get_weather\",\"description\":\"d\","
                "\"parameters\":{\"type\":\"object\"}}]}");
    assert_json(o2l_mu_get(m->obs[0].ingest_metadata, "attributes"),
                "{\"gen_ai.request.model\":\"gpt\"}");
    done(m, ex);
}

/* A whole metadata key that is not an object is kept among the
 * attributes rather than lost. */
static void test_mapper_metadata_not_an_object_kept(void **state)
{
    struct o2l_export *ex;
    struct o2l_mapped *m;

    (void)state;
    m = map_one(NULL,
                "{\"metadata\":\"not json\",\"langfuse.metadata\":\"[1]\","
                "\"langfuse.observation.metadata\":\"{\\\"k\\\":\\\"v\\\"}\"}",
                &ex);
    assert_json(o2l_mu_get(m->obs[0].ingest_metadata, "attributes"),
                "{\"metadata\":\"not json\",\"langfuse.metadata\":[1]}");
    assert_json(o2l_mu_get(m->obs[0].metadata, "k"), "\"v\"");
    done(m, ex);
}

static void test_mapper_ingest_attributes_parse_json(void **state)
{
    struct o2l_export *ex;
    struct o2l_mapped *m;

    (void)state;
    m = map_one(NULL,
                "{\"custom.json\":\" {\\\"a\\\":[1,2]}\","
                "\"custom.cut\":\"[1,2\",\"custom.empty\":\"{}\","
                "\"mlflow.traceRequestId\":\"\\\"tr-1\\\"\","
                "\"mlflow.spanFunctionName\":\"plain\","
                "\"mlflow.spanAttr\":\"{\\\"k\\\":\\\"v\\\"}\","
                "\"custom.num\":\"\\\"7\\\"\"}",
                &ex);
    assert_json(o2l_mu_get(m->obs[0].ingest_metadata, "attributes"),
                "{\"custom.json\":{\"a\":[1,2]},\"custom.cut\":\"[1,2\","
                "\"custom.empty\":\"{}\",\"mlflow.traceRequestId\":\"tr-1\","
                "\"mlflow.spanFunctionName\":\"plain\","
                "\"mlflow.spanAttr\":{\"k\":\"v\"},"
                "\"custom.num\":\"\\\"7\\\"\"}");
    done(m, ex);
}

static void test_mapper_service_tier_from_provider_metadata(void **state)
{
    struct o2l_export *ex;
    struct o2l_mapped *m;

    (void)state;
    m = map_one("ai",
                "{\"ai.operationId\":\"ai.generateText.doGenerate\","
                "\"ai.model.id\":\"gpt\","
                "\"ai.response.providerMetadata\":"
                "\"{\\\"openai\\\":{\\\"serviceTier\\\":\\\"flex\\\"}}\","
                "\"gen_ai.request.service_tier\":\"default\"}",
                &ex);
    assert_json(o2l_mu_get(m->obs[0].model_parameters, "service_tier"),
                "\"flex\"");
    done(m, ex);

    m = map_one("ai",
                "{\"ai.operationId\":\"ai.generateText.doGenerate\","
                "\"ai.model.id\":\"gpt\","
                "\"gen_ai.request.service_tier\":\"default\"}",
                &ex);
    assert_json(o2l_mu_get(m->obs[0].model_parameters, "service_tier"),
                "\"default\"");
    done(m, ex);
}

static void test_mapper_explicit_params_over_ai_sdk_set(void **state)
{
    struct o2l_export *ex;
    struct o2l_mapped *m;

    (void)state;
    /* AI SDK span: the explicit object is laid over the Vercel set. */
    m = map_one("ai",
                "{\"ai.operationId\":\"ai.generateText.doGenerate\","
                "\"ai.model.id\":\"gpt\",\"ai.settings.maxRetries\":2,"
                "\"gen_ai.request.temperature\":0.3,"
                "\"langfuse.observation.model.parameters\":"
                "\"{\\\"temperature\\\":0.9,\\\"seed\\\":7}\"}",
                &ex);
    assert_json(m->obs[0].model_parameters,
                "{\"maxRetries\":2,\"temperature\":0.9,\"seed\":7}");
    done(m, ex);

    /* Any other span: the explicit object alone. */
    m = map_one("test",
                "{\"gen_ai.request.model\":\"gpt\","
                "\"gen_ai.request.temperature\":0.3,"
                "\"langfuse.observation.model.parameters\":"
                "\"{\\\"seed\\\":7}\"}",
                &ex);
    assert_json(m->obs[0].model_parameters, "{\"seed\":7}");
    done(m, ex);
}

static void test_mapper_as_root_child_gives_no_environment(void **state)
{
    struct o2l_export *ex = ex_new();
    size_t sc = add_scope(ex, "test", "", NULL);
    struct o2l_mapped *m;

    (void)state;
    add_span(ex, sc, T1, "a000000000000002", "a000000000000001", "child", T0,
             T0 + SEC,
             "{\"langfuse.internal.as_root\":true,"
             "\"langfuse.environment\":\"child-env\"}");
    add_span(ex, sc, T1, "a000000000000001", NULL, "root", T0 + 1, T0 + SEC,
             NULL);
    add_span(ex, sc, T1, "a000000000000003", "a000000000000001", "other",
             T0 + 2, T0 + SEC, "{\"langfuse.environment\":\"Staging\"}");
    m = map(ex);
    assert_string_equal(m->traces[0].environment, "staging");
    assert_string_equal(find_obs(m, "a000000000000002")->environment,
                        "staging");
    assert_string_equal(m->traces[0].name, "root");
    done(m, ex);

    /* Without another source the trace keeps "default"; a flag that is
     * not true leaves the child an ordinary span. */
    ex = ex_new();
    sc = add_scope(ex, "test", "", NULL);
    add_span(ex, sc, T1, "a000000000000002", "a000000000000001", "child", T0,
             T0 + SEC,
             "{\"langfuse.internal.as_root\":\"true\","
             "\"langfuse.environment\":\"child-env\"}");
    add_span(ex, sc, T1, "a000000000000001", NULL, "root", T0 + 1, T0 + SEC,
             NULL);
    add_span(ex, sc, T2, "b000000000000002", "b000000000000001", "child", T0,
             T0 + SEC,
             "{\"langfuse.internal.as_root\":false,"
             "\"langfuse.environment\":\"child-env\"}");
    m = map(ex);
    assert_int_equal(m->n_traces, 2);
    for (size_t i = 0; i < m->n_traces; i++) {
        assert_string_equal(m->traces[i].environment,
                            strcmp(m->traces[i].id, T1) == 0 ? "default"
                                                             : "child-env");
    }
    assert_string_equal(find_obs(m, "a000000000000001")->environment,
                        "default");
    done(m, ex);
}

static void test_mapper_explicit_usage_that_filters_to_nothing(void **state)
{
    struct o2l_export *ex;
    struct o2l_mapped *m;

    (void)state;
    /* Given, but nothing usable in it: no usage, no fallback. */
    m = map_one(NULL,
                "{\"langfuse.observation.type\":\"generation\","
                "\"langfuse.observation.usage_details\":"
                "\"{\\\"input\\\":\\\"abc\\\",\\\"output\\\":-1}\","
                "\"gen_ai.usage.input_tokens\":10}",
                &ex);
    assert_null(m->obs[0].usage_details);
    done(m, ex);

    /* Empty: not usable, so the next source counts. */
    m = map_one(NULL,
                "{\"langfuse.observation.type\":\"generation\","
                "\"langfuse.observation.usage_details\":\"{}\","
                "\"gen_ai.usage.input_tokens\":10}",
                &ex);
    assert_json(o2l_mu_get(m->obs[0].usage_details, "input"), "10");
    done(m, ex);
}

static void test_mapper_genkit_by_keys_or_scope(void **state)
{
    static const char attrs[] =
        "{\"genkit:metadata:subtype\":\"model\",\"genkit:name\":\"gemini\","
        "\"genkit:input\":\"{\\\"messages\\\":[{\\\"role\\\":\\\"user\\\"}]}\","
        "\"genkit:output\":\"{\\\"message\\\":{\\\"role\\\":\\\"model\\\"},"
        "\\\"usage\\\":{\\\"inputTokens\\\":5,\\\"outputTokens\\\":2}}\"}";
    const char *scopes[] = {"rescoped", "genkit-tracer", "genkit-tracer-v2"};
    struct o2l_export *ex;
    struct o2l_mapped *m;

    (void)state;
    for (size_t i = 0; i < 3; i++) {
        m = map_one(scopes[i], attrs, &ex);
        assert_int_equal(m->obs[0].type, O2L_OBS_GENERATION);
        assert_json(m->obs[0].input, "{\"messages\":[{\"role\":\"user\"}]}");
        assert_json(m->obs[0].output, "{\"role\":\"model\"}");
        assert_json(o2l_mu_get(m->obs[0].usage_details, "input"), "5");
        assert_json(o2l_mu_get(m->obs[0].usage_details, "output"), "2");
        done(m, ex);
    }
}

static void test_mapper_counts_flattened_keys_over_budget(void **state)
{
    struct o2l_export *ex = ex_new();
    size_t sc = add_scope(ex, "test", "", NULL);
    struct o2l_map_config cfg;
    struct o2l_mapped *m;

    (void)state;
    add_span(ex, sc, T1, "a300000000000001", NULL, "llm", T0, T0 + 1,
             "{\"openinference.span.kind\":\"LLM\","
             "\"llm.input_messages.0.message.content\":\"a\","
             "\"llm.input_messages.1.message.content\":\"b\","
             "\"llm.input_messages.2.message.content\":\"c\"}");
    add_span(ex, sc, T2, "a300000000000002", NULL, "llm", T0, T0 + 1,
             "{\"openinference.span.kind\":\"LLM\","
             "\"llm.output_messages.5.message.content\":\"z\"}");
    m = map(ex);
    assert_int_equal(m->flattened_keys_dropped, 0);
    o2l_mapped_free(m);

    o2l_map_config_defaults(&cfg);
    cfg.max_flattened_slots = 2;
    m = map_with(ex, &cfg);
    /* One key of the first span, one of the second; summed per export. */
    assert_int_equal(m->flattened_keys_dropped, 2);
    assert_json(find_obs(m, "a300000000000001")->input,
                "[{\"content\":\"a\"},{\"content\":\"b\"}]");
    done(m, ex);
}

/* Fails every allocation of one map call in turn; returns how many
 * allocation points were made to fail before a run succeeded. */
static long fail_each_allocation(const struct o2l_export *ex,
                                 const struct o2l_map_config *cfg)
{
    struct o2l_mapped *m;
    bool succeeded = false;
    long n;
    int rc;

    for (n = 0; n < 20000 && !succeeded; n++) {
        m = NULL;
        o2l_mem_fail_after(n);
        rc = o2l_map_export(ex, cfg, &m);
        o2l_mem_fail_after(-1);
        if (rc == O2L_OK) {
            assert_non_null(m);
            succeeded = true;
        } else {
            assert_int_equal(rc, O2L_ENOMEM);
            assert_null(m);
        }
        o2l_mapped_free(m);
    }
    assert_true(succeeded);
    return n - 1;
}

static void test_mapper_survives_allocation_failures(void **state)
{
    static const char *const names[] = {"email", "secret", "api_key",
                                        "input.value", NULL};
    struct o2l_export *ex = langgraph_export();
    struct o2l_map_config cfg;
    long n;

    (void)state;
    o2l_map_config_defaults(&cfg);
    add_event(&ex->spans[1], "exception", T0, "{\"exception.type\":\"E\"}");
    n = fail_each_allocation(ex, &cfg);
    /* Every allocation point up to the successful run was made to fail. */
    assert_true(n > 200);
    print_message("allocation failures survived: %ld\n", n);
    o2l_export_free(ex);

    /* The same with the mapping options that allocate on their own. */
    cfg.redact = names;
    cfg.drop_non_llm_spans = true;
    ex = secret_export();
    assert_true(fail_each_allocation(ex, &cfg) > 50);
    o2l_export_free(ex);
    ex = mixed_export();
    assert_true(fail_each_allocation(ex, &cfg) > 20);
    o2l_export_free(ex);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mapper_langgraph_openinference_trace),
        cmocka_unit_test(test_mapper_langfuse_sdk_trace),
        cmocka_unit_test(test_mapper_openllmetry_trace),
        cmocka_unit_test(test_mapper_type_steps),
        cmocka_unit_test(test_mapper_old_python_sdk_generation),
        cmocka_unit_test(test_mapper_names),
        cmocka_unit_test(test_mapper_level_and_status),
        cmocka_unit_test(test_mapper_input_output_order),
        cmocka_unit_test(test_mapper_content_events),
        cmocka_unit_test(test_mapper_flattened_keys),
        cmocka_unit_test(test_mapper_bare_prompt_wins),
        cmocka_unit_test(test_mapper_usage_buckets),
        cmocka_unit_test(test_mapper_usage_from_span_keys),
        cmocka_unit_test(test_mapper_fields_only_for_their_type),
        cmocka_unit_test(test_mapper_agent_does_not_double_count),
        cmocka_unit_test(test_mapper_trace_facts),
        cmocka_unit_test(test_mapper_trace_without_root),
        cmocka_unit_test(test_mapper_custom_trace_ids),
        cmocka_unit_test(test_mapper_environment_rules),
        cmocka_unit_test(test_mapper_metadata_and_attributes),
        cmocka_unit_test(test_mapper_sha256),
        cmocka_unit_test(test_mapper_iso_times),
        cmocka_unit_test(test_mapper_empty_export),
        cmocka_unit_test(test_mapper_passthrough_json_text),
        cmocka_unit_test(test_mapper_keeps_non_llm_spans_by_default),
        cmocka_unit_test(test_mapper_drops_non_llm_spans),
        cmocka_unit_test(test_mapper_thread_id_keys),
        cmocka_unit_test(test_mapper_redaction_matches_key_names),
        cmocka_unit_test(test_mapper_redaction),
        cmocka_unit_test(test_mapper_redaction_inside_text),
        cmocka_unit_test(test_mapper_redaction_of_raw_and_explicit_trace_io),
        cmocka_unit_test(test_mapper_retrieval_documents),
        cmocka_unit_test(test_mapper_request_functions_become_tools),
        cmocka_unit_test(test_mapper_ingest_attributes_parse_json),
        cmocka_unit_test(test_mapper_metadata_not_an_object_kept),
        cmocka_unit_test(test_mapper_service_tier_from_provider_metadata),
        cmocka_unit_test(test_mapper_explicit_params_over_ai_sdk_set),
        cmocka_unit_test(test_mapper_as_root_child_gives_no_environment),
        cmocka_unit_test(test_mapper_explicit_usage_that_filters_to_nothing),
        cmocka_unit_test(test_mapper_genkit_by_keys_or_scope),
        cmocka_unit_test(test_mapper_counts_flattened_keys_over_budget),
        cmocka_unit_test(test_mapper_survives_allocation_failures),
    };

    o2l_mem_init();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
