/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_deadletter.c - the dead-letter file: lines written and read back,
 * OTLP items kept as base64, events that are not JSON, awkward messages,
 * bad lines, and files that cannot be opened or written.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "test_util.h"

#include "o2l/common.h"
#include "o2l/deadletter.h"
#include "o2l/replay.h"

/* 2025-12-03T10:00:00.123456789Z */
#define NOW_NS    INT64_C(1764756000123456789)
#define MAX_LINES 16

struct fixture {
    char dir[64];
    char path[128];
};

struct lines {
    char *items[MAX_LINES];
    size_t lens[MAX_LINES];
    size_t n;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));

    if (!f) {
        return -1;
    }
    snprintf(f->dir, sizeof(f->dir), "/tmp/o2l-deadletter-XXXXXX");
    if (!mkdtemp(f->dir)) {
        free(f);
        return -1;
    }
    snprintf(f->path, sizeof(f->path), "%s/dead.jsonl", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    unlink(f->path);
    rmdir(f->dir);
    free(f);
    return 0;
}

static struct o2l_event make_event(const char *json, const char *id)
{
    struct o2l_event ev;

    memset(&ev, 0, sizeof(ev));
    ev.json = (char *)json;
    ev.len = strlen(json);
    ev.id = (char *)id;
    return ev;
}

static struct o2l_deadletter *open_ok(const char *path)
{
    char err[256] = "";
    struct o2l_deadletter *dl = o2l_deadletter_open(path, err, sizeof(err));

    assert_non_null(dl);
    assert_string_equal(err, "");
    return dl;
}

/* Reads |path| line by line; each line keeps its newline. */
static void read_lines(const char *path, struct lines *out)
{
    FILE *fp = fopen(path, "r");
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;

    assert_non_null(fp);
    memset(out, 0, sizeof(*out));
    while ((n = getline(&line, &cap, fp)) > 0) {
        assert_true(out->n < MAX_LINES);
        /* A whole line ends with its newline; none is cut short. */
        assert_int_equal(line[n - 1], '\n');
        out->items[out->n] = strdup(line);
        assert_non_null(out->items[out->n]);
        out->lens[out->n] = (size_t)n;
        out->n++;
    }
    free(line);
    fclose(fp);
}

static void free_lines(struct lines *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free(l->items[i]);
    }
    l->n = 0;
}

static void test_deadletter_round_trip(void **state)
{
    static const char json_a[] =
        "{\"id\":\"ev-a\",\"type\":\"trace-create\",\"timestamp\":"
        "\"2025-12-03T09:59:59.000000Z\",\"body\":{\"id\":\"t1\",\"name\":"
        "\"chat\",\"metadata\":{\"n\":3,\"ok\":true,\"none\":null}}}";
    static const char json_b[] =
        "{\"id\":\"ev-b\",\"type\":\"generation-create\",\"body\":"
        "{\"usage\":{\"input\":12,\"output\":40},\"tags\":[\"a\",\"b\"]}}";
    struct fixture *f = *state;
    struct o2l_event evs[2];
    struct o2l_deadletter_entry entries[2];
    struct o2l_deadletter *dl;
    struct lines l;
    struct o2l_event back;
    char iso[O2L_ISO_LEN];
    int status = -1;

    evs[0] = make_event(json_a, "ev-a");
    evs[1] = make_event(json_b, "ev-b");
    entries[0] = (struct o2l_deadletter_entry){
        .ev = &evs[0], .status = 400, .message = "Invalid data"};
    entries[1] = (struct o2l_deadletter_entry){
        .ev = &evs[1], .status = 0, .message = "too old"};

    dl = open_ok(f->path);
    assert_int_equal(o2l_deadletter_append(dl, entries, 2, NOW_NS), O2L_OK);
    o2l_deadletter_close(dl);

    read_lines(f->path, &l);
    assert_int_equal(l.n, 2);
    for (size_t i = 0; i < 2; i++) {
        cJSON *root = cJSON_Parse(l.items[i]);
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(root, "time");
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(root, "message");

        assert_non_null(root);
        assert_true(cJSON_IsString(t));
        assert_string_equal(t->valuestring,
                            o2l_iso_time((uint64_t)NOW_NS, iso));
        assert_string_equal(t->valuestring, "2025-12-03T10:00:00.123456Z");
        assert_true(cJSON_IsString(m));
        assert_string_equal(m->valuestring, entries[i].message);
        assert_null(cJSON_GetObjectItemCaseSensitive(root, "event_raw"));
        cJSON_Delete(root);

        assert_int_equal(
            o2l_deadletter_parse_line(l.items[i], l.lens[i], &back, &status),
            O2L_OK);
        assert_string_equal(back.json, evs[i].json);
        assert_int_equal(back.len, evs[i].len);
        assert_string_equal(back.id, evs[i].id);
        assert_int_equal(status, entries[i].status);
        o2l_event_free(&back);
    }
    free_lines(&l);
}

