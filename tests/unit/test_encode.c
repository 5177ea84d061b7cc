/* SPDX-License-Identifier: Apache-2.0 */
/* test_encode.c - the ingestion encoder: envelopes, field rules, limits. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "o2l/common.h"
#include "o2l/encode.h"

#define TRACE_ID "0af7651916cd43dd8448eb211c80319c"
#define ROOT_ID  "b7ad6b7169203331"
#define CHILD_ID "00f067aa0ba902b7"

/* 2025-01-31T08:15:02.123456Z */
#define T0 1738311302123456000ull

static struct o2l_mapped *new_mapped(size_t n_traces, size_t n_obs)
{
    struct o2l_mapped *m = o2l_calloc(1, sizeof(*m));

    assert_non_null(m);
    if (n_traces) {
        m->traces = o2l_calloc(n_traces, sizeof(*m->traces));
        assert_non_null(m->traces);
    }
    if (n_obs) {
        m->obs = o2l_calloc(n_obs, sizeof(*m->obs));
        assert_non_null(m->obs);
    }
    m->n_traces = n_traces;
    m->n_obs = n_obs;
    return m;
}

static void fill_trace(struct o2l_trace *t)
{
    snprintf(t->id, sizeof(t->id), "%s", TRACE_ID);
    snprintf(t->envelope_id, sizeof(t->envelope_id), "%s-trace-%s", TRACE_ID,
             ROOT_ID);
    t->timestamp_ns = T0;
    t->envelope_ns = T0 + 5000000000ull;
    t->name = o2l_strdup("chat turn");
    t->environment = o2l_strdup("production");
    t->public_flag = -1;
}

static void fill_obs(struct o2l_observation *o, enum o2l_obs_type type,
                     const char *id, const char *parent)
{
    o->type = type;
    snprintf(o->id, sizeof(o->id), "%s", id);
    snprintf(o->trace_id, sizeof(o->trace_id), "%s", TRACE_ID);
    snprintf(o->parent_id, sizeof(o->parent_id), "%s", parent);
    o->name = o2l_strdup("step");
    o->start_ns = T0;
    o->end_ns = T0 + 2000000000ull;
    o->envelope_ns = o->end_ns;
    o->level = O2L_LEVEL_DEFAULT;
    o->environment = o2l_strdup("production");
}

/* Sets every generation-only field, whatever the type. */
static void fill_generation_fields(struct o2l_observation *o)
{
    o->model = o2l_strdup("gpt-4o-2024-08-06");
    o->completion_start_ns = T0 + 300000000ull;
    o->model_parameters = cJSON_Parse("{\"temperature\":0.2}");
    o->usage_details = cJSON_Parse("{\"input\":12,\"output\":30}");
    o->cost_details = cJSON_Parse("{\"total\":0.00042}");
    o->prompt_name = o2l_strdup("support-answer");
    o->prompt_version = 3;
}

static cJSON *parse_event(const struct o2l_event *ev)
{
    cJSON *doc;

    assert_non_null(ev->json);
    assert_int_equal(strlen(ev->json), ev->len);
    doc = cJSON_Parse(ev->json);
    assert_non_null(doc);
    return doc;
}

static const cJSON *body_of(const cJSON *doc)
{
    const cJSON *body = cJSON_GetObjectItemCaseSensitive(doc, "body");

    assert_true(cJSON_IsObject(body));
    return body;
}

static int has(const cJSON *obj, const char *key)
{
    return cJSON_GetObjectItemCaseSensitive(obj, key) != NULL;
}

static const char *str_of(const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);

    assert_true(cJSON_IsString(v));
    return v->valuestring;
}

