/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_map_property.c - property test of decode, map and ingestion encode:
 * a seeded generator writes OTLP/JSON exports whose spans carry keys the
 * mapper knows and random ones, with values of every OTLP type (JSON-looking
 * and truncated strings, invalid UTF-8, huge and empty values, extreme
 * numbers, nested arrays and kvlists, bytes), random span events and random
 * parent links. Every export must decode, map and encode without a crash
 * (the sanitizers watch memory and undefined behaviour), and every encoded
 * event must be a JSON object with a non-empty id and body.id.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <cjson/cJSON.h>

#include "o2l/common.h"
#include "o2l/encode.h"
#include "o2l/mapper.h"
#include "o2l/otlp.h"
#include "o2l/span.h"

#define N_EXPORTS       400
#define MAX_SPANS       12
#define BIG_STRING_SIZE (200 * 1000)

/* ---- deterministic generator ------------------------------------------- */

static uint64_t rng_state;

static uint64_t rnd(void)
{
    /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1DULL;
}

static size_t below(size_t n)
{
    return n ? (size_t)(rnd() % n) : 0;
}

static int chance(unsigned percent)
{
    return below(100) < percent;
}

#define PICK(arr) (arr[below(sizeof(arr) / sizeof(arr[0]))])

/* ---- a growing text buffer --------------------------------------------- */

struct buf {
    char *p;
    size_t len, cap;
};

static void put_n(struct buf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = (b->cap + n + 1) * 2;
        char *p = o2l_realloc(b->p, cap);

        assert_non_null(p);
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void put(struct buf *b, const char *s)
{
    put_n(b, s, strlen(s));
}

static void putf(struct buf *b, const char *fmt, ...)
{
    char tmp[256];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    assert_true(n >= 0 && (size_t)n < sizeof(tmp));
    put_n(b, tmp, (size_t)n);
}

/* A JSON string literal holding |n| raw bytes: quotes, backslashes and
 * control bytes escaped, everything else (invalid UTF-8 included) raw. */
static void put_json_string(struct buf *b, const char *s, size_t n)
{
    put(b, "\"");
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];

        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            put_n(b, esc, 2);
        } else if (c < 0x20) {
            putf(b, "\\u%04x", c);
        } else {
            put_n(b, (const char *)&c, 1);
        }
    }
    put(b, "\"");
}

/* ---- vocabulary ---------------------------------------------------------- */