static void test_deadletter_appends_to_an_existing_file(void **state)
{
    struct fixture *f = *state;
    struct o2l_event ev = make_event("{\"id\":\"x\"}", "x");
    struct o2l_deadletter_entry e = {.ev = &ev, .status = 422, .message = "no"};
    struct o2l_deadletter *dl;
    struct lines l;
    struct stat st;

    dl = open_ok(f->path);
    assert_int_equal(o2l_deadletter_append(dl, &e, 1, NOW_NS), O2L_OK);
    /* Nothing to write is not an error and writes nothing. */
    assert_int_equal(o2l_deadletter_append(dl, NULL, 0, NOW_NS), O2L_OK);
    o2l_deadletter_close(dl);
    dl = open_ok(f->path);
    assert_int_equal(o2l_deadletter_append(dl, &e, 1, NOW_NS), O2L_OK);
    o2l_deadletter_close(dl);

    read_lines(f->path, &l);
    assert_int_equal(l.n, 2);
    assert_string_equal(l.items[0], l.items[1]);
    free_lines(&l);

    /* Created for the owner only: the events may hold user content. */
    assert_int_equal(stat(f->path, &st), 0);
    assert_int_equal(st.st_mode & 077, 0);
}

static void test_deadletter_event_that_is_not_json(void **state)
{
    static const char raw[] = "{\"id\":\"cut\",\"body\":{\"na";
    struct fixture *f = *state;
    struct o2l_event ev = make_event(raw, "cut");
    struct o2l_event scalar = make_event("42", "n");
    struct o2l_deadletter_entry e[2] = {
        {.ev = &ev, .status = 0, .message = "trimmed"},
        {.ev = &scalar, .status = 0, .message = NULL}};
    struct o2l_deadletter *dl;
    struct o2l_event back;
    struct lines l;
    cJSON *root;
    const cJSON *item;

    dl = open_ok(f->path);
    assert_int_equal(o2l_deadletter_append(dl, e, 2, NOW_NS), O2L_OK);
    o2l_deadletter_close(dl);

    read_lines(f->path, &l);
    assert_int_equal(l.n, 2);

    root = cJSON_Parse(l.items[0]);
    assert_non_null(root);
    assert_null(cJSON_GetObjectItemCaseSensitive(root, "event"));
    item = cJSON_GetObjectItemCaseSensitive(root, "event_raw");
    assert_true(cJSON_IsString(item));
    assert_string_equal(item->valuestring, raw);
    cJSON_Delete(root);

    /* JSON but not an object is kept raw too; no message is null. */
    root = cJSON_Parse(l.items[1]);
    assert_non_null(root);
    item = cJSON_GetObjectItemCaseSensitive(root, "event_raw");
    assert_true(cJSON_IsString(item));
    assert_string_equal(item->valuestring, "42");
    assert_true(
        cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(root, "message")));
    cJSON_Delete(root);

    /* Such a line cannot become an event again. */
    assert_int_equal(
        o2l_deadletter_parse_line(l.items[0], l.lens[0], &back, NULL),
        O2L_EPARSE);
    assert_null(back.json);
    assert_null(back.id);
    free_lines(&l);
}

