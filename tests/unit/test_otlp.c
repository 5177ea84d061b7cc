/* SPDX-License-Identifier: Apache-2.0 */
/* test_otlp.c - unit tests of the OTLP decoders and answer encoders. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "test_util.h"

#include "o2l/common.h"
#include "o2l/otlp.h"
#include "o2l/otlp_util.h"
#include "o2l/span.h"
#include "google/rpc/status.pb-c.h"
#include "opentelemetry/proto/collector/trace/v1/trace_service.pb-c.h"

/* Short names for the generated protobuf-c types. */
#define PBC(x) Opentelemetry__Proto__Common__V1__##x
#define PBT(x) Opentelemetry__Proto__Trace__V1__##x

#define NOW_NS    1800000000000000000ULL
#define TRACE_HEX "5b8efff798038103d269b633813fc60c"
#define ROOT_HEX  "eee19b7ec3c1b174"
#define CHILD_HEX "eee19b7ec3c1b173"

static const uint8_t trace_bin[16] = {0x5b, 0x8e, 0xff, 0xf7, 0x98, 0x03,
                                      0x81, 0x03, 0xd2, 0x69, 0xb6, 0x33,
                                      0x81, 0x3f, 0xc6, 0x0c};
static const uint8_t root_bin[8] = {0xee, 0xe1, 0x9b, 0x7e,
                                    0xc3, 0xc1, 0xb1, 0x74};
static const uint8_t child_bin[8] = {0xee, 0xe1, 0x9b, 0x7e,
                                     0xc3, 0xc1, 0xb1, 0x73};
static const uint8_t zero_bin[16] = {0};

/*
 * Protobuf fixtures are built from protobuf-c structs; every piece is kept
 * here and released after packing.
 */
static void *pool[1024];
static size_t pool_n;

static void *keep(const void *init, size_t n)
{
    void *p = o2l_malloc(n);

    assert_non_null(p);
    assert_true(pool_n < sizeof(pool) / sizeof(pool[0]));
    memcpy(p, init, n);
    pool[pool_n++] = p;
    return p;
}

static void pool_release(void)
{
    while (pool_n > 0) {
        o2l_free(pool[--pool_n]);
    }
}

static void *keep_array(size_t n, ...)
{
    void **arr = keep(pool, n * sizeof(void *));
    va_list ap;

    va_start(ap, n);
    for (size_t i = 0; i < n; i++) {
        arr[i] = va_arg(ap, void *);
    }
    va_end(ap);
    return arr;
}

static PBC(AnyValue) * any_new(int value_case)
{
    PBC(AnyValue) init = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__INIT;
    PBC(AnyValue) *v = keep(&init, sizeof(init));

    v->value_case = value_case;
    return v;
}

static PBC(AnyValue) * any_str(const char *s)
{
    PBC(AnyValue) *v = any_new(
        OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE);

    v->string_value = (char *)s;
    return v;
}

static PBC(AnyValue) * any_int(int64_t i)
{
    PBC(AnyValue) *v =
        any_new(OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_INT_VALUE);

    v->int_value = i;
    return v;
}

static PBC(AnyValue) * any_bool(int b)
{
    PBC(AnyValue) *v =
        any_new(OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_BOOL_VALUE);

    v->bool_value = b;
    return v;
}

static PBC(AnyValue) * any_double(double d)
{
    PBC(AnyValue) *v = any_new(
        OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_DOUBLE_VALUE);

    v->double_value = d;
    return v;
}

static PBC(AnyValue) * any_bytes(const uint8_t *b, size_t n)
{
    PBC(AnyValue) *v =
        any_new(OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_BYTES_VALUE);

    v->bytes_value.data = (uint8_t *)b;
    v->bytes_value.len = n;
    return v;
}

static PBC(AnyValue) * any_array(size_t n, PBC(AnyValue) * *values)
{
    PBC(ArrayValue) init = OPENTELEMETRY__PROTO__COMMON__V1__ARRAY_VALUE__INIT;
    PBC(AnyValue) *v =
        any_new(OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_ARRAY_VALUE);

    v->array_value = keep(&init, sizeof(init));
    v->array_value->n_values = n;
    v->array_value->values = values;
    return v;
}

static PBC(AnyValue) * any_kvlist(size_t n, PBC(KeyValue) * *values)
{
    PBC(KeyValueList)
    init = OPENTELEMETRY__PROTO__COMMON__V1__KEY_VALUE_LIST__INIT;
    PBC(AnyValue) *v = any_new(
        OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_KVLIST_VALUE);

    v->kvlist_value = keep(&init, sizeof(init));
    v->kvlist_value->n_values = n;
    v->kvlist_value->values = values;
    return v;
}

static PBC(KeyValue) * kv(const char *key, PBC(AnyValue) * value)
{
    PBC(KeyValue) init = OPENTELEMETRY__PROTO__COMMON__V1__KEY_VALUE__INIT;
    PBC(KeyValue) *p = keep(&init, sizeof(init));

    p->key = (char *)key;
    p->value = value;
    return p;
}

static PBT(Span) * span_new(const uint8_t *trace, size_t trace_len,
                            const uint8_t *span, size_t span_len,
                            const char *name, uint64_t start, uint64_t end)
{
    PBT(Span) init = OPENTELEMETRY__PROTO__TRACE__V1__SPAN__INIT;
    PBT(Span) *s = keep(&init, sizeof(init));

    s->trace_id.data = (uint8_t *)trace;
    s->trace_id.len = trace_len;
    s->span_id.data = (uint8_t *)span;
    s->span_id.len = span_len;
    s->name = (char *)name;
    s->start_time_unix_nano = start;
    s->end_time_unix_nano = end;
    return s;
}

/* Packs one resource with one scope around |spans|; o2l_free() the result. */
static uint8_t *pack_spans(PBC(KeyValue) * *res_attrs, size_t n_res_attrs,
                           PBC(InstrumentationScope) * scope,
                           PBT(Span) * *spans, size_t n_spans, size_t *len)
{
    Opentelemetry__Proto__Collector__Trace__V1__ExportTraceServiceRequest req =
        OPENTELEMETRY__PROTO__COLLECTOR__TRACE__V1__EXPORT_TRACE_SERVICE_REQUEST__INIT;
    Opentelemetry__Proto__Resource__V1__Resource res =
        OPENTELEMETRY__PROTO__RESOURCE__V1__RESOURCE__INIT;
    PBT(ResourceSpans)
    rs = OPENTELEMETRY__PROTO__TRACE__V1__RESOURCE_SPANS__INIT;
    PBT(ScopeSpans) ss = OPENTELEMETRY__PROTO__TRACE__V1__SCOPE_SPANS__INIT;
    PBT(ResourceSpans) *rsp = &rs;
    PBT(ScopeSpans) *ssp = &ss;
    uint8_t *buf;

    res.attributes = res_attrs;
    res.n_attributes = n_res_attrs;
    rs.resource = &res;
    rs.scope_spans = &ssp;
    rs.n_scope_spans = 1;
    ss.scope = scope;
    ss.spans = spans;
    ss.n_spans = n_spans;
    req.resource_spans = &rsp;
    req.n_resource_spans = 1;

    *len =
        opentelemetry__proto__collector__trace__v1__export_trace_service_request__get_packed_size(
            &req);
    buf = o2l_malloc(*len ? *len : 1);
    assert_non_null(buf);
    opentelemetry__proto__collector__trace__v1__export_trace_service_request__pack(
        &req, buf);
    pool_release();
    return buf;
}