/* Encodes one observation of |type| that has every field set. */
static cJSON *encode_full_observation(enum o2l_obs_type type)
{
    struct o2l_mapped *m = new_mapped(0, 1);
    struct o2l_event_list l = {0};
    cJSON *doc;

    fill_obs(&m->obs[0], type, CHILD_ID, ROOT_ID);
    fill_generation_fields(&m->obs[0]);
    assert_int_equal(o2l_encode_ingestion(m, O2L_EVENT_MAX_BYTES, &l), O2L_OK);
    assert_int_equal(l.len, 1);
    doc = parse_event(&l.items[0]);
    o2l_event_list_clear(&l);
    o2l_mapped_free(m);
    return doc;
}

static void test_encode_trace_envelope_and_fields(void **state)
{
    struct o2l_mapped *m = new_mapped(1, 0);
    struct o2l_event_list l = {0};
    const cJSON *body;
    const cJSON *tags;
    cJSON *doc;

    (void)state;
    fill_trace(&m->traces[0]);
    m->traces[0].user_id = o2l_strdup("user-7");
    m->traces[0].session_id = o2l_strdup("sess-1");
    m->traces[0].release = o2l_strdup("1.2.3");
    m->traces[0].public_flag = 1;
    m->traces[0].tags = cJSON_Parse("[\"a\",\"b\"]");
    m->traces[0].metadata = cJSON_Parse("{\"k\":\"v\"}");
    m->traces[0].input = cJSON_CreateString("hello");

    assert_int_equal(o2l_encode_ingestion(m, O2L_EVENT_MAX_BYTES, &l), O2L_OK);
    assert_int_equal(l.len, 1);
    assert_string_equal(l.items[0].id, TRACE_ID "-trace-" ROOT_ID);
    doc = parse_event(&l.items[0]);

    assert_string_equal(str_of(doc, "id"), TRACE_ID "-trace-" ROOT_ID);
    assert_string_equal(str_of(doc, "type"), "trace-create");
    assert_string_equal(str_of(doc, "timestamp"),
                        "2025-01-31T08:15:07.123456Z");
    assert_false(has(doc, "metadata"));
    body = body_of(doc);
    assert_string_equal(str_of(body, "id"), TRACE_ID);
    assert_string_equal(str_of(body, "timestamp"),
                        "2025-01-31T08:15:02.123456Z");
    assert_string_equal(str_of(body, "name"), "chat turn");
    assert_string_equal(str_of(body, "userId"), "user-7");
    assert_string_equal(str_of(body, "sessionId"), "sess-1");
    assert_string_equal(str_of(body, "release"), "1.2.3");
    assert_string_equal(str_of(body, "environment"), "production");
    assert_string_equal(str_of(body, "input"), "hello");
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(body, "public")));
    tags = cJSON_GetObjectItem(body, "tags");
    assert_int_equal(cJSON_GetArraySize(tags), 2);
    assert_true(cJSON_IsObject(cJSON_GetObjectItem(body, "metadata")));
    assert_false(has(body, "output"));
    assert_false(has(body, "version"));

    cJSON_Delete(doc);
    o2l_event_list_clear(&l);
    o2l_mapped_free(m);
}

static void test_encode_trace_goes_ahead_of_its_observations(void **state)
{
    struct o2l_mapped *m = new_mapped(1, 2);
    struct o2l_event_list l = {0};
    cJSON *doc;

    (void)state;
    fill_obs(&m->obs[0], O2L_OBS_SPAN, ROOT_ID, "");
    fill_obs(&m->obs[1], O2L_OBS_GENERATION, CHILD_ID, ROOT_ID);
    fill_trace(&m->traces[0]);
    assert_int_equal(o2l_encode_ingestion(m, O2L_EVENT_MAX_BYTES, &l), O2L_OK);
    assert_int_equal(l.len, 3);
    assert_string_equal(l.items[0].id, TRACE_ID "-trace-" ROOT_ID);
    assert_string_equal(l.items[1].id, TRACE_ID "-" ROOT_ID);
    assert_string_equal(l.items[2].id, TRACE_ID "-" CHILD_ID);

    doc = parse_event(&l.items[1]);
    assert_string_equal(str_of(doc, "type"), "span-create");
    /* A root has no parentObservationId at all. */
    assert_false(has(body_of(doc), "parentObservationId"));
    assert_string_equal(str_of(body_of(doc), "traceId"), TRACE_ID);
    cJSON_Delete(doc);

    doc = parse_event(&l.items[2]);
    assert_string_equal(str_of(doc, "type"), "generation-create");
    assert_string_equal(str_of(body_of(doc), "parentObservationId"), ROOT_ID);
    cJSON_Delete(doc);

    o2l_event_list_clear(&l);
    o2l_mapped_free(m);
}

