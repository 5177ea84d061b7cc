/* SPDX-License-Identifier: Apache-2.0 */
/* test_assemble.c - the assemble stage: windows, bounds, releases, facts. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "o2l/assemble.h"
#include "o2l/common.h"
#include "o2l/encode.h"
#include "o2l/mapper.h"
#include "o2l/otlp.h"

#define MAX_SPANS  16
#define MAX_SCOPES 4

#define T1  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa1"
#define T2  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa2"
#define T3  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa3"
#define T4  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa4"
#define T5  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa5"
#define S1  "1111111111111111"
#define S2  "2222222222222222"
#define S3  "3333333333333333"
#define S4  "4444444444444444"
#define SEC 1000000000ULL
#define T0  (1700000000ULL * SEC)

/* ---- building exports by hand -------------------------------------------- */

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

/* A scope whose resource has service.name = |service|. */
static size_t scope_add(struct o2l_export *ex, const char *service)
{
    struct o2l_scope *sc = &ex->scopes[ex->n_scopes];

    assert_true(ex->n_scopes < MAX_SCOPES);
    sc->name = o2l_strdup("test");
    sc->version = o2l_strdup("");
    sc->attrs = cJSON_CreateObject();
    sc->resource_attrs = cJSON_CreateObject();
    assert_non_null(sc->resource_attrs);
    assert_non_null(
        cJSON_AddStringToObject(sc->resource_attrs, "service.name", service));
    return ex->n_scopes++;
}

/* |parent| NULL makes a root; |attrs_json| is the attribute object. */
static void span_add(struct o2l_export *ex, size_t scope, const char *trace,
                     const char *id, const char *parent, const char *name,
                     const char *attrs_json)
{
    struct o2l_span *s = &ex->spans[ex->n_spans++];

    assert_true(ex->n_spans <= MAX_SPANS);
    snprintf(s->trace_id, sizeof(s->trace_id), "%s", trace);
    snprintf(s->span_id, sizeof(s->span_id), "%s", id);
    snprintf(s->parent_id, sizeof(s->parent_id), "%s", parent ? parent : "");
    s->name = o2l_strdup(name);
    s->start_ns = T0 + ex->n_spans * SEC;
    s->end_ns = s->start_ns + SEC;
    s->scope = scope;
    s->attrs = cJSON_Parse(attrs_json ? attrs_json : "{}");
    assert_non_null(s->attrs);
}

/* A request of one child span of |trace| (parent S4), added at |now|. */
static void add_child(struct o2l_assemble *a, uint64_t req, const char *trace,
                      const char *id, uint64_t now)
{
    struct o2l_export *ex = ex_new();

    span_add(ex, scope_add(ex, "svc"), trace, id, S4, "child", NULL);
    assert_int_equal(o2l_assemble_add(a, req, 100, ex, now), O2L_OK);
}

static struct o2l_assemble *stage(uint32_t window, uint32_t grace,
                                  size_t max_traces, size_t max_bytes)
{
    struct o2l_assemble_config cfg;
    struct o2l_assemble *a;

    o2l_assemble_config_defaults(&cfg);
    cfg.window_ms = window;
    cfg.root_grace_ms = grace;
    cfg.max_traces = max_traces;
    cfg.max_bytes = max_bytes;
    a = o2l_assemble_new(&cfg);
    assert_non_null(a);
    return a;
}

static struct o2l_assemble *default_stage(void)
{
    return stage(3000, 300, 10000, 1000000);
}

/* Ends |rel| and checks the requests reported, in order. */
static void done_expect(struct o2l_assemble *a, struct o2l_release *rel,
                        const uint64_t *want, size_t n_want)
{
    uint64_t *ids = NULL;
    size_t n = 0;

    assert_int_equal(o2l_assemble_done(a, rel, &ids, &n), O2L_OK);
    assert_int_equal(n, n_want);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(ids[i], want[i]);
    }
    o2l_free(ids);
}

static size_t release_at(struct o2l_assemble *a, uint64_t now, bool all,
                         struct o2l_release *rel)
{
    assert_int_equal(o2l_assemble_release(a, now, all, rel), O2L_OK);
    return rel->ex.n_spans;
}

static size_t held_traces(const struct o2l_assemble *a)
{
    size_t n = 0;

    o2l_assemble_counts(a, &n, NULL, NULL);
    return n;
}

/* ---- windows ------------------------------------------------------------- */

static void test_assemble_window_joins_three_requests(void **state)
{
    static const uint64_t want[] = {1, 2, 3};
    struct o2l_assemble *a = default_stage();
    struct o2l_release rel;
    size_t traces;
    size_t spans;
    size_t bytes;

    (void)state;
    add_child(a, 1, T1, S1, 0);
    add_child(a, 2, T1, S2, 1000);
    add_child(a, 3, T1, S3, 2000);
    o2l_assemble_counts(a, &traces, &spans, &bytes);
    assert_int_equal(traces, 1);
    assert_int_equal(spans, 3);
    assert_int_equal(bytes, 300);

    assert_int_equal(release_at(a, 2999, false, &rel), 0);
    done_expect(a, &rel, NULL, 0);

    assert_int_equal(release_at(a, 3000, false, &rel), 3);
    assert_string_equal(rel.ex.spans[0].span_id, S1);
    assert_string_equal(rel.ex.spans[1].span_id, S2);
    assert_string_equal(rel.ex.spans[2].span_id, S3);
    assert_int_equal(rel.ex.rejected, 0);
    assert_null(rel.ex.error_message);
    o2l_assemble_counts(a, &traces, &spans, &bytes);
    assert_int_equal(traces, 0);
    assert_int_equal(spans, 0);
    assert_int_equal(bytes, 0);
    done_expect(a, &rel, want, 3);
    assert_null(rel.ex.spans);
    o2l_assemble_free(a);
}

