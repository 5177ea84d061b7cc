/* SPDX-License-Identifier: Apache-2.0 */
/* test_grpc_frame.c - gRPC message framing, gzip bounds and trailers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <zlib.h>

#include "o2l/common.h"
#include "o2l/grpc_frame.h"
#include "o2l/gunzip.h"
#include "o2l/otlp_util.h"
#include "google/rpc/status.pb-c.h"

#define LIMIT 1024

/* Writes a prefix with |flag| and |len| into |out|. */
static void put_prefix(unsigned char *out, unsigned char flag, uint32_t len)
{
    out[0] = flag;
    out[1] = (unsigned char)(len >> 24);
    out[2] = (unsigned char)(len >> 16);
    out[3] = (unsigned char)(len >> 8);
    out[4] = (unsigned char)len;
}

/* gzip of |len| bytes of |in| into a new malloc buffer. */
static unsigned char *gzip_of(const void *in, size_t len, size_t *out_len)
{
    z_stream zs;
    size_t cap = compressBound((uLong)len) + 64;
    unsigned char *out = malloc(cap);

    assert_non_null(out);
    memset(&zs, 0, sizeof(zs));
    assert_int_equal(
        deflateInit2(&zs, 9, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY), Z_OK);
    zs.next_in = (unsigned char *)in;
    zs.avail_in = (uInt)len;
    zs.next_out = out;
    zs.avail_out = (uInt)cap;
    assert_int_equal(deflate(&zs, Z_FINISH), Z_STREAM_END);
    *out_len = cap - zs.avail_out;
    deflateEnd(&zs);
    return out;
}

static void test_grpc_frame_reads_a_message_split_anywhere(void **state)
{
    unsigned char wire[5 + 11];
    struct o2l_grpc_frame_reader r;
    const unsigned char *msg;
    size_t len;
    bool compressed = true;

    (void)state;
    put_prefix(wire, 0, 11);
    memcpy(wire + 5, "hello world", 11);
    /* Every split point, including inside the prefix. */
    for (size_t cut = 0; cut <= sizeof(wire); cut++) {
        o2l_grpc_frame_reader_init(&r, LIMIT);
        assert_int_equal(o2l_grpc_frame_reader_feed(&r, wire, cut), O2L_OK);
        assert_int_equal(
            o2l_grpc_frame_reader_feed(&r, wire + cut, sizeof(wire) - cut),
            O2L_OK);
        assert_int_equal(o2l_grpc_frame_reader_buffered(&r), sizeof(wire));
        assert_int_equal(
            o2l_grpc_frame_reader_finish(&r, &msg, &len, &compressed), O2L_OK);
        assert_int_equal(len, 11);
        assert_memory_equal(msg, "hello world", 11);
        assert_false(compressed);
        o2l_grpc_frame_reader_clear(&r);
    }

    /* One byte at a time. */
    o2l_grpc_frame_reader_init(&r, LIMIT);
    for (size_t i = 0; i < sizeof(wire); i++) {
        assert_int_equal(o2l_grpc_frame_reader_feed(&r, wire + i, 1), O2L_OK);
    }
    assert_int_equal(o2l_grpc_frame_reader_finish(&r, &msg, &len, &compressed),
                     O2L_OK);
    assert_int_equal(len, 11);
    o2l_grpc_frame_reader_clear(&r);
}

static void test_grpc_frame_empty_message_is_a_message(void **state)
{
    unsigned char wire[5];
    struct o2l_grpc_frame_reader r;
    const unsigned char *msg = NULL;
    size_t len = 99;
    bool compressed = true;

    (void)state;
    put_prefix(wire, 0, 0);
    o2l_grpc_frame_reader_init(&r, LIMIT);
    assert_int_equal(o2l_grpc_frame_reader_feed(&r, wire, 5), O2L_OK);
    assert_int_equal(o2l_grpc_frame_reader_finish(&r, &msg, &len, &compressed),
                     O2L_OK);
    assert_non_null(msg);
    assert_int_equal(len, 0);
    assert_false(compressed);
    o2l_grpc_frame_reader_clear(&r);
}

