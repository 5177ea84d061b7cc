/* SPDX-License-Identifier: Apache-2.0 */
/* test_config.c - settings precedence, parsing and error messages. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "o2l/common.h"
#include "o2l/config.h"

static int load(struct o2l_config *cfg, int argc, char **argv, char **envp,
                char *err, size_t err_len)
{
    int rest[16];
    int n_rest = 0;
    int rc;

    assert_int_equal(o2l_config_defaults(cfg), O2L_OK);
    rc = o2l_config_load(cfg, argc, argv, envp, rest, &n_rest, err, err_len);
    if (rc == O2L_OK) {
        rc = o2l_config_validate(cfg, err, err_len);
    }
    return rc;
}

static void test_config_defaults_are_embedded(void **state)
{
    struct o2l_config cfg;
    char err[256];
    char *envp[] = {NULL};

    (void)state;
    assert_int_equal(load(&cfg, 0, NULL, envp, err, sizeof(err)), O2L_OK);
    assert_string_equal(cfg.http_listen, "0.0.0.0:4318");
    assert_string_equal(cfg.output, "auto");
    assert_int_equal(cfg.flush_interval_ms, 1000);
    assert_int_equal(cfg.http_max_body_bytes, 64 * 1024 * 1024);
    assert_true(cfg.session_from_thread_id);
    assert_string_equal(cfg.control_flow_exceptions[0], "GraphInterrupt");
    assert_string_equal(cfg.control_flow_exceptions[4], "Command");
    assert_null(cfg.control_flow_exceptions[5]);
    assert_null(cfg.public_key);
    assert_string_equal(cfg.spool_dir, "otel2langfuse-spool");
    assert_int_equal(cfg.spool_max_bytes, 1024ull * 1024 * 1024);
    assert_true(cfg.spool_sync);
    assert_string_equal(cfg.admin_listen, "127.0.0.1:13133");
    assert_true(cfg.retry_multiplier == 2.0);
    assert_int_equal(cfg.max_age_s, 0);
    assert_true(cfg.otlp_keep_attributes);
    assert_int_equal(cfg.assemble_window_ms, 3000);
    o2l_config_free(&cfg);
}

/* True when the NULL-terminated |list| holds |name|. */
static bool list_has(char **list, const char *name)
{
    for (size_t i = 0; list && list[i]; i++) {
        if (strcmp(list[i], name) == 0) {
            return true;
        }
    }
    return false;
}

static void test_config_mapping_defaults(void **state)
{
    struct o2l_config cfg;
    char err[256];
    char *envp[] = {NULL};

    (void)state;
    assert_int_equal(load(&cfg, 0, NULL, envp, err, sizeof(err)), O2L_OK);
    assert_string_equal(cfg.non_llm_spans, "keep");
    assert_true(list_has(cfg.llm_scopes, "openinference"));
    assert_true(list_has(cfg.llm_scopes, "@flue/opentelemetry"));
    assert_true(list_has(cfg.llm_scopes, "Microsoft.SemanticKernel"));
    assert_false(list_has(cfg.llm_scopes, "opentelemetry.instrumentation."));
    assert_true(list_has(cfg.llm_key_prefixes, "gen_ai."));
    assert_true(list_has(cfg.llm_key_prefixes, "genkit:"));
    assert_true(list_has(cfg.llm_key_prefixes, "input.value"));
    assert_string_equal(cfg.thread_id_keys[0], "thread_id");
    assert_null(cfg.thread_id_keys[1]);
    assert_non_null(cfg.redact);
    assert_null(cfg.redact[0]);
    assert_string_equal(cfg.redact_marker, "[REDACTED]");
    assert_string_equal(cfg.trace_id_attribute, "langfuse.trace.id");
    assert_int_equal(cfg.max_flattened_slots, 10000);
    o2l_config_free(&cfg);
}