/* The protobuf twin of tests/data/otlp/basic.json. */
static uint8_t *pack_basic(size_t *len)
{
    static const uint8_t raw[4] = {0x00, 0x01, 0x02, 0xff};
    PBC(InstrumentationScope)
    scope_init = OPENTELEMETRY__PROTO__COMMON__V1__INSTRUMENTATION_SCOPE__INIT;
    PBC(InstrumentationScope) *scope = keep(&scope_init, sizeof(scope_init));
    PBT(Span__Event)
    ev_init = OPENTELEMETRY__PROTO__TRACE__V1__SPAN__EVENT__INIT;
    PBT(Span__Event) *ev1 = keep(&ev_init, sizeof(ev_init));
    PBT(Span__Event) *ev2 = keep(&ev_init, sizeof(ev_init));
    PBT(Status) st_init = OPENTELEMETRY__PROTO__TRACE__V1__STATUS__INIT;
    PBT(Status) *st = keep(&st_init, sizeof(st_init));
    PBT(Span) * root;
    PBT(Span) * child;

    scope->name = "bridge-test";
    scope->version = "1.2.3";
    scope->attributes = keep_array(1, kv("lib", any_bool(1)));
    scope->n_attributes = 1;

    root = span_new(trace_bin, 16, root_bin, 8, "agent", 1700000000123456789ULL,
                    1700000001987654321ULL);
    root->kind = 2;
    root->attributes = keep_array(
        11, kv("s", any_str("h\xc3\xa9llo")), kv("b", any_bool(0)),
        kv("i", any_int(42)), kv("big", any_int(9007199254740993LL)),
        kv("d", any_double(1.5)), kv("nan", any_double(NAN)),
        kv("arr",
           any_array(3, keep_array(3, any_str("x"), any_int(7), any_new(0)))),
        kv("kv",
           any_kvlist(
               3, keep_array(
                      3, kv("a", any_str("1")), kv("a", any_str("2")),
                      kv("n", any_kvlist(1, keep_array(1, kv("deep",
                                                             any_bool(1)))))))),
        kv("raw", any_bytes(raw, sizeof(raw))), kv("empty", any_new(0)),
        kv("s", any_str("last")));
    root->n_attributes = 11;
    ev1->time_unix_nano = 1700000000500000000ULL;
    ev1->name = "token";
    ev1->attributes = keep_array(1, kv("n", any_int(1)));
    ev1->n_attributes = 1;
    ev2->name = "no-time";
    root->events = keep_array(2, ev1, ev2);
    root->n_events = 2;

    child = span_new(trace_bin, 16, child_bin, 8, "llm", 1700000000200000000ULL,
                     1700000000900000000ULL);
    child->parent_span_id.data = (uint8_t *)root_bin;
    child->parent_span_id.len = 8;
    child->kind = 3;
    st->code = 2;
    st->message = "boom";
    child->status = st;

    return pack_spans(keep_array(1, kv("service.name", any_str("chat-app"))), 1,
                      scope, keep_array(2, root, child), 2, len);
}

static struct o2l_export *decode_ok(const void *buf, size_t len,
                                    enum o2l_otlp_format fmt)
{
    struct o2l_export *ex = NULL;
    char err[128];
    int rc;

    rc = o2l_otlp_decode(buf, len, fmt, NOW_NS, &ex, err, sizeof(err));
    if (rc != O2L_OK) {
        fail_msg("decode failed: %s (%s)", o2l_strerror(rc), err);
    }
    assert_non_null(ex);
    return ex;
}

static struct o2l_export *decode_json(const char *text)
{
    return decode_ok(text, strlen(text), O2L_OTLP_JSON);
}

/* Compact JSON text of a value, for comparisons; caller frees. */
static char *json_text(const cJSON *v)
{
    char *s = cJSON_PrintUnformatted(v);

    assert_non_null(s);
    return s;
}

static void assert_json(const cJSON *v, const char *expected)
{
    char *s = json_text(v);

    assert_string_equal(s, expected);
    cJSON_free(s);
}

static const char basic_root_attrs[] =
    "{\"b\":false,\"i\":42,\"big\":9007199254740993,\"d\":1.5,\"nan\":\"NaN\","
    "\"arr\":[\"x\",7,null],\"kv\":{\"a\":\"2\",\"n\":{\"deep\":true}},"
    "\"raw\":\"AAEC/w==\",\"s\":\"last\"}";

/* The expected decoding of basic.json and its protobuf twin. */
static void assert_basic(const struct o2l_export *ex)
{
    const struct o2l_span *root;
    const struct o2l_span *child;
    const cJSON *big;

    assert_int_equal(ex->n_spans, 2);
    assert_int_equal(ex->n_scopes, 1);
    assert_int_equal(ex->rejected, 0);
    assert_null(ex->error_message);
    assert_json(ex->scopes[0].resource_attrs,
                "{\"service.name\":\"chat-app\"}");
    assert_string_equal(ex->scopes[0].name, "bridge-test");
    assert_string_equal(ex->scopes[0].version, "1.2.3");
    assert_json(ex->scopes[0].attrs, "{\"lib\":true}");

    root = &ex->spans[0];
    assert_string_equal(root->trace_id, TRACE_HEX);
    assert_string_equal(root->span_id, ROOT_HEX);
    assert_string_equal(root->parent_id, "");
    assert_string_equal(root->name, "agent");
    assert_int_equal(root->kind, 2);
    assert_true(root->start_ns == 1700000000123456789ULL);
    assert_true(root->end_ns == 1700000001987654321ULL);
    assert_int_equal(root->status_code, O2L_STATUS_UNSET);
    assert_null(root->status_message);
    assert_int_equal(root->scope, 0);
    assert_json(root->attrs, basic_root_attrs);
    big = cJSON_GetObjectItemCaseSensitive(root->attrs, "big");
    assert_true(cJSON_IsRaw(big));
    assert_string_equal(big->valuestring, "9007199254740993");
    assert_int_equal(root->n_events, 2);
    assert_string_equal(root->events[0].name, "token");
    assert_true(root->events[0].time_ns == 1700000000500000000ULL);
    assert_json(root->events[0].attrs, "{\"n\":1}");
    assert_string_equal(root->events[1].name, "no-time");
    assert_true(root->events[1].time_ns == root->start_ns);
    assert_json(root->events[1].attrs, "{}");

    child = &ex->spans[1];
    assert_string_equal(child->span_id, CHILD_HEX);
    assert_string_equal(child->parent_id, ROOT_HEX);
    assert_string_equal(child->name, "llm");
    assert_int_equal(child->kind, 3);
    assert_int_equal(child->status_code, O2L_STATUS_ERROR);
    assert_string_equal(child->status_message, "boom");
    assert_int_equal(child->n_events, 0);
    assert_json(child->attrs, "{}");
}

static void test_otlp_protobuf_and_json_agree(void **state)
{
    struct o2l_export *a;
    struct o2l_export *b;
    uint8_t *pb;
    char *json;
    size_t pb_len;
    size_t json_len;

    (void)state;
    pb = pack_basic(&pb_len);
    json = test_read_data("otlp", "basic.json", &json_len);
    a = decode_ok(pb, pb_len, O2L_OTLP_PROTOBUF);
    b = decode_ok(json, json_len, O2L_OTLP_JSON);
    assert_basic(a);
    assert_basic(b);
    o2l_export_free(a);
    o2l_export_free(b);
    o2l_free(pb);
    o2l_free(json);
}

/* basic.pb is pack_basic's output, kept for tools that post a file. */
static void test_otlp_protobuf_fixture_file(void **state)
{
    struct o2l_export *ex;
    uint8_t *pb;
    char *file;
    size_t pb_len;
    size_t file_len;

    (void)state;
    pb = pack_basic(&pb_len);
    file = test_read_data("otlp", "basic.pb", &file_len);
    assert_int_equal(file_len, pb_len);
    assert_memory_equal(file, pb, pb_len);
    assert_int_equal(o2l_otlp_sniff(file, file_len), O2L_OTLP_PROTOBUF);
    ex = decode_ok(file, file_len, O2L_OTLP_PROTOBUF);
    assert_basic(ex);
    o2l_export_free(ex);
    o2l_free(pb);
    o2l_free(file);
}

static void test_otlp_json_accepts_snake_case(void **state)
{
    struct o2l_export *ex;
    char *json;
    size_t len;

    (void)state;
    json = test_read_data("otlp", "basic_snake.json", &len);
    ex = decode_ok(json, len, O2L_OTLP_JSON);
    assert_basic(ex);
    o2l_export_free(ex);
    o2l_free(json);
}

static void test_otlp_json_accepts_legacy_library_spans(void **state)
{
    struct o2l_export *ex;

    (void)state;
    ex = decode_json(
        "{\"resourceSpans\":[{\"instrumentationLibrarySpans\":[{"
        "\"instrumentationLibrary\":{\"name\":\"old\"},\"spans\":[{"
        "\"traceId\":\"" TRACE_HEX "\",\"spanId\":\"" ROOT_HEX "\"}]}]}]}");
    assert_int_equal(ex->n_spans, 1);
    assert_string_equal(ex->scopes[0].name, "old");
    assert_string_equal(ex->scopes[0].version, "");
    assert_json(ex->scopes[0].resource_attrs, "{}");
    o2l_export_free(ex);
}