static void test_encode_generation_carries_every_field(void **state)
{
    cJSON *doc = encode_full_observation(O2L_OBS_GENERATION);
    const cJSON *body = body_of(doc);
    const cJSON *usage;

    (void)state;
    assert_string_equal(str_of(doc, "id"), TRACE_ID "-" CHILD_ID);
    assert_string_equal(str_of(doc, "timestamp"),
                        "2025-01-31T08:15:04.123456Z");
    assert_string_equal(str_of(body, "id"), CHILD_ID);
    assert_string_equal(str_of(body, "startTime"),
                        "2025-01-31T08:15:02.123456Z");
    assert_string_equal(str_of(body, "endTime"), "2025-01-31T08:15:04.123456Z");
    assert_string_equal(str_of(body, "completionStartTime"),
                        "2025-01-31T08:15:02.423456Z");
    assert_string_equal(str_of(body, "level"), "DEFAULT");
    assert_string_equal(str_of(body, "model"), "gpt-4o-2024-08-06");
    assert_string_equal(str_of(body, "promptName"), "support-answer");
    assert_int_equal(cJSON_GetObjectItem(body, "promptVersion")->valueint, 3);
    usage = cJSON_GetObjectItem(body, "usageDetails");
    assert_int_equal(cJSON_GetObjectItem(usage, "output")->valueint, 30);
    assert_true(has(body, "modelParameters"));
    assert_true(has(body, "costDetails"));
    assert_true(cJSON_GetObjectItem(usage, "input")->valuedouble == 12);
    cJSON_Delete(doc);
}

static void test_encode_generation_like_types_have_no_prompt(void **state)
{
    static const struct {
        enum o2l_obs_type type;
        const char *name;
    } cases[] = {
        {O2L_OBS_AGENT, "agent-create"},
        {O2L_OBS_TOOL, "tool-create"},
        {O2L_OBS_CHAIN, "chain-create"},
        {O2L_OBS_RETRIEVER, "retriever-create"},
        {O2L_OBS_EMBEDDING, "embedding-create"},
        {O2L_OBS_EVALUATOR, "evaluator-create"},
        {O2L_OBS_GUARDRAIL, "guardrail-create"},
    };

    (void)state;
    for (size_t i = 0; i < O2L_ARRAY_LEN(cases); i++) {
        cJSON *doc = encode_full_observation(cases[i].type);
        const cJSON *body = body_of(doc);

        assert_string_equal(str_of(doc, "type"), cases[i].name);
        assert_true(has(body, "model"));
        assert_true(has(body, "usageDetails"));
        assert_true(has(body, "costDetails"));
        assert_true(has(body, "completionStartTime"));
        assert_true(has(body, "endTime"));
        assert_false(has(body, "promptName"));
        assert_false(has(body, "promptVersion"));
        cJSON_Delete(doc);
    }
}

static void test_encode_span_has_no_generation_fields(void **state)
{
    cJSON *doc = encode_full_observation(O2L_OBS_SPAN);
    const cJSON *body = body_of(doc);

    (void)state;
    assert_string_equal(str_of(doc, "type"), "span-create");
    assert_true(has(body, "endTime"));
    assert_false(has(body, "model"));
    assert_false(has(body, "modelParameters"));
    assert_false(has(body, "usageDetails"));
    assert_false(has(body, "costDetails"));
    assert_false(has(body, "completionStartTime"));
    assert_false(has(body, "promptName"));
    assert_false(has(body, "promptVersion"));
    cJSON_Delete(doc);
}