static void test_config_mapping_from_environment_and_flags(void **state)
{
    struct o2l_config cfg;
    char err[256];
    char *envp[] = {"O2L_NON_LLM_SPANS=drop", "O2L_REDACT=api_key, email",
                    "O2L_THREAD_ID_KEYS=ignored", NULL};
    char *argv[] = {"serve",
                    "--thread-id-keys=conversation,thread_id",
                    "--redact-marker",
                    "***",
                    "--llm-scopes=a,b",
                    "--llm-key-prefixes",
                    "x."};

    (void)state;
    assert_int_equal(load(&cfg, 7, argv, envp, err, sizeof(err)), O2L_OK);
    assert_string_equal(cfg.non_llm_spans, "drop");
    assert_string_equal(cfg.redact[0], "api_key");
    assert_string_equal(cfg.redact[1], "email");
    assert_null(cfg.redact[2]);
    assert_string_equal(cfg.thread_id_keys[0], "conversation");
    assert_string_equal(cfg.thread_id_keys[1], "thread_id");
    assert_null(cfg.thread_id_keys[2]);
    assert_string_equal(cfg.redact_marker, "***");
    assert_string_equal(cfg.llm_scopes[1], "b");
    assert_string_equal(cfg.llm_key_prefixes[0], "x.");
    assert_null(cfg.llm_key_prefixes[1]);
    o2l_config_free(&cfg);
}

/* Writes |yaml| to a new temporary file; returns its name in |path|. */
static void write_yaml(char *path, size_t len, const char *yaml)
{
    int fd;
    FILE *f;

    snprintf(path, len, "/tmp/o2l-test-config-XXXXXX");
    fd = mkstemp(path);
    assert_true(fd >= 0);
    f = fdopen(fd, "w");
    assert_non_null(f);
    assert_true(fputs(yaml, f) >= 0);
    assert_int_equal(fclose(f), 0);
}

static void test_config_mapping_from_yaml(void **state)
{
    struct o2l_config cfg;
    char err[256];
    char path[64];
    char *argv[] = {"serve", "--config", path};
    char *envp[] = {NULL};

    (void)state;
    write_yaml(path, sizeof(path),
               "mapping:\n"
               "  non_llm_spans: drop\n"
               "  llm_scopes: [\"@flue/opentelemetry\", genkit-tracer]\n"
               "  llm_key_prefixes: [\"genkit:\"]\n"
               "  thread_id_keys: []\n"
               "  redact:\n"
               "    - password\n"
               "    - user.email\n"
               "  redact_marker: \"\"\n");
    assert_int_equal(load(&cfg, 3, argv, envp, err, sizeof(err)), O2L_OK);
    assert_string_equal(cfg.non_llm_spans, "drop");
    assert_string_equal(cfg.llm_scopes[0], "@flue/opentelemetry");
    assert_string_equal(cfg.llm_scopes[1], "genkit-tracer");
    assert_string_equal(cfg.llm_key_prefixes[0], "genkit:");
    assert_null(cfg.thread_id_keys[0]);
    assert_string_equal(cfg.redact[1], "user.email");
    assert_string_equal(cfg.redact_marker, "");
    o2l_config_free(&cfg);
    unlink(path);
}

static void test_config_mapping_bad_values_name_the_setting(void **state)
{
    struct o2l_config cfg;
    char err[256];
    char path[64];
    char *argv[] = {"serve", "--config", path};
    char *envp[] = {NULL};
    char *bad[] = {"O2L_NON_LLM_SPANS=sometimes", NULL};
    char *bad_flag[] = {"serve", "--non-llm-spans=KEEP"};

    (void)state;
    assert_int_equal(load(&cfg, 0, NULL, bad, err, sizeof(err)), O2L_EINVAL);
    assert_non_null(strstr(err, "mapping.non_llm_spans"));
    assert_non_null(strstr(err, "keep or drop"));
    o2l_config_free(&cfg);

    assert_int_equal(load(&cfg, 2, bad_flag, envp, err, sizeof(err)),
                     O2L_EINVAL);
    assert_non_null(strstr(err, "mapping.non_llm_spans"));
    o2l_config_free(&cfg);

    /* Dropping with nothing that marks a span as LLM-related drops all. */
    write_yaml(path, sizeof(path),
               "mapping:\n  non_llm_spans: drop\n  llm_scopes: []\n"
               "  llm_key_prefixes: []\n");
    assert_int_equal(load(&cfg, 3, argv, envp, err, sizeof(err)), O2L_EINVAL);
    assert_non_null(strstr(err, "mapping.non_llm_spans"));
    o2l_config_free(&cfg);
    unlink(path);

    /* A list setting takes a list of names, not a mapping of them. */
    write_yaml(path, sizeof(path), "mapping:\n  redact:\n    - {a: b}\n");
    assert_int_equal(load(&cfg, 3, argv, envp, err, sizeof(err)), O2L_EINVAL);
    assert_non_null(strstr(err, "mapping.redact"));
    o2l_config_free(&cfg);
    unlink(path);
}