static void test_assemble_root_and_grace_release_early(void **state)
{
    static const uint64_t want[] = {1, 2};
    struct o2l_assemble *a = default_stage();
    struct o2l_export *ex = ex_new();
    struct o2l_release rel;

    (void)state;
    add_child(a, 1, T1, S2, 0);
    span_add(ex, scope_add(ex, "svc"), T1, S1, NULL, "root", NULL);
    assert_int_equal(o2l_assemble_add(a, 2, 100, ex, 100), O2L_OK);

    assert_int_equal(release_at(a, 399, false, &rel), 0);
    done_expect(a, &rel, NULL, 0);
    assert_int_equal(release_at(a, 400, false, &rel), 2);
    done_expect(a, &rel, want, 2);
    o2l_assemble_free(a);
}

static void test_assemble_traces_released_independently(void **state)
{
    static const uint64_t first[] = {1};
    static const uint64_t second[] = {2};
    struct o2l_assemble *a = default_stage();
    struct o2l_export *ex = ex_new();
    struct o2l_release rel;
    size_t sc;

    (void)state;
    add_child(a, 1, T1, S1, 0);
    /* Request 2 holds a span of each trace. */
    sc = scope_add(ex, "svc");
    span_add(ex, sc, T1, S2, S4, "child", NULL);
    span_add(ex, sc, T2, S3, S4, "child", NULL);
    assert_int_equal(o2l_assemble_add(a, 2, 100, ex, 1000), O2L_OK);

    assert_int_equal(release_at(a, 3000, false, &rel), 2);
    assert_string_equal(rel.ex.spans[0].trace_id, T1);
    assert_string_equal(rel.ex.spans[1].trace_id, T1);
    done_expect(a, &rel, first, 1);
    assert_int_equal(held_traces(a), 1);

    assert_int_equal(release_at(a, 3999, false, &rel), 0);
    done_expect(a, &rel, NULL, 0);
    assert_int_equal(release_at(a, 4000, false, &rel), 1);
    assert_string_equal(rel.ex.spans[0].trace_id, T2);
    done_expect(a, &rel, second, 1);
    o2l_assemble_free(a);
}

static void test_assemble_late_span_gets_its_own_window(void **state)
{
    struct o2l_assemble *a = default_stage();
    struct o2l_release rel;

    (void)state;
    add_child(a, 1, T1, S1, 0);
    assert_int_equal(release_at(a, 3000, false, &rel), 1);
    done_expect(a, &rel, (const uint64_t[]){1}, 1);

    add_child(a, 2, T1, S2, 5000);
    assert_int_equal(o2l_assemble_next_due(a, 5000), 3000);
    assert_int_equal(release_at(a, 7999, false, &rel), 0);
    done_expect(a, &rel, NULL, 0);
    assert_int_equal(release_at(a, 8000, false, &rel), 1);
    assert_string_equal(rel.ex.spans[0].span_id, S2);
    done_expect(a, &rel, (const uint64_t[]){2}, 1);
    o2l_assemble_free(a);
}

/* ---- bounds -------------------------------------------------------------- */

static void test_assemble_max_traces_evicts_oldest(void **state)
{
    struct o2l_assemble *a = stage(3000, 300, 2, 1000000);
    struct o2l_release rel;

    (void)state;
    add_child(a, 1, T2, S1, 0);
    add_child(a, 2, T1, S1, 1);
    assert_int_equal(o2l_assemble_next_due(a, 2), 2998);
    add_child(a, 3, T3, S1, 2);
    assert_int_equal(o2l_assemble_next_due(a, 2), 0);

    assert_int_equal(release_at(a, 10, false, &rel), 1);
    assert_string_equal(rel.ex.spans[0].trace_id, T2);
    done_expect(a, &rel, (const uint64_t[]){1}, 1);
    assert_int_equal(held_traces(a), 2);
    assert_int_equal(o2l_assemble_next_due(a, 10), 2991);
    o2l_assemble_free(a);
}

static void test_assemble_max_bytes_evicts_oldest(void **state)
{
    struct o2l_assemble *a = stage(3000, 300, 100, 150);
    struct o2l_export *ex = ex_new();
    struct o2l_release rel;
    size_t bytes;
    size_t sc;

    (void)state;
    /* Request 1 (100 bytes) holds T1 and T2, request 2 (100) holds T3:
     * releasing T1 frees no bytes, so T2 must go too. */
    sc = scope_add(ex, "svc");
    span_add(ex, sc, T1, S1, S4, "child", NULL);
    span_add(ex, sc, T2, S2, S4, "child", NULL);
    assert_int_equal(o2l_assemble_add(a, 1, 100, ex, 0), O2L_OK);
    add_child(a, 2, T3, S3, 1);
    assert_int_equal(o2l_assemble_next_due(a, 1), 0);

    assert_int_equal(release_at(a, 5, false, &rel), 2);
    assert_string_equal(rel.ex.spans[0].trace_id, T1);
    assert_string_equal(rel.ex.spans[1].trace_id, T2);
    done_expect(a, &rel, (const uint64_t[]){1}, 1);
    o2l_assemble_counts(a, NULL, NULL, &bytes);
    assert_int_equal(bytes, 100);
    assert_int_equal(held_traces(a), 1);
    assert_int_equal(o2l_assemble_next_due(a, 5), 2996);
    o2l_assemble_free(a);
}