static void test_encode_event_has_no_end_time(void **state)
{
    cJSON *doc = encode_full_observation(O2L_OBS_EVENT);
    const cJSON *body = body_of(doc);

    (void)state;
    assert_string_equal(str_of(doc, "type"), "event-create");
    assert_true(has(body, "startTime"));
    assert_false(has(body, "endTime"));
    assert_false(has(body, "model"));
    assert_false(has(body, "usageDetails"));
    assert_false(has(body, "costDetails"));
    assert_false(has(body, "completionStartTime"));
    cJSON_Delete(doc);
}

static void test_encode_unknown_fields_are_absent_not_null(void **state)
{
    struct o2l_mapped *m = new_mapped(1, 1);
    struct o2l_event_list l = {0};
    const cJSON *item;

    (void)state;
    fill_trace(&m->traces[0]);
    o2l_free(m->traces[0].name);
    m->traces[0].name = NULL;
    m->traces[0].tags = cJSON_CreateArray();
    m->traces[0].metadata = cJSON_CreateObject();
    m->traces[0].output = cJSON_CreateNull();
    fill_obs(&m->obs[0], O2L_OBS_GENERATION, CHILD_ID, "");
    m->obs[0].usage_details = cJSON_CreateObject();
    m->obs[0].input = cJSON_CreateNull();
    m->obs[0].end_ns = 0;

    assert_int_equal(o2l_encode_ingestion(m, O2L_EVENT_MAX_BYTES, &l), O2L_OK);
    assert_int_equal(l.len, 2);
    for (size_t i = 0; i < l.len; i++) {
        cJSON *doc = parse_event(&l.items[i]);

        assert_null(strstr(l.items[i].json, "null"));
        assert_null(strstr(l.items[i].json, "{}"));
        assert_null(strstr(l.items[i].json, "[]"));
        cJSON_ArrayForEach(item, body_of(doc))
        {
            assert_false(cJSON_IsNull(item));
        }
        cJSON_Delete(doc);
    }
    o2l_event_list_clear(&l);
    o2l_mapped_free(m);
}

static void test_encode_escapes_strings(void **state)
{
    struct o2l_mapped *m = new_mapped(0, 1);
    struct o2l_event_list l = {0};
    cJSON *doc;

    (void)state;
    fill_obs(&m->obs[0], O2L_OBS_SPAN, CHILD_ID, ROOT_ID);
    m->obs[0].status_message = o2l_strdup("a \"quoted\"\\ line\n\x01\tend é");
    m->obs[0].output = cJSON_Parse("{\"msg\":[1.5,-2,true,false,null,\"x\"]}");

    assert_int_equal(o2l_encode_ingestion(m, O2L_EVENT_MAX_BYTES, &l), O2L_OK);
    doc = parse_event(&l.items[0]);
    assert_string_equal(str_of(body_of(doc), "statusMessage"),
                        "a \"quoted\"\\ line\n\x01\tend é");
    assert_non_null(strstr(l.items[0].json, "\\u0001"));
    /* A null inside user data is data, not an unknown field. */
    assert_non_null(strstr(l.items[0].json,
                           "\"output\":{\"msg\":[1.5,-2,true,false,"
                           "null,\"x\"]}"));
    cJSON_Delete(doc);
    o2l_event_list_clear(&l);
    o2l_mapped_free(m);
}