static void test_otlp_json_id_forms(void **state)
{
    static const char *const forms[][2] = {
        {TRACE_HEX, ROOT_HEX},
        {"5B8EFFF798038103D269B633813FC60C", "EEE19B7EC3C1B174"},
        {"W47/95gDgQPSabYzgT/GDA==", "7uGbfsPBsXQ="},
        {"W47/95gDgQPSabYzgT/GDA", "7uGbfsPBsXQ"},
        {"W47_95gDgQPSabYzgT_GDA==", "7uGbfsPBsXQ="},
        {"W47_95gDgQPSabYzgT_GDA", "7uGbfsPBsXQ"},
    };
    char json[512];

    (void)state;
    for (size_t i = 0; i < O2L_ARRAY_LEN(forms); i++) {
        struct o2l_export *ex;

        snprintf(json, sizeof(json),
                 "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[{"
                 "\"traceId\":\"%s\",\"spanId\":\"%s\",\"parentSpanId\":\"%s"
                 "\"}]}]}]}",
                 forms[i][0], forms[i][1], forms[i][1]);
        ex = decode_json(json);
        assert_int_equal(ex->n_spans, 1);
        assert_int_equal(ex->rejected, 0);
        assert_string_equal(ex->spans[0].trace_id, TRACE_HEX);
        assert_string_equal(ex->spans[0].span_id, ROOT_HEX);
        assert_string_equal(ex->spans[0].parent_id, ROOT_HEX);
        o2l_export_free(ex);
    }
}