static const char *const KNOWN_KEYS[] = {
    "langfuse.observation.type",
    "langfuse.observation.level",
    "langfuse.observation.status_message",
    "langfuse.observation.input",
    "langfuse.observation.output",
    "langfuse.observation.metadata",
    "langfuse.observation.metadata.k",
    "langfuse.observation.metadata.langfuse_user_id",
    "langfuse.observation.metadata.langfuse_tags",
    "langfuse.observation.model.name",
    "langfuse.observation.model.parameters",
    "langfuse.observation.usage_details",
    "langfuse.observation.cost_details",
    "langfuse.observation.completion_start_time",
    "langfuse.observation.prompt.name",
    "langfuse.observation.prompt.version",
    "langfuse.prompt.name",
    "langfuse.prompt.version",
    "langfuse.version",
    "langfuse.environment",
    "langfuse.release",
    "langfuse.trace.name",
    "langfuse.trace.input",
    "langfuse.trace.output",
    "langfuse.trace.tags",
    "langfuse.trace.metadata",
    "langfuse.trace.metadata.k",
    "langfuse.trace.public",
    "langfuse.public",
    "langfuse.tags",
    "langfuse.user.id",
    "langfuse.session.id",
    "langfuse.trace.id",
    "langfuse.internal.as_root",
    "langfuse.metadata.k",
    "user.id",
    "session.id",
    "enduser.id",
    "tag.tags",
    "metadata",
    "openinference.span.kind",
    "input.value",
    "input.mime_type",
    "output.value",
    "output.mime_type",
    "llm.input_messages.0.message.role",
    "llm.input_messages.1.message.content",
    "llm.input_messages.0.message.contents.0.message_content.text",
    "llm.output_messages.0.message.tool_calls.0.tool_call.function.name",
    "llm.output_messages.0.message.tool_calls.0.tool_call.function.arguments",
    "llm.tools.0.tool.json_schema",
    "llm.invocation_parameters",
    "llm.invocation_parameters.temperature",
    "llm.model_name",
    "llm.token_count.prompt",
    "llm.token_count.completion",
    "llm.token_count.total",
    "llm.token_count.prompt_details.cache_read",
    "llm.token_count.prompt_details.audio",
    "llm.token_count.completion_details.reasoning",
    "llm.cost.total",
    "llm.cost.prompt",
    "llm.cost.completion",
    "retrieval.documents.0.document.content",
    "retrieval.documents.3.document.id",
    "gen_ai.operation.name",
    "gen_ai.system",
    "gen_ai.provider.name",
    "gen_ai.request.model",
    "gen_ai.response.model",
    "gen_ai.request.temperature",
    "gen_ai.request.max_tokens",
    "gen_ai.request.service_tier",
    "gen_ai.response.finish_reasons",
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.prompt_tokens",
    "gen_ai.usage.completion_tokens",
    "gen_ai.usage.total_tokens",
    "gen_ai.usage.cache_read.input_tokens",
    "gen_ai.usage.cache_creation.input_tokens",
    "gen_ai.usage.reasoning.output_tokens",
    "gen_ai.usage.cost",
    "gen_ai.usage.input_token_details",
    "gen_ai.prompt",
    "gen_ai.prompt.0.role",
    "gen_ai.prompt.0.content",
    "gen_ai.prompt.4000000000.role",
    "gen_ai.prompt.2.content.0.text",
    "gen_ai.completion",
    "gen_ai.completion.0.content",
    "gen_ai.input.messages",
    "gen_ai.output.messages",
    "gen_ai.system_instructions",
    "gen_ai.tool.definitions",
    "gen_ai.tool.name",
    "gen_ai.tool.call.id",
    "gen_ai.tool.call.arguments",
    "gen_ai.tool.call.result",
    "gen_ai.conversation.id",
    "gen_ai.response.time_to_first_chunk",
    "gen_ai.client.operation.time_to_first_chunk",
    "gen_ai.aggregated_usage.input_tokens",
    "traceloop.span.kind",
    "traceloop.entity.name",
    "traceloop.entity.input",
    "traceloop.entity.output",
    "traceloop.workflow.name",
    "traceloop.association.properties.thread_id",
    "traceloop.association.properties.user_id",
    "llm.usage.total_tokens",
    "llm.request.type",
    "llm.request.functions.0.name",
    "langsmith.span.kind",
    "langsmith.metadata.thread_id",
    "langsmith.trace.session_id",
    "mlflow.spanType",
    "mlflow.spanInputs",
    "mlflow.spanOutputs",
    "mlflow.llm.model",
    "mlflow.chat.tokenUsage",
    "mlflow.llm.cost",
    "ai.operationId",
    "operation.name",
    "ai.model.id",
    "ai.model.provider",
    "ai.prompt",
    "ai.prompt.messages",
    "ai.prompt.tools",
    "ai.prompt.toolChoice",
    "ai.response.text",
    "ai.response.toolCalls",
    "ai.response.object",
    "ai.result.text",
    "ai.toolCall.name",
    "ai.toolCall.args",
    "ai.toolCall.result",
    "ai.usage.promptTokens",
    "ai.usage.inputTokens",
    "ai.usage.outputTokens",
    "ai.usage.cachedInputTokens",
    "ai.usage.inputTokenDetails.cacheReadTokens",
    "ai.response.providerMetadata",
    "ai.response.msToFirstChunk",
    "ai.stream.msToFirstChunk",
    "ai.telemetry.functionId",
    "ai.telemetry.metadata.userId",
    "ai.telemetry.metadata.sessionId",
    "ai.telemetry.metadata.tags",
    "ai.telemetry.metadata.langfusePrompt",
    "ai.telemetry.metadata.k",
    "ai.settings.context.userId",
    "ai.settings.context.k",
    "ai.settings.maxSteps",
    "ai.settings.maxRetries",
    "genkit:name",
    "genkit:metadata:subtype",
    "genkit:input",
    "genkit:output",
    "logfire.msg",
    "pydantic_ai.all_messages",
    "final_result",
    "tool_arguments",
    "tool_response",
    "all_messages_events",
    "events",
    "model_request_parameters",
    "gcp.vertex.agent.llm_request",
    "gcp.vertex.agent.llm_response",
    "gcp.vertex.agent.tool_call_args",
    "gcp.vertex.agent.tool_response",
    "lk.input_text",
    "lk.response.text",
    "lk.chat_ctx",
    "flue.tool.name",
    "flue.task.id",
    "flue.turn.input",
    "flue.turn.output",
    "prompt",
    "input",
    "output",
    "model",
    "model_config",
    "error.type",
    "deployment.environment.name",
    "deployment.environment",
    "service.version",
    "embedding.model_name",
    "llm.response.model_name",
};