/* Every special byte at every offset of a long string reads back. */
static void test_encode_escapes_at_every_offset(void **state)
{
    static const char specials[] = {'"', '\\', '\n', '\x1f', '\x7f', 'x'};

    (void)state;
    for (size_t k = 0; k < sizeof(specials); k++) {
        for (size_t off = 0; off < 24; off++) {
            struct o2l_mapped *m = new_mapped(0, 1);
            struct o2l_event_list l = {0};
            char text[40];
            cJSON *doc;

            memset(text, 'a', sizeof(text) - 1);
            text[sizeof(text) - 1] = '\0';
            text[off] = specials[k];
            text[off + 3] = (char)0xc3; /* UTF-8 passes through */
            text[off + 4] = (char)0xa9;
            fill_obs(&m->obs[0], O2L_OBS_SPAN, CHILD_ID, ROOT_ID);
            m->obs[0].output = cJSON_CreateString(text);
            assert_int_equal(o2l_encode_ingestion(m, O2L_EVENT_MAX_BYTES, &l),
                             O2L_OK);
            doc = parse_event(&l.items[0]);
            assert_string_equal(str_of(body_of(doc), "output"), text);
            cJSON_Delete(doc);
            o2l_event_list_clear(&l);
            o2l_mapped_free(m);
        }
    }
}

