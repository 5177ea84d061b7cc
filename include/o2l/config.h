/* SPDX-License-Identifier: Apache-2.0 */
/*
 * config.h - the daemon's settings: defaults, then a YAML file, then
 * environment variables, then command-line flags, each overriding the one
 * before. A wrong value is an error that names the setting.
 */
#ifndef O2L_CONFIG_H
#define O2L_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "o2l/log.h"

struct o2l_config {
    /* Langfuse */
    char *base_url;
    char *public_key;
    char *secret_key; /* never logged */
    char *output;     /* "auto", "ingestion" or "otlp" */

    /* receivers */
    char *http_listen; /* host:port */
    uint64_t http_max_body_bytes;
    char *grpc_listen; /* host:port; "" or "off" disables OTLP/gRPC */
    uint64_t grpc_max_message_bytes;
    char *tls_cert_file; /* PEM; with tls_key_file, both receivers use TLS */
    char *tls_key_file;  /* PEM, unencrypted; never logged */

    /* export */
    uint64_t flush_interval_ms;
    uint64_t batch_max_events;
    uint64_t batch_max_bytes;
    uint64_t queue_max_events;
    uint64_t queue_max_bytes;
    uint64_t request_timeout_ms;
    uint64_t retry_initial_ms;
    uint64_t retry_max_ms;
    double retry_multiplier;
    uint64_t max_age_s; /* 0: never give up */
    uint64_t auth_retry_ms;
    uint64_t shutdown_timeout_ms;
    char *dead_letter_file; /* "" : dead-letter.jsonl in spool_dir */
    char *file_sink;        /* where events go without credentials */
    bool otlp_keep_attributes;

    /* assemble */
    uint64_t assemble_window_ms;
    uint64_t assemble_root_grace_ms;
    uint64_t assemble_max_traces;
    uint64_t assemble_max_bytes;

    /* spool */
    char *spool_dir;
    uint64_t spool_max_bytes;
    bool spool_sync;

    /* admin */
    char *admin_listen; /* host:port; "" or "off" disables */

    /* log */
    char *log_level;

    /* mapping (lists are NULL-terminated) */
    bool session_from_thread_id;
    char **control_flow_exceptions;
    char *trace_id_attribute;
    uint64_t max_flattened_slots;
    char **thread_id_keys;
    char *non_llm_spans; /* "keep" or "drop" */
    char **llm_scopes;
    char **llm_key_prefixes;
    char **redact;
    char *redact_marker;

    char *config_file; /* the YAML file read, or NULL */
};

/* Fills |cfg| with the built-in defaults. Returns O2L_OK or O2L_ENOMEM. */
int o2l_config_defaults(struct o2l_config *cfg);

/*
 * Applies, in order, the YAML file named by --config (or O2L_CONFIG), the
 * environment |envp| (NULL-terminated "NAME=value" strings) and the flags
 * in argv[0..argc). Flags that are not settings are left for the caller:
 * |rest| receives the indexes of the arguments it did not consume and
 * *n_rest their count (|rest| must hold argc entries).
 * On failure returns O2L_EINVAL with a message naming the setting in
 * |err| (|err_len| bytes).
 */
int o2l_config_load(struct o2l_config *cfg, int argc, char **argv, char **envp,
                    int *rest, int *n_rest, char *err, size_t err_len);

/* Checks cross-setting rules (e.g. both keys or none). Same error rules. */
int o2l_config_validate(const struct o2l_config *cfg, char *err,
                        size_t err_len);

/* Writes the settings reference (flags, environment, YAML keys). */
void o2l_config_print_help(FILE *out);

/* Logs the effective settings at info level, secrets masked. */
void o2l_config_log(const struct o2l_config *cfg, const struct o2l_log *log);

/* Frees what |cfg| owns. Accepts NULL. */
void o2l_config_free(struct o2l_config *cfg);

#endif /* O2L_CONFIG_H */