static void test_config_delivery_settings(void **state)
{
    struct o2l_config cfg;
    char err[256];
    char *envp[] = {"O2L_OUTPUT=otlp", "O2L_RETRY_MULTIPLIER=1.5",
                    "O2L_SPOOL_SYNC=false", "O2L_ASSEMBLE_WINDOW_MS=0", NULL};
    char *bad_output[] = {"O2L_OUTPUT=v4", NULL};
    char *bad_mult[] = {"O2L_RETRY_MULTIPLIER=abc", NULL};
    char *low_mult[] = {"O2L_RETRY_MULTIPLIER=0.9", NULL};

    (void)state;
    assert_int_equal(load(&cfg, 0, NULL, envp, err, sizeof(err)), O2L_OK);
    assert_string_equal(cfg.output, "otlp");
    assert_true(cfg.retry_multiplier == 1.5);
    assert_false(cfg.spool_sync);
    assert_int_equal(cfg.assemble_window_ms, 0);
    o2l_config_free(&cfg);

    assert_int_equal(load(&cfg, 0, NULL, bad_output, err, sizeof(err)),
                     O2L_EINVAL);
    assert_non_null(strstr(err, "output"));
    o2l_config_free(&cfg);
    assert_int_equal(load(&cfg, 0, NULL, bad_mult, err, sizeof(err)),
                     O2L_EINVAL);
    assert_non_null(strstr(err, "export.retry_multiplier"));
    o2l_config_free(&cfg);
    assert_int_equal(load(&cfg, 0, NULL, low_mult, err, sizeof(err)),
                     O2L_EINVAL);
    assert_non_null(strstr(err, "out of range"));
    o2l_config_free(&cfg);
}

static void test_config_flags_beat_environment(void **state)
{
    struct o2l_config cfg;
    char err[256];
    char *envp[] = {"O2L_FLUSH_INTERVAL_MS=250", "O2L_LOG_LEVEL=debug",
                    "LANGFUSE_HOST=http://host:3000", NULL};
    char *argv[] = {"serve", "--flush-interval-ms", "75",
                    "--control-flow-exceptions=A, B ,,C"};

    (void)state;
    assert_int_equal(load(&cfg, 4, argv, envp, err, sizeof(err)), O2L_OK);
    assert_int_equal(cfg.flush_interval_ms, 75);
    assert_string_equal(cfg.log_level, "debug");
    assert_string_equal(cfg.base_url, "http://host:3000");
    assert_string_equal(cfg.control_flow_exceptions[0], "A");
    assert_string_equal(cfg.control_flow_exceptions[1], "B");
    assert_string_equal(cfg.control_flow_exceptions[2], "C");
    assert_null(cfg.control_flow_exceptions[3]);
    o2l_config_free(&cfg);
}

static void test_config_base_url_wins_over_host(void **state)
{
    struct o2l_config cfg;
    char err[256];
    char *envp[] = {"LANGFUSE_HOST=http://old:3000",
                    "LANGFUSE_BASE_URL=http://new:3000", NULL};

    (void)state;
    assert_int_equal(load(&cfg, 0, NULL, envp, err, sizeof(err)), O2L_OK);
    assert_string_equal(cfg.base_url, "http://new:3000");
    o2l_config_free(&cfg);
}

static void test_config_wrong_value_names_the_setting(void **state)
{
    struct o2l_config cfg;
    char err[256];
    char *envp[] = {"O2L_FLUSH_INTERVAL_MS=12x", NULL};
    char *argv[] = {"--http-listen", "localhost"};
    char *envp2[] = {NULL};

    (void)state;
    assert_int_equal(load(&cfg, 0, NULL, envp, err, sizeof(err)), O2L_EINVAL);
    assert_non_null(strstr(err, "export.flush_interval_ms"));
    assert_non_null(strstr(err, "O2L_FLUSH_INTERVAL_MS"));
    o2l_config_free(&cfg);

    assert_int_equal(load(&cfg, 2, argv, envp2, err, sizeof(err)), O2L_EINVAL);
    assert_non_null(strstr(err, "receivers.http.listen"));
    o2l_config_free(&cfg);
}