static char *big_string(size_t n, char c)
{
    char *s = o2l_malloc(n + 1);

    assert_non_null(s);
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

static void test_encode_oversized_event_is_trimmed(void **state)
{
    struct o2l_mapped *m = new_mapped(0, 1);
    struct o2l_event_list l = {0};
    const cJSON *body;
    char *text;
    cJSON *doc;

    (void)state;
    fill_obs(&m->obs[0], O2L_OBS_GENERATION, CHILD_ID, ROOT_ID);
    text = big_string(1500000, 'o');
    m->obs[0].output = cJSON_CreateString(text);
    o2l_free(text);
    text = big_string(1200000, 'i');
    m->obs[0].input = cJSON_CreateString(text);
    o2l_free(text);
    m->obs[0].metadata = cJSON_Parse("{\"small\":\"kept\"}");

    assert_int_equal(o2l_encode_ingestion(m, O2L_EVENT_MAX_BYTES, &l), O2L_OK);
    assert_int_equal(l.len, 1);
    assert_true(l.items[0].len <= O2L_EVENT_MAX_BYTES);
    doc = parse_event(&l.items[0]);
    body = body_of(doc);
    /* Both large values go, largest first; the small one stays. */
    assert_non_null(
        strstr(str_of(body, "output"), "output of 1500002 bytes removed"));
    assert_non_null(
        strstr(str_of(body, "input"), "input of 1200002 bytes removed"));
    assert_string_equal(str_of(cJSON_GetObjectItem(body, "metadata"), "small"),
                        "kept");
    assert_string_equal(str_of(body, "traceId"), TRACE_ID);
    cJSON_Delete(doc);
    o2l_event_list_clear(&l);
    o2l_mapped_free(m);
}

static void test_encode_oversized_metadata_stays_an_object(void **state)
{
    struct o2l_mapped *m = new_mapped(0, 1);
    struct o2l_event_list l = {0};
    const cJSON *md;
    char *text;
    cJSON *doc;

    (void)state;
    fill_obs(&m->obs[0], O2L_OBS_SPAN, CHILD_ID, ROOT_ID);
    text = big_string(1100000, 'm');
    m->obs[0].metadata = cJSON_CreateObject();
    cJSON_AddStringToObject(m->obs[0].metadata, "big", text);
    o2l_free(text);

    assert_int_equal(o2l_encode_ingestion(m, O2L_EVENT_MAX_BYTES, &l), O2L_OK);
    assert_true(l.items[0].len <= O2L_EVENT_MAX_BYTES);
    doc = parse_event(&l.items[0]);
    md = cJSON_GetObjectItem(body_of(doc), "metadata");
    assert_true(cJSON_IsObject(md));
    assert_non_null(strstr(str_of(md, "otel2langfuse_truncated"),
                           "bytes removed: event over"));
    cJSON_Delete(doc);
    o2l_event_list_clear(&l);
    o2l_mapped_free(m);
}

static void test_encode_trims_only_what_is_needed(void **state)
{
    struct o2l_mapped *m = new_mapped(0, 1);
    struct o2l_event_list l = {0};
    const cJSON *body;
    char *text;
    cJSON *doc;

    (void)state;
    fill_obs(&m->obs[0], O2L_OBS_SPAN, CHILD_ID, ROOT_ID);
    text = big_string(5000, 'x');
    m->obs[0].input = cJSON_CreateString(text);
    o2l_free(text);
    text = big_string(3000, 'y');
    m->obs[0].output = cJSON_CreateString(text);
    o2l_free(text);

    assert_int_equal(o2l_encode_ingestion(m, 6000, &l), O2L_OK);
    assert_true(l.items[0].len <= 6000);
    doc = parse_event(&l.items[0]);
    body = body_of(doc);
    assert_non_null(strstr(str_of(body, "input"), "[otel2langfuse: input"));
    assert_int_equal(strlen(str_of(body, "output")), 3000);
    cJSON_Delete(doc);
    o2l_event_list_clear(&l);
    o2l_mapped_free(m);
}

static void test_encode_merges_ingestion_metadata(void **state)
{
    struct o2l_mapped *m = new_mapped(0, 2);
    struct o2l_event_list l = {0};
    const cJSON *md;
    cJSON *doc;

    (void)state;
    fill_obs(&m->obs[0], O2L_OBS_SPAN, ROOT_ID, "");
    m->obs[0].metadata =
        cJSON_Parse("{\"langgraph_node\":\"agent\",\"scope\":\"mine\"}");
    m->obs[0].ingest_metadata =
        cJSON_Parse("{\"attributes\":{\"k\":\"v\"},\"resourceAttributes\":{"
                    "\"service.name\":"
                    "\"app\"},\"scope\":{\"name\":\"openinference\"}}");
    fill_obs(&m->obs[1], O2L_OBS_SPAN, CHILD_ID, ROOT_ID);
    m->obs[1].ingest_metadata = cJSON_Parse("{\"scope\":{\"name\":\"x\"}}");

    assert_int_equal(o2l_encode_ingestion(m, O2L_EVENT_MAX_BYTES, &l), O2L_OK);
    doc = parse_event(&l.items[0]);
    md = cJSON_GetObjectItem(body_of(doc), "metadata");
    assert_string_equal(str_of(md, "langgraph_node"), "agent");
    /* The application's own key wins over the added one. */
    assert_string_equal(str_of(md, "scope"), "mine");
    assert_string_equal(str_of(cJSON_GetObjectItem(md, "attributes"), "k"),
                        "v");
    assert_true(has(md, "resourceAttributes"));
    cJSON_Delete(doc);

    doc = parse_event(&l.items[1]);
    md = cJSON_GetObjectItem(body_of(doc), "metadata");
    assert_string_equal(str_of(cJSON_GetObjectItem(md, "scope"), "name"), "x");
    cJSON_Delete(doc);
    o2l_event_list_clear(&l);
    o2l_mapped_free(m);
}

static void make_event(struct o2l_event *ev, const char *id, const char *json)
{
    ev->id = o2l_strdup(id);
    ev->json = o2l_strdup(json);
    assert_non_null(ev->id);
    assert_non_null(ev->json);
    ev->len = strlen(json);
}

static void test_encode_batch_framing(void **state)
{
    struct o2l_event evs[3];
    char *out = NULL;
    size_t out_len = 0;
    cJSON *doc;

    (void)state;
    make_event(&evs[0], "a", "{\"id\":\"a\"}");
    make_event(&evs[1], "b", "{\"id\":\"b\"}");
    make_event(&evs[2], "c", "{\"id\":\"c\"}");

    assert_int_equal(o2l_encode_batch(evs, 3, &out, &out_len), O2L_OK);
    assert_string_equal(out, "{\"batch\":[{\"id\":\"a\"},{\"id\":\"b\"},"
                             "{\"id\":\"c\"}]}");
    assert_int_equal(out_len, strlen(out));
    doc = cJSON_Parse(out);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(doc, "batch")), 3);
    cJSON_Delete(doc);
    o2l_free(out);

    assert_int_equal(o2l_encode_batch(evs, 0, &out, &out_len), O2L_OK);
    assert_string_equal(out, "{\"batch\":[]}");
    o2l_free(out);

    for (size_t i = 0; i < 3; i++) {
        o2l_event_free(&evs[i]);
    }
}