static void test_deadletter_awkward_messages_stay_on_one_line(void **state)
{
    static const char *messages[] = {
        "say \"no\"\nthen\r\nstop",
        "caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x9a\x80",
        "tab\tback\\slash \x01 control",
    };
    static const char json[] =
        "{\"id\":\"u1\",\"body\":{\"input\":\"line1\\nline2 \\u00e9\"}}";
    struct fixture *f = *state;
    struct o2l_event ev = make_event(json, "u1");
    struct o2l_deadletter_entry e[3];
    struct o2l_deadletter *dl;
    struct o2l_event back;
    struct lines l;

    for (size_t i = 0; i < 3; i++) {
        e[i] = (struct o2l_deadletter_entry){
            .ev = &ev, .status = 400, .message = messages[i]};
    }
    dl = open_ok(f->path);
    assert_int_equal(o2l_deadletter_append(dl, e, 3, NOW_NS), O2L_OK);
    o2l_deadletter_close(dl);

    read_lines(f->path, &l);
    assert_int_equal(l.n, 3);
    for (size_t i = 0; i < 3; i++) {
        cJSON *root = cJSON_Parse(l.items[i]);
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(root, "message");

        assert_non_null(root);
        assert_true(cJSON_IsString(m));
        assert_string_equal(m->valuestring, messages[i]);
        cJSON_Delete(root);

        assert_int_equal(
            o2l_deadletter_parse_line(l.items[i], l.lens[i], &back, NULL),
            O2L_OK);
        assert_string_equal(back.id, "u1");
        /* Unicode escapes come back as UTF-8: the same JSON value. */
        assert_non_null(strstr(back.json, "line1\\nline2 \xc3\xa9"));
        o2l_event_free(&back);
    }
    free_lines(&l);
}

static void test_deadletter_parse_line_rejects_garbage(void **state)
{
    static const char *bad[] = {
        "",
        "garbage",
        "{}",
        "[1,2]",
        "{\"time\":\"x\",\"status\":400,\"message\":\"m\",\"event\":",
        "{\"status\":400,\"event\":\"{\\\"id\\\":\\\"a\\\"}\"}",
        "{\"status\":400,\"event\":{\"type\":\"trace-create\"}}",
        "{\"status\":400,\"event\":{\"id\":7}}",
        "{\"status\":\"400\",\"event\":{\"id\":\"a\"}}",
        "{\"event\":{\"id\":\"a\"}}",
        "{\"status\":400,\"event_raw\":\"{\\\"id\\\":\\\"a\\\"\"}",
        "{\"status\":400,\"event\":{\"id\":\"a\"}}{\"status\":400,"
        "\"event\":{\"id\":\"b\"}}",
    };
    struct o2l_event back;
    int status = 99;

    (void)state;
    for (size_t i = 0; i < O2L_ARRAY_LEN(bad); i++) {
        assert_int_equal(
            o2l_deadletter_parse_line(bad[i], strlen(bad[i]), &back, &status),
            O2L_EPARSE);
        assert_null(back.json);
        assert_null(back.id);
        assert_int_equal(status, 99);
    }
}

static void test_deadletter_parse_line_reads_only_len_bytes(void **state)
{
    static const char two[] =
        "{\"status\":500,\"event\":{\"id\":\"first\"}}\n"
        "{\"status\":400,\"event\":{\"id\":\"second\"}}\n";
    const char *nl = strchr(two, '\n');
    struct o2l_event back;
    int status = 0;

    (void)state;
    assert_int_equal(
        o2l_deadletter_parse_line(two, (size_t)(nl - two) + 1, &back, &status),
        O2L_OK);
    assert_string_equal(back.id, "first");
    assert_string_equal(back.json, "{\"id\":\"first\"}");
    assert_int_equal(status, 500);
    o2l_event_free(&back);
}

static void test_deadletter_open_missing_directory(void **state)
{
    struct fixture *f = *state;
    char path[192];
    char err[256] = "";

    snprintf(path, sizeof(path), "%s/no-such-dir/dead.jsonl", f->dir);
    assert_null(o2l_deadletter_open(path, err, sizeof(err)));
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, "No such file or directory"));
    o2l_deadletter_close(NULL);
}

static void test_deadletter_write_failure_is_eio(void **state)
{
    struct o2l_event ev = make_event("{\"id\":\"full\"}", "full");
    struct o2l_deadletter_entry e = {
        .ev = &ev, .status = 400, .message = "disk full"};
    struct o2l_deadletter *dl;

    (void)state;
    /* Every write to /dev/full fails with ENOSPC. */
    if (access("/dev/full", W_OK) != 0) {
        skip();
    }
    dl = open_ok("/dev/full");
    assert_int_equal(o2l_deadletter_append(dl, &e, 1, NOW_NS), O2L_EIO);
    o2l_deadletter_close(dl);
}