static void test_grpc_frame_lying_prefix_is_a_parse_error(void **state)
{
    unsigned char wire[5 + 4];
    struct o2l_grpc_frame_reader r;
    const unsigned char *msg;
    size_t len;
    bool compressed;

    (void)state;
    /* Announces 10 bytes, sends 4, then the stream ends. */
    put_prefix(wire, 0, 10);
    memcpy(wire + 5, "abcd", 4);
    o2l_grpc_frame_reader_init(&r, LIMIT);
    assert_int_equal(o2l_grpc_frame_reader_feed(&r, wire, sizeof(wire)),
                     O2L_OK);
    assert_int_equal(o2l_grpc_frame_reader_finish(&r, &msg, &len, &compressed),
                     O2L_EPARSE);
    o2l_grpc_frame_reader_clear(&r);

    /* A prefix cut short, and no body at all. */
    o2l_grpc_frame_reader_init(&r, LIMIT);
    assert_int_equal(o2l_grpc_frame_reader_feed(&r, wire, 3), O2L_OK);
    assert_int_equal(o2l_grpc_frame_reader_finish(&r, &msg, &len, &compressed),
                     O2L_EPARSE);
    o2l_grpc_frame_reader_clear(&r);
    o2l_grpc_frame_reader_init(&r, LIMIT);
    assert_int_equal(o2l_grpc_frame_reader_finish(&r, &msg, &len, &compressed),
                     O2L_EPARSE);
    o2l_grpc_frame_reader_clear(&r);
}

static void
test_grpc_frame_over_limit_prefix_refused_before_buffering(void **state)
{
    unsigned char wire[5];
    struct o2l_grpc_frame_reader r;

    (void)state;
    put_prefix(wire, 0, LIMIT + 1);
    o2l_grpc_frame_reader_init(&r, LIMIT);
    assert_int_equal(o2l_grpc_frame_reader_feed(&r, wire, 5), O2L_ETOOBIG);
    assert_int_equal(o2l_grpc_frame_reader_buffered(&r), 5);
    o2l_grpc_frame_reader_clear(&r);

    /* 4 GiB - 1 announced: refused without allocating. */
    put_prefix(wire, 1, UINT32_MAX);
    o2l_grpc_frame_reader_init(&r, LIMIT);
    assert_int_equal(o2l_grpc_frame_reader_feed(&r, wire, 5), O2L_ETOOBIG);
    o2l_grpc_frame_reader_clear(&r);

    /* Exactly at the limit is fine. */
    {
        unsigned char *big = calloc(1, 5 + LIMIT);
        const unsigned char *msg;
        size_t len;
        bool compressed;

        assert_non_null(big);
        put_prefix(big, 0, LIMIT);
        o2l_grpc_frame_reader_init(&r, LIMIT);
        assert_int_equal(o2l_grpc_frame_reader_feed(&r, big, 5 + LIMIT),
                         O2L_OK);
        assert_int_equal(
            o2l_grpc_frame_reader_finish(&r, &msg, &len, &compressed), O2L_OK);
        assert_int_equal(len, LIMIT);
        o2l_grpc_frame_reader_clear(&r);
        free(big);
    }
}

static void test_grpc_frame_bad_flag_and_second_message_refused(void **state)
{
    unsigned char wire[5 + 2 + 5 + 2];
    struct o2l_grpc_frame_reader r;

    (void)state;
    put_prefix(wire, 2, 2);
    o2l_grpc_frame_reader_init(&r, LIMIT);
    assert_int_equal(o2l_grpc_frame_reader_feed(&r, wire, 5), O2L_EPARSE);
    o2l_grpc_frame_reader_clear(&r);

    /* A unary call carries one message; a second one is an error. */
    put_prefix(wire, 0, 2);
    memcpy(wire + 5, "ab", 2);
    put_prefix(wire + 7, 0, 2);
    memcpy(wire + 12, "cd", 2);
    o2l_grpc_frame_reader_init(&r, LIMIT);
    assert_int_equal(o2l_grpc_frame_reader_feed(&r, wire, sizeof(wire)),
                     O2L_EPARSE);
    /* Never more than one message plus its prefix is held. */
    assert_int_equal(o2l_grpc_frame_reader_buffered(&r), 7);
    o2l_grpc_frame_reader_clear(&r);
}