static void test_encode_list_move_and_clear(void **state)
{
    struct o2l_event_list a = {0};
    struct o2l_event_list b = {0};
    struct o2l_mapped *m = new_mapped(1, 1);

    (void)state;
    fill_trace(&m->traces[0]);
    fill_obs(&m->obs[0], O2L_OBS_SPAN, ROOT_ID, "");
    assert_int_equal(o2l_encode_ingestion(m, O2L_EVENT_MAX_BYTES, &a), O2L_OK);
    assert_int_equal(o2l_encode_ingestion(m, O2L_EVENT_MAX_BYTES, &b), O2L_OK);

    assert_int_equal(o2l_event_list_move(&a, &b), O2L_OK);
    assert_int_equal(a.len, 4);
    assert_int_equal(b.len, 0);
    assert_string_equal(a.items[3].id, TRACE_ID "-" ROOT_ID);

    /* Moving into an empty list hands the array over. */
    assert_int_equal(o2l_event_list_move(&b, &a), O2L_OK);
    assert_int_equal(b.len, 4);
    assert_int_equal(a.len, 0);

    o2l_event_list_clear(&a);
    o2l_event_list_clear(&b);
    o2l_event_list_clear(NULL);
    assert_null(b.items);
    o2l_mapped_free(m);
}

static void test_encode_survives_allocation_failures(void **state)
{
    struct o2l_mapped *m = new_mapped(1, 2);
    int rc = O2L_ENOMEM;

    (void)state;
    fill_trace(&m->traces[0]);
    fill_obs(&m->obs[0], O2L_OBS_SPAN, ROOT_ID, "");
    fill_obs(&m->obs[1], O2L_OBS_GENERATION, CHILD_ID, ROOT_ID);
    fill_generation_fields(&m->obs[1]);
    m->obs[1].input = cJSON_Parse("[{\"role\":\"user\",\"content\":\"hi\"}]");

    for (long n = 0; n < 200 && rc != O2L_OK; n++) {
        struct o2l_event_list l = {0};

        o2l_mem_fail_after(n);
        rc = o2l_encode_ingestion(m, O2L_EVENT_MAX_BYTES, &l);
        o2l_mem_fail_after(-1);
        assert_true(rc == O2L_OK || rc == O2L_ENOMEM);
        if (rc == O2L_OK) {
            assert_int_equal(l.len, 3);
        }
        o2l_event_list_clear(&l);
    }
    assert_int_equal(rc, O2L_OK);
    o2l_mapped_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_encode_trace_envelope_and_fields),
        cmocka_unit_test(test_encode_trace_goes_ahead_of_its_observations),
        cmocka_unit_test(test_encode_generation_carries_every_field),
        cmocka_unit_test(test_encode_generation_like_types_have_no_prompt),
        cmocka_unit_test(test_encode_span_has_no_generation_fields),
        cmocka_unit_test(test_encode_event_has_no_end_time),
        cmocka_unit_test(test_encode_unknown_fields_are_absent_not_null),
        cmocka_unit_test(test_encode_escapes_strings),
        cmocka_unit_test(test_encode_escapes_at_every_offset),
        cmocka_unit_test(test_encode_oversized_event_is_trimmed),
        cmocka_unit_test(test_encode_oversized_metadata_stays_an_object),
        cmocka_unit_test(test_encode_trims_only_what_is_needed),
        cmocka_unit_test(test_encode_merges_ingestion_metadata),
        cmocka_unit_test(test_encode_batch_framing),
        cmocka_unit_test(test_encode_list_move_and_clear),
        cmocka_unit_test(test_encode_survives_allocation_failures),
    };

    o2l_mem_init();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
