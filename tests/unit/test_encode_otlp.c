/* SPDX-License-Identifier: Apache-2.0 */
/* test_encode_otlp.c - the OTLP output: decode, map, encode, unpack. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "test_util.h"

#include "o2l/common.h"
#include "o2l/encode_otlp.h"
#include "o2l/map_conv.h"
#include "o2l/map_util.h"
#include "o2l/mapper.h"
#include "o2l/otlp.h"
#include "opentelemetry/proto/collector/trace/v1/trace_service.pb-c.h"

typedef Opentelemetry__Proto__Collector__Trace__V1__ExportTraceServiceRequest
    pb_request;
typedef Opentelemetry__Proto__Trace__V1__ResourceSpans pb_resource_spans;
typedef Opentelemetry__Proto__Trace__V1__Span pb_span;
typedef Opentelemetry__Proto__Trace__V1__Span__Link pb_span__link;
typedef Opentelemetry__Proto__Common__V1__AnyValue pb_any;
typedef Opentelemetry__Proto__Common__V1__KeyValue pb_kv;

#define request_unpack                                                         \
    opentelemetry__proto__collector__trace__v1__export_trace_service_request__unpack
#define request_free                                                           \
    opentelemetry__proto__collector__trace__v1__export_trace_service_request__free_unpacked

#define ANY(c) OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_##c

#define NOW_NS   1700000100000000000ULL
#define T1       "0af7651916cd43dd8448eb211c80319c"
#define T2       "5b8efff798038103d269b633813fc60c"
#define ROOT_ID  "b7ad6b7169203331"
#define GEN_ID   "00f067aa0ba902b7"
#define OTHER_ID "eee19b7ec3c1b174"

/* One trace with a root, a generation carrying a span event, and one
 * other trace with a custom trace id. */
static const char sample[] =
    "{\"resourceSpans\":[{"
    "\"resource\":{\"attributes\":["
    "{\"key\":\"service.name\",\"value\":{\"stringValue\":\"chat-app\"}}]},"
    "\"scopeSpans\":[{"
    "\"scope\":{\"name\":\"bridge-test\",\"version\":\"1.2.3\","
    "\"attributes\":[{\"key\":\"lib\",\"value\":{\"boolValue\":true}}]},"
    "\"spans\":["
    /* the true root */
    "{\"traceId\":\"" T1 "\",\"spanId\":\"" ROOT_ID "\",\"name\":\"root\","
    "\"kind\":2,\"startTimeUnixNano\":\"1700000000000000000\","
    "\"endTimeUnixNano\":\"1700000005000000000\",\"attributes\":["
    "{\"key\":\"langfuse.user.id\",\"value\":{\"stringValue\":\"u1\"}},"
    "{\"key\":\"langfuse.session.id\",\"value\":{\"stringValue\":\"s1\"}},"
    "{\"key\":\"langfuse.trace.tags\",\"value\":{\"arrayValue\":{\"values\":["
    "{\"stringValue\":\"b\"},{\"stringValue\":\"a\"}]}}},"
    "{\"key\":\"langfuse.observation.input\","
    "\"value\":{\"stringValue\":\"question\"}},"
    "{\"key\":\"langfuse.observation.output\","
    "\"value\":{\"stringValue\":\"{\\\"answer\\\":42}\"}},"
    "{\"key\":\"s\",\"value\":{\"stringValue\":\"hello\"}},"
    "{\"key\":\"b\",\"value\":{\"boolValue\":false}},"
    "{\"key\":\"i\",\"value\":{\"intValue\":\"42\"}},"
    "{\"key\":\"big\",\"value\":{\"intValue\":\"9007199254740993\"}},"
    "{\"key\":\"neg\",\"value\":{\"intValue\":\"-9223372036854775808\"}},"
    "{\"key\":\"d\",\"value\":{\"doubleValue\":1.5}},"
    "{\"key\":\"arr\",\"value\":{\"arrayValue\":{\"values\":["
    "{\"stringValue\":\"x\"},{\"intValue\":\"7\"},{}]}}},"
    "{\"key\":\"kv\",\"value\":{\"kvlistValue\":{\"values\":["
    "{\"key\":\"a\",\"value\":{\"stringValue\":\"1\"}},"
    "{\"key\":\"n\",\"value\":{\"kvlistValue\":{\"values\":["
    "{\"key\":\"deep\",\"value\":{\"boolValue\":true}}]}}}]}}}"
    "]},"
    /* a failed generation with a span event */
    "{\"traceId\":\"" T1 "\",\"spanId\":\"" GEN_ID
    "\",\"parentSpanId\":\"" ROOT_ID "\",\"name\":\"llm call\",\"kind\":3,"
    "\"startTimeUnixNano\":\"1700000001000000000\","
    "\"endTimeUnixNano\":\"1700000004000000000\",\"attributes\":["
    "{\"key\":\"langfuse.observation.type\","
    "\"value\":{\"stringValue\":\"generation\"}},"
    "{\"key\":\"langfuse.observation.model.name\","
    "\"value\":{\"stringValue\":\"gpt-4o\"}},"
    "{\"key\":\"langfuse.observation.input\",\"value\":{\"stringValue\":"
    "\"[{\\\"role\\\":\\\"user\\\",\\\"content\\\":\\\"hi\\\"}]\"}},"
    "{\"key\":\"langfuse.observation.output\","
    "\"value\":{\"stringValue\":\"answer\"}},"
    "{\"key\":\"gen_ai.usage.input_tokens\",\"value\":{\"intValue\":10}},"
    "{\"key\":\"gen_ai.usage.output_tokens\",\"value\":{\"intValue\":20}},"
    "{\"key\":\"langfuse.internal.as_root\",\"value\":{\"boolValue\":true}},"
    "{\"key\":\"langfuse.prompt.name\",\"value\":{\"stringValue\":\"p\"}}"
    "],\"events\":[{\"timeUnixNano\":\"1700000002000000000\","
    "\"name\":\"note\",\"attributes\":["
    "{\"key\":\"k\",\"value\":{\"stringValue\":\"v\"}}]}],"
    "\"status\":{\"code\":2,\"message\":\"boom\"}},"
    /* a trace named by a custom trace id */
    "{\"traceId\":\"" T2 "\",\"spanId\":\"" OTHER_ID "\",\"name\":\"other\","
    "\"startTimeUnixNano\":\"1700000000000000000\","
    "\"endTimeUnixNano\":\"1700000001000000000\",\"attributes\":["
    "{\"key\":\"langfuse.trace.id\","
    "\"value\":{\"stringValue\":\"conversation-42\"}},"
    "{\"key\":\"gen_ai.operation.name\","
    "\"value\":{\"stringValue\":\"chat\"}}]}"
    "]}]}]}";

/* What one test holds: the decoded export, its mapping, the items and
 * the unpacked request built from them. */
struct run {
    struct o2l_export *ex;
    struct o2l_mapped *m;
    struct o2l_event_list items;
    pb_request *req;
};

static struct o2l_export *decode(const char *json, size_t len)
{
    struct o2l_export *ex = NULL;
    char err[256];