static void test_deadletter_allocation_failures(void **state)
{
    struct fixture *f = *state;
    struct o2l_event ev =
        make_event("{\"id\":\"m\",\"body\":{\"a\":[1,2]}}", "m");
    struct o2l_deadletter_entry e[2] = {
        {.ev = &ev, .status = 400, .message = "x"},
        {.ev = &ev, .status = 0, .message = NULL}};
    struct o2l_deadletter *dl;
    struct o2l_event back;
    struct lines l;
    char err[256] = "";
    size_t ok_appends = 0;
    int rc = O2L_ENOMEM;

    o2l_mem_fail_after(0);
    assert_null(o2l_deadletter_open(f->path, err, sizeof(err)));
    o2l_mem_fail_after(-1);
    assert_non_null(strstr(err, "out of memory"));

    /* Fail each allocation in turn until an append needs no more. */
    dl = open_ok(f->path);
    for (long k = 0; k < 200 && rc != O2L_OK; k++) {
        o2l_mem_fail_after(k);
        rc = o2l_deadletter_append(dl, e, 2, NOW_NS);
        o2l_mem_fail_after(-1);
        assert_true(rc == O2L_OK || rc == O2L_ENOMEM);
        ok_appends += rc == O2L_OK;
    }
    assert_int_equal(rc, O2L_OK);
    o2l_deadletter_close(dl);

    /* A failed append wrote nothing: exactly one append's lines. */
    read_lines(f->path, &l);
    assert_int_equal(ok_appends, 1);
    assert_int_equal(l.n, 2);

    rc = O2L_ENOMEM;
    for (long k = 0; k < 200 && rc != O2L_OK; k++) {
        o2l_mem_fail_after(k);
        rc = o2l_deadletter_parse_line(l.items[0], l.lens[0], &back, NULL);
        o2l_mem_fail_after(-1);
        /* A parse that runs out of memory looks like a bad line. */
        assert_true(rc == O2L_OK || rc == O2L_ENOMEM || rc == O2L_EPARSE);
        if (rc != O2L_OK) {
            assert_null(back.json);
            assert_null(back.id);
        }
    }
    assert_int_equal(rc, O2L_OK);
    assert_string_equal(back.id, "m");
    o2l_event_free(&back);
    free_lines(&l);
}

/* An OTLP item of |len| bytes (binary, NULs included) over |buf|. */
static struct o2l_event make_item(unsigned char *buf, size_t len,
                                  const char *id, const char *span_id)
{
    struct o2l_event ev;

    memset(&ev, 0, sizeof(ev));
    for (size_t i = 0; i < len; i++) {
        buf[i] = (unsigned char)(i * 37 + 11);
    }
    ev.json = (char *)buf;
    ev.len = len;
    ev.id = (char *)id;
    ev.otlp = true;
    snprintf(ev.span_id, sizeof(ev.span_id), "%s", span_id);
    return ev;
}

static void test_deadletter_otlp_item_round_trip(void **state)
{
    /* 0 to 3 bytes cover every padding case; 300 every byte value. */
    static const size_t lens[] = {0, 1, 2, 3, 300};
    static unsigned char bufs[5][300];
    struct fixture *f = *state;
    struct o2l_event evs[5];
    struct o2l_deadletter_entry e[5];
    struct o2l_deadletter *dl;
    struct o2l_event back;
    struct lines l;
    char id[32];
    int status = -1;

    for (size_t i = 0; i < 5; i++) {
        snprintf(id, sizeof(id), "t%zu-obs", i);
        evs[i] = make_item(bufs[i], lens[i], strdup(id),
                           i == 4 ? "" : "0123456789abcdef");
        e[i] = (struct o2l_deadletter_entry){
            .ev = &evs[i], .status = 400, .message = "bad span"};
    }
    dl = open_ok(f->path);
    assert_int_equal(o2l_deadletter_append(dl, e, 5, NOW_NS), O2L_OK);
    o2l_deadletter_close(dl);

    read_lines(f->path, &l);
    assert_int_equal(l.n, 5);
    for (size_t i = 0; i < 5; i++) {
        cJSON *root = cJSON_Parse(l.items[i]);
        const cJSON *b64 = cJSON_GetObjectItemCaseSensitive(root, "otlp");

        /* Kept as base64 with its ids, never as "event" or "event_raw". */
        assert_non_null(root);
        assert_true(cJSON_IsString(b64));
        assert_null(cJSON_GetObjectItemCaseSensitive(root, "event"));
        assert_null(cJSON_GetObjectItemCaseSensitive(root, "event_raw"));
        assert_string_equal(
            cJSON_GetObjectItemCaseSensitive(root, "id")->valuestring,
            evs[i].id);
        assert_string_equal(
            cJSON_GetObjectItemCaseSensitive(root, "span_id")->valuestring,
            evs[i].span_id);
        assert_int_equal(strlen(b64->valuestring), (lens[i] + 2) / 3 * 4);
        cJSON_Delete(root);

        assert_int_equal(
            o2l_deadletter_parse_line(l.items[i], l.lens[i], &back, &status),
            O2L_OK);
        assert_true(back.otlp);
        assert_int_equal(back.len, lens[i]);
        if (lens[i] > 0) {
            assert_memory_equal(back.json, bufs[i], lens[i]);
        }
        assert_int_equal(back.json[back.len], '\0');
        assert_string_equal(back.id, evs[i].id);
        assert_string_equal(back.span_id, evs[i].span_id);
        assert_int_equal(status, 400);
        o2l_event_free(&back);
        free(evs[i].id);
    }
    free_lines(&l);
}

