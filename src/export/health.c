/* SPDX-License-Identifier: Apache-2.0 */
/* health.c - asks Langfuse's health route which version the server runs. */
#include "o2l/health.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>

#include "o2l/common.h"

/* The health answer is a few dozen bytes; anything far larger is not it. */
#define HEALTH_BODY_MAX 65536

#define HEALTH_PATH "/api/public/health"

/* The answer body, cut at HEALTH_BODY_MAX. */
struct body {
    char buf[HEALTH_BODY_MAX + 1];
    size_t len;
};

static size_t on_health_body(char *data, size_t size, size_t nmemb, void *ud)
{
    struct body *b = ud;
    size_t n = size * nmemb;
    size_t keep = n;

    if (keep > HEALTH_BODY_MAX - b->len) {
        keep = HEALTH_BODY_MAX - b->len;
    }
    memcpy(b->buf + b->len, data, keep);
    b->len += keep;
    b->buf[b->len] = '\0';
    return n;
}

/* {base_url without trailing slashes}/api/public/health, o2l_malloc'd. */
static char *health_url(const char *base_url)
{
    size_t n = strlen(base_url);
    char *url;

    while (n > 0 && base_url[n - 1] == '/') {
        n--;
    }
    url = o2l_malloc(n + sizeof(HEALTH_PATH));
    if (url) {
        memcpy(url, base_url, n);
        memcpy(url + n, HEALTH_PATH, sizeof(HEALTH_PATH));
    }
    return url;
}

/* Copies "version" of the answer into |version|. */
static int read_version(const struct body *b, char *version, size_t len)
{
    cJSON *doc = cJSON_ParseWithLength(b->buf, b->len);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(doc, "version");
    int rc = O2L_EPARSE;

    if (cJSON_IsString(v) && v->valuestring[0]) {
        snprintf(version, len, "%s", v->valuestring);
        /* The text is logged: no control characters from the wire. */
        for (char *p = version; *p; p++) {
            if ((unsigned char)*p < 0x20 || *p == 0x7f) {
                *p = '?';
            }
        }
        rc = O2L_OK;
    }
    cJSON_Delete(doc);
    return rc;
}

/* One GET with its own handle. Fills |b| and *status. */
static int fetch(const char *url, const char *public_key,
                 const char *secret_key, uint32_t timeout_ms, struct body *b,
                 long *status)
{
    CURL *curl = curl_easy_init();
    CURLcode cc = CURLE_OK;
    int rc = O2L_OK;

    if (!curl) {
        return O2L_ENOMEM;
    }
    cc |= curl_easy_setopt(curl, CURLOPT_URL, url);
    cc |= curl_easy_setopt(curl, CURLOPT_HTTPGET, 1L);
    cc |= curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    cc |= curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
    cc |= curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, (long)timeout_ms);
    cc |= curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_health_body);
    cc |= curl_easy_setopt(curl, CURLOPT_WRITEDATA, b);
    cc |=
        curl_easy_setopt(curl, CURLOPT_USERAGENT, "otel2langfuse/" O2L_VERSION);
    /* Redirects are not followed: the keys would go to another place. */
    cc |= curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
    if (public_key && public_key[0]) {
        cc |= curl_easy_setopt(curl, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
        cc |= curl_easy_setopt(curl, CURLOPT_USERNAME, public_key);
        cc |= curl_easy_setopt(curl, CURLOPT_PASSWORD,
                               secret_key ? secret_key : "");
    }
    if (cc != CURLE_OK) {
        rc = O2L_EIO;
        goto out;
    }
    cc = curl_easy_perform(curl);
    if (cc == CURLE_OUT_OF_MEMORY) {
        rc = O2L_ENOMEM;
    } else if (cc != CURLE_OK) {
        rc = O2L_EIO;
    } else {
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, status);
    }

out:
    curl_easy_cleanup(curl);
    return rc;
}

int o2l_langfuse_version(const char *base_url, const char *public_key,
                         const char *secret_key, uint32_t timeout_ms,
                         char *version, size_t len, int *status_out)
{
    struct body *b = NULL;
    char *url = NULL;
    long status = 0;
    int rc;

    if (len > 0) {
        version[0] = '\0';
    }
    if (status_out) {
        *status_out = 0;
    }
    if (!base_url || !base_url[0] || len == 0) {
        return O2L_EINVAL;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        return O2L_EIO;
    }
    url = health_url(base_url);
    b = o2l_calloc(1, sizeof(*b));
    if (!url || !b) {
        rc = O2L_ENOMEM;
        goto out;
    }
    rc = fetch(url, public_key, secret_key, timeout_ms, b, &status);
    if (rc != O2L_OK) {
        goto out;
    }
    if (status_out) {
        *status_out = status > 0 && status < 1000 ? (int)status : 0;
    }
    if (status == 404) {
        /* A server from before the health route. */
        rc = O2L_EHTTP;
    } else if (status >= 200 && status < 300) {
        rc = read_version(b, version, len);
    } else {
        /* Busy, failing or in the way (5xx, 429, a proxy's answer): it
         * did not say, and may say later. */
        rc = O2L_EIO;
    }

out:
    o2l_free(b);
    o2l_free(url);
    curl_global_cleanup();
    return rc;
}

int o2l_version_major(const char *version)
{
    const char *p = version;
    char *end = NULL;
    long major;

    if (!p) {
        return -1;
    }
    while (*p == ' ' || *p == '\t') {
        p++;
    }
    if (*p == 'v' || *p == 'V') {
        p++;
    }
    /* strtol alone would take a sign or spaces after the 'v'. */
    if (!isdigit((unsigned char)*p)) {
        return -1;
    }
    errno = 0;
    major = strtol(p, &end, 10);
    if (errno != 0 || major > INT_MAX) {
        return -1;
    }
    /* "4.1.0", "4", "4-beta", "4+build"; not "4x" or "42abc". */
    if (*end != '\0' && *end != '.' && *end != '-' && *end != '+' &&
        *end != ' ') {
        return -1;
    }
    return (int)major;
}