static void test_assemble_due_traces_count_against_bounds(void **state)
{
    struct o2l_assemble *a = stage(3000, 300, 2, 1000000);
    struct o2l_export *ex = ex_new();
    struct o2l_release rel;

    (void)state;
    /* T3 is due by its root; that brings the stage under the bound, so
     * the oldest (T1) stays. */
    add_child(a, 1, T1, S1, 0);
    add_child(a, 2, T2, S1, 1);
    span_add(ex, scope_add(ex, "svc"), T3, S1, NULL, "root", NULL);
    assert_int_equal(o2l_assemble_add(a, 3, 100, ex, 2), O2L_OK);

    assert_int_equal(release_at(a, 302, false, &rel), 1);
    assert_string_equal(rel.ex.spans[0].trace_id, T3);
    done_expect(a, &rel, (const uint64_t[]){3}, 1);
    assert_int_equal(held_traces(a), 2);
    o2l_assemble_free(a);
}

static void test_assemble_all_releases_everything(void **state)
{
    /* Requests are reported in the order they were wholly released. */
    static const uint64_t want[] = {1, 3, 2};
    struct o2l_assemble *a = default_stage();
    struct o2l_release rel;
    size_t traces;
    size_t spans;
    size_t bytes;

    (void)state;
    add_child(a, 1, T1, S1, 0);
    add_child(a, 2, T2, S1, 10);
    add_child(a, 3, T1, S2, 20);
    assert_int_equal(release_at(a, 30, true, &rel), 3);
    /* Grouped by trace, traces by first arrival. */
    assert_string_equal(rel.ex.spans[0].trace_id, T1);
    assert_string_equal(rel.ex.spans[1].trace_id, T1);
    assert_string_equal(rel.ex.spans[2].trace_id, T2);
    assert_int_equal(rel.request_ids[0], 1);
    assert_int_equal(rel.request_ids[1], 3);
    assert_int_equal(rel.request_ids[2], 2);
    o2l_assemble_counts(a, &traces, &spans, &bytes);
    assert_int_equal(traces + spans + bytes, 0);
    done_expect(a, &rel, want, 3);
    assert_int_equal(o2l_assemble_next_due(a, 30), UINT32_MAX);
    o2l_assemble_free(a);
}

/* ---- releases ------------------------------------------------------------ */

static void test_assemble_request_of_each_span(void **state)
{
    struct o2l_assemble *a = default_stage();
    struct o2l_export *ex = ex_new();
    struct o2l_release rel;
    size_t sc;

    (void)state;
    add_child(a, 7, T1, S1, 0);
    sc = scope_add(ex, "svc");
    span_add(ex, sc, T1, S2, S1, "child", NULL);
    span_add(ex, sc, T1, S3, S1, "child", NULL);
    assert_int_equal(o2l_assemble_add(a, 9, 100, ex, 0), O2L_OK);
    /* The same span id in another trace: the first match wins. */
    add_child(a, 11, T2, S1, 0);

    assert_int_equal(release_at(a, 3000, false, &rel), 4);
    assert_int_equal(o2l_release_request(&rel, S1), 7);
    assert_int_equal(o2l_release_request(&rel, S2), 9);
    assert_int_equal(o2l_release_request(&rel, S3), 9);
    assert_int_equal(o2l_release_request(&rel, S4), 0);
    assert_int_equal(o2l_release_request(&rel, ""), 0);
    done_expect(a, &rel, (const uint64_t[]){7, 9, 11}, 3);
    assert_int_equal(o2l_release_request(&rel, S1), 0);
    o2l_assemble_free(a);
}

static void test_assemble_scopes_remapped(void **state)
{
    struct o2l_assemble *a = default_stage();
    struct o2l_export *ex1 = ex_new();
    struct o2l_export *ex2 = ex_new();
    struct o2l_release rel;
    size_t b1;
    size_t b2;

    (void)state;
    scope_add(ex1, "unused");
    b1 = scope_add(ex1, "alpha");
    span_add(ex1, b1, T1, S1, NULL, "root", NULL);
    span_add(ex1, b1, T1, S2, S1, "child", NULL);
    b2 = scope_add(ex2, "beta");
    span_add(ex2, b2, T1, S3, S1, "child", NULL);
    assert_int_equal(o2l_assemble_add(a, 1, 100, ex1, 0), O2L_OK);
    assert_int_equal(o2l_assemble_add(a, 2, 100, ex2, 10), O2L_OK);

    assert_int_equal(release_at(a, 300, false, &rel), 3);
    assert_int_equal(rel.ex.n_scopes, 2);
    for (size_t i = 0; i < rel.ex.n_spans; i++) {
        const struct o2l_span *s = &rel.ex.spans[i];
        const cJSON *svc;
        const char *want = strcmp(s->span_id, S3) == 0 ? "beta" : "alpha";

        assert_true(s->scope < rel.ex.n_scopes);
        svc = cJSON_GetObjectItemCaseSensitive(
            rel.ex.scopes[s->scope].resource_attrs, "service.name");
        assert_string_equal(svc->valuestring, want);
    }
    assert_int_equal(rel.ex.spans[0].scope, rel.ex.spans[1].scope);
    assert_int_not_equal(rel.ex.spans[0].scope, rel.ex.spans[2].scope);
    done_expect(a, &rel, (const uint64_t[]){1, 2}, 2);
    o2l_assemble_free(a);
}

static void test_assemble_request_without_spans(void **state)
{
    struct o2l_assemble *a = default_stage();
    struct o2l_export *ex = ex_new();
    struct o2l_release rel;

    (void)state;
    assert_int_equal(o2l_assemble_add(a, 5, 40, ex, 0), O2L_OK);
    assert_int_equal(held_traces(a), 0);
    assert_int_equal(o2l_assemble_next_due(a, 0), UINT32_MAX);
    assert_int_equal(release_at(a, 0, false, &rel), 0);
    done_expect(a, &rel, (const uint64_t[]){5}, 1);
    o2l_assemble_free(a);
}