static void test_deadletter_otlp_known_base64(void **state)
{
    static const char line[] =
        "{\"time\":\"2025-12-03T10:00:00.000000Z\",\"status\":413,"
        "\"message\":null,\"id\":\"t-o\",\"span_id\":\"00f067aa0ba902b7\","
        "\"otlp\":\"CgD/+w==\"}";
    static const unsigned char want[] = {0x0a, 0x00, 0xff, 0xfb};
    struct o2l_event back;
    int status = 0;

    (void)state;
    assert_int_equal(
        o2l_deadletter_parse_line(line, strlen(line), &back, &status), O2L_OK);
    assert_true(back.otlp);
    assert_int_equal(back.len, sizeof(want));
    assert_memory_equal(back.json, want, sizeof(want));
    assert_string_equal(back.id, "t-o");
    assert_string_equal(back.span_id, "00f067aa0ba902b7");
    assert_int_equal(status, 413);
    o2l_event_free(&back);
}

static void test_deadletter_otlp_bad_lines(void **state)
{
    static const char *bad[] = {
        /* not base64: length, alphabet, padding in the middle */
        "{\"status\":400,\"id\":\"a\",\"otlp\":\"abc\"}",
        "{\"status\":400,\"id\":\"a\",\"otlp\":\"ab-_\"}",
        "{\"status\":400,\"id\":\"a\",\"otlp\":\"a=bc\"}",
        "{\"status\":400,\"id\":\"a\",\"otlp\":\"A===\"}",
        "{\"status\":400,\"id\":\"a\",\"otlp\":\"====\"}",
        /* ids missing or of the wrong kind */
        "{\"status\":400,\"otlp\":\"CgD/\"}",
        "{\"status\":400,\"id\":\"\",\"otlp\":\"CgD/\"}",
        "{\"status\":400,\"id\":7,\"otlp\":\"CgD/\"}",
        "{\"status\":400,\"id\":\"a\",\"span_id\":1,\"otlp\":\"CgD/\"}",
        /* "otlp" not a string, status missing */
        "{\"status\":400,\"id\":\"a\",\"otlp\":[1]}",
        "{\"id\":\"a\",\"otlp\":\"CgD/\"}",
    };
    struct o2l_event back;
    int status = 99;

    (void)state;
    for (size_t i = 0; i < O2L_ARRAY_LEN(bad); i++) {
        assert_int_equal(
            o2l_deadletter_parse_line(bad[i], strlen(bad[i]), &back, &status),
            O2L_EPARSE);
        assert_null(back.json);
        assert_null(back.id);
        assert_false(back.otlp);
        assert_int_equal(status, 99);
    }
}