static void test_grpc_frame_compressed_flag_is_reported(void **state)
{
    static const char text[] = "some protobuf bytes, compressed";
    struct o2l_grpc_frame_reader r;
    unsigned char *gz, *wire, *out = NULL;
    const unsigned char *msg;
    size_t gz_len, len, out_len = 0;
    bool compressed = false;

    (void)state;
    gz = gzip_of(text, sizeof(text), &gz_len);
    wire = malloc(5 + gz_len);
    assert_non_null(wire);
    put_prefix(wire, 1, (uint32_t)gz_len);
    memcpy(wire + 5, gz, gz_len);
    o2l_grpc_frame_reader_init(&r, LIMIT);
    assert_int_equal(o2l_grpc_frame_reader_feed(&r, wire, 5 + gz_len), O2L_OK);
    assert_int_equal(o2l_grpc_frame_reader_finish(&r, &msg, &len, &compressed),
                     O2L_OK);
    assert_true(compressed);
    assert_int_equal(o2l_gunzip(msg, len, LIMIT, &out, &out_len), O2L_OK);
    assert_int_equal(out_len, sizeof(text));
    assert_memory_equal(out, text, sizeof(text));
    o2l_free(out);
    o2l_grpc_frame_reader_clear(&r);
    free(wire);
    free(gz);
}

static void test_grpc_frame_inflate_stops_a_gzip_bomb(void **state)
{
    size_t big_len = 8u << 20;
    unsigned char *big = calloc(1, big_len);
    unsigned char *gz, *out = NULL;
    size_t gz_len, out_len = 0;

    (void)state;
    assert_non_null(big);
    gz = gzip_of(big, big_len, &gz_len);
    assert_true(gz_len < 64 * 1024);
    assert_int_equal(o2l_gunzip(gz, gz_len, LIMIT, &out, &out_len),
                     O2L_ETOOBIG);
    assert_null(out);
    /* Exactly at the limit inflates. */
    free(gz);
    gz = gzip_of(big, LIMIT, &gz_len);
    assert_int_equal(o2l_gunzip(gz, gz_len, LIMIT, &out, &out_len), O2L_OK);
    assert_int_equal(out_len, LIMIT);
    o2l_free(out);
    free(gz);
    free(big);
}

static void test_grpc_frame_inflate_rejects_broken_gzip(void **state)
{
    static const char text[] = "abcdefghijklmnopqrstuvwxyz";
    unsigned char *gz, *joined, *out = NULL;
    size_t gz_len, out_len = 0;

    (void)state;
    assert_int_equal(o2l_gunzip("not gzip", 8, LIMIT, &out, &out_len),
                     O2L_EPARSE);
    assert_int_equal(o2l_gunzip("", 0, LIMIT, &out, &out_len), O2L_EPARSE);
    gz = gzip_of(text, sizeof(text), &gz_len);
    /* Cut short. */
    assert_int_equal(o2l_gunzip(gz, gz_len - 4, LIMIT, &out, &out_len),
                     O2L_EPARSE);
    /* Trailing garbage, and two members that join. */
    joined = malloc(2 * gz_len);
    assert_non_null(joined);
    memcpy(joined, gz, gz_len);
    memcpy(joined + gz_len, "xyz", 3);
    assert_int_equal(o2l_gunzip(joined, gz_len + 3, LIMIT, &out, &out_len),
                     O2L_EPARSE);
    memcpy(joined + gz_len, gz, gz_len);
    assert_int_equal(o2l_gunzip(joined, 2 * gz_len, LIMIT, &out, &out_len),
                     O2L_OK);
    assert_int_equal(out_len, 2 * sizeof(text));
    o2l_free(out);
    free(joined);
    free(gz);
}

static void test_grpc_frame_encode_writes_prefix(void **state)
{
    unsigned char *out = NULL;
    size_t len = 0;
    static const unsigned char want[] = {0, 0, 0, 0, 3, 'a', 'b', 'c'};

    (void)state;
    assert_int_equal(o2l_grpc_frame_encode("abc", 3, &out, &len), O2L_OK);
    assert_int_equal(len, sizeof(want));
    assert_memory_equal(out, want, sizeof(want));
    o2l_free(out);
    assert_int_equal(o2l_grpc_frame_encode(NULL, 0, &out, &len), O2L_OK);
    assert_int_equal(len, 5);
    o2l_free(out);
}