static const char *const STRINGS[] = {
    "",
    " ",
    "LLM",
    "CHAIN",
    "AGENT",
    "TOOL",
    "RERANKER",
    "UNKNOWN",
    "chat",
    "invoke_agent",
    "agent_step",
    "execute_tool",
    "embeddings",
    "workflow",
    "task",
    "model",
    "generation",
    "span",
    "event",
    "agent",
    "tool",
    "chain",
    "guardrail",
    "ERROR",
    "warn",
    "debug",
    "bogus",
    "true",
    "false",
    "0",
    "7",
    "-3",
    "1e999",
    "-0",
    "3.5",
    "\"LLM\"",
    "\"quoted\"",
    "null",
    "application/json",
    "text/plain",
    "gpt-4o",
    "langfuse-Prod",
    "langfuse",
    "a, b ,,c",
    "[\"x\", 1, null]",
    "{\"a\": 1, \"b\": [1, 2]}",
    "  {\"role\": \"user\", \"content\": \"hi\"}",
    "[{\"role\":\"user\",\"parts\":[{\"type\":\"text\",\"content\":\"x\"}]}]",
    "{\"input_tokens\": 5, \"output_tokens\": -1, \"total_tokens\": 2.5}",
    "{\"name\": \"p\", \"version\": \"3\"}",
    "{\"config\": {\"t\": [1]}}",
    "{\"usage\": {\"inputTokens\": 1e300}}",
    "[1, 2",
    "{\"a\": ",
    "{}",
    "[]",
    "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
    "2023-11-14T22:13:20.123Z",
    "\"2023-11-14T22:13:20Z\"",
    "not a date",
    "GraphInterrupt(x)",
    "Command: go",
    "00000000-0000-0000-0000-000000000000",
    "0A1B2C3D-4E5F-4071-8293-A4B5C6D7E8F9",
    "ffffffffffffffffffffffffffffffff",
    "\xff\xfe",
    "bad \xc0\x80 utf8",
    "cut \xe2\x82",
    "\xed\xa0\x80 surrogate",
    "nul \\u0000 escaped",
    "\xf4\x90\x80\x80 beyond",
    "ok \xc3\xa9 \xe2\x82\xac",
};

static const char *const EVENT_NAMES[] = {
    "exception",
    "gen_ai.client.inference.operation.details",
    "gen_ai.system.message",
    "gen_ai.user.message",
    "gen_ai.assistant.message",
    "gen_ai.tool.message",
    "gen_ai.choice",
    "gen_ai.content.prompt",
    "gen_ai.content.completion",
    "log",
    "",
    "retry \xff",
};

static const char *const EVENT_KEYS[] = {
    "exception.type",
    "exception.message",
    "exception.stacktrace",
    "gen_ai.prompt",
    "gen_ai.completion",
    "gen_ai.input.messages",
    "gen_ai.output.messages",
    "gen_ai.system_instructions",
    "content",
    "message",
    "index",
    "finish_reason",
    "role",
    "tool_calls",
    "id",
};

static const char *const EXCEPTION_TYPES[] = {
    "GraphInterrupt",
    "langgraph.errors.NodeInterrupt",
    "ValueError",
    "a.b.Command",
    "",
    "ParentCommand.",
};

static const char *const SCOPES[] = {
    "",
    "ai",
    "langfuse-sdk",
    "genkit-tracer",
    "pydantic-ai",
    "gcp.vertex.agent",
    "livekit-agents",
    "@flue/opentelemetry",
    "openinference.instrumentation",
    "opentelemetry.instrumentation.langchain",
};

static const char *const SPAN_NAMES[] = {
    "op",         "agent_turn",           "function_tool",
    "tts_node",   "start_agent_activity", "LangGraph",
    "agent.task", "execute_tool x",       "invoke_agent",
    "",           "name \xff\xfe",        "chat gpt-4o",
};

/* ---- random OTLP/JSON ---------------------------------------------------- */