static void test_otlp_bad_ids_rejected_one_by_one(void **state)
{
    struct o2l_export *ex;

    (void)state;
    ex = decode_json(
        "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":["
        "{\"traceId\":\"" TRACE_HEX "\",\"spanId\":\"" ROOT_HEX
        "\",\"name\":\"good1\"},"
        "{\"traceId\":\"5b8efff798038103d269b633813fc6\",\"spanId\":\"" ROOT_HEX
        "\",\"name\":\"short \\\"trace\\\"\"},"
        "{\"traceId\":\"" TRACE_HEX "\",\"spanId\":\"0000000000000000\"},"
        "{\"traceId\":\"00000000000000000000000000000000\",\"spanId\":"
        "\"" ROOT_HEX "\"},"
        "{\"traceId\":\"" TRACE_HEX "\",\"spanId\":\"" CHILD_HEX
        "\",\"parentSpanId\":\"abc\"},"
        "{\"traceId\":\"" TRACE_HEX "\",\"spanId\":\"zzzzzzzzzzzzzzzz\"},"
        "{\"traceId\":\"" TRACE_HEX "\"},"
        "{\"traceId\":7,\"spanId\":\"" ROOT_HEX "\"},"
        "{\"traceId\":\"" TRACE_HEX "\",\"spanId\":\"" CHILD_HEX
        "\",\"name\":\"good2\"}"
        "]}]}]}");
    assert_int_equal(ex->n_spans, 2);
    assert_int_equal(ex->rejected, 7);
    assert_string_equal(ex->spans[0].name, "good1");
    assert_string_equal(ex->spans[1].name, "good2");
    assert_string_equal(ex->error_message,
                        "span 1 (name \"short \"trace\"\"): invalid trace id");
    o2l_export_free(ex);
}

static void test_otlp_protobuf_bad_and_zero_ids(void **state)
{
    struct o2l_export *ex;
    uint8_t *pb;
    size_t len;
    PBT(Status) st_init = OPENTELEMETRY__PROTO__TRACE__V1__STATUS__INIT;
    PBT(Span) * unnamed;

    (void)state;
    /* No name and an empty status message: absent fields on the wire. */
    unnamed = span_new(trace_bin, 16, child_bin, 8, "", 0, 0);
    unnamed->status = keep(&st_init, sizeof(st_init));
    unnamed->status->code = 1;
    pb = pack_spans(
        NULL, 0, NULL,
        keep_array(5, span_new(zero_bin, 16, root_bin, 8, "z", 1, 2),
                   span_new(trace_bin, 8, root_bin, 8, "w", 1, 2),
                   span_new(trace_bin, 16, zero_bin, 8, "s", 1, 2),
                   span_new(trace_bin, 16, root_bin, 8, "ok", 1, 2), unnamed),
        5, &len);
    ex = decode_ok(pb, len, O2L_OTLP_PROTOBUF);
    assert_int_equal(ex->n_spans, 2);
    assert_int_equal(ex->rejected, 3);
    assert_string_equal(ex->spans[0].name, "ok");
    assert_string_equal(ex->spans[1].name, "");
    assert_int_equal(ex->spans[1].status_code, O2L_STATUS_OK);
    assert_null(ex->spans[1].status_message);
    assert_true(ex->spans[1].start_ns == NOW_NS);
    assert_string_equal(ex->scopes[0].name, "");
    assert_json(ex->scopes[0].resource_attrs, "{}");
    assert_string_equal(ex->error_message,
                        "span 0 (name \"z\"): all-zero trace id");
    o2l_export_free(ex);
    o2l_free(pb);
}

static void test_otlp_parent_id_forms(void **state)
{
    struct o2l_export *ex;
    PBT(Span) * spans[4];
    uint8_t *pb;
    size_t len;

    (void)state;
    ex = decode_json(
        "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":["
        "{\"traceId\":\"" TRACE_HEX "\",\"spanId\":\"0000000000000001\"},"
        "{\"traceId\":\"" TRACE_HEX "\",\"spanId\":\"0000000000000002\","
        "\"parentSpanId\":\"\"},"
        "{\"traceId\":\"" TRACE_HEX "\",\"spanId\":\"0000000000000003\","
        "\"parentSpanId\":\"0000000000000000\"},"
        "{\"traceId\":\"" TRACE_HEX "\",\"spanId\":\"0000000000000004\","
        "\"parent_span_id\":\"AAAAAAAAAAA=\"},"
        "{\"traceId\":\"" TRACE_HEX "\",\"spanId\":\"0000000000000005\","
        "\"parentSpanId\":null},"
        "{\"traceId\":\"" TRACE_HEX "\",\"spanId\":\"0000000000000006\","
        "\"parentSpanId\":\"7uGbfsPBsXQ\"}"
        "]}]}]}");
    assert_int_equal(ex->n_spans, 6);
    for (size_t i = 0; i < 5; i++) {
        assert_string_equal(ex->spans[i].parent_id, "");
    }
    assert_string_equal(ex->spans[5].parent_id, ROOT_HEX);
    o2l_export_free(ex);

    spans[0] = span_new(trace_bin, 16, root_bin, 8, "a", 1, 2);
    spans[1] = span_new(trace_bin, 16, child_bin, 8, "b", 1, 2);
    spans[1]->parent_span_id.data = (uint8_t *)zero_bin;
    spans[1]->parent_span_id.len = 8;
    /* A trace id of the wrong length. */
    spans[2] = span_new(root_bin, 8, child_bin, 8, "c", 1, 2);
    spans[3] = span_new(trace_bin, 16, child_bin, 8, "d", 1, 2);
    spans[3]->parent_span_id.data = (uint8_t *)trace_bin;
    spans[3]->parent_span_id.len = 16; /* wrong length */
    pb = pack_spans(NULL, 0, NULL,
                    keep_array(4, spans[0], spans[1], spans[2], spans[3]), 4,
                    &len);
    ex = decode_ok(pb, len, O2L_OTLP_PROTOBUF);
    assert_int_equal(ex->n_spans, 2);
    assert_int_equal(ex->rejected, 2);
    assert_string_equal(ex->spans[0].parent_id, "");
    assert_string_equal(ex->spans[1].parent_id, "");
    assert_string_equal(ex->error_message,
                        "span 2 (name \"c\"): invalid trace id");
    o2l_export_free(ex);
    o2l_free(pb);

    /* Only the first reason is kept; a parent of the wrong length. */
    ex = decode_json("{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":["
                     "{\"traceId\":\"" TRACE_HEX "\",\"spanId\":\"" ROOT_HEX
                     "\",\"parentSpanId\":\"" TRACE_HEX "\"}]}]}]}");
    assert_int_equal(ex->n_spans, 0);
    assert_int_equal(ex->rejected, 1);
    assert_string_equal(ex->error_message,
                        "span 0 (name \"\"): invalid parent span id");
    o2l_export_free(ex);
}

/* One span with |attrs| as its attribute list and the given times. */
static struct o2l_export *decode_span_json(const char *fields)
{
    char json[12288];

    snprintf(json, sizeof(json),
             "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[{"
             "\"traceId\":\"" TRACE_HEX "\",\"spanId\":\"" ROOT_HEX "\"%s%s}"
             "]}]}]}",
             fields[0] ? "," : "", fields);
    return decode_json(json);
}

static void test_otlp_json_int64_exact(void **state)
{
    struct o2l_export *ex;
    const cJSON *v;

    (void)state;
    ex = decode_span_json(
        "\"startTimeUnixNano\":1700000000123456789,"
        "\"endTimeUnixNano\":\"18446744073709551615\","
        "\"attributes\":["
        "{\"key\":\"a\",\"value\":{\"intValue\":9007199254740993}},"
        "{\"key\":\"b\",\"value\":{\"intValue\":\"-9223372036854775808\"}},"
        "{\"key\":\"c\",\"value\":{\"intValue\":9223372036854775807}},"
        "{\"key\":\"d\",\"value\":{\"intValue\":-42}},"
        "{\"key\":\"d2\",\"value\":{\"intValue\":\"999999999999999\"}},"
        "{\"key\":\"e\",\"value\":{\"intValue\":\"9007199254740992\"}},"
        "{\"key\":\"f\",\"value\":{\"intValue\":\"9223372036854775808\"}},"
        "{\"key\":\"g\",\"value\":{\"intValue\":1.5}},"
        "{\"key\":\"h\",\"value\":{\"doubleValue\":12345678901234567890}}"
        "]");
    assert_true(ex->spans[0].start_ns == 1700000000123456789ULL);
    assert_true(ex->spans[0].end_ns == UINT64_MAX);
    v = cJSON_GetObjectItemCaseSensitive(ex->spans[0].attrs, "a");
    assert_true(cJSON_IsRaw(v));
    assert_string_equal(v->valuestring, "9007199254740993");
    v = cJSON_GetObjectItemCaseSensitive(ex->spans[0].attrs, "b");
    assert_true(cJSON_IsRaw(v));
    assert_string_equal(v->valuestring, "-9223372036854775808");
    v = cJSON_GetObjectItemCaseSensitive(ex->spans[0].attrs, "d2");
    assert_true(cJSON_IsNumber(v));
    v = cJSON_GetObjectItemCaseSensitive(ex->spans[0].attrs, "c");
    assert_string_equal(v->valuestring, "9223372036854775807");
    /* cJSON prints only 15 digits exactly, so 2^53 is kept as text too. */
    v = cJSON_GetObjectItemCaseSensitive(ex->spans[0].attrs, "e");
    assert_true(cJSON_IsRaw(v));
    /* Out of range and fractional integers are dropped. */
    assert_json(ex->spans[0].attrs,
                "{\"a\":9007199254740993,\"b\":-9223372036854775808,"
                "\"c\":9223372036854775807,\"d\":-42,\"d2\":999999999999999,"
                "\"e\":9007199254740992,"
                "\"h\":1.2345678901234567e+19}");
    o2l_export_free(ex);
}

static void test_otlp_double_non_finite_as_strings(void **state)
{
    struct o2l_export *ex;
    uint8_t *pb;
    size_t len;
    PBT(Span) * s;

    (void)state;
    ex = decode_span_json(
        "\"attributes\":["
        "{\"key\":\"n\",\"value\":{\"doubleValue\":\"NaN\"}},"
        "{\"key\":\"p\",\"value\":{\"doubleValue\":\"Infinity\"}},"
        "{\"key\":\"m\",\"value\":{\"double_value\":\"-Infinity\"}},"
        "{\"key\":\"x\",\"value\":{\"doubleValue\":\"2.5\"}},"
        "{\"key\":\"bad\",\"value\":{\"doubleValue\":\"nope\"}}]");
    assert_json(ex->spans[0].attrs, "{\"n\":\"NaN\",\"p\":\"Infinity\","
                                    "\"m\":\"-Infinity\",\"x\":2.5}");
    o2l_export_free(ex);

    s = span_new(trace_bin, 16, root_bin, 8, "d", 1, 2);
    s->attributes =
        keep_array(3, kv("n", any_double(NAN)), kv("p", any_double(INFINITY)),
                   kv("m", any_double(-INFINITY)));
    s->n_attributes = 3;
    pb = pack_spans(NULL, 0, NULL, keep_array(1, s), 1, &len);
    ex = decode_ok(pb, len, O2L_OTLP_PROTOBUF);
    assert_json(ex->spans[0].attrs,
                "{\"n\":\"NaN\",\"p\":\"Infinity\",\"m\":\"-Infinity\"}");
    o2l_export_free(ex);
    o2l_free(pb);
}

static void test_otlp_bytes_become_padded_base64(void **state)
{
    struct o2l_export *ex;

    (void)state;
    ex = decode_span_json(
        "\"attributes\":["
        "{\"key\":\"u\",\"value\":{\"bytesValue\":\"-_8\"}},"
        "{\"key\":\"s\",\"value\":{\"bytesValue\":\"+/8=\"}},"
        "{\"key\":\"e\",\"value\":{\"bytesValue\":\"\"}},"
        "{\"key\":\"bad\",\"value\":{\"bytesValue\":\"***\"}}]");
    assert_json(ex->spans[0].attrs,
                "{\"u\":\"+/8=\",\"s\":\"+/8=\",\"e\":\"\"}");
    o2l_export_free(ex);
}

static void test_otlp_nested_values_and_repeated_keys(void **state)
{
    struct o2l_export *ex;
    char json[8192];
    size_t off;

    (void)state;
    ex = decode_span_json(
        "\"attributes\":[{\"key\":\"v\",\"value\":{\"arrayValue\":{\"values\":["
        "{\"arrayValue\":{\"values\":[{\"boolValue\":true},{}]}},"
        "{\"kvlistValue\":{\"values\":[{\"key\":\"k\",\"value\":{\"arrayValue\""
        ":{}}},{\"key\":\"z\",\"value\":{}},{\"key\":\"k\",\"value\":"
        "{\"intValue\":\"3\"}}]}},"
        "{\"kvlistValue\":{}}]}}},"
        "{\"key\":\"notvalue\",\"value\":\"text\"},"
        "{\"key\":\"nokey\"},{\"value\":{\"stringValue\":\"x\"}}]");
    assert_json(ex->spans[0].attrs, "{\"v\":[[true,null],{\"k\":3},{}]}");
    o2l_export_free(ex);

    /* Enough keys to take the sorting path of the repeated-key check. */
    off = (size_t)snprintf(json, sizeof(json), "\"attributes\":[");
    for (int i = 0; i < 40; i++) {
        off +=
            (size_t)snprintf(json + off, sizeof(json) - off,
                             "%s{\"key\":\"k%d\",\"value\":{\"intValue\":%d}}",
                             i ? "," : "", i % 20, i);
    }
    snprintf(json + off, sizeof(json) - off, "]");
    ex = decode_span_json(json);
    assert_int_equal(cJSON_GetArraySize(ex->spans[0].attrs), 20);
    for (int i = 0; i < 20; i++) {
        char key[8];
        int64_t v = 0;

        snprintf(key, sizeof(key), "k%d", i);
        assert_true(o2l_json_get_int64(
            cJSON_GetObjectItemCaseSensitive(ex->spans[0].attrs, key), 0, &v));
        assert_int_equal(v, i + 20);
    }
    o2l_export_free(ex);
}

static void test_otlp_invalid_utf8_and_nul_become_fffd(void **state)
{
    struct o2l_export *ex;
    PBT(Span) * s;
    uint8_t *pb;
    size_t len;
    int patched = 0;

    (void)state;
    /* JSON: escaped NUL, lone surrogates, raw bad bytes, raw NUL. */
    {
        static const char json[] =
            "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[{"
            "\"traceId\":\"" TRACE_HEX "\",\"spanId\":\"" ROOT_HEX "\","
            "\"name\":\"a\\u0000b\\ud800c\\udc00\\ud83d\\ude00\","
            "\"attributes\":[{\"key\":\"k\xff\",\"value\":{\"stringValue\":"
            "\"x\xc3\x28\xe2\x82 y\x00z\"}}],"
            "\"status\":{\"code\":2,\"message\":\"\xed\xa0\x80\"}}]}]}]}";

        ex = decode_ok(json, sizeof(json) - 1, O2L_OTLP_JSON);
    }
    assert_string_equal(ex->spans[0].name, "a\xef\xbf\xbd"
                                           "b\xef\xbf\xbd"
                                           "c\xef\xbf\xbd\xf0\x9f\x98\x80");
    assert_json(ex->spans[0].attrs, "{\"k\xef\xbf\xbd\":\"x\xef\xbf\xbd(\xef"
                                    "\xbf\xbd y\xef\xbf\xbdz\"}");
    assert_string_equal(ex->spans[0].status_message,
                        "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
    assert_int_equal(ex->spans[0].status_code, O2L_STATUS_ERROR);
    o2l_export_free(ex);

    /* Protobuf: protobuf-c passes bytes through; '#' is patched to NUL. */
    s = span_new(trace_bin, 16, root_bin, 8, "n#m\xc0\xaf", 1, 2);
    s->attributes = keep_array(1, kv("\xf5key", any_str("v\xe0\x80")));
    s->n_attributes = 1;
    pb = pack_spans(NULL, 0, NULL, keep_array(1, s), 1, &len);
    for (size_t i = 0; i + 3 <= len; i++) {
        if (memcmp(pb + i, "n#m", 3) == 0) {
            pb[i + 1] = 0;
            patched++;
        }
    }
    assert_int_equal(patched, 1);
    ex = decode_ok(pb, len, O2L_OTLP_PROTOBUF);
    assert_string_equal(ex->spans[0].name,
                        "n\xef\xbf\xbdm\xef\xbf\xbd\xef\xbf\xbd");
    assert_json(ex->spans[0].attrs,
                "{\"\xef\xbf\xbdkey\":\"v\xef\xbf\xbd\xef\xbf\xbd\"}");
    o2l_export_free(ex);
    o2l_free(pb);
}

static void test_otlp_time_defaults(void **state)
{
    struct o2l_export *ex;

    (void)state;
    ex = decode_json(
        "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":["
        "{\"traceId\":\"" TRACE_HEX "\",\"spanId\":\"0000000000000001\","
        "\"startTimeUnixNano\":\"100\"},"
        "{\"traceId\":\"" TRACE_HEX "\",\"spanId\":\"0000000000000002\","
        "\"startTimeUnixNano\":\"0\",\"endTimeUnixNano\":200},"
        "{\"traceId\":\"" TRACE_HEX "\",\"spanId\":\"0000000000000003\","
        "\"startTimeUnixNano\":0,\"events\":[{\"name\":\"e\"},"
        "{\"name\":\"f\",\"timeUnixNano\":\"0\"},{\"timeUnixNano\":\"7\"}]},"
        "{\"traceId\":\"" TRACE_HEX "\",\"spanId\":\"0000000000000004\","
        "\"startTimeUnixNano\":\"300\",\"endTimeUnixNano\":\"400\","
        "\"events\":[{}]}"
        "]}]}]}");
    assert_int_equal(ex->n_spans, 4);
    assert_true(ex->spans[0].start_ns == 100 && ex->spans[0].end_ns == 100);
    assert_true(ex->spans[1].start_ns == 200 && ex->spans[1].end_ns == 200);
    assert_true(ex->spans[2].start_ns == NOW_NS &&
                ex->spans[2].end_ns == NOW_NS);
    assert_int_equal(ex->spans[2].n_events, 3);
    assert_true(ex->spans[2].events[0].time_ns == NOW_NS);
    assert_true(ex->spans[2].events[1].time_ns == NOW_NS);
    assert_true(ex->spans[2].events[2].time_ns == 7);
    assert_string_equal(ex->spans[2].events[2].name, "");
    assert_true(ex->spans[3].events[0].time_ns == 300);
    assert_true(ex->spans[3].end_ns == 400);
    o2l_export_free(ex);
}

static void test_otlp_duplicates_collapse_to_last(void **state)
{
    struct o2l_export *ex;

    (void)state;
    ex = decode_json(
        "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":["
        "{\"traceId\":\"" TRACE_HEX "\",\"spanId\":\"" ROOT_HEX
        "\",\"name\":\"first\",\"attributes\":[{\"key\":\"a\",\"value\":"
        "{\"intValue\":1}}],\"events\":[{\"name\":\"e\"}]},"
        "{\"traceId\":\"" TRACE_HEX "\",\"spanId\":\"" CHILD_HEX
        "\",\"name\":\"other\"},"
        "{\"traceId\":\"" TRACE_HEX "\",\"spanId\":\"" ROOT_HEX
        "\",\"name\":\"second\"}]},"
        "{\"scope\":{\"name\":\"s2\"},\"spans\":["
        "{\"traceId\":\"" TRACE_HEX "\",\"spanId\":\"" ROOT_HEX
        "\",\"name\":\"third\"}]}]}]}");
    assert_int_equal(ex->n_spans, 2);
    assert_int_equal(ex->rejected, 0);
    assert_string_equal(ex->spans[0].name, "other");
    assert_string_equal(ex->spans[1].name, "third");
    assert_int_equal(ex->spans[1].scope, 1);
    assert_int_equal(ex->n_scopes, 2);
    assert_string_equal(ex->scopes[1].name, "s2");
    o2l_export_free(ex);
}

static void test_otlp_scope_per_resource_and_scope(void **state)
{
    struct o2l_export *ex;

    (void)state;
    ex = decode_json(
        "{\"resourceSpans\":["
        "{\"resource\":{\"attributes\":[{\"key\":\"r\",\"value\":"
        "{\"intValue\":1}}]},\"scopeSpans\":["
        "{\"scope\":{\"name\":\"a\"},\"spans\":[{\"traceId\":\"" TRACE_HEX
        "\",\"spanId\":\"0000000000000001\"}]},"
        "{\"scope\":{\"name\":\"empty\"},\"spans\":[]},"
        "{\"scope\":{\"name\":\"b\"},\"spans\":[{\"traceId\":\"" TRACE_HEX
        "\",\"spanId\":\"0000000000000002\"}]}]},"
        "{\"resource\":{\"attributes\":[{\"key\":\"r\",\"value\":"
        "{\"intValue\":2}}]},\"scopeSpans\":["
        "{\"scope\":{\"name\":\"a\"},\"spans\":[{\"traceId\":\"" TRACE_HEX
        "\",\"spanId\":\"0000000000000003\"}]}]}]}");
    assert_int_equal(ex->n_scopes, 3);
    assert_int_equal(ex->n_spans, 3);
    assert_string_equal(ex->scopes[0].name, "a");
    assert_string_equal(ex->scopes[1].name, "b");
    assert_string_equal(ex->scopes[2].name, "a");
    assert_json(ex->scopes[1].resource_attrs, "{\"r\":1}");
    assert_json(ex->scopes[2].resource_attrs, "{\"r\":2}");
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(ex->spans[i].scope, i);
    }
    o2l_export_free(ex);
}

static void test_otlp_enums_as_numbers_or_names(void **state)
{
    struct o2l_export *ex;

    (void)state;
    ex = decode_json(
        "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":["
        "{\"traceId\":\"" TRACE_HEX "\",\"spanId\":\"0000000000000001\","
        "\"kind\":\"SPAN_KIND_CLIENT\",\"status\":{\"code\":\"STATUS_CODE_OK\","
        "\"message\":\"\"}},"
        "{\"traceId\":\"" TRACE_HEX "\",\"spanId\":\"0000000000000002\","
        "\"kind\":5,\"status\":{\"code\":2}},"
        "{\"traceId\":\"" TRACE_HEX "\",\"spanId\":\"0000000000000003\","
        "\"kind\":\"SPAN_KIND_NOPE\",\"status\":{\"code\":\"ERROR\"}}"
        "]}]}]}");
    assert_int_equal(ex->spans[0].kind, 3);
    assert_int_equal(ex->spans[0].status_code, O2L_STATUS_OK);
    assert_null(ex->spans[0].status_message);
    assert_int_equal(ex->spans[1].kind, 5);
    assert_int_equal(ex->spans[1].status_code, O2L_STATUS_ERROR);
    assert_int_equal(ex->spans[2].kind, 0);
    assert_int_equal(ex->spans[2].status_code, O2L_STATUS_UNSET);
    o2l_export_free(ex);
}

static void expect_parse_error(const void *buf, size_t len,
                               enum o2l_otlp_format fmt)
{
    struct o2l_export *ex = NULL;
    char err[128] = "";
    int rc;

    rc = o2l_otlp_decode(buf, len, fmt, NOW_NS, &ex, err, sizeof(err));
    assert_int_equal(rc, O2L_EPARSE);
    assert_null(ex);
    assert_true(err[0] != '\0');
}

/* Prepends a length-delimited |field| around buf[*start, len). */
static void wrap_field(uint8_t *buf, size_t len, size_t *start, int field)
{
    size_t inner = len - *start;
    uint8_t hdr[12];
    size_t h = 0;

    hdr[h++] = (uint8_t)(field << 3 | 2);
    do {
        uint8_t b = inner & 0x7f;

        inner >>= 7;
        hdr[h++] = (uint8_t)(b | (inner ? 0x80 : 0));
    } while (inner);
    assert_true(*start >= h);
    *start -= h;
    memcpy(buf + *start, hdr, h);
}

static void test_otlp_garbage_is_parse_error(void **state)
{
    static const char *const bad_json[] = {
        "",
        "{",
        "[]",
        "\"text\"",
        "{\"resourceSpans\":{}}",
        "{\"resourceSpans\":[1]}",
        "{\"resourceSpans\":[{\"scopeSpans\":{}}]}",
        "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[1]}]}]}",
        "{\"resourceSpans\":[{\"resource\":[]}]}",
        "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[{\"traceId\":"
        "\"" TRACE_HEX "\",\"spanId\":\"" ROOT_HEX
        "\",\"attributes\":{}}]}]}]}",
        "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[{\"traceId\":"
        "\"" TRACE_HEX "\",\"spanId\":\"" ROOT_HEX
        "\",\"events\":[{\"attributes\":3}]}]}]}]}",
        "{\"resourceSpans\":[]} trailing",
        "{\"a\":\"\\ud800\\u12\"}",
    };
    uint8_t junk[512];
    uint8_t *pb;
    uint8_t *deep;
    size_t len;
    uint32_t x = 12345;
    size_t n;

    (void)state;
    for (size_t i = 0; i < O2L_ARRAY_LEN(bad_json); i++) {
        expect_parse_error(bad_json[i], strlen(bad_json[i]), O2L_OTLP_JSON);
    }
    expect_parse_error("{\"a\":1}\0{", 9, O2L_OTLP_JSON);

    /* Random bytes: any answer but a crash; most are parse errors. */
    for (int round = 0; round < 200; round++) {
        struct o2l_export *ex = NULL;
        int rc;

        for (size_t i = 0; i < sizeof(junk); i++) {
            x = x * 1103515245u + 12345u;
            junk[i] = (uint8_t)(x >> 16);
        }
        rc = o2l_otlp_decode(junk, (size_t)round * 2 + 1, O2L_OTLP_PROTOBUF,
                             NOW_NS, &ex, NULL, 0);
        assert_true(rc == O2L_OK || rc == O2L_EPARSE);
        o2l_export_free(ex);
        rc = o2l_otlp_decode(junk, (size_t)round * 2 + 1, O2L_OTLP_JSON, NOW_NS,
                             &ex, NULL, 0);
        assert_int_equal(rc, O2L_EPARSE);
    }

    /* Every cut of a valid body is handled. */
    pb = pack_basic(&len);
    for (size_t cut = 0; cut < len; cut++) {
        struct o2l_export *ex = NULL;
        int rc =
            o2l_otlp_decode(pb, cut, O2L_OTLP_PROTOBUF, NOW_NS, &ex, NULL, 0);

        assert_true(rc == O2L_OK || rc == O2L_EPARSE);
        o2l_export_free(ex);
    }
    o2l_free(pb);
    expect_parse_error("\x0a\x05\x12", 3, O2L_OTLP_PROTOBUF);
    expect_parse_error("{\"resourceSpans\":[]}", 20, O2L_OTLP_PROTOBUF);

    /*
     * 100001 nested values built inside out, alternating AnyValue
     * (array_value = 5) and ArrayValue (values = 1), then wrapped as
     * KeyValue.value (2) inside Resource (1), ResourceSpans (1) and the
     * request (1). protobuf-c alone would recurse once per level.
     */
    n = 100001;
    deep = o2l_malloc(n * 4 + 64);
    assert_non_null(deep);
    len = n * 4 + 64;
    for (size_t levels = 11; levels <= n; levels += n - 11) {
        static const uint8_t outer[] = {2, 1, 1, 1};
        struct o2l_export *ex = NULL;
        size_t start = len;

        for (size_t level = 0; level < levels; level++) {
            wrap_field(deep, len, &start, level % 2 == 0 ? 5 : 1);
        }
        for (size_t k = 0; k < sizeof(outer); k++) {
            wrap_field(deep, len, &start, outer[k]);
        }
        if (levels < n) {
            /* The same shape, shallow: a valid request without spans. */
            ex = decode_ok(deep + start, len - start, O2L_OTLP_PROTOBUF);
            assert_int_equal(ex->n_spans, 0);
            o2l_export_free(ex);
        } else {
            expect_parse_error(deep + start, len - start, O2L_OTLP_PROTOBUF);
        }
    }
    o2l_free(deep);
}

static void test_otlp_deep_json_is_parse_error(void **state)
{
    size_t levels = 5000;
    char *json = o2l_malloc(levels * 2 + 64);
    size_t off = 0;

    (void)state;
    assert_non_null(json);
    off += (size_t)snprintf(json, 32, "{\"resourceSpans\":");
    for (size_t i = 0; i < levels; i++) {
        json[off++] = '[';
    }
    for (size_t i = 0; i < levels; i++) {
        json[off++] = ']';
    }
    json[off++] = '}';
    expect_parse_error(json, off, O2L_OTLP_JSON);
    o2l_free(json);
}

static void test_otlp_empty_export(void **state)
{
    static const char *const empties[] = {
        "{}", " {\"resourceSpans\":[]} ", "{\"resource_spans\":null}",
        "\xef\xbb\xbf{\"resourceSpans\":[{\"scopeSpans\":[]}]}"};
    struct o2l_export *ex;

    (void)state;
    for (size_t i = 0; i < O2L_ARRAY_LEN(empties); i++) {
        ex = decode_json(empties[i]);
        assert_int_equal(ex->n_spans, 0);
        assert_int_equal(ex->rejected, 0);
        o2l_export_free(ex);
    }
    ex = decode_ok("", 0, O2L_OTLP_PROTOBUF);
    assert_int_equal(ex->n_spans, 0);
    assert_int_equal(ex->n_scopes, 0);
    o2l_export_free(ex);
}

static void test_otlp_sniff(void **state)
{
    (void)state;
    assert_int_equal(o2l_otlp_sniff(" \n\t{}", 5), O2L_OTLP_JSON);
    assert_int_equal(o2l_otlp_sniff("{", 1), O2L_OTLP_JSON);
    assert_int_equal(o2l_otlp_sniff("\x0a\x00", 2), O2L_OTLP_PROTOBUF);
    assert_int_equal(o2l_otlp_sniff("", 0), O2L_OTLP_PROTOBUF);
    assert_int_equal(o2l_otlp_sniff("   ", 3), O2L_OTLP_PROTOBUF);
}

static void test_otlp_response_round_trip(void **state)
{
    Opentelemetry__Proto__Collector__Trace__V1__ExportTraceServiceResponse *r;
    Google__Rpc__Status *st;
    cJSON *root;
    char *out = NULL;
    size_t len = 0;

    (void)state;
    assert_int_equal(o2l_otlp_encode_response(O2L_OTLP_PROTOBUF, 3,
                                              "span 0: bad", &out, &len),
                     O2L_OK);
    r = opentelemetry__proto__collector__trace__v1__export_trace_service_response__unpack(
        NULL, len, (uint8_t *)out);
    assert_non_null(r);
    assert_non_null(r->partial_success);
    assert_int_equal(r->partial_success->rejected_spans, 3);
    assert_string_equal(r->partial_success->error_message, "span 0: bad");
    opentelemetry__proto__collector__trace__v1__export_trace_service_response__free_unpacked(
        r, NULL);
    o2l_free(out);

    assert_int_equal(
        o2l_otlp_encode_response(O2L_OTLP_PROTOBUF, 0, "ignored", &out, &len),
        O2L_OK);
    assert_int_equal(len, 0);
    r = opentelemetry__proto__collector__trace__v1__export_trace_service_response__unpack(
        NULL, len, (uint8_t *)out);
    assert_non_null(r);
    assert_null(r->partial_success);
    opentelemetry__proto__collector__trace__v1__export_trace_service_response__free_unpacked(
        r, NULL);
    o2l_free(out);

    assert_int_equal(
        o2l_otlp_encode_response(O2L_OTLP_JSON, 2, "bad \xff id", &out, &len),
        O2L_OK);
    assert_int_equal(len, strlen(out));
    assert_string_equal(out, "{\"partialSuccess\":{\"rejectedSpans\":\"2\","
                             "\"errorMessage\":\"bad \xef\xbf\xbd id\"}}");
    o2l_free(out);
    assert_int_equal(
        o2l_otlp_encode_response(O2L_OTLP_JSON, 0, NULL, &out, &len), O2L_OK);
    assert_string_equal(out, "{}");
    o2l_free(out);

    assert_int_equal(o2l_otlp_encode_status(O2L_OTLP_PROTOBUF, 3,
                                            "invalid protobuf", &out, &len),
                     O2L_OK);
    st = google__rpc__status__unpack(NULL, len, (uint8_t *)out);
    assert_non_null(st);
    assert_int_equal(st->code, 3);
    assert_string_equal(st->message, "invalid protobuf");
    google__rpc__status__free_unpacked(st, NULL);
    o2l_free(out);

    assert_int_equal(
        o2l_otlp_encode_status(O2L_OTLP_JSON, 8, "busy", &out, &len), O2L_OK);
    root = cJSON_Parse(out);
    assert_non_null(root);
    assert_int_equal(
        cJSON_GetObjectItemCaseSensitive(root, "code")->valuedouble, 8);
    assert_string_equal(
        cJSON_GetObjectItemCaseSensitive(root, "message")->valuestring, "busy");
    cJSON_Delete(root);
    o2l_free(out);
}

/* Fails each allocation in turn until a decode succeeds. */
static void decode_under_failures(const void *buf, size_t len,
                                  enum o2l_otlp_format fmt)
{
    int done = 0;
    long n;

    for (n = 0; !done && n < 100000; n++) {
        struct o2l_export *ex = NULL;
        int rc;

        o2l_mem_fail_after(n);
        rc = o2l_otlp_decode(buf, len, fmt, NOW_NS, &ex, NULL, 0);
        o2l_mem_fail_after(-1);
        if (rc == O2L_OK) {
            assert_non_null(ex);
            o2l_export_free(ex);
            done = 1;
        } else {
            assert_int_equal(rc, O2L_ENOMEM);
            assert_null(ex);
        }
    }
    assert_true(done);
    /* Every allocation of the decode was made to fail once. */
    assert_true(n > 10);
}

static void test_otlp_allocation_failures(void **state)
{
    static const char odd_json[] =
        "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[{"
        "\"traceId\":\"" TRACE_HEX "\",\"spanId\":\"" ROOT_HEX "\","
        "\"startTimeUnixNano\":1700000000123456789,\"name\":\"a\\u0000\","
        "\"attributes\":[{\"key\":\"x\xff\",\"value\":{\"bytesValue\":\"AA\"}}"
        "]},{\"traceId\":\"bad\"},{\"traceId\":\"" TRACE_HEX
        "\",\"spanId\":\"" ROOT_HEX "\"}]}]}]}";
    uint8_t *pb;
    char *json;
    size_t pb_len;
    size_t json_len;
    char *out;
    size_t out_len;

    (void)state;
    pb = pack_basic(&pb_len);
    json = test_read_data("otlp", "basic.json", &json_len);
    decode_under_failures(pb, pb_len, O2L_OTLP_PROTOBUF);
    decode_under_failures(json, json_len, O2L_OTLP_JSON);
    decode_under_failures(odd_json, sizeof(odd_json) - 1, O2L_OTLP_JSON);
    o2l_free(pb);
    o2l_free(json);

    for (long n = 0; n < 10; n++) {
        o2l_mem_fail_after(n);
        out = NULL;
        if (o2l_otlp_encode_response(O2L_OTLP_JSON, 1, "m", &out, &out_len) ==
            O2L_OK) {
            o2l_free(out);
        }
        if (o2l_otlp_encode_response(O2L_OTLP_PROTOBUF, 1, "m", &out,
                                     &out_len) == O2L_OK) {
            o2l_free(out);
        }
        if (o2l_otlp_encode_status(O2L_OTLP_JSON, 1, "m", &out, &out_len) ==
            O2L_OK) {
            o2l_free(out);
        }
        o2l_mem_fail_after(-1);
    }
}

/* The protobuf twin of links_json below. */
static uint8_t *pack_links(size_t *len)
{
    static const uint8_t short_trace[5] = {1, 2, 3, 4, 5};
    PBT(Span__Link)
    link_init = OPENTELEMETRY__PROTO__TRACE__V1__SPAN__LINK__INIT;
    PBT(Span__Link) *good = keep(&link_init, sizeof(link_init));
    PBT(Span__Link) *bad = keep(&link_init, sizeof(link_init));
    PBT(Span__Link) *bare = keep(&link_init, sizeof(link_init));
    PBT(Span) * s;

    s = span_new(trace_bin, 16, root_bin, 8, "linked", 1700000000000000000ULL,
                 1700000001000000000ULL);
    s->trace_state = "vendor=a1,other=b2";
    s->flags = 0x301;
    good->trace_id.data = (uint8_t *)trace_bin;
    good->trace_id.len = 16;
    good->span_id.data = (uint8_t *)child_bin;
    good->span_id.len = 8;
    good->trace_state = "vendor=l1";
    good->attributes = keep_array(1, kv("why", any_str("retry")));
    good->n_attributes = 1;
    good->dropped_attributes_count = 3;
    good->flags = 1;
    bad->trace_id.data = (uint8_t *)short_trace;
    bad->trace_id.len = sizeof(short_trace);
    bad->span_id.data = (uint8_t *)child_bin;
    bad->span_id.len = 8;
    bare->trace_id.data = (uint8_t *)trace_bin;
    bare->trace_id.len = 16;
    bare->span_id.data = (uint8_t *)root_bin;
    bare->span_id.len = 8;
    s->links = keep_array(3, good, bad, bare);
    s->n_links = 3;
    return pack_spans(NULL, 0, NULL, keep_array(1, s), 1, len);
}

static const char links_json[] =
    "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[{"
    "\"traceId\":\"" TRACE_HEX "\",\"spanId\":\"" ROOT_HEX "\","
    "\"name\":\"linked\",\"startTimeUnixNano\":\"1700000000000000000\","
    "\"endTimeUnixNano\":\"1700000001000000000\","
    "\"traceState\":\"vendor=a1,other=b2\",\"flags\":769,\"links\":["
    "{\"traceId\":\"" TRACE_HEX "\",\"spanId\":\"7uGbfsPBsXM=\","
    "\"traceState\":\"vendor=l1\",\"attributes\":[{\"key\":\"why\","
    "\"value\":{\"stringValue\":\"retry\"}}],"
    "\"droppedAttributesCount\":\"3\",\"flags\":1},"
    "{\"traceId\":\"0102030405\",\"spanId\":\"" CHILD_HEX "\"},"
    "{\"trace_id\":\"" TRACE_HEX "\",\"span_id\":\"" ROOT_HEX "\"}]}"
    "]}]}]}";

static void assert_links(const struct o2l_export *ex)
{
    const struct o2l_span *s;

    assert_int_equal(ex->n_spans, 1);
    assert_int_equal(ex->rejected, 0);
    s = &ex->spans[0];
    assert_string_equal(s->trace_state, "vendor=a1,other=b2");
    assert_int_equal(s->flags, 0x301);
    /* The link with a 5-byte trace id is left out; the span stays. */
    assert_int_equal(s->n_links, 2);
    assert_string_equal(s->links[0].trace_id, TRACE_HEX);
    assert_string_equal(s->links[0].span_id, CHILD_HEX);
    assert_string_equal(s->links[0].trace_state, "vendor=l1");
    assert_json(s->links[0].attrs, "{\"why\":\"retry\"}");
    assert_int_equal(s->links[0].dropped_attributes_count, 3);
    assert_int_equal(s->links[0].flags, 1);
    assert_string_equal(s->links[1].trace_id, TRACE_HEX);
    assert_string_equal(s->links[1].span_id, ROOT_HEX);
    assert_null(s->links[1].trace_state);
    assert_json(s->links[1].attrs, "{}");
    assert_int_equal(s->links[1].dropped_attributes_count, 0);
    assert_int_equal(s->links[1].flags, 0);
}

static void test_otlp_links_flags_and_trace_state(void **state)
{
    struct o2l_export *ex;
    uint8_t *pb;
    size_t pb_len;

    (void)state;
    pb = pack_links(&pb_len);
    ex = decode_ok(pb, pb_len, O2L_OTLP_PROTOBUF);
    assert_links(ex);
    o2l_export_free(ex);
    ex = decode_json(links_json);
    assert_links(ex);
    o2l_export_free(ex);

    /* Absent: no trace state, flags 0, no links. */
    ex = decode_span_json("");
    assert_null(ex->spans[0].trace_state);
    assert_int_equal(ex->spans[0].flags, 0);
    assert_int_equal(ex->spans[0].n_links, 0);
    assert_null(ex->spans[0].links);
    o2l_export_free(ex);

    decode_under_failures(pb, pb_len, O2L_OTLP_PROTOBUF);
    decode_under_failures(links_json, sizeof(links_json) - 1, O2L_OTLP_JSON);
    o2l_free(pb);
}

static void test_otlp_base64_and_hex_helpers(void **state)
{
    static const uint8_t data[5] = {0xfb, 0xff, 0x00, 0x10, 0x41};
    uint8_t out[16];
    size_t n = 0;
    char *s;
    char hex[11];

    (void)state;
    for (size_t k = 0; k <= sizeof(data); k++) {
        s = o2l_otlp_base64_encode(data, k);
        assert_non_null(s);
        assert_int_equal(strlen(s) % 4, 0);
        assert_true(o2l_otlp_base64_decode(s, strlen(s), out, sizeof(out), &n));
        assert_int_equal(n, k);
        assert_memory_equal(out, data, k);
        o2l_free(s);
    }
    assert_true(o2l_otlp_base64_decode("-_8AEEE", 7, out, sizeof(out), &n));
    assert_int_equal(n, 5);
    assert_memory_equal(out, data, 5);
    assert_false(o2l_otlp_base64_decode("A", 1, out, sizeof(out), &n));
    assert_false(o2l_otlp_base64_decode("AA=", 3, out, sizeof(out), &n));
    assert_false(o2l_otlp_base64_decode("A=AA", 4, out, sizeof(out), &n));
    assert_false(o2l_otlp_base64_decode("AAAAAAAA", 8, out, 5, &n));

    o2l_otlp_hex_encode(data, 5, hex);
    assert_string_equal(hex, "fbff001041");
    assert_true(o2l_otlp_hex_decode("FBff001041", 10, out, 5, &n));
    assert_memory_equal(out, data, 5);
    assert_false(o2l_otlp_hex_decode("fbf", 3, out, 5, &n));
    assert_false(o2l_otlp_hex_decode("fg", 2, out, 5, &n));
}

static void test_otlp_utf8_and_number_helpers(void **state)
{
    static const struct {
        const char *in;
        size_t len;
        const char *out;
    } cases[] = {
        {"plain", 5, "plain"},
        {"\xc3\xa9", 2, "\xc3\xa9"},
        {"\xc0\x80", 2, "\xef\xbf\xbd\xef\xbf\xbd"}, /* overlong NUL */
        {"\xe0\x80\x80", 3, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
        {"\xed\xa0\x80", 3, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
        {"\xf4\x90\x80\x80", 4,
         "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
        {"\xe2\x82z", 3, "\xef\xbf\xbdz"}, /* one mark for a cut sequence */
        {"\xf0\x9f\x98", 3, "\xef\xbf\xbd"},
        {"a\0b", 3,
         "a\xef\xbf\xbd"
         "b"},
        {"\x80\xbf", 2, "\xef\xbf\xbd\xef\xbf\xbd"},
    };
    uint64_t u = 0;
    int64_t i = 0;

    (void)state;
    for (size_t k = 0; k < O2L_ARRAY_LEN(cases); k++) {
        char *s = o2l_otlp_utf8_dup(cases[k].in, cases[k].len);

        assert_non_null(s);
        assert_string_equal(s, cases[k].out);
        assert_int_equal(o2l_otlp_utf8_is_clean(cases[k].in, cases[k].len),
                         strcmp(cases[k].in, cases[k].out) == 0 &&
                             strlen(cases[k].in) == cases[k].len);
        o2l_free(s);
    }

    assert_true(o2l_otlp_parse_u64("18446744073709551615", 20, &u));
    assert_true(u == UINT64_MAX);
    assert_false(o2l_otlp_parse_u64("18446744073709551616", 20, &u));
    assert_false(o2l_otlp_parse_u64("", 0, &u));
    assert_false(o2l_otlp_parse_u64("-1", 2, &u));
    assert_false(o2l_otlp_parse_u64("1 ", 2, &u));
    assert_true(o2l_otlp_parse_i64("-9223372036854775808", 20, &i));
    assert_true(i == INT64_MIN);
    assert_false(o2l_otlp_parse_i64("-9223372036854775809", 20, &i));
    assert_false(o2l_otlp_parse_i64("9223372036854775808", 19, &i));
    assert_false(o2l_otlp_parse_i64("-", 1, &i));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_otlp_protobuf_and_json_agree),
        cmocka_unit_test(test_otlp_protobuf_fixture_file),
        cmocka_unit_test(test_otlp_json_accepts_snake_case),
        cmocka_unit_test(test_otlp_json_accepts_legacy_library_spans),
        cmocka_unit_test(test_otlp_json_id_forms),
        cmocka_unit_test(test_otlp_bad_ids_rejected_one_by_one),
        cmocka_unit_test(test_otlp_protobuf_bad_and_zero_ids),
        cmocka_unit_test(test_otlp_parent_id_forms),
        cmocka_unit_test(test_otlp_json_int64_exact),
        cmocka_unit_test(test_otlp_double_non_finite_as_strings),
        cmocka_unit_test(test_otlp_bytes_become_padded_base64),
        cmocka_unit_test(test_otlp_nested_values_and_repeated_keys),
        cmocka_unit_test(test_otlp_invalid_utf8_and_nul_become_fffd),
        cmocka_unit_test(test_otlp_time_defaults),
        cmocka_unit_test(test_otlp_duplicates_collapse_to_last),
        cmocka_unit_test(test_otlp_scope_per_resource_and_scope),
        cmocka_unit_test(test_otlp_enums_as_numbers_or_names),
        cmocka_unit_test(test_otlp_garbage_is_parse_error),
        cmocka_unit_test(test_otlp_deep_json_is_parse_error),
        cmocka_unit_test(test_otlp_empty_export),
        cmocka_unit_test(test_otlp_sniff),
        cmocka_unit_test(test_otlp_response_round_trip),
        cmocka_unit_test(test_otlp_allocation_failures),
        cmocka_unit_test(test_otlp_links_flags_and_trace_state),
        cmocka_unit_test(test_otlp_base64_and_hex_helpers),
        cmocka_unit_test(test_otlp_utf8_and_number_helpers),
    };

    o2l_mem_init();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