static void test_assemble_next_due(void **state)
{
    struct o2l_assemble *a = default_stage();
    struct o2l_export *ex = ex_new();
    struct o2l_release rel;

    (void)state;
    assert_int_equal(o2l_assemble_next_due(a, 0), UINT32_MAX);
    add_child(a, 1, T1, S2, 0);
    assert_int_equal(o2l_assemble_next_due(a, 0), 3000);
    assert_int_equal(o2l_assemble_next_due(a, 1000), 2000);
    add_child(a, 2, T2, S2, 500);
    assert_int_equal(o2l_assemble_next_due(a, 1000), 2000);

    /* T2's root makes it due first. */
    span_add(ex, scope_add(ex, "svc"), T2, S1, NULL, "root", NULL);
    assert_int_equal(o2l_assemble_add(a, 3, 100, ex, 1000), O2L_OK);
    assert_int_equal(o2l_assemble_next_due(a, 1000), 300);
    assert_int_equal(o2l_assemble_next_due(a, 1300), 0);
    assert_int_equal(o2l_assemble_next_due(a, 5000), 0);

    assert_int_equal(release_at(a, 1300, false, &rel), 2);
    done_expect(a, &rel, (const uint64_t[]){2, 3}, 2);
    assert_int_equal(o2l_assemble_next_due(a, 1300), 1700);
    o2l_assemble_free(a);
}

/* Checks that |n| ids were reported, first..first+n-1 in order. */
static void done_expect_range(struct o2l_assemble *a, struct o2l_release *rel,
                              uint64_t first, size_t n_want)
{
    uint64_t *ids = NULL;
    size_t n = 0;

    assert_int_equal(o2l_assemble_done(a, rel, &ids, &n), O2L_OK);
    assert_int_equal(n, n_want);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(ids[i], first + i);
    }
    o2l_free(ids);
}

static void test_assemble_many_traces(void **state)
{
    enum {
        N = 20000
    };
    struct o2l_assemble *a = stage(3000, 300, N, (size_t)N * 100);
    struct o2l_release rel;
    char trace[33];

    (void)state;
    for (int i = 0; i < N; i++) {
        snprintf(trace, sizeof(trace), "%032x", i + 1);
        add_child(a, (uint64_t)i + 1, trace, S1, (uint64_t)i / 4);
    }
    assert_int_equal(held_traces(a), N);

    /* Due at 3999: what arrived before 1000 ms, in arrival order. */
    assert_int_equal(release_at(a, 3999, false, &rel), 4000);
    for (size_t i = 0; i < rel.ex.n_spans; i++) {
        assert_int_equal(rel.request_ids[i], i + 1);
    }
    assert_int_equal(o2l_release_request(&rel, S1), 1);
    done_expect_range(a, &rel, 1, 4000);
    assert_int_equal(o2l_assemble_next_due(a, 3999), 1);

    assert_int_equal(release_at(a, 4000, true, &rel), N - 4000);
    done_expect_range(a, &rel, 4001, N - 4000);
    o2l_assemble_free(a);
}

/* ---- mapping a release --------------------------------------------------- */

static struct o2l_export *decode_json(const char *json)
{
    struct o2l_export *ex = NULL;
    char err[128];

    assert_int_equal(o2l_otlp_decode(json, strlen(json), O2L_OTLP_JSON, T0, &ex,
                                     err, sizeof(err)),
                     O2L_OK);
    assert_non_null(ex);
    return ex;
}

static struct o2l_mapped *map_release(const struct o2l_release *rel)
{
    struct o2l_map_config cfg;
    struct o2l_mapped *m = NULL;

    o2l_map_config_defaults(&cfg);
    assert_int_equal(o2l_map_export(&rel->ex, &cfg, &m), O2L_OK);
    assert_non_null(m);
    return m;
}

/* The trace-create events of |m|; the first one's body in *body. */
static size_t trace_creates(const struct o2l_mapped *m, cJSON **body)
{
    struct o2l_event_list l = {0};
    size_t n = 0;

    *body = NULL;
    assert_int_equal(o2l_encode_ingestion(m, O2L_EVENT_MAX_BYTES, &l), O2L_OK);
    for (size_t i = 0; i < l.len; i++) {
        cJSON *doc = cJSON_Parse(l.items[i].json);
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(doc, "type");

        assert_non_null(doc);
        if (cJSON_IsString(type) &&
            strcmp(type->valuestring, "trace-create") == 0) {
            if (n++ == 0) {
                *body = cJSON_DetachItemFromObjectCaseSensitive(doc, "body");
            }
        }
        cJSON_Delete(doc);
    }
    o2l_event_list_clear(&l);
    return n;
}

static const char *str_at(const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);

    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static void test_assemble_child_facts_reach_the_trace(void **state)
{
    static const char root[] =
        "{\"resourceSpans\":[{\"resource\":{\"attributes\":[{\"key\":"
        "\"service.name\",\"value\":{\"stringValue\":\"svc\"}}]},"
        "\"scopeSpans\":[{\"scope\":{\"name\":\"s\"},\"spans\":[{"
        "\"traceId\":\"" T1 "\",\"spanId\":\"" S1 "\",\"name\":\"agent\","
        "\"startTimeUnixNano\":\"1700000000000000000\","
        "\"endTimeUnixNano\":\"1700000005000000000\"}]}]}]}";
    static const char child[] =
        "{\"resourceSpans\":[{\"resource\":{},\"scopeSpans\":[{\"spans\":[{"
        "\"traceId\":\"" T1 "\",\"spanId\":\"" S2 "\",\"parentSpanId\":\"" S1
        "\",\"name\":\"llm\",\"startTimeUnixNano\":\"1700000001000000000\","
        "\"endTimeUnixNano\":\"1700000002000000000\",\"attributes\":[{"
        "\"key\":\"session.id\",\"value\":{\"stringValue\":\"s1\"}}]}]}]}]}";
    struct o2l_assemble *a = default_stage();
    struct o2l_release rel;
    struct o2l_mapped *m;
    cJSON *body;

    (void)state;
    assert_int_equal(o2l_assemble_add(a, 1, 100, decode_json(root), 0), O2L_OK);
    assert_int_equal(o2l_assemble_add(a, 2, 100, decode_json(child), 50),
                     O2L_OK);
    assert_int_equal(release_at(a, 300, false, &rel), 2);

    m = map_release(&rel);
    assert_int_equal(m->n_traces, 1);
    assert_int_equal(m->n_obs, 2);
    assert_int_equal(trace_creates(m, &body), 1);
    assert_string_equal(str_at(body, "id"), T1);
    assert_string_equal(str_at(body, "name"), "agent");
    assert_string_equal(str_at(body, "sessionId"), "s1");
    cJSON_Delete(body);
    assert_int_equal(o2l_assemble_facts(a, m, 300), O2L_OK);
    o2l_mapped_free(m);
    done_expect(a, &rel, (const uint64_t[]){1, 2}, 2);
    o2l_assemble_free(a);
}