static void test_grpc_frame_percent_encodes_messages(void **state)
{
    char *s;

    (void)state;
    s = o2l_grpc_frame_percent_encode("plain text: ok");
    assert_string_equal(s, "plain text: ok");
    o2l_free(s);
    s = o2l_grpc_frame_percent_encode("100% \xc3\xa9\n");
    assert_string_equal(s, "100%25 %C3%A9%0A");
    o2l_free(s);
}

static void test_grpc_frame_status_details_carry_retry_info(void **state)
{
    char *b64 = NULL;
    uint8_t raw[256];
    size_t raw_len = 0;
    Google__Rpc__Status *st;
    Google__Rpc__RetryInfo *info;

    (void)state;
    assert_int_equal(o2l_grpc_frame_status_details(14, "queue full", 2, &b64),
                     O2L_OK);
    assert_null(strchr(b64, '='));
    assert_true(
        o2l_otlp_base64_decode(b64, strlen(b64), raw, sizeof(raw), &raw_len));
    st = google__rpc__status__unpack(NULL, raw_len, raw);
    assert_non_null(st);
    assert_int_equal(st->code, 14);
    assert_string_equal(st->message, "queue full");
    assert_int_equal(st->n_details, 1);
    assert_string_equal(st->details[0]->type_url,
                        "type.googleapis.com/google.rpc.RetryInfo");
    info = google__rpc__retry_info__unpack(NULL, st->details[0]->value.len,
                                           st->details[0]->value.data);
    assert_non_null(info);
    assert_non_null(info->retry_delay);
    assert_int_equal(info->retry_delay->seconds, 2);
    google__rpc__retry_info__free_unpacked(info, NULL);
    google__rpc__status__free_unpacked(st, NULL);
    o2l_free(b64);
}

static void test_grpc_frame_survives_allocation_failures(void **state)
{
    unsigned char wire[5 + 3];
    struct o2l_grpc_frame_reader r;
    char *s = NULL;

    (void)state;
    put_prefix(wire, 0, 3);
    memcpy(wire + 5, "abc", 3);
    o2l_grpc_frame_reader_init(&r, LIMIT);
    o2l_mem_fail_after(0);
    assert_int_equal(o2l_grpc_frame_reader_feed(&r, wire, sizeof(wire)),
                     O2L_ENOMEM);
    o2l_mem_fail_after(-1);
    o2l_grpc_frame_reader_clear(&r);
    for (long n = 0; n < 8; n++) {
        int rc;

        o2l_mem_fail_after(n);
        rc = o2l_grpc_frame_status_details(14, "m", 2, &s);
        o2l_mem_fail_after(-1);
        assert_true(rc == O2L_OK || rc == O2L_ENOMEM);
        if (rc == O2L_OK) {
            assert_non_null(s);
        }
        o2l_free(s);
        s = NULL;
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grpc_frame_reads_a_message_split_anywhere),
        cmocka_unit_test(test_grpc_frame_empty_message_is_a_message),
        cmocka_unit_test(test_grpc_frame_lying_prefix_is_a_parse_error),
        cmocka_unit_test(
            test_grpc_frame_over_limit_prefix_refused_before_buffering),
        cmocka_unit_test(test_grpc_frame_bad_flag_and_second_message_refused),
        cmocka_unit_test(test_grpc_frame_compressed_flag_is_reported),
        cmocka_unit_test(test_grpc_frame_inflate_stops_a_gzip_bomb),
        cmocka_unit_test(test_grpc_frame_inflate_rejects_broken_gzip),
        cmocka_unit_test(test_grpc_frame_encode_writes_prefix),
        cmocka_unit_test(test_grpc_frame_percent_encodes_messages),
        cmocka_unit_test(test_grpc_frame_status_details_carry_retry_info),
        cmocka_unit_test(test_grpc_frame_survives_allocation_failures),
    };

    o2l_mem_init();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