static void put_random_string(struct buf *b)
{
    if (chance(3)) {
        /* A huge value: the encoder's size cap must hold. */
        char *big = o2l_malloc(BIG_STRING_SIZE);
        size_t n = BIG_STRING_SIZE - below(1000);

        assert_non_null(big);
        memset(big, 'x', n);
        big[0] = chance(50) ? '[' : 'x';
        put_json_string(b, big, n);
        o2l_free(big);
    } else if (chance(15)) {
        char raw[48];
        size_t n = below(sizeof(raw));

        for (size_t i = 0; i < n; i++) {
            raw[i] = (char)below(256);
        }
        put_json_string(b, raw, n);
    } else if (chance(5)) {
        /* Escapes the decoder must turn into U+FFFD. */
        put(b, PICK(((const char *const[]){"\"a\\u0000b\"", "\"\\ud800\"",
                                           "\"x\\udc00y\\ud83d\"",
                                           "\"\\ud83d\\ude00 ok\""})));
    } else {
        const char *s = PICK(STRINGS);
        put_json_string(b, s, strlen(s));
    }
}

static void put_value(struct buf *b, int depth);

static void put_kvlist(struct buf *b, int depth, const char *const *keys,
                       size_t n_keys)
{
    size_t n = below(6);

    put(b, "[");
    for (size_t i = 0; i < n; i++) {
        const char *k = keys ? keys[below(n_keys)] : PICK(KNOWN_KEYS);

        if (i) {
            put(b, ",");
        }
        put(b, "{\"key\":");
        if (chance(10)) {
            put_random_string(b);
        } else {
            put_json_string(b, k, strlen(k));
        }
        put(b, ",\"value\":");
        put_value(b, depth + 1);
        put(b, "}");
    }
    put(b, "]");
}

static void put_value(struct buf *b, int depth)
{
    static const char *const ints[] = {
        "0",
        "1",
        "-1",
        "42",
        "\"9223372036854775807\"",
        "\"-9223372036854775808\"",
        "9223372036854775807",
        "-9223372036854775808",
        "\"12\"",
        "4000000000",
        "\"007\"",
    };
    static const char *const doubles[] = {
        "0",
        "-0.0",
        "1.5",
        "2.0",
        "-3.25",
        "1e308",
        "-1e-308",
        "\"NaN\"",
        "\"Infinity\"",
        "\"-Infinity\"",
        "0.1",
        "12345678901234567890",
    };
    static const char *const bytes[] = {
        "\"\"", "\"AAEC/w==\"", "\"AAEC_w\"", "\"aGVsbG8\"", "\"@@@\"",
    };
    size_t kind = depth > 3 ? below(5) : below(8);

    switch (kind) {
    case 0:
    case 1:
        put(b, "{\"stringValue\":");
        put_random_string(b);
        put(b, "}");
        break;
    case 2:
        putf(b, "{\"intValue\":%s}", PICK(ints));
        break;
    case 3:
        putf(b, "{\"doubleValue\":%s}", PICK(doubles));
        break;
    case 4:
        put(b, chance(50) ? "{\"boolValue\":true}" : "{\"boolValue\":false}");
        break;
    case 5: {
        size_t n = below(5);

        put(b, "{\"arrayValue\":{\"values\":[");
        for (size_t i = 0; i < n; i++) {
            if (i) {
                put(b, ",");
            }
            put_value(b, depth + 1);
        }
        put(b, "]}}");
        break;
    }
    case 6: {
        static const char *const inner[] = {"role", "content", "a",    "a",
                                            "",     "type",    "text", "name"};

        put(b, "{\"kvlistValue\":{\"values\":");
        put_kvlist(b, depth, inner, sizeof(inner) / sizeof(inner[0]));
        put(b, "}}");
        break;
    }
    default:
        if (chance(50)) {
            putf(b, "{\"bytesValue\":%s}", PICK(bytes));
        } else {
            put(b, "{}");
        }
        break;
    }
}

static void put_attributes(struct buf *b, size_t max)
{
    size_t n = below(max + 1);

    put(b, "[");
    for (size_t i = 0; i < n; i++) {
        if (i) {
            put(b, ",");
        }
        put(b, "{\"key\":");
        if (chance(12)) {
            put_random_string(b);
        } else {
            const char *k = PICK(KNOWN_KEYS);
            put_json_string(b, k, strlen(k));
        }
        put(b, ",\"value\":");
        put_value(b, 0);
        put(b, "}");
    }
    put(b, "]");
}

static void put_span_id(struct buf *b, unsigned trace_no, unsigned n)
{
    putf(b, "\"%08x%08x\"", 0xa0000000u + trace_no, n + 1);
}

