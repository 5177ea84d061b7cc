/* SPDX-License-Identifier: Apache-2.0 */
/*
 * map_util.h - helpers private to the map stage: reading decoded attribute
 * values, JSON held in strings, text rules of the Langfuse schema, the
 * rebuilding of flattened indexed keys, usage buckets and SHA-256.
 * Functions that allocate return O2L_OK or O2L_ENOMEM; "no value" is an
 * O2L_OK with *out left NULL.
 */
#ifndef O2L_MAP_UTIL_H
#define O2L_MAP_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

/* The item |key| of object |obj| (exact match), or NULL. Accepts NULL. */
const cJSON *o2l_mu_get(const cJSON *obj, const char *key);

/* Present, not JSON null and not an empty string, array or object. */
bool o2l_mu_usable(const cJSON *v);

/* The value of |key| when it is a usable string, else NULL. */
const char *o2l_mu_str(const cJSON *obj, const char *key);

/* ASCII case-insensitive equality. */
bool o2l_mu_ieq(const char *a, const char *b);

/* True when |s| starts with |prefix|. */
bool o2l_mu_starts(const char *s, const char *prefix);

/*
 * Copies |v| for output. A string that, after leading whitespace, starts
 * with '{' or '[' and parses completely becomes the parsed value; with
 * |unquote| any string that parses completely (e.g. "\"LLM\"") does. A
 * result that is not usable gives *out = NULL.
 */
int o2l_mu_value(const cJSON *v, bool unquote, cJSON **out);

/*
 * As o2l_mu_value for values that are only passed through (input and
 * output): a string holding a JSON object or array becomes a cJSON raw
 * item with the same JSON, whitespace removed, instead of a parsed tree.
 * Checking and compacting the text is one pass with one allocation, where
 * a tree costs an allocation per node to build, print and free.
 */
int o2l_mu_passthrough(const cJSON *v, bool unquote, cJSON **out);

/*
 * Turns a raw item made by o2l_mu_passthrough back into a parsed tree, for
 * the few rules that edit a value. Other values are left alone. Returns
 * O2L_OK or O2L_ENOMEM (then *v is unchanged).
 */
int o2l_mu_tree(cJSON **v);

/* True for an array, or a raw item holding a JSON array. */
bool o2l_mu_is_list(const cJSON *v);

/*
 * Parses |v| when it is a JSON string (as o2l_mu_value) or duplicates it
 * when it is already an object; *out is NULL for anything else or when the
 * object is empty.
 */
int o2l_mu_object(const cJSON *v, cJSON **out);

/*
 * Text of a scalar or JSON value into a new string: strings as they are,
 * integers in decimal, other numbers with up to 17 significant digits,
 * booleans as true/false, arrays and objects as compact JSON. *out is
 * NULL when |v| is NULL or JSON null.
 */
int o2l_mu_text(const cJSON *v, char **out);

/* A number, or a string holding a finite decimal number. */
bool o2l_mu_number(const cJSON *v, double *out);

/*
 * Adds |item| under |key|; with |first_wins| an existing key keeps its
 * value and |item| is freed. |item| NULL is ENOMEM (a failed allocation
 * by the caller). The item is consumed in every case.
 */
int o2l_mu_add(cJSON *obj, const char *key, cJSON *item, bool first_wins);

/*
 * Moves the members of |src| into |dst|; a key already in |dst| keeps its
 * value, and JSON null members are dropped. Frees |src| (NULL is fine).
 */
int o2l_mu_merge(cJSON *dst, cJSON *src);

/* Adds a copy of |s| as a string item (first_wins as o2l_mu_add). */
int o2l_mu_add_str(cJSON *obj, const char *key, const char *s, bool first_wins);

/*
 * Langfuse's environment rule: lower case, leading "langfuse-",
 * "langfuse_" and "langfuse" stripped repeatedly, at most 40 characters,
 * only [a-z0-9_-]; anything else is "default". *out is a new string.
 */
int o2l_mu_environment(const char *raw, char **out);

/* Byte length of the longest prefix of |s| with at most |max_cp| UTF-8
 * code points. */
size_t o2l_mu_utf8_prefix(const char *s, size_t max_cp);

/* ISO-8601 date-time with an optional fraction and a Z or +hh:mm offset
 * into nanoseconds since the epoch. Returns false when it does not
 * parse or lies before 1970. */
bool o2l_mu_parse_iso(const char *s, uint64_t *out_ns);

/* SHA-256 of |len| bytes at |data|. */
void o2l_mu_sha256(const void *data, size_t len, uint8_t out[32]);

/*
 * Rebuilds the attributes of |attrs| whose keys start with |prefix| (which
 * ends in '.') into one JSON value: all-digit segments are array indices
 * (gaps closed up), other segments object keys. With |unwrap| the
 * OpenInference wrapper level after an index (message, tool_call,
 * message_content, document, tool) is removed. Array slots count against
 * |*slots_left|; a key that would exceed it is dropped and counted in
 * |*dropped|. *out is NULL when no key matched.
 */
int o2l_mu_flatten(const cJSON *attrs, const char *prefix, bool unwrap,
                   size_t *slots_left, size_t *dropped, cJSON **out);

/*
 * In each object element of the array |list|, the member |name| holding
 * JSON text is replaced by the parsed value (o2l_mu_value); other members
 * and elements are left alone. Returns O2L_OK or O2L_ENOMEM.
 */
int o2l_mu_parse_member(cJSON *list, const char *name);

/* Usage candidates: names with the family prefix removed. */
#define O2L_USAGE_NAME_MAX  96
#define O2L_USAGE_CANDS_MAX 96

struct o2l_usage_cand {
    char name[O2L_USAGE_NAME_MAX];
    int64_t value;
    bool passthrough; /* from a family whose other keys are passed on */
};

struct o2l_usage_cands {
    struct o2l_usage_cand items[O2L_USAGE_CANDS_MAX];
    size_t n;
};

/*
 * Adds |prefix| + |name| when |v| is an integer >= 0, an integral double
 * or a string of decimal digits; an object is flattened with '.'. Extra
 * candidates beyond O2L_USAGE_CANDS_MAX are ignored.
 */
void o2l_usage_add(struct o2l_usage_cands *c, const char *prefix,
                   const char *name, const cJSON *v, bool passthrough);

/* Usage into exclusive buckets: aliases, subtraction, total. *out is
 * NULL when empty. */
int o2l_usage_buckets(const struct o2l_usage_cands *c, cJSON **out);

/* An explicit usage object: only integer values >= 0 are kept. */
int o2l_usage_explicit(const cJSON *v, cJSON **out);

#endif /* O2L_MAP_UTIL_H */