    assert_int_equal(o2l_otlp_decode(json, len, O2L_OTLP_JSON, NOW_NS, &ex, err,
                                     sizeof(err)),
                     O2L_OK);
    assert_non_null(ex);
    return ex;
}

/* Decodes, maps, encodes with |cfg| and unpacks the framed request. */
static void run_start_cfg(struct run *r, const char *json, size_t len,
                          const struct o2l_otlp_out_config *cfg)
{
    struct o2l_map_config mcfg;
    unsigned char *body = NULL;
    size_t body_len = 0;

    memset(r, 0, sizeof(*r));
    r->ex = decode(json, len);
    o2l_map_config_defaults(&mcfg);
    assert_int_equal(
        o2l_map_export(r->ex, cfg && cfg->map ? cfg->map : &mcfg, &r->m),
        O2L_OK);
    assert_int_equal(o2l_encode_otlp(r->ex, r->m, cfg, &r->items), O2L_OK);
    assert_int_equal(r->items.len, r->m->n_obs);
    assert_int_equal(
        o2l_otlp_request(r->items.items, r->items.len, &body, &body_len),
        O2L_OK);
    r->req = request_unpack(NULL, body_len, body);
    assert_non_null(r->req);
    assert_int_equal(r->req->n_resource_spans, r->items.len);
    o2l_free(body);
}

/* Decodes, maps, encodes and unpacks the framed request. */
static void run_start(struct run *r, const char *json, size_t len,
                      bool keep_original)
{
    struct o2l_otlp_out_config cfg = {keep_original, 0, NULL};

    run_start_cfg(r, json, len, &cfg);
}

static void run_end(struct run *r)
{
    request_free(r->req, NULL);
    o2l_event_list_clear(&r->items);
    o2l_mapped_free(r->m);
    o2l_export_free(r->ex);
}

static void hex(const ProtobufCBinaryData *b, char *out, size_t cap)
{
    static const char digits[] = "0123456789abcdef";
    size_t n = 0;

    for (size_t i = 0; i < b->len && n + 2 < cap; i++) {
        out[n++] = digits[b->data[i] >> 4];
        out[n++] = digits[b->data[i] & 15];
    }
    out[n] = '\0';
}

/* The one span of item |i|, after checking the item's shape. */
static const pb_span *item_span(const struct run *r, size_t i)
{
    const pb_resource_spans *rs = r->req->resource_spans[i];

    assert_int_equal(rs->n_scope_spans, 1);
    assert_int_equal(rs->scope_spans[0]->n_spans, 1);
    return rs->scope_spans[0]->spans[0];
}