static void put_span(struct buf *b, unsigned trace_no, unsigned idx,
                     unsigned n_spans)
{
    static const char *const times[] = {
        "\"1700000000000000000\"", "1700000000000000123",  "0", "\"0\"",
        "\"1700000001999999999\"", "18446744073709551615",
    };

    putf(b, "{\"traceId\":\"%08x000000000000000000%06x\",",
         0x9e0b0000u + (trace_no & 0xff), trace_no);
    put(b, "\"spanId\":");
    if (chance(2)) {
        put(b, PICK(((const char *const[]){"\"abc\"", "\"0000000000000000\"",
                                           "\"!!\""})));
    } else {
        put_span_id(b, trace_no, idx);
    }
    if (idx > 0 && chance(80)) {
        put(b, ",\"parentSpanId\":");
        if (chance(10)) {
            put(b, PICK(((const char *const[]){"\"\"", "\"0000000000000000\"",
                                               "\"ffffffffffffffff\"",
                                               "\"1234\""})));
        } else {
            /* Any span of the trace, itself and later ones included, so
             * that cycles and forward links show up too. */
            put_span_id(b, trace_no, (unsigned)below(n_spans));
        }
    }
    put(b, ",\"name\":");
    if (chance(10)) {
        put_random_string(b);
    } else {
        const char *s = PICK(SPAN_NAMES);
        put_json_string(b, s, strlen(s));
    }
    putf(b, ",\"kind\":%u", (unsigned)below(6));
    if (chance(85)) {
        putf(b, ",\"startTimeUnixNano\":\"%llu\"",
             (unsigned long long)(1700000000000000000ULL +
                                  below(5000000000ULL)));
    } else if (chance(50)) {
        putf(b, ",\"startTimeUnixNano\":%s", PICK(times));
    }
    if (chance(85)) {
        putf(b, ",\"endTimeUnixNano\":\"%llu\"",
             (unsigned long long)(1700000005000000000ULL +
                                  below(5000000000ULL)));
    } else if (chance(50)) {
        putf(b, ",\"endTimeUnixNano\":%s", PICK(times));
    }
    put(b, ",\"attributes\":");
    put_attributes(b, 14);
    if (chance(40)) {
        size_t n = below(5);

        put(b, ",\"events\":[");
        for (size_t i = 0; i < n; i++) {
            const char *en = PICK(EVENT_NAMES);

            if (i) {
                put(b, ",");
            }
            put(b, "{\"name\":");
            put_json_string(b, en, strlen(en));
            if (chance(70)) {
                putf(b, ",\"timeUnixNano\":\"%llu\"",
                     (unsigned long long)(1700000000000000000ULL +
                                          below(9000000000ULL)));
            }
            put(b, ",\"attributes\":");
            if (strcmp(en, "exception") == 0 && chance(70)) {
                const char *et = PICK(EXCEPTION_TYPES);

                put(b,
                    "[{\"key\":\"exception.type\",\"value\":{\"stringValue\":");
                put_json_string(b, et, strlen(et));
                put(b, "}},{\"key\":\"exception.message\",\"value\":{"
                       "\"stringValue\":");
                put_random_string(b);
                put(b, "}}]");
            } else {
                put_kvlist(b, 1, EVENT_KEYS,
                           sizeof(EVENT_KEYS) / sizeof(EVENT_KEYS[0]));
            }
            put(b, "}");
        }
        put(b, "]");
    }
    if (chance(40)) {
        putf(b, ",\"status\":{\"code\":%s",
             PICK(((const char *const[]){"0", "1", "2", "\"STATUS_CODE_ERROR\"",
                                         "\"STATUS_CODE_OK\""})));
        if (chance(60)) {
            put(b, ",\"message\":");
            put_random_string(b);
        }
        put(b, "}");
    }
    put(b, "}");
}