/* Releases what is due at |now|, maps it and lays the facts under it.
 * The mapping refers into the release: end_release() after reading it. */
static struct o2l_mapped *release_mapped(struct o2l_assemble *a, uint64_t now,
                                         size_t n_spans,
                                         struct o2l_release *rel)
{
    struct o2l_mapped *m;

    assert_int_equal(release_at(a, now, false, rel), n_spans);
    m = map_release(rel);
    assert_int_equal(o2l_assemble_facts(a, m, now), O2L_OK);
    return m;
}

/* Frees |m|, ends |rel|, which wholly released one request. */
static void end_release(struct o2l_assemble *a, struct o2l_release *rel,
                        struct o2l_mapped *m)
{
    uint64_t *ids = NULL;
    size_t n_ids = 0;

    o2l_mapped_free(m);
    assert_int_equal(o2l_assemble_done(a, rel, &ids, &n_ids), O2L_OK);
    assert_int_equal(n_ids, 1);
    o2l_free(ids);
}

static void add_span_json(struct o2l_assemble *a, uint64_t req, const char *id,
                          const char *parent, const char *attrs, uint64_t now)
{
    struct o2l_export *ex = ex_new();

    span_add(ex, scope_add(ex, "svc"), T1, id, parent, parent ? "late" : "root",
             attrs);
    assert_int_equal(o2l_assemble_add(a, req, 100, ex, now), O2L_OK);
}

static void test_assemble_late_span_gets_remembered_facts(void **state)
{
    struct o2l_assemble *a = default_stage();
    struct o2l_release rel;
    struct o2l_mapped *m;
    struct o2l_trace *t;
    char *tags;
    char *md;
    cJSON *body;

    (void)state;
    add_span_json(a, 1, S1, NULL,
                  "{\"user.id\":\"u1\",\"session.id\":\"s1\","
                  "\"langfuse.trace.tags\":[\"z\",\"a\"],"
                  "\"langfuse.trace.metadata.k\":\"v\","
                  "\"langfuse.environment\":\"prod\","
                  "\"langfuse.release\":\"r1\","
                  "\"langfuse.trace.public\":true}",
                  0);
    m = release_mapped(a, 300, 1, &rel);
    assert_string_equal(m->traces[0].user_id, "u1");
    end_release(a, &rel, m);

    /* A late child with facts of its own. */
    add_span_json(a, 2, S2, S1,
                  "{\"langfuse.trace.tags\":\"b\","
                  "\"langfuse.trace.metadata.x\":\"y\","
                  "\"langfuse.trace.metadata.k\":\"mine\"}",
                  1000);
    m = release_mapped(a, 4000, 1, &rel);
    assert_int_equal(m->n_traces, 1);
    t = &m->traces[0];
    assert_string_equal(t->user_id, "u1");
    assert_string_equal(t->session_id, "s1");
    assert_string_equal(t->name, "root");
    assert_string_equal(t->release, "r1");
    assert_string_equal(t->environment, "prod");
    assert_string_equal(m->obs[0].environment, "prod");
    assert_int_equal(t->public_flag, 1);
    tags = cJSON_PrintUnformatted(t->tags);
    md = cJSON_PrintUnformatted(t->metadata);
    assert_string_equal(tags, "[\"a\",\"b\",\"z\"]");
    assert_string_equal(md, "{\"x\":\"y\",\"k\":\"mine\"}");
    cJSON_free(tags);
    cJSON_free(md);
    assert_int_equal(trace_creates(m, &body), 1);
    assert_string_equal(str_at(body, "userId"), "u1");
    assert_string_equal(str_at(body, "sessionId"), "s1");
    cJSON_Delete(body);
    end_release(a, &rel, m);

    /* The memory now holds the merged facts. */
    add_span_json(a, 3, S3, S1, "{\"langfuse.trace.tags\":\"c\"}", 5000);
    m = release_mapped(a, 8000, 1, &rel);
    tags = cJSON_PrintUnformatted(m->traces[0].tags);
    assert_string_equal(tags, "[\"a\",\"b\",\"c\",\"z\"]");
    cJSON_free(tags);
    assert_non_null(
        cJSON_GetObjectItemCaseSensitive(m->traces[0].metadata, "x"));
    end_release(a, &rel, m);
    o2l_assemble_free(a);
}