/* The span whose id is |id| (16 hex); fails unless there is exactly one. */
static const pb_span *find_span(const struct run *r, const char *id,
                                size_t *index)
{
    const pb_span *found = NULL;
    char text[40];

    for (size_t i = 0; i < r->req->n_resource_spans; i++) {
        const pb_span *s = item_span(r, i);

        hex(&s->span_id, text, sizeof(text));
        if (strcmp(text, id) == 0) {
            assert_null(found);
            found = s;
            if (index) {
                *index = i;
            }
        }
    }
    assert_non_null(found);
    return found;
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

static size_t count_attr(const pb_span *s, const char *key)
{
    size_t n = 0;

    for (size_t i = 0; i < s->n_attributes; i++) {
        n += strcmp(s->attributes[i]->key, key) == 0;
    }
    return n;
}

static const pb_any *attr(const pb_span *s, const char *key)
{
    for (size_t i = 0; i < s->n_attributes; i++) {
        if (strcmp(s->attributes[i]->key, key) == 0) {
            return s->attributes[i]->value;
        }
    }
    return NULL;
}

/* The string value of |key|, which must be present once. */
static const char *str_attr(const pb_span *s, const char *key)
{
    const pb_any *v = attr(s, key);

    if (!v) {
        fail_msg("no attribute %s", key);
    }
    assert_int_equal(count_attr(s, key), 1);
    assert_int_equal(v->value_case, ANY(STRING_VALUE));
    return v->string_value;
}

/* The SHA-256 id of a span event's child span. */
static void event_span_id(const char *obs_id, char out[17])
{
    static const char digits[] = "0123456789abcdef";
    uint8_t digest[32];

    o2l_mu_sha256(obs_id, strlen(obs_id), digest);
    for (size_t i = 0; i < 8; i++) {
        out[2 * i] = digits[digest[i] >> 4];
        out[2 * i + 1] = digits[digest[i] & 15];
    }
    out[16] = '\0';
}

/* The trace facts every span of the sample's first trace carries. */
static void assert_trace_facts(const pb_span *s)
{
    const pb_any *tags = attr(s, "langfuse.trace.tags");

    assert_string_equal(str_attr(s, "langfuse.user.id"), "u1");
    assert_string_equal(str_attr(s, "langfuse.session.id"), "s1");
    assert_string_equal(str_attr(s, "langfuse.trace.name"), "root");
    assert_string_equal(str_attr(s, "langfuse.environment"), "default");
    assert_non_null(tags);
    assert_int_equal(count_attr(s, "langfuse.trace.tags"), 1);
    assert_int_equal(tags->value_case, ANY(ARRAY_VALUE));
    assert_int_equal(tags->array_value->n_values, 2);
    assert_string_equal(tags->array_value->values[0]->string_value, "a");
    assert_string_equal(tags->array_value->values[1]->string_value, "b");
}

static void test_encode_otlp_every_observation_once(void **state)
{
    struct run r;
    char text[40];

    (void)state;
    run_start(&r, sample, sizeof(sample) - 1, true);
    /* root, generation, its span event, the other trace's span */
    assert_int_equal(r.m->n_obs, 4);
    for (size_t i = 0; i < r.m->n_obs; i++) {
        const struct o2l_observation *o = &r.m->obs[i];
        const struct o2l_event *ev = &r.items.items[i];
        char expect_id[17];
        char env_id[96];
        const pb_span *s;
        size_t index = SIZE_MAX;

        if (strlen(o->id) > 16) {
            event_span_id(o->id, expect_id);
        } else {
            memcpy(expect_id, o->id, 17); /* 16 hex and the NUL */
        }
        s = find_span(&r, expect_id, &index);
        assert_int_equal(index, i);

        /* The item's envelope. */
        assert_true(ev->otlp);
        assert_int_equal(ev->json[ev->len], '\0');
        snprintf(env_id, sizeof(env_id), "%s-%s", o->trace_id, o->id);
        assert_string_equal(ev->id, env_id);
        assert_int_equal(strlen(ev->span_id), 16);
        assert_memory_equal(ev->span_id, o->id, 16);

        /* The span's own fields. */
        hex(&s->trace_id, text, sizeof(text));
        assert_string_equal(text, o->trace_id);
        hex(&s->parent_span_id, text, sizeof(text));
        assert_string_equal(text, o->parent_id);
        assert_string_equal(s->name, o->name);
        assert_int_equal(s->start_time_unix_nano, o->start_ns);
        assert_string_equal(str_attr(s, "langfuse.observation.type"),
                            o2l_obs_type_name(o->type));
        assert_string_equal(str_attr(s, "langfuse.observation.level"),
                            o2l_level_name(o->level));

        /* Resource and scope come along with each span. */
        assert_non_null(r.req->resource_spans[i]->resource);
        assert_int_equal(r.req->resource_spans[i]->resource->n_attributes, 1);
        assert_string_equal(
            r.req->resource_spans[i]->resource->attributes[0]->key,
            "service.name");
        assert_string_equal(
            r.req->resource_spans[i]->scope_spans[0]->scope->name,
            "bridge-test");
        assert_string_equal(
            r.req->resource_spans[i]->scope_spans[0]->scope->version, "1.2.3");
        assert_int_equal(
            r.req->resource_spans[i]->scope_spans[0]->scope->n_attributes, 1);
    }
    run_end(&r);
}

static void test_encode_otlp_root_and_generation(void **state)
{
    const struct o2l_observation *o;
    const pb_span *root;
    const pb_span *gen;
    struct run r;
    cJSON *usage;

    (void)state;
    run_start(&r, sample, sizeof(sample) - 1, true);
    root = find_span(&r, ROOT_ID, NULL);
    gen = find_span(&r, GEN_ID, NULL);

    /* The root: trace facts, trace input and output, its own fields. */
    assert_int_equal(root->kind, 2);
    assert_int_equal(root->start_time_unix_nano, 1700000000000000000ULL);
    assert_int_equal(root->end_time_unix_nano, 1700000005000000000ULL);
    assert_int_equal(root->parent_span_id.len, 0);
    assert_null(root->status);
    assert_trace_facts(root);
    assert_string_equal(str_attr(root, "langfuse.observation.input"),
                        "question");
    assert_string_equal(str_attr(root, "langfuse.observation.output"),
                        "{\"answer\":42}");
    assert_string_equal(str_attr(root, "langfuse.trace.input"), "question");
    assert_string_equal(str_attr(root, "langfuse.trace.output"),
                        "{\"answer\":42}");
    assert_string_equal(str_attr(root, "langfuse.observation.level"),
                        "DEFAULT");

    /* The generation. */
    o = find_obs(r.m, GEN_ID);
    assert_int_equal(o->type, O2L_OBS_GENERATION);
    assert_int_equal(gen->kind, 3);
    assert_int_equal(gen->end_time_unix_nano, 1700000004000000000ULL);
    assert_non_null(gen->status);
    assert_int_equal(gen->status->code, 2);
    assert_string_equal(gen->status->message, "boom");
    assert_trace_facts(gen);
    assert_null(attr(gen, "langfuse.trace.input"));
    assert_null(attr(gen, "langfuse.trace.output"));
    assert_string_equal(str_attr(gen, "langfuse.observation.type"),
                        "generation");
    assert_string_equal(str_attr(gen, "langfuse.observation.level"), "ERROR");
    assert_string_equal(str_attr(gen, "langfuse.observation.status_message"),
                        "boom");
    assert_string_equal(str_attr(gen, "langfuse.observation.model.name"),
                        "gpt-4o");
    assert_string_equal(str_attr(gen, "langfuse.observation.input"),
                        "[{\"role\":\"user\",\"content\":\"hi\"}]");
    assert_string_equal(str_attr(gen, "langfuse.observation.output"), "answer");
    usage = cJSON_Parse(str_attr(gen, "langfuse.observation.usage_details"));
    assert_non_null(usage);
    assert_int_equal(cJSON_GetObjectItem(usage, "input")->valueint, 10);
    assert_int_equal(cJSON_GetObjectItem(usage, "output")->valueint, 20);
    cJSON_Delete(usage);

    /* The span event stays on its span. */
    assert_int_equal(gen->n_events, 1);
    assert_string_equal(gen->events[0]->name, "note");
    assert_int_equal(gen->events[0]->time_unix_nano, 1700000002000000000ULL);
    assert_int_equal(gen->events[0]->n_attributes, 1);
    assert_string_equal(gen->events[0]->attributes[0]->key, "k");

    /* A child with as_root loses the flag; no prompt pair, no prompt
     * keys; the original keys we write are not repeated. */
    assert_null(attr(gen, "langfuse.internal.as_root"));
    assert_null(attr(gen, "langfuse.prompt.name"));
    assert_null(attr(gen, "langfuse.observation.prompt.name"));
    assert_int_equal(count_attr(gen, "langfuse.observation.model.name"), 1);
    assert_int_equal(count_attr(gen, "gen_ai.usage.input_tokens"), 1);
    run_end(&r);
}

static void test_encode_otlp_original_attributes_round_trip(void **state)
{
    const pb_span *root;
    const pb_any *v;
    struct run r;

    (void)state;
    run_start(&r, sample, sizeof(sample) - 1, true);
    root = find_span(&r, ROOT_ID, NULL);

    v = attr(root, "s");
    assert_int_equal(v->value_case, ANY(STRING_VALUE));
    assert_string_equal(v->string_value, "hello");
    v = attr(root, "b");
    assert_int_equal(v->value_case, ANY(BOOL_VALUE));
    assert_false(v->bool_value);
    v = attr(root, "i");
    assert_int_equal(v->value_case, ANY(INT_VALUE));
    assert_int_equal(v->int_value, 42);
    v = attr(root, "big");
    assert_int_equal(v->value_case, ANY(INT_VALUE));
    assert_true(v->int_value == 9007199254740993LL);
    v = attr(root, "neg");
    assert_int_equal(v->value_case, ANY(INT_VALUE));
    assert_true(v->int_value == INT64_MIN);
    v = attr(root, "d");
    assert_int_equal(v->value_case, ANY(DOUBLE_VALUE));
    assert_true(v->double_value == 1.5);

    v = attr(root, "arr");
    assert_int_equal(v->value_case, ANY(ARRAY_VALUE));
    assert_int_equal(v->array_value->n_values, 3);
    assert_string_equal(v->array_value->values[0]->string_value, "x");
    assert_int_equal(v->array_value->values[1]->value_case, ANY(INT_VALUE));
    assert_int_equal(v->array_value->values[1]->int_value, 7);
    assert_int_equal(v->array_value->values[2]->value_case, ANY(_NOT_SET));

    v = attr(root, "kv");
    assert_int_equal(v->value_case, ANY(KVLIST_VALUE));
    assert_int_equal(v->kvlist_value->n_values, 2);
    assert_string_equal(v->kvlist_value->values[0]->key, "a");
    assert_string_equal(v->kvlist_value->values[0]->value->string_value, "1");
    assert_string_equal(v->kvlist_value->values[1]->key, "n");
    v = v->kvlist_value->values[1]->value;
    assert_int_equal(v->value_case, ANY(KVLIST_VALUE));
    assert_string_equal(v->kvlist_value->values[0]->key, "deep");
    assert_int_equal(v->kvlist_value->values[0]->value->value_case,
                     ANY(BOOL_VALUE));
    assert_true(v->kvlist_value->values[0]->value->bool_value);

    /* Keys we write appear once, with the mapped value. */
    assert_int_equal(count_attr(root, "langfuse.user.id"), 1);
    assert_int_equal(count_attr(root, "langfuse.trace.tags"), 1);
    assert_int_equal(count_attr(root, "langfuse.observation.input"), 1);
    run_end(&r);
}

static void test_encode_otlp_span_event_child(void **state)
{
    const struct o2l_observation *o;
    const pb_span *child;
    char id[17];
    char text[40];
    size_t index = 0;
    struct run r;
    cJSON *md;

    (void)state;
    run_start(&r, sample, sizeof(sample) - 1, true);
    o = find_obs(r.m, GEN_ID "-event-0");
    assert_int_equal(o->type, O2L_OBS_EVENT);
    event_span_id(GEN_ID "-event-0", id);
    child = find_span(&r, id, &index);

    /* The item says which span it came from: the parent. */
    assert_string_equal(r.items.items[index].span_id, GEN_ID);
    assert_string_equal(r.items.items[index].id, T1 "-" GEN_ID "-event-0");

    hex(&child->trace_id, text, sizeof(text));
    assert_string_equal(text, T1);
    hex(&child->parent_span_id, text, sizeof(text));
    assert_string_equal(text, GEN_ID);
    assert_string_equal(child->name, "note");
    assert_int_equal(child->start_time_unix_nano, 1700000002000000000ULL);
    assert_int_equal(child->end_time_unix_nano, 1700000002000000000ULL);
    assert_int_equal(child->n_events, 0);
    assert_null(child->status);
    assert_string_equal(str_attr(child, "langfuse.observation.type"), "event");
    assert_string_equal(str_attr(child, "langfuse.observation.level"),
                        "DEFAULT");
    md = cJSON_Parse(str_attr(child, "langfuse.observation.metadata"));
    assert_non_null(md);
    assert_string_equal(cJSON_GetObjectItem(md, "k")->valuestring, "v");
    cJSON_Delete(md);
    assert_trace_facts(child);
    assert_null(attr(child, "langfuse.trace.input"));
    /* The parent's attributes stay on the parent. */
    assert_null(attr(child, "gen_ai.usage.input_tokens"));
    run_end(&r);
}

static void test_encode_otlp_custom_trace_id(void **state)
{
    const struct o2l_observation *o;
    const pb_span *s;
    uint8_t digest[32];
    struct run r;

    (void)state;
    run_start(&r, sample, sizeof(sample) - 1, true);
    o = find_obs(r.m, OTHER_ID);
    assert_string_not_equal(o->trace_id, T2);
    s = find_span(&r, OTHER_ID, NULL);
    /* A seed that is neither hex nor a UUID: SHA-256 of the text. */
    o2l_mu_sha256("conversation-42", strlen("conversation-42"), digest);
    assert_int_equal(s->trace_id.len, 16);
    assert_memory_equal(s->trace_id.data, digest, 16);
    assert_string_equal(str_attr(s, "langfuse.trace.name"), "other");
    /* The seed attribute itself is not one of ours: it stays. */
    assert_int_equal(count_attr(s, "langfuse.trace.id"), 1);
    run_end(&r);
}

static void test_encode_otlp_without_originals(void **state)
{
    struct run r;

    (void)state;
    run_start(&r, sample, sizeof(sample) - 1, false);
    for (size_t i = 0; i < r.req->n_resource_spans; i++) {
        const pb_span *s = item_span(&r, i);

        assert_true(s->n_attributes > 0);
        for (size_t k = 0; k < s->n_attributes; k++) {
            assert_true(strncmp(s->attributes[k]->key, "langfuse.", 9) == 0);
        }
    }
    /* The span's own fields and events stay. */
    assert_int_equal(find_span(&r, GEN_ID, NULL)->n_events, 1);
    assert_null(attr(find_span(&r, ROOT_ID, NULL), "s"));
    assert_trace_facts(find_span(&r, ROOT_ID, NULL));
    run_end(&r);
}

static void test_encode_otlp_empty_mapping(void **state)
{
    static const char empty[] = "{\"resourceSpans\":[]}";
    struct o2l_otlp_out_config cfg = {true, 0, NULL};
    struct o2l_event_list out = {0};
    struct o2l_map_config mcfg;
    struct o2l_export *ex = decode(empty, sizeof(empty) - 1);
    struct o2l_mapped *m = NULL;
    unsigned char *body = NULL;
    size_t body_len = 1;

    (void)state;
    o2l_map_config_defaults(&mcfg);
    assert_int_equal(o2l_map_export(ex, &mcfg, &m), O2L_OK);
    assert_int_equal(m->n_obs, 0);
    assert_int_equal(o2l_encode_otlp(ex, m, &cfg, &out), O2L_OK);
    assert_int_equal(out.len, 0);
    assert_int_equal(o2l_otlp_request(out.items, 0, &body, &body_len), O2L_OK);
    assert_int_equal(body_len, 0);
    o2l_free(body);
    o2l_event_list_clear(&out);
    o2l_mapped_free(m);
    o2l_export_free(ex);
}

static void test_encode_otlp_request_framing(void **state)
{
    struct o2l_event items[2];
    char big[300];
    unsigned char *body = NULL;
    size_t body_len = 0;

    (void)state;
    memset(items, 0, sizeof(items));
    memset(big, 'x', sizeof(big));
    items[0].json = "ab";
    items[0].len = 2;
    items[1].json = big;
    items[1].len = sizeof(big);
    assert_int_equal(o2l_otlp_request(items, 2, &body, &body_len), O2L_OK);
    /* 0x0a, length 2, "ab", 0x0a, length 300 as varint 0xac 0x02. */
    assert_int_equal(body_len, 1 + 1 + 2 + 1 + 2 + sizeof(big));
    assert_int_equal(body[0], 0x0a);
    assert_int_equal(body[1], 2);
    assert_memory_equal(body + 2, "ab", 2);
    assert_int_equal(body[4], 0x0a);
    assert_int_equal(body[5], 0xac);
    assert_int_equal(body[6], 0x02);
    assert_memory_equal(body + 7, big, sizeof(big));
    o2l_free(body);
}

/* An agent above a generation with usage: its usage is empty, its raw
 * model key moves to metadata. An agent with no usage below keeps its
 * usage and hides its operation name in metadata. */
static void test_encode_otlp_agent_usage(void **state)
{
    static const char json[] =
        "{\"resourceSpans\":[{\"scopeSpans\":[{\"scope\":{\"name\":\"t\"},"
        "\"spans\":["
        "{\"traceId\":\"" T1 "\",\"spanId\":\"c000000000000001\","
        "\"name\":\"invoke_agent\",\"startTimeUnixNano\":"
        "\"1700000000000000000\","
        "\"endTimeUnixNano\":\"1700000009000000000\",\"attributes\":["
        "{\"key\":\"gen_ai.operation.name\","
        "\"value\":{\"stringValue\":\"invoke_agent\"}},"
        "{\"key\":\"gen_ai.request.model\",\"value\":{\"stringValue\":\"m\"}},"
        "{\"key\":\"gen_ai.usage.input_tokens\",\"value\":{\"intValue\":10}}"
        "]},"
        "{\"traceId\":\"" T1 "\",\"spanId\":\"c000000000000002\","
        "\"parentSpanId\":\"c000000000000001\",\"name\":\"chat\","
        "\"startTimeUnixNano\":\"1700000001000000000\","
        "\"endTimeUnixNano\":\"1700000002000000000\",\"attributes\":["
        "{\"key\":\"gen_ai.operation.name\",\"value\":{\"stringValue\":"
        "\"chat\"}},"
        "{\"key\":\"gen_ai.usage.input_tokens\",\"value\":{\"intValue\":10}}"
        "]},"
        "{\"traceId\":\"" T2 "\",\"spanId\":\"c000000000000003\","
        "\"name\":\"invoke_agent\",\"startTimeUnixNano\":"
        "\"1700000000000000000\","
        "\"endTimeUnixNano\":\"1700000009000000000\",\"attributes\":["
        "{\"key\":\"gen_ai.operation.name\","
        "\"value\":{\"stringValue\":\"invoke_agent\"}},"
        "{\"key\":\"gen_ai.request.model\",\"value\":{\"stringValue\":\"m\"}},"
        "{\"key\":\"gen_ai.usage.input_tokens\",\"value\":{\"intValue\":3}}"
        "]}]}]}]}";
    const pb_span *s;
    struct run r;
    cJSON *md;

    (void)state;
    run_start(&r, json, sizeof(json) - 1, true);

    s = find_span(&r, "c000000000000001", NULL);
    assert_null(find_obs(r.m, "c000000000000001")->usage_details);
    assert_string_equal(str_attr(s, "langfuse.observation.usage_details"),
                        "{}");
    assert_null(attr(s, "langfuse.observation.model.name"));
    assert_null(attr(s, "gen_ai.request.model"));
    md = cJSON_Parse(str_attr(s, "langfuse.observation.metadata"));
    assert_non_null(md);
    assert_string_equal(
        cJSON_GetObjectItem(md, "gen_ai.request.model")->valuestring, "m");
    cJSON_Delete(md);
    assert_int_equal(count_attr(s, "gen_ai.operation.name"), 1);

    /* The generation keeps its own usage and operation name. */
    s = find_span(&r, "c000000000000002", NULL);
    assert_int_equal(count_attr(s, "gen_ai.operation.name"), 1);
    assert_string_not_equal(str_attr(s, "langfuse.observation.usage_details"),
                            "{}");

    s = find_span(&r, "c000000000000003", NULL);
    assert_non_null(find_obs(r.m, "c000000000000003")->usage_details);
    assert_string_not_equal(str_attr(s, "langfuse.observation.usage_details"),
                            "{}");
    assert_string_equal(str_attr(s, "langfuse.observation.model.name"), "m");
    assert_null(attr(s, "gen_ai.operation.name"));
    md = cJSON_Parse(str_attr(s, "langfuse.observation.metadata"));
    assert_non_null(md);
    assert_string_equal(
        cJSON_GetObjectItem(md, "gen_ai.operation.name")->valuestring,
        "invoke_agent");
    cJSON_Delete(md);
    run_end(&r);
}

/* A real LangGraph export: every span once, trace facts everywhere, the
 * trace's input and output only on the graph root. */
static void test_encode_otlp_langgraph_sample(void **state)
{
    size_t len = 0;
    char *json =
        test_read_data("samples", "langgraph_openinference.json", &len);
    const struct o2l_trace *t;
    size_t roots = 0;
    struct run r;

    (void)state;
    run_start(&r, json, len, true);
    assert_int_equal(r.m->n_traces, 1);
    t = &r.m->traces[0];
    assert_int_equal(r.m->n_obs, 10);
    for (size_t i = 0; i < r.m->n_obs; i++) {
        const struct o2l_observation *o = &r.m->obs[i];
        const pb_span *s = find_span(&r, o->id, NULL);

        if (t->name) {
            assert_string_equal(str_attr(s, "langfuse.trace.name"), t->name);
        }
        if (t->session_id) {
            assert_string_equal(str_attr(s, "langfuse.session.id"),
                                t->session_id);
        }
        if (t->user_id) {
            assert_string_equal(str_attr(s, "langfuse.user.id"), t->user_id);
        }
        assert_string_equal(str_attr(s, "langfuse.observation.type"),
                            o2l_obs_type_name(o->type));
        if (o->model) {
            assert_string_equal(str_attr(s, "langfuse.observation.model.name"),
                                o->model);
        }
        if (attr(s, "langfuse.trace.input")) {
            assert_string_equal(o->id, "a730ce77cf5915da");
            roots++;
        }
    }
    assert_non_null(t->input);
    assert_int_equal(roots, 1);
    assert_non_null(t->session_id);
    run_end(&r);
    o2l_free(json);
}

/* ---- links, flags, trace state; trace facts; the size guard ------------ */

#define SPAN_OPEN(trace, id, parent, name)                                     \
    "{\"traceId\":\"" trace "\",\"spanId\":\"" id "\"" parent                  \
    ",\"name\":\"" name "\",\"startTimeUnixNano\":\"1700000000000000000\","    \
    "\"endTimeUnixNano\":\"1700000001000000000\""
#define PARENT(id) ",\"parentSpanId\":\"" id "\""
#define DOC_OPEN                                                               \
    "{\"resourceSpans\":[{\"resource\":{},\"scopeSpans\":[{\"scope\":"         \
    "{\"name\":\"t\"},\"spans\":["
#define DOC_CLOSE "]}]}]}"
#define STR_ATTR(k, v)                                                         \
    "{\"key\":\"" k "\",\"value\":{\"stringValue\":\"" v "\"}}"
#define BOOL_ATTR(k, v) "{\"key\":\"" k "\",\"value\":{\"boolValue\":" v "}}"

/* Links, flags and trace state; a custom trace id on the second trace. */
/* clang-format off */
static const char links_doc[] =
    DOC_OPEN SPAN_OPEN(T1, ROOT_ID, "", "root")
    ",\"traceState\":\"vendor=a1\",\"flags\":769,\"links\":["
    "{\"traceId\":\"" T2 "\",\"spanId\":\"" OTHER_ID "\","
    "\"traceState\":\"vendor=l1\",\"attributes\":[" STR_ATTR("why", "fan-in")
    "],\"droppedAttributesCount\":2,\"flags\":1}]},"
    SPAN_OPEN(T2, OTHER_ID, "", "other")
    ",\"attributes\":[" STR_ATTR("langfuse.trace.id", "conversation-42")
    "],\"links\":[{\"traceId\":\"" T1 "\",\"spanId\":\"" ROOT_ID "\"}]},"
    SPAN_OPEN(T1, GEN_ID, PARENT(ROOT_ID), "plain") "}" DOC_CLOSE;
/* clang-format on */

static void test_encode_otlp_links_flags_trace_state(void **state)
{
    const pb_span *root;
    const pb_span *other;
    const pb_span *plain;
    const pb_span__link *l;
    uint8_t digest[32];
    char text[40];
    struct run r;

    (void)state;
    run_start(&r, links_doc, sizeof(links_doc) - 1, true);
    root = find_span(&r, ROOT_ID, NULL);
    assert_string_equal(root->trace_state, "vendor=a1");
    assert_int_equal(root->flags, 769);
    assert_int_equal(root->n_links, 1);
    l = root->links[0];
    hex(&l->trace_id, text, sizeof(text));
    assert_string_equal(text, T2);
    hex(&l->span_id, text, sizeof(text));
    assert_string_equal(text, OTHER_ID);
    assert_string_equal(l->trace_state, "vendor=l1");
    assert_int_equal(l->n_attributes, 1);
    assert_string_equal(l->attributes[0]->key, "why");
    assert_string_equal(l->attributes[0]->value->string_value, "fan-in");
    assert_int_equal(l->dropped_attributes_count, 2);
    assert_int_equal(l->flags, 1);

    /* A custom trace id moves the span, not what its link points to. */
    other = find_span(&r, OTHER_ID, NULL);
    o2l_mu_sha256("conversation-42", strlen("conversation-42"), digest);
    assert_memory_equal(other->trace_id.data, digest, 16);
    assert_int_equal(other->n_links, 1);
    hex(&other->links[0]->trace_id, text, sizeof(text));
    assert_string_equal(text, T1);
    hex(&other->links[0]->span_id, text, sizeof(text));
    assert_string_equal(text, ROOT_ID);
    assert_string_equal(other->links[0]->trace_state, "");
    assert_int_equal(other->links[0]->n_attributes, 0);

    /* Nothing received, nothing written. */
    plain = find_span(&r, GEN_ID, NULL);
    assert_string_equal(plain->trace_state, "");
    assert_int_equal(plain->flags, 0);
    assert_int_equal(plain->n_links, 0);
    run_end(&r);
}

/* The langfuse.trace.public value of |s|: 1, 0, or -1 when absent. */
static int public_attr(const pb_span *s)
{
    const pb_any *v = attr(s, "langfuse.trace.public");

    if (!v) {
        return -1;
    }
    assert_int_equal(count_attr(s, "langfuse.trace.public"), 1);
    assert_int_equal(v->value_case, ANY(BOOL_VALUE));
    return v->bool_value ? 1 : 0;
}

static void test_encode_otlp_trace_public_on_every_span(void **state)
{
    /* clang-format off */
    static const char doc[] =
        DOC_OPEN SPAN_OPEN(T1, ROOT_ID, "", "root")
        ",\"attributes\":[" BOOL_ATTR("langfuse.trace.public", "false") "]},"
        SPAN_OPEN(T1, GEN_ID, PARENT(ROOT_ID), "child") "},"
        SPAN_OPEN(T2, OTHER_ID, "", "other")
        ",\"attributes\":[" BOOL_ATTR("langfuse.trace.public", "true") "]},"
        SPAN_OPEN(T2, "1111111111111111", PARENT(OTHER_ID), "kid") "}"
        DOC_CLOSE;
    /* clang-format on */
    struct run r;

    (void)state;
    run_start(&r, doc, sizeof(doc) - 1, true);
    /* Known false is written as false, on every span of the trace. */
    assert_int_equal(public_attr(find_span(&r, ROOT_ID, NULL)), 0);
    assert_int_equal(public_attr(find_span(&r, GEN_ID, NULL)), 0);
    assert_int_equal(public_attr(find_span(&r, OTHER_ID, NULL)), 1);
    assert_int_equal(public_attr(find_span(&r, "1111111111111111", NULL)), 1);
    run_end(&r);

    /* Unknown: not written. */
    run_start(&r, sample, sizeof(sample) - 1, true);
    for (size_t i = 0; i < r.req->n_resource_spans; i++) {
        assert_int_equal(public_attr(item_span(&r, i)), -1);
    }
    run_end(&r);
}

static void test_encode_otlp_trace_io_on_the_root_only(void **state)
{
    /* clang-format off */
    static const char doc[] =
        DOC_OPEN SPAN_OPEN(T1, ROOT_ID, "", "root") "},"
        SPAN_OPEN(T1, GEN_ID, PARENT(ROOT_ID), "child")
        ",\"attributes\":[" STR_ATTR("langfuse.trace.input", "asked")
        "," STR_ATTR("langfuse.trace.output", "answered") "]},"
        /* a trace without a true root in this window */
        SPAN_OPEN(T2, OTHER_ID, PARENT("1111111111111111"), "orphan")
        ",\"attributes\":[" STR_ATTR("langfuse.trace.input", "lost") "]}"
        DOC_CLOSE;
    /* clang-format on */
    const pb_span *root;
    const pb_span *child;
    const pb_span *orphan;
    struct run r;

    (void)state;
    run_start(&r, doc, sizeof(doc) - 1, true);
    root = find_span(&r, ROOT_ID, NULL);
    child = find_span(&r, GEN_ID, NULL);
    orphan = find_span(&r, OTHER_ID, NULL);
    /* The child's explicit trace input reaches the trace, which the true
     * root carries; the child does not keep its original. */
    assert_string_equal(str_attr(root, "langfuse.trace.input"), "asked");
    assert_string_equal(str_attr(root, "langfuse.trace.output"), "answered");
    assert_null(attr(child, "langfuse.trace.input"));
    assert_null(attr(child, "langfuse.trace.output"));
    assert_null(attr(orphan, "langfuse.trace.input"));
    run_end(&r);
}

/* A document of one span whose attributes are |attrs| (JSON members). */
static char *one_span_doc(const char *attrs, size_t *len)
{
    static const char head[] =
        DOC_OPEN SPAN_OPEN(T1, ROOT_ID, "", "root") ",\"attributes\":[";
    static const char tail[] = "]}" DOC_CLOSE;
    size_t n = strlen(head) + strlen(attrs) + strlen(tail);
    char *doc = o2l_malloc(n + 1);

    assert_non_null(doc);
    snprintf(doc, n + 1, "%s%s%s", head, attrs, tail);
    *len = n;
    return doc;
}

/* A string attribute: |before|, |n| copies of |c|, |after|. */
static char *long_attr(const char *key, const char *before, char c, size_t n,
                       const char *after)
{
    size_t cap = strlen(key) + strlen(before) + n + strlen(after) + 64;
    char *s = o2l_malloc(cap);
    int head;

    assert_non_null(s);
    head = snprintf(s, cap, "{\"key\":\"%s\",\"value\":{\"stringValue\":\"%s",
                    key, before);
    memset(s + head, c, n);
    snprintf(s + head + n, cap - (size_t)head - n, "%s\"}}", after);
    return s;
}

static void test_encode_otlp_size_guard(void **state)
{
    struct o2l_otlp_out_config small = {true, 5000, NULL};
    char expect[256];
    char *attrs;
    char *big;
    char *doc;
    size_t len;
    const pb_span *s;
    struct run r;
    cJSON *md;

    (void)state;
    /* Over the default limit: the input gives way to the marker. */
    big = long_attr("langfuse.observation.input", "", 'a', 1200000, "");
    attrs = o2l_malloc(strlen(big) + 128);
    assert_non_null(attrs);
    sprintf(attrs, "%s,%s", big, STR_ATTR("langfuse.observation.output", "ok"));
    doc = one_span_doc(attrs, &len);
    run_start(&r, doc, len, true);
    assert_true(r.items.items[0].len <= O2L_EVENT_MAX_BYTES);
    s = item_span(&r, 0);
    snprintf(expect, sizeof(expect), O2L_TRIM_MARKER_FMT, "input",
             (size_t)1200000, (size_t)O2L_EVENT_MAX_BYTES);
    assert_string_equal(str_attr(s, "langfuse.observation.input"), expect);
    assert_string_equal(str_attr(s, "langfuse.observation.output"), "ok");
    /* The trace input of the root, as large, went too. */
    snprintf(expect, sizeof(expect), O2L_TRIM_MARKER_FMT, "trace input",
             (size_t)1200000, (size_t)O2L_EVENT_MAX_BYTES);
    assert_string_equal(str_attr(s, "langfuse.trace.input"), expect);
    run_end(&r);
    o2l_free(doc);
    o2l_free(attrs);
    o2l_free(big);

    /* Metadata keeps its object shape; a small value stays. */
    big = long_attr("langfuse.observation.metadata", "{\\\"blob\\\":\\\"", 'm',
                    6000, "\\\"}");
    attrs = o2l_malloc(strlen(big) + 128);
    assert_non_null(attrs);
    sprintf(attrs, "%s,%s", big, STR_ATTR("langfuse.observation.input", "hi"));
    doc = one_span_doc(attrs, &len);
    run_start_cfg(&r, doc, len, &small);
    assert_true(r.items.items[0].len <= 5000);
    s = item_span(&r, 0);
    md = cJSON_Parse(str_attr(s, "langfuse.observation.metadata"));
    assert_non_null(md);
    assert_true(cJSON_IsString(
        cJSON_GetObjectItemCaseSensitive(md, O2L_TRIM_METADATA_KEY)));
    assert_non_null(
        strstr(cJSON_GetObjectItemCaseSensitive(md, O2L_TRIM_METADATA_KEY)
                   ->valuestring,
               "metadata of "));
    cJSON_Delete(md);
    assert_string_equal(str_attr(s, "langfuse.observation.input"), "hi");
    run_end(&r);
    o2l_free(doc);
    o2l_free(attrs);
    o2l_free(big);

    /* Too big through an original attribute: it gives way too. */
    big = long_attr("blob", "", 'b', 6000, "");
    doc = one_span_doc(big, &len);
    run_start_cfg(&r, doc, len, &small);
    assert_true(r.items.items[0].len <= 5000);
    snprintf(expect, sizeof(expect), O2L_TRIM_MARKER_FMT, "blob", (size_t)6000,
             (size_t)5000);
    assert_string_equal(str_attr(item_span(&r, 0), "blob"), expect);
    run_end(&r);
    o2l_free(doc);
    o2l_free(big);
}

/* Strings of |n| copies of |c| in a marker's words: the marker text. */
static void marker_of(char *out, size_t cap, const char *what, size_t n,
                      size_t limit)
{
    snprintf(out, cap, O2L_TRIM_MARKER_FMT, what, n, limit);
}

/*
 * A root span whose output.value is 1.6 MB carries it three times (the
 * original, the observation output, the trace output): every copy gives
 * way, so the item fits Langfuse's limit instead of being refused.
 */
static void test_encode_otlp_size_guard_originals(void **state)
{
    struct o2l_otlp_out_config tight = {true, 8000, NULL};
    struct o2l_otlp_out_config small = {true, 5000, NULL};
    char expect[256];
    char *attrs;
    char *big;
    char *big2;
    char *doc;
    size_t len;
    const pb_span *s;
    const pb_any *v;
    struct run r;

    (void)state;
    big = long_attr("output.value", "", 'o', 1600000, "");
    attrs = o2l_malloc(strlen(big) + 128);
    assert_non_null(attrs);
    sprintf(attrs, "%s,%s", big, STR_ATTR("input.value", "hi"));
    doc = one_span_doc(attrs, &len);
    run_start(&r, doc, len, true);
    assert_int_equal(r.items.len, 1);
    assert_true(r.items.items[0].len <= O2L_EVENT_MAX_BYTES);
    s = item_span(&r, 0);
    marker_of(expect, sizeof(expect), "output.value", 1600000,
              O2L_EVENT_MAX_BYTES);
    assert_string_equal(str_attr(s, "output.value"), expect);
    marker_of(expect, sizeof(expect), "output", 1600000, O2L_EVENT_MAX_BYTES);
    assert_string_equal(str_attr(s, "langfuse.observation.output"), expect);
    marker_of(expect, sizeof(expect), "trace output", 1600000,
              O2L_EVENT_MAX_BYTES);
    assert_string_equal(str_attr(s, "langfuse.trace.output"), expect);
    /* What is small stays. */
    assert_string_equal(str_attr(s, "input.value"), "hi");
    assert_string_equal(str_attr(s, "langfuse.observation.input"), "hi");
    run_end(&r);
    o2l_free(doc);

    /* One replacement is enough: of equal values the forwarded copy goes,
     * and the mapped output Langfuse shows stays. */
    o2l_free(big);
    big = long_attr("output.value", "", 'o', 3000, "");
    doc = one_span_doc(big, &len);
    run_start_cfg(&r, doc, len, &tight);
    assert_true(r.items.items[0].len <= 8000);
    s = item_span(&r, 0);
    marker_of(expect, sizeof(expect), "output.value", 3000, 8000);
    assert_string_equal(str_attr(s, "output.value"), expect);
    assert_int_equal(strlen(str_attr(s, "langfuse.observation.output")), 3000);
    assert_int_equal(strlen(str_attr(s, "langfuse.trace.output")), 3000);
    run_end(&r);
    o2l_free(doc);
    o2l_free(big);

    /* Strings inside a kvlist and a span event's attribute give way too;
     * the largest first, and no more than needed. */
    big = long_attr("event.blob", "", 'e', 6000, "");
    big2 = long_attr("inner", "", 'k', 7000, "");
    o2l_free(attrs);
    attrs = o2l_malloc(strlen(big) + strlen(big2) + 512);
    assert_non_null(attrs);
    sprintf(attrs,
            "{\"key\":\"app.kv\",\"value\":{\"kvlistValue\":{\"values\":["
            "%s,%s]}}},%s],\"events\":[{\"name\":\"note\","
            "\"timeUnixNano\":\"1700000000500000000\",\"attributes\":[%s]}",
            big2, STR_ATTR("small", "s"), STR_ATTR("keep", "k"), big);
    doc = one_span_doc(attrs, &len);
    run_start_cfg(&r, doc, len, &small);
    s = find_span(&r, ROOT_ID, NULL);
    for (size_t i = 0; i < r.items.len; i++) {
        assert_true(r.items.items[i].len <= 5000);
    }
    v = attr(s, "app.kv");
    assert_non_null(v);
    assert_int_equal(v->value_case, ANY(KVLIST_VALUE));
    assert_int_equal(v->kvlist_value->n_values, 2);
    marker_of(expect, sizeof(expect), "app.kv", 7000, 5000);
    assert_string_equal(v->kvlist_value->values[0]->value->string_value,
                        expect);
    assert_string_equal(v->kvlist_value->values[1]->value->string_value, "s");
    assert_string_equal(str_attr(s, "keep"), "k");
    assert_int_equal(s->n_events, 1);
    assert_int_equal(s->events[0]->n_attributes, 1);
    marker_of(expect, sizeof(expect), "event.blob", 6000, 5000);
    assert_string_equal(s->events[0]->attributes[0]->value->string_value,
                        expect);
    run_end(&r);
    o2l_free(doc);
    o2l_free(attrs);
    o2l_free(big);
    o2l_free(big2);
}

/* Encodes |doc| with each allocation failing in turn until it works,
 * which takes more than |min_points| allocations. */
static void encode_under_failures(const char *doc, size_t len,
                                  const struct o2l_otlp_out_config *cfg_in,
                                  long min_points)
{
    struct o2l_otlp_out_config cfg = *cfg_in;
    struct o2l_map_config mcfg;
    struct o2l_export *ex = decode(doc, len);
    struct o2l_mapped *m = NULL;
    bool succeeded = false;
    long n;

    o2l_map_config_defaults(&mcfg);
    assert_int_equal(o2l_map_export(ex, &mcfg, &m), O2L_OK);
    for (n = 0; n < 20000 && !succeeded; n++) {
        struct o2l_event_list out = {0};
        unsigned char *body = NULL;
        size_t body_len = 0;
        int rc;

        o2l_mem_fail_after(n);
        rc = o2l_encode_otlp(ex, m, &cfg, &out);
        if (rc == O2L_OK) {
            rc = o2l_otlp_request(out.items, out.len, &body, &body_len);
        }
        o2l_mem_fail_after(-1);
        if (rc == O2L_OK) {
            assert_int_equal(out.len, m->n_obs);
            succeeded = true;
        } else {
            assert_int_equal(rc, O2L_ENOMEM);
        }
        o2l_free(body);
        o2l_event_list_clear(&out);
    }
    assert_true(succeeded);
    /* Every allocation point up to the successful run was made to fail. */
    assert_true(n > min_points);
    print_message("allocation failures survived: %ld\n", n - 1);
    o2l_mapped_free(m);
    o2l_export_free(ex);
}

static void test_encode_otlp_survives_allocation_failures(void **state)
{
    struct o2l_otlp_out_config cfg = {true, 0, NULL};
    struct o2l_otlp_out_config small = {true, 300, NULL};
    char *big = long_attr("langfuse.observation.input", "", 'x', 400, "");
    size_t len;
    char *doc = one_span_doc(big, &len);

    (void)state;
    encode_under_failures(sample, sizeof(sample) - 1, &cfg, 20);
    encode_under_failures(links_doc, sizeof(links_doc) - 1, &cfg, 10);
    /* The size guard replaces values too. */
    encode_under_failures(doc, len, &small, 5);
    o2l_free(doc);
    o2l_free(big);
}

/* mapping.redact reaches what is forwarded as received: span, span event
 * and resource attributes, also inside JSON held in a string. */
static void test_encode_otlp_redacts_forwarded_attributes(void **state)
{
    static const char doc[] =
        "{\"resourceSpans\":[{\"resource\":{\"attributes\":["
        "{\"key\":\"owner.email\",\"value\":{\"stringValue\":\"r@x\"}}]},"
        "\"scopeSpans\":[{\"scope\":{\"name\":\"s\"},\"spans\":[{"
        "\"traceId\":\"0af7651916cd43dd8448eb211c80319c\","
        "\"spanId\":\"b7ad6b7169203331\",\"name\":\"root\","
        "\"startTimeUnixNano\":\"1700000000000000000\","
        "\"endTimeUnixNano\":\"1700000001000000000\","
        "\"attributes\":["
        "{\"key\":\"user.email\",\"value\":{\"stringValue\":\"a@x\"}},"
        "{\"key\":\"input.value\",\"value\":{\"stringValue\":"
        "\"{\\\"email\\\":\\\"b@x\\\",\\\"q\\\":1}\"}},"
        "{\"key\":\"keep\",\"value\":{\"stringValue\":\"k\"}}],"
        "\"events\":[{\"name\":\"note\",\"timeUnixNano\":"
        "\"1700000000500000000\",\"attributes\":[{\"key\":\"email\","
        "\"value\":{\"stringValue\":\"c@x\"}}]}]}]}]}]}";
    static const char *const redact[] = {"email", NULL};
    struct o2l_map_config mcfg;
    struct o2l_otlp_out_config cfg = {true, 0, &mcfg};
    const pb_span *s;
    const pb_resource_spans *rs;
    struct run r;

    (void)state;
    o2l_map_config_defaults(&mcfg);
    mcfg.redact = redact;
    run_start_cfg(&r, doc, sizeof(doc) - 1, &cfg);
    s = find_span(&r, "b7ad6b7169203331", NULL);
    assert_string_equal(str_attr(s, "user.email"), O2L_MAP_REDACT_MARKER);
    assert_string_equal(str_attr(s, "keep"), "k");
    assert_null(strstr(str_attr(s, "input.value"), "b@x"));
    assert_non_null(strstr(str_attr(s, "input.value"), "\"q\":1"));
    assert_int_equal(s->n_events, 1);
    assert_int_equal(s->events[0]->n_attributes, 1);
    assert_string_equal(s->events[0]->attributes[0]->value->string_value,
                        O2L_MAP_REDACT_MARKER);
    rs = r.req->resource_spans[0];
    assert_int_equal(rs->resource->n_attributes, 1);
    assert_string_equal(rs->resource->attributes[0]->value->string_value,
                        O2L_MAP_REDACT_MARKER);
    run_end(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_encode_otlp_every_observation_once),
        cmocka_unit_test(test_encode_otlp_root_and_generation),
        cmocka_unit_test(test_encode_otlp_original_attributes_round_trip),
        cmocka_unit_test(test_encode_otlp_span_event_child),
        cmocka_unit_test(test_encode_otlp_custom_trace_id),
        cmocka_unit_test(test_encode_otlp_without_originals),
        cmocka_unit_test(test_encode_otlp_empty_mapping),
        cmocka_unit_test(test_encode_otlp_request_framing),
        cmocka_unit_test(test_encode_otlp_agent_usage),
        cmocka_unit_test(test_encode_otlp_langgraph_sample),
        cmocka_unit_test(test_encode_otlp_links_flags_trace_state),
        cmocka_unit_test(test_encode_otlp_trace_public_on_every_span),
        cmocka_unit_test(test_encode_otlp_trace_io_on_the_root_only),
        cmocka_unit_test(test_encode_otlp_size_guard),
        cmocka_unit_test(test_encode_otlp_size_guard_originals),
        cmocka_unit_test(test_encode_otlp_redacts_forwarded_attributes),
        cmocka_unit_test(test_encode_otlp_survives_allocation_failures),
    };

    o2l_mem_init();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
