/* SPDX-License-Identifier: Apache-2.0 */
/*
 * results.c - reading Langfuse's answers: the per-event results of an
 * ingestion request and the Retry-After header.
 */
#include "o2l/exporter.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>

#include "o2l/common.h"

/* Per-event statuses that are worth sending again. */
static enum o2l_event_outcome outcome_for_status(int status)
{
    if (status == 429 || status >= 500 || status < 400) {
        /*
         * A missing or odd status is retried rather than lost: the
         * promise is at-least-once, and a duplicate create is an upsert.
         */
        return O2L_OUTCOME_RETRY;
    }
    return O2L_OUTCOME_REJECTED;
}

/* Langfuse's text for an error entry: "message", else a string "error". */
static const char *error_text(const cJSON *err)
{
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(err, "message");

    if (cJSON_IsString(msg) && msg->valuestring[0]) {
        return msg->valuestring;
    }
    msg = cJSON_GetObjectItemCaseSensitive(err, "error");
    if (cJSON_IsString(msg) && msg->valuestring[0]) {
        return msg->valuestring;
    }
    return NULL;
}

static int apply_error(const cJSON *err, const char *const *ids, size_t n,
                       struct o2l_event_result *results)
{
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(err, "id");
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(err, "status");
    const char *text;
    int status = 0;

    if (!cJSON_IsString(id)) {
        return O2L_OK;
    }
    if (cJSON_IsNumber(st) && st->valuedouble >= 0 && st->valuedouble < 1000) {
        status = (int)st->valuedouble;
    }
    text = error_text(err);

    /* A batch may hold the same envelope id twice; mark every copy. */
    for (size_t i = 0; i < n; i++) {
        if (!ids[i] || strcmp(ids[i], id->valuestring) != 0) {
            continue;
        }
        results[i].outcome = outcome_for_status(status);
        results[i].status = status;
        o2l_free(results[i].message);
        results[i].message = NULL;
        if (text) {
            results[i].message = o2l_strdup(text);
            if (!results[i].message) {
                return O2L_ENOMEM;
            }
        }
    }
    return O2L_OK;
}

static void apply_success(const cJSON *ok, const char *const *ids, size_t n,
                          struct o2l_event_result *results)
{
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(ok, "id");
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(ok, "status");

    if (!cJSON_IsString(id) || !cJSON_IsNumber(st)) {
        return;
    }
    for (size_t i = 0; i < n; i++) {
        if (ids[i] && results[i].outcome == O2L_OUTCOME_OK &&
            strcmp(ids[i], id->valuestring) == 0) {
            results[i].status = (int)st->valuedouble;
        }
    }
}

int o2l_ingestion_parse_results(const char *body, size_t body_len,
                                const char *const *ids, size_t n,
                                struct o2l_event_result *results)
{
    const cJSON *successes;
    const cJSON *errors;
    const cJSON *item;
    cJSON *doc = NULL;
    int rc = O2L_OK;

    for (size_t i = 0; i < n; i++) {
        results[i].outcome = O2L_OUTCOME_OK;
        results[i].status = 0;
        results[i].message = NULL;
    }
    if (!body || body_len == 0) {
        rc = O2L_EPARSE;
        goto out;
    }
    doc = cJSON_ParseWithLength(body, body_len);
    if (!doc) {
        /* cJSON_Parse fails for both bad text and lack of memory. */
        rc = O2L_EPARSE;
        goto out;
    }

    successes = cJSON_GetObjectItemCaseSensitive(doc, "successes");
    errors = cJSON_GetObjectItemCaseSensitive(doc, "errors");
    if (!cJSON_IsObject(doc) || (!successes && !errors) ||
        (successes && !cJSON_IsArray(successes)) ||
        (errors && !cJSON_IsArray(errors))) {
        rc = O2L_EPARSE;
        goto out;
    }

    /*
     * Events named in neither list count as delivered: Langfuse lists
     * every event, and an event it forgot is no reason to resend a batch.
     */
    cJSON_ArrayForEach(item, errors)
    {
        rc = apply_error(item, ids, n, results);
        if (rc != O2L_OK) {
            goto out;
        }
    }
    cJSON_ArrayForEach(item, successes)
    {
        apply_success(item, ids, n, results);
    }

out:
    if (rc != O2L_OK) {
        o2l_event_results_clear(results, n);
    }
    cJSON_Delete(doc);
    return rc;
}

void o2l_event_results_clear(struct o2l_event_result *results, size_t n)
{
    if (!results) {
        return;
    }
    for (size_t i = 0; i < n; i++) {
        o2l_free(results[i].message);
        results[i].message = NULL;
    }
}

long long o2l_retry_after_ms(const char *value, int64_t now_s)
{
    const char *p;
    char *end = NULL;
    long long secs;
    time_t when;

    if (!value) {
        return -1;
    }
    while (*value == ' ' || *value == '\t') {
        value++;
    }
    if (!*value) {
        return -1;
    }

    /* delay-seconds: digits only (RFC 9110, section 10.2.3). */
    if (isdigit((unsigned char)*value)) {
        errno = 0;
        secs = strtoll(value, &end, 10);
        for (p = end; *p == ' ' || *p == '\t' || *p == '\r' || *p == '\n';
             p++) {
        }
        if (errno != 0 || *p != '\0' || secs < 0) {
            return -1;
        }
        /* A week is far beyond any sane hint; keep the product in range. */
        if (secs > 7 * 24 * 3600) {
            secs = 7 * 24 * 3600;
        }
        return secs * 1000;
    }

    /* HTTP-date: libcurl reads IMF-fixdate and the two obsolete forms. */
    when = curl_getdate(value, NULL);
    if (when == (time_t)-1) {
        return -1;
    }
    if ((int64_t)when <= now_s) {
        return 0;
    }
    if ((int64_t)when - now_s > 7 * 24 * 3600) {
        return 7LL * 24 * 3600 * 1000;
    }
    return ((long long)when - now_s) * 1000;
}