static void test_assemble_facts_expire(void **state)
{
    struct o2l_assemble_config cfg;
    struct o2l_assemble *a;
    struct o2l_release rel;
    struct o2l_mapped *m;

    (void)state;
    o2l_assemble_config_defaults(&cfg);
    cfg.facts_ttl_ms = 5000;
    a = o2l_assemble_new(&cfg);
    assert_non_null(a);

    add_span_json(a, 1, S1, NULL, "{\"user.id\":\"u1\"}", 0);
    m = release_mapped(a, 300, 1, &rel);
    end_release(a, &rel, m);

    /* Within the ttl: remembered, and stored again at 4000. */
    add_span_json(a, 2, S2, S1, NULL, 1000);
    m = release_mapped(a, 4000, 1, &rel);
    assert_string_equal(m->traces[0].user_id, "u1");
    end_release(a, &rel, m);

    /* 9000 is exactly the ttl after the last store: forgotten. */
    add_span_json(a, 3, S3, S1, NULL, 6000);
    m = release_mapped(a, 9000, 1, &rel);
    assert_null(m->traces[0].user_id);
    assert_null(m->traces[0].name);
    end_release(a, &rel, m);
    o2l_assemble_free(a);
}

/* A hand-made mapping of one trace per id, each with user |user|. */
static struct o2l_mapped *mapped_of(const char *const *ids, size_t n,
                                    const char *user)
{
    struct o2l_mapped *m = o2l_calloc(1, sizeof(*m));

    assert_non_null(m);
    m->traces = o2l_calloc(n, sizeof(*m->traces));
    assert_non_null(m->traces);
    m->n_traces = n;
    for (size_t i = 0; i < n; i++) {
        snprintf(m->traces[i].id, sizeof(m->traces[i].id), "%s", ids[i]);
        m->traces[i].environment = o2l_strdup("default");
        m->traces[i].user_id = user ? o2l_strdup(user) : NULL;
        m->traces[i].public_flag = -1;
    }
    return m;
}

static void test_assemble_facts_bounded_in_count(void **state)
{
    static const char *const five[] = {T1, T2, T3, T4, T5};
    struct o2l_assemble *a = stage(3000, 300, 1, 1000000);
    struct o2l_mapped *m;

    (void)state;
    /* max_traces 1: four traces are remembered, the least recently
     * stored is dropped first. */
    m = mapped_of(five, 5, "u");
    assert_int_equal(o2l_assemble_facts(a, m, 0), O2L_OK);
    o2l_mapped_free(m);

    /* T1 was dropped for T5; storing T1 again drops T3. */
    m = mapped_of((const char *const[]){T5, T2, T1}, 3, NULL);
    assert_int_equal(o2l_assemble_facts(a, m, 10), O2L_OK);
    assert_string_equal(m->traces[0].user_id, "u");
    assert_string_equal(m->traces[1].user_id, "u");
    assert_null(m->traces[2].user_id);
    o2l_mapped_free(m);

    m = mapped_of((const char *const[]){T4, T3}, 2, NULL);
    assert_int_equal(o2l_assemble_facts(a, m, 20), O2L_OK);
    assert_string_equal(m->traces[0].user_id, "u");
    assert_null(m->traces[1].user_id);
    o2l_mapped_free(m);
    o2l_assemble_free(a);
}

/* ---- custom trace ids across windows, duplicates across requests -------- */

/* The custom trace id a UUID seed stands for. */
#define SEED_UUID "8E1F6A52-0000-4000-8000-00000000C0DE"
#define CUSTOM    "8e1f6a5200004000800000000000c0de"