static void test_deadletter_otlp_allocation_failures(void **state)
{
    static unsigned char buf[40];
    struct fixture *f = *state;
    struct o2l_event ev =
        make_item(buf, sizeof(buf), "t-x", "1111222233334444");
    struct o2l_deadletter_entry e = {.ev = &ev, .status = 400, .message = "m"};
    struct o2l_deadletter *dl;
    struct o2l_event back;
    struct lines l;
    int rc = O2L_ENOMEM;

    dl = open_ok(f->path);
    for (long k = 0; k < 200 && rc != O2L_OK; k++) {
        o2l_mem_fail_after(k);
        rc = o2l_deadletter_append(dl, &e, 1, NOW_NS);
        o2l_mem_fail_after(-1);
        assert_true(rc == O2L_OK || rc == O2L_ENOMEM);
    }
    assert_int_equal(rc, O2L_OK);
    o2l_deadletter_close(dl);

    read_lines(f->path, &l);
    assert_int_equal(l.n, 1);
    rc = O2L_ENOMEM;
    for (long k = 0; k < 200 && rc != O2L_OK; k++) {
        o2l_mem_fail_after(k);
        rc = o2l_deadletter_parse_line(l.items[0], l.lens[0], &back, NULL);
        o2l_mem_fail_after(-1);
        assert_true(rc == O2L_OK || rc == O2L_ENOMEM || rc == O2L_EPARSE);
        if (rc != O2L_OK) {
            assert_null(back.json);
            assert_null(back.id);
        }
    }
    assert_int_equal(rc, O2L_OK);
    assert_int_equal(back.len, sizeof(buf));
    assert_memory_equal(back.json, buf, sizeof(buf));
    o2l_event_free(&back);
    free_lines(&l);
}

/*
 * A line written again keeps the time, status and message it was first
 * written with, and what a replay did goes under "replay".
 */
static void test_deadletter_replay_note_keeps_first_refusal(void **state)
{
    static const char no_time[] =
        "{\"status\":0,\"message\":null,\"event\":{\"id\":\"z\"}}";
    struct fixture *f = *state;
    struct o2l_event ev = make_event("{\"id\":\"r1\",\"body\":{}}", "r1");
    struct o2l_deadletter_entry e = {&ev, 429, "slow down",
                                     "2025-01-02T03:04:05.000000Z",
                                     "gave up after 60 s without progress"};
    struct o2l_deadletter_meta meta;
    struct o2l_deadletter *dl;
    struct o2l_event back;
    struct lines l;
    const cJSON *note;
    cJSON *root;
    char iso[O2L_ISO_LEN];

    dl = open_ok(f->path);
    assert_int_equal(o2l_deadletter_append(dl, &e, 1, NOW_NS), O2L_OK);
    o2l_deadletter_close(dl);
    read_lines(f->path, &l);
    assert_int_equal(l.n, 1);

    root = cJSON_Parse(l.items[0]);
    assert_non_null(root);
    assert_string_equal(
        cJSON_GetObjectItemCaseSensitive(root, "time")->valuestring,
        "2025-01-02T03:04:05.000000Z");
    assert_int_equal(cJSON_GetObjectItemCaseSensitive(root, "status")->valueint,
                     429);
    assert_string_equal(
        cJSON_GetObjectItemCaseSensitive(root, "message")->valuestring,
        "slow down");
    note = cJSON_GetObjectItemCaseSensitive(root, "replay");
    assert_true(cJSON_IsObject(note));
    assert_string_equal(
        cJSON_GetObjectItemCaseSensitive(note, "time")->valuestring,
        o2l_iso_time((uint64_t)NOW_NS, iso));
    assert_string_equal(
        cJSON_GetObjectItemCaseSensitive(note, "message")->valuestring,
        "gave up after 60 s without progress");
    cJSON_Delete(root);

    /* Read back: the event and the first refusal. */
    assert_int_equal(
        o2l_deadletter_read_line(l.items[0], l.lens[0], &back, &meta), O2L_OK);
    assert_string_equal(back.id, "r1");
    assert_int_equal(meta.status, 429);
    assert_string_equal(meta.message, "slow down");
    assert_string_equal(meta.time, "2025-01-02T03:04:05.000000Z");
    o2l_deadletter_meta_clear(&meta);
    assert_null(meta.message);
    o2l_event_free(&back);
    free_lines(&l);

    /* A null message and no time read back as NULL. */
    assert_int_equal(
        o2l_deadletter_read_line(no_time, strlen(no_time), &back, &meta),
        O2L_OK);
    assert_int_equal(meta.status, 0);
    assert_null(meta.message);
    assert_null(meta.time);
    o2l_event_free(&back);
    o2l_deadletter_meta_clear(&meta);
}