static void test_config_keys_come_in_pairs(void **state)
{
    struct o2l_config cfg;
    char err[256];
    char *envp[] = {"LANGFUSE_SECRET_KEY=sk-lf-secret", NULL};

    (void)state;
    assert_int_equal(load(&cfg, 0, NULL, envp, err, sizeof(err)), O2L_EINVAL);
    assert_non_null(strstr(err, "langfuse.public_key"));
    assert_null(strstr(err, "sk-lf-secret"));
    o2l_config_free(&cfg);
}

static void test_config_tls_files_come_in_pairs(void **state)
{
    struct o2l_config cfg;
    char err[256];
    char *envp[] = {"O2L_TLS_CERT_FILE=/etc/cert.pem", NULL};
    char *envp2[] = {"O2L_TLS_CERT_FILE=/etc/cert.pem",
                     "O2L_TLS_KEY_FILE=/etc/key.pem", NULL};

    (void)state;
    assert_int_equal(load(&cfg, 0, NULL, envp, err, sizeof(err)), O2L_EINVAL);
    assert_non_null(strstr(err, "receivers.tls.key_file"));
    o2l_config_free(&cfg);

    assert_int_equal(load(&cfg, 0, NULL, envp2, err, sizeof(err)), O2L_OK);
    assert_string_equal(cfg.tls_key_file, "/etc/key.pem");
    o2l_config_free(&cfg);
}

static void test_config_grpc_can_be_turned_off(void **state)
{
    struct o2l_config cfg;
    char err[256];
    char *envp[] = {NULL};
    char *off[] = {"O2L_GRPC_LISTEN=", NULL};
    char *bad[] = {"O2L_GRPC_LISTEN=4317", NULL};

    (void)state;
    assert_int_equal(load(&cfg, 0, NULL, envp, err, sizeof(err)), O2L_OK);
    assert_string_equal(cfg.grpc_listen, "0.0.0.0:4317");
    o2l_config_free(&cfg);

    assert_int_equal(load(&cfg, 0, NULL, off, err, sizeof(err)), O2L_OK);
    assert_string_equal(cfg.grpc_listen, "");
    o2l_config_free(&cfg);

    assert_int_equal(load(&cfg, 0, NULL, bad, err, sizeof(err)), O2L_EINVAL);
    assert_non_null(strstr(err, "receivers.grpc.listen"));
    o2l_config_free(&cfg);
}

static void test_config_unknown_arguments_are_left_over(void **state)
{
    struct o2l_config cfg;
    char err[256];
    char *envp[] = {NULL};
    char *argv[] = {"convert", "--log-level", "warn", "file.json"};
    int rest[4];
    int n_rest = 0;

    (void)state;
    assert_int_equal(o2l_config_defaults(&cfg), O2L_OK);
    assert_int_equal(
        o2l_config_load(&cfg, 4, argv, envp, rest, &n_rest, err, sizeof(err)),
        O2L_OK);
    assert_int_equal(n_rest, 2);
    assert_int_equal(rest[0], 0);
    assert_int_equal(rest[1], 3);
    assert_string_equal(cfg.log_level, "warn");
    o2l_config_free(&cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_defaults_are_embedded),
        cmocka_unit_test(test_config_mapping_defaults),
        cmocka_unit_test(test_config_mapping_from_environment_and_flags),
        cmocka_unit_test(test_config_mapping_from_yaml),
        cmocka_unit_test(test_config_mapping_bad_values_name_the_setting),
        cmocka_unit_test(test_config_delivery_settings),
        cmocka_unit_test(test_config_flags_beat_environment),
        cmocka_unit_test(test_config_base_url_wins_over_host),
        cmocka_unit_test(test_config_wrong_value_names_the_setting),
        cmocka_unit_test(test_config_keys_come_in_pairs),
        cmocka_unit_test(test_config_tls_files_come_in_pairs),
        cmocka_unit_test(test_config_grpc_can_be_turned_off),
        cmocka_unit_test(test_config_unknown_arguments_are_left_over),
    };

    o2l_mem_init();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