/* One export: one or two resources, one or two traces, up to MAX_SPANS. */
static void put_export(struct buf *b, unsigned export_no)
{
    size_t n_res = 1 + below(2);

    put(b, "{\"resourceSpans\":[");
    for (size_t r = 0; r < n_res; r++) {
        const char *scope = PICK(SCOPES);
        unsigned trace_no = export_no * 4 + (unsigned)below(2);
        size_t n_spans = 1 + below(MAX_SPANS);

        if (r) {
            put(b, ",");
        }
        put(b, "{\"resource\":{\"attributes\":");
        put_attributes(b, 4);
        put(b, "},\"scopeSpans\":[{\"scope\":{\"name\":");
        put_json_string(b, scope, strlen(scope));
        putf(b, ",\"version\":\"%s\"",
             PICK(((const char *const[]){"", "3.3.0", "3.10.1", "x"})));
        put(b, "},\"spans\":[");
        for (size_t i = 0; i < n_spans; i++) {
            if (i) {
                put(b, ",");
            }
            /* Repeat a span id now and then: duplicates collapse. */
            put_span(b, trace_no,
                     chance(5) && i ? (unsigned)(i - 1) : (unsigned)i,
                     (unsigned)n_spans);
        }
        put(b, "]}]}");
    }
    put(b, "]}");
}

/* ---- checks -------------------------------------------------------------- */

static void check_event(const struct o2l_event *ev)
{
    cJSON *root, *id, *body, *body_id;

    assert_non_null(ev->json);
    root = cJSON_ParseWithLength(ev->json, ev->len);
    if (!root) {
        fail_msg("event does not parse as JSON: %.200s", ev->json);
    }
    id = cJSON_GetObjectItemCaseSensitive(root, "id");
    body = cJSON_GetObjectItemCaseSensitive(root, "body");
    assert_true(cJSON_IsString(id) && id->valuestring[0] != '\0');
    assert_true(cJSON_IsObject(body));
    body_id = cJSON_GetObjectItemCaseSensitive(body, "id");
    assert_true(cJSON_IsString(body_id) && body_id->valuestring[0] != '\0');
    assert_non_null(ev->id);
    assert_string_equal(ev->id, id->valuestring);
    cJSON_Delete(root);
}

static void run_exports(uint64_t seed, bool thread_session, size_t *n_spans,
                        size_t *n_events)
{
    static const char *const cfe[] = {"GraphInterrupt", "Command", NULL};
    struct o2l_map_config cfg;

    rng_state = seed;
    o2l_map_config_defaults(&cfg);
    cfg.session_from_thread_id = thread_session;
    if (!thread_session) {
        cfg.control_flow_exceptions = cfe;
        cfg.max_flattened_slots = 16;
        cfg.trace_id_attribute = "session.id";
    }
    for (unsigned e = 0; e < N_EXPORTS; e++) {
        struct buf b = {0};
        struct o2l_export *ex = NULL;
        struct o2l_mapped *m = NULL;
        struct o2l_event_list out = {0};
        char err[256] = "";
        int rc;

        put_export(&b, e);
        rc = o2l_otlp_decode(b.p, b.len, O2L_OTLP_JSON, 1700000009000000000ULL,
                             &ex, err, sizeof(err));
        if (rc != O2L_OK) {
            fail_msg("export %u did not decode (%s): %.300s", e, err, b.p);
        }
        *n_spans += ex->n_spans;
        assert_int_equal(o2l_map_export(ex, &cfg, &m), O2L_OK);
        assert_int_equal(o2l_encode_ingestion(m, O2L_EVENT_MAX_BYTES, &out),
                         O2L_OK);
        for (size_t i = 0; i < out.len; i++) {
            check_event(&out.items[i]);
        }
        if (out.len > 0) {
            char *batch = NULL;
            size_t batch_len = 0;
            cJSON *parsed;

            assert_int_equal(
                o2l_encode_batch(out.items, out.len, &batch, &batch_len),
                O2L_OK);
            parsed = cJSON_ParseWithLength(batch, batch_len);
            assert_non_null(parsed);
            cJSON_Delete(parsed);
            o2l_free(batch);
        }
        *n_events += out.len;
        o2l_event_list_clear(&out);
        o2l_mapped_free(m);
        o2l_export_free(ex);
        o2l_free(b.p);
    }
}

static void test_random_exports_default_config(void **state)
{
    size_t spans = 0, events = 0;

    (void)state;
    run_exports(0x5eed0001ULL, true, &spans, &events);
    print_message("default config: %zu spans, %zu events\n", spans, events);
    assert_true(spans > 1000);
    assert_true(events > spans / 2);
}

static void test_random_exports_other_config(void **state)
{
    size_t spans = 0, events = 0;

    (void)state;
    run_exports(0x5eed0002ULL, false, &spans, &events);
    print_message("other config: %zu spans, %zu events\n", spans, events);
    assert_true(spans > 1000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random_exports_default_config),
        cmocka_unit_test(test_random_exports_other_config),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