/* Raw lines go in as they are; a missing last newline is added. */
static void test_deadletter_append_raw(void **state)
{
    static const char two[] = "not json at all\n{\"status\":1}";
    struct fixture *f = *state;
    struct o2l_deadletter *dl;
    struct lines l;

    dl = open_ok(f->path);
    assert_int_equal(o2l_deadletter_append_raw(dl, two, strlen(two)), O2L_OK);
    assert_int_equal(o2l_deadletter_append_raw(dl, "x\n", 2), O2L_OK);
    assert_int_equal(o2l_deadletter_append_raw(dl, "", 0), O2L_OK);
    o2l_deadletter_close(dl);
    read_lines(f->path, &l);
    assert_int_equal(l.n, 3);
    assert_string_equal(l.items[0], "not json at all\n");
    assert_string_equal(l.items[1], "{\"status\":1}\n");
    assert_string_equal(l.items[2], "x\n");
    free_lines(&l);
}

/* A file mixing ingestion events and OTLP items replays both kinds. */
static void test_deadletter_replay_mixes_events_and_items(void **state)
{
    static unsigned char buf_a[24];
    static unsigned char buf_b[200];
    struct o2l_log quiet = {O2L_LOG_ERROR, NULL};
    struct fixture *f = *state;
    struct o2l_event evs[4];
    struct o2l_deadletter_entry e[4];
    struct o2l_exporter_config ec;
    struct o2l_replay_result res;
    struct o2l_deadletter *dl;
    char sink[160];
    char *written;
    size_t len;

    evs[0] = make_event("{\"id\":\"ev-1\",\"type\":\"trace-create\"}", "ev-1");
    evs[1] = make_item(buf_a, sizeof(buf_a), "t-item-a", "aaaaaaaaaaaaaaaa");
    evs[2] = make_event("{\"id\":\"ev-2\",\"type\":\"span-create\"}", "ev-2");
    evs[3] = make_item(buf_b, sizeof(buf_b), "t-item-b", "");
    for (size_t i = 0; i < 4; i++) {
        e[i] = (struct o2l_deadletter_entry){
            .ev = &evs[i], .status = 500, .message = "was down"};
    }
    dl = open_ok(f->path);
    assert_int_equal(o2l_deadletter_append(dl, e, 4, NOW_NS), O2L_OK);
    o2l_deadletter_close(dl);

    /* The file sink takes both kinds, so each pass delivers at once. */
    snprintf(sink, sizeof(sink), "%s/sink.out", f->dir);
    o2l_exporter_config_defaults(&ec);
    ec.file_path = sink;
    ec.flush_interval_ms = 10;
    assert_int_equal(o2l_replay_dead_letters(&ec, f->path, NULL, &quiet, &res),
                     O2L_OK);
    assert_int_equal(res.replayed, 4);
    assert_int_equal(res.delivered, 4);
    assert_int_equal(res.refused, 0);
    assert_int_equal(res.unreadable, 0);

    /* Nothing written back; every event and item reached the sink. */
    written = test_read_file(f->path, &len);
    assert_int_equal(len, 0);
    free(written);
    written = test_read_file(sink, &len);
    assert_non_null(memmem(written, len, "\"id\":\"ev-1\"", 11));
    assert_non_null(memmem(written, len, "\"id\":\"ev-2\"", 11));
    assert_non_null(memmem(written, len, buf_a, sizeof(buf_a)));
    assert_non_null(memmem(written, len, buf_b, sizeof(buf_b)));
    free(written);
    unlink(sink);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_deadletter_round_trip, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_deadletter_appends_to_an_existing_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deadletter_event_that_is_not_json,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_deadletter_awkward_messages_stay_on_one_line, setup, teardown),
        cmocka_unit_test(test_deadletter_parse_line_rejects_garbage),
        cmocka_unit_test(test_deadletter_parse_line_reads_only_len_bytes),
        cmocka_unit_test_setup_teardown(test_deadletter_open_missing_directory,
                                        setup, teardown),
        cmocka_unit_test(test_deadletter_write_failure_is_eio),
        cmocka_unit_test_setup_teardown(test_deadletter_allocation_failures,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_deadletter_otlp_item_round_trip,
                                        setup, teardown),
        cmocka_unit_test(test_deadletter_otlp_known_base64),
        cmocka_unit_test(test_deadletter_otlp_bad_lines),
        cmocka_unit_test_setup_teardown(
            test_deadletter_otlp_allocation_failures, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_deadletter_replay_mixes_events_and_items, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_deadletter_replay_note_keeps_first_refusal, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deadletter_append_raw, setup,
                                        teardown),
    };

    o2l_mem_init();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