static const struct o2l_observation *obs_of(const struct o2l_mapped *m,
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

static const char *origin_of(const struct o2l_observation *o)
{
    return str_at(o->metadata, "otel_trace_id");
}

static void test_assemble_custom_trace_id_follows(void **state)
{
    struct o2l_assemble *a = default_stage();
    const struct o2l_observation *o;
    struct o2l_release rel;
    struct o2l_mapped *m;
    struct o2l_export *ex;
    cJSON *body;

    (void)state;
    /* Window 1: the root names the custom trace id. */
    add_span_json(a, 1, S1, NULL,
                  "{\"langfuse.trace.id\":\"" SEED_UUID "\","
                  "\"user.id\":\"u1\"}",
                  0);
    m = release_mapped(a, 300, 1, &rel);
    assert_int_equal(m->n_traces, 1);
    assert_string_equal(m->traces[0].id, CUSTOM);
    assert_string_equal(origin_of(obs_of(m, S1)), T1);
    end_release(a, &rel, m);

    /* Window 2: a sibling without the attribute follows, with a span of
     * another trace that has no decision. */
    ex = ex_new();
    span_add(ex, scope_add(ex, "svc"), T1, S2, S1, "late", NULL);
    span_add(ex, 0, T2, S3, NULL, "other", NULL);
    assert_int_equal(o2l_assemble_add(a, 2, 100, ex, 1000), O2L_OK);
    m = release_mapped(a, 4000, 2, &rel);
    assert_int_equal(m->n_traces, 2);
    o = obs_of(m, S2);
    assert_string_equal(o->trace_id, CUSTOM);
    assert_string_equal(origin_of(o), T1);
    o = obs_of(m, S3);
    assert_string_equal(o->trace_id, T2);
    assert_null(origin_of(o));
    /* The remembered facts of the custom trace reach it too. */
    assert_int_equal(trace_creates(m, &body), 2);
    assert_string_equal(str_at(body, "id"), CUSTOM);
    assert_string_equal(str_at(body, "userId"), "u1");
    cJSON_Delete(body);
    end_release(a, &rel, m);

    /* Window 3: and so does one with a span event. */
    ex = ex_new();
    span_add(ex, scope_add(ex, "svc"), T1, S3, S1, "later", NULL);
    ex->spans[0].events = o2l_calloc(1, sizeof(*ex->spans[0].events));
    assert_non_null(ex->spans[0].events);
    ex->spans[0].n_events = 1;
    ex->spans[0].events[0].name = o2l_strdup("exception");
    ex->spans[0].events[0].time_ns = ex->spans[0].start_ns;
    ex->spans[0].events[0].attrs =
        cJSON_Parse("{\"exception.message\":\"bad\"}");
    assert_int_equal(o2l_assemble_add(a, 3, 100, ex, 5000), O2L_OK);
    m = release_mapped(a, 9000, 1, &rel);
    for (size_t i = 0; i < m->n_obs; i++) {
        assert_string_equal(m->obs[i].trace_id, CUSTOM);
        assert_string_equal(origin_of(&m->obs[i]), T1);
    }
    end_release(a, &rel, m);
    o2l_assemble_free(a);
}

static void test_assemble_custom_trace_id_forgotten(void **state)
{
    struct o2l_assemble_config cfg;
    struct o2l_assemble *a;
    struct o2l_release rel;
    struct o2l_mapped *m;

    (void)state;
    o2l_assemble_config_defaults(&cfg);
    cfg.facts_ttl_ms = 5000;
    a = o2l_assemble_new(&cfg);
    assert_non_null(a);
    add_span_json(a, 1, S1, NULL, "{\"langfuse.trace.id\":\"" SEED_UUID "\"}",
                  0);
    m = release_mapped(a, 300, 1, &rel);
    end_release(a, &rel, m);

    /* Kept as long as the facts: forgotten at the ttl. */
    add_span_json(a, 2, S2, S1, NULL, 6000);
    m = release_mapped(a, 9000, 1, &rel);
    assert_string_equal(m->obs[0].trace_id, T1);
    assert_null(origin_of(&m->obs[0]));
    end_release(a, &rel, m);
    o2l_assemble_free(a);
}

/* A custom trace id decided and followed, with the |k|-th allocation of
 * the stage failing; true when nothing failed. */
static bool follow_with_failure(long k)
{
    struct o2l_assemble *a = default_stage();
    struct o2l_release rel;
    struct o2l_mapped *m;
    uint64_t *ids = NULL;
    size_t n_ids = 0;
    bool clean = true;
    int rc;

    add_span_json(a, 1, S1, NULL, "{\"langfuse.trace.id\":\"" SEED_UUID "\"}",
                  0);
    assert_int_equal(release_at(a, 300, false, &rel), 1);
    m = map_release(&rel);
    o2l_mem_fail_after(k);
    rc = o2l_assemble_facts(a, m, 300);
    o2l_mem_fail_after(-1);
    clean = rc == O2L_OK;
    o2l_mapped_free(m);
    assert_int_equal(o2l_assemble_done(a, &rel, &ids, &n_ids), O2L_OK);
    o2l_free(ids);

    add_span_json(a, 2, S2, S1, NULL, 1000);
    assert_int_equal(release_at(a, 4000, false, &rel), 1);
    m = map_release(&rel);
    o2l_mem_fail_after(k);
    rc = o2l_assemble_facts(a, m, 4000);
    o2l_mem_fail_after(-1);
    if (clean && rc == O2L_OK) {
        assert_string_equal(m->obs[0].trace_id, CUSTOM);
        assert_string_equal(origin_of(&m->obs[0]), T1);
    }
    clean = clean && rc == O2L_OK;
    o2l_mapped_free(m);
    assert_int_equal(o2l_assemble_done(a, &rel, &ids, &n_ids), O2L_OK);
    o2l_free(ids);
    o2l_assemble_free(a);
    return clean;
}

static void
test_assemble_custom_trace_id_under_allocation_failures(void **state)
{
    bool clean = false;

    (void)state;
    for (long k = 0; k < 200 && !clean; k++) {
        clean = follow_with_failure(k);
    }
    assert_true(clean);
}

static void test_assemble_duplicates_across_requests(void **state)
{
    struct o2l_assemble *a = default_stage();
    struct o2l_release rel;
    struct o2l_export *ex;
    size_t spans = 0;
    size_t bytes = 0;

    (void)state;
    /* Request 1: S1 and S2; request 2 sends S1 again; request 3 only S2
     * again, so request 1 keeps nothing and is wholly released. */
    ex = ex_new();
    span_add(ex, scope_add(ex, "svc"), T1, S1, NULL, "root", "{\"v\":1}");
    span_add(ex, 0, T1, S2, S1, "child", "{\"v\":1}");
    assert_int_equal(o2l_assemble_add(a, 1, 100, ex, 0), O2L_OK);
    ex = ex_new();
    span_add(ex, scope_add(ex, "svc"), T1, S1, NULL, "root", "{\"v\":2}");
    assert_int_equal(o2l_assemble_add(a, 2, 100, ex, 10), O2L_OK);
    o2l_assemble_counts(a, NULL, &spans, &bytes);
    assert_int_equal(spans, 2);
    assert_int_equal(bytes, 200);

    ex = ex_new();
    span_add(ex, scope_add(ex, "svc"), T1, S2, S1, "child", "{\"v\":3}");
    assert_int_equal(o2l_assemble_add(a, 3, 100, ex, 20), O2L_OK);
    o2l_assemble_counts(a, NULL, &spans, &bytes);
    assert_int_equal(spans, 2);
    assert_int_equal(bytes, 200);
    /* Not released yet (the window is open), but request 1 is done. */
    assert_int_equal(release_at(a, 100, false, &rel), 0);
    done_expect(a, &rel, (const uint64_t[]){1}, 1);

    /* The later copies, in arrival order, from their requests. */
    assert_int_equal(release_at(a, 3000, false, &rel), 2);
    assert_string_equal(rel.ex.spans[0].span_id, S1);
    assert_int_equal(cJSON_GetObjectItem(rel.ex.spans[0].attrs, "v")->valueint,
                     2);
    assert_int_equal(o2l_release_request(&rel, S1), 2);
    assert_string_equal(rel.ex.spans[1].span_id, S2);
    assert_int_equal(cJSON_GetObjectItem(rel.ex.spans[1].attrs, "v")->valueint,
                     3);
    assert_int_equal(o2l_release_request(&rel, S2), 3);
    done_expect(a, &rel, (const uint64_t[]){2, 3}, 2);
    assert_int_equal(held_traces(a), 0);

    /* Once released, a copy starts a window of its own. */
    ex = ex_new();
    span_add(ex, scope_add(ex, "svc"), T1, S1, NULL, "root", "{\"v\":4}");
    assert_int_equal(o2l_assemble_add(a, 4, 100, ex, 4000), O2L_OK);
    assert_int_equal(release_at(a, 4300, false, &rel), 1);
    done_expect(a, &rel, (const uint64_t[]){4}, 1);
    o2l_assemble_free(a);
}

/* ---- allocation failures ------------------------------------------------- */

/* Collects reported ids into |seen| (indexed by id). */
static int done_into(struct o2l_assemble *a, struct o2l_release *rel, int *seen,
                     size_t n_seen)
{
    uint64_t *ids = NULL;
    size_t n = 0;
    int rc = o2l_assemble_done(a, rel, &ids, &n);

    for (size_t i = 0; i < n; i++) {
        assert_true(ids[i] < n_seen);
        seen[ids[i]]++;
    }
    o2l_free(ids);
    return rc;
}

/* One pass with the |k|-th allocation failing; true when nothing failed. */
static bool run_with_failure(long k)
{
    static const char *const ids[] = {T1, T2};
    struct o2l_assemble *a = default_stage();
    struct o2l_export *ex[3];
    struct o2l_mapped *m1 = mapped_of(ids, 2, "u");
    struct o2l_mapped *m2 = mapped_of(ids, 2, NULL);
    struct o2l_release rel;
    int added[4] = {0};
    int seen[4] = {0};
    bool clean = true;
    size_t sc;
    int rc;

    for (size_t i = 0; i < 3; i++) {
        ex[i] = ex_new();
        sc = scope_add(ex[i], "svc");
        span_add(ex[i], sc, T1, i == 0 ? S1 : S2, i == 0 ? NULL : S1, "x",
                 NULL);
        span_add(ex[i], sc, i == 2 ? T3 : T2, S3, S1, "y", NULL);
    }
    m1->traces[0].tags = cJSON_Parse("[\"a\"]");
    m1->traces[0].metadata = cJSON_Parse("{\"k\":1}");
    m2->traces[0].tags = cJSON_Parse("[\"b\"]");
    m2->traces[0].metadata = cJSON_Parse("{\"j\":1}");

    o2l_mem_fail_after(k);
    for (size_t i = 0; i < 3; i++) {
        rc = o2l_assemble_add(a, i + 1, 10, ex[i], i);
        added[i + 1] = rc == O2L_OK;
        clean = clean && rc == O2L_OK;
    }
    rc = o2l_assemble_release(a, 300, false, &rel);
    clean = clean && rc == O2L_OK;
    if (rc == O2L_OK) {
        (void)o2l_release_request(&rel, S1);
    }
    rc = o2l_assemble_facts(a, m1, 300);
    clean = clean && rc == O2L_OK;
    rc = o2l_assemble_facts(a, m2, 310);
    clean = clean && rc == O2L_OK;
    rc = done_into(a, &rel, seen, 4);
    clean = clean && rc == O2L_OK;
    o2l_mem_fail_after(-1);

    /* Whatever failed, the rest is still released exactly once. */
    assert_int_equal(o2l_assemble_release(a, 0, true, &rel), O2L_OK);
    assert_int_equal(done_into(a, &rel, seen, 4), O2L_OK);
    for (size_t i = 1; i < 4; i++) {
        assert_int_equal(seen[i], added[i]);
    }
    assert_int_equal(held_traces(a), 0);
    o2l_mapped_free(m1);
    o2l_mapped_free(m2);
    o2l_assemble_free(a);
    return clean;
}

static void test_assemble_survives_allocation_failures(void **state)
{
    bool clean = false;

    (void)state;
    for (long k = 0; k < 8; k++) {
        struct o2l_assemble *a;

        o2l_mem_fail_after(k);
        a = o2l_assemble_new(NULL);
        o2l_mem_fail_after(-1);
        o2l_assemble_free(a);
    }
    for (long k = 0; k < 500 && !clean; k++) {
        clean = run_with_failure(k);
    }
    assert_true(clean);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_assemble_window_joins_three_requests),
        cmocka_unit_test(test_assemble_root_and_grace_release_early),
        cmocka_unit_test(test_assemble_traces_released_independently),
        cmocka_unit_test(test_assemble_late_span_gets_its_own_window),
        cmocka_unit_test(test_assemble_max_traces_evicts_oldest),
        cmocka_unit_test(test_assemble_max_bytes_evicts_oldest),
        cmocka_unit_test(test_assemble_due_traces_count_against_bounds),
        cmocka_unit_test(test_assemble_all_releases_everything),
        cmocka_unit_test(test_assemble_request_of_each_span),
        cmocka_unit_test(test_assemble_scopes_remapped),
        cmocka_unit_test(test_assemble_request_without_spans),
        cmocka_unit_test(test_assemble_next_due),
        cmocka_unit_test(test_assemble_many_traces),
        cmocka_unit_test(test_assemble_child_facts_reach_the_trace),
        cmocka_unit_test(test_assemble_late_span_gets_remembered_facts),
        cmocka_unit_test(test_assemble_facts_expire),
        cmocka_unit_test(test_assemble_facts_bounded_in_count),
        cmocka_unit_test(test_assemble_custom_trace_id_follows),
        cmocka_unit_test(test_assemble_custom_trace_id_forgotten),
        cmocka_unit_test(
            test_assemble_custom_trace_id_under_allocation_failures),
        cmocka_unit_test(test_assemble_duplicates_across_requests),
        cmocka_unit_test(test_assemble_survives_allocation_failures),
    };

    o2l_mem_init();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
