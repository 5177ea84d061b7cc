/* SPDX-License-Identifier: Apache-2.0 */
/*
 * map_bench.c - cost of the map stage and of both encoders per convention:
 * decodes the inputs of a golden topic file once, then maps and encodes
 * them over and over, and prints nanoseconds per span for each step.
 *
 * Usage: o2l_map_bench [--dir DIR] [--seconds S] [--max-iter N]
 *                      [TOPIC|FILE.json ...]
 * With no topic, every convention topic of DIR is run (those missing are
 * named and skipped). A TOPIC is DIR/TOPIC.json; an argument ending in
 * .json is read as it is. Exits 0 whatever the figures, 1 when a file
 * cannot be read or an input does not decode, 2 on a bad argument.
 */
#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "o2l/common.h"
#include "o2l/encode.h"
#include "o2l/encode_otlp.h"
#include "o2l/mapper.h"
#include "o2l/model.h"
#include "o2l/otlp.h"
#include "o2l/span.h"

/* The golden topics that each hold one instrumentation's conventions. */
static const char *const default_topics[] = {
    "vercel_ai", "pydantic_ai",     "mlflow",        "strands",   "google_adk",
    "openlit",   "semantic_kernel", "livekit",       "genkit",    "langsmith",
    "flue",      "openllmetry",     "openinference", "langgraph", NULL};

#define MAX_TOPICS     64
#define FILE_MAX_BYTES (64u * 1024 * 1024)
/* Iterations run before timing, so the allocator and caches settle. */
#define WARMUP_ITERS 3

#ifdef O2L_BENCH_COUNT_ALLOCS
/*
 * Allocation calls (malloc, calloc, realloc) made through the project's
 * wrappers and cJSON, counted by linking with --wrap (see
 * bench/CMakeLists.txt). libc's own internal allocations are not seen.
 */
static unsigned long long alloc_calls;

void *__real_malloc(size_t n);
void *__real_calloc(size_t count, size_t n);
void *__real_realloc(void *p, size_t n);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t count, size_t n);
void *__wrap_realloc(void *p, size_t n);

void *__wrap_malloc(size_t n)
{
    alloc_calls++;
    return __real_malloc(n);
}

void *__wrap_calloc(size_t count, size_t n)
{
    alloc_calls++;
    return __real_calloc(count, n);
}

void *__wrap_realloc(void *p, size_t n)
{
    alloc_calls++;
    return __real_realloc(p, n);
}
#define ALLOCS() alloc_calls
#else
#define ALLOCS() 0ULL
#endif

/* What one topic measured, summed over its timed iterations. */
struct topic_result {
    char name[64];
    size_t cases;
    size_t spans;  /* per iteration, over every case */
    size_t events; /* ingestion events per iteration */
    unsigned long iters;
    double ns_map, ns_free, ns_ing, ns_otlp;
    unsigned long long allocs_map, allocs_ing, allocs_otlp;
};

static uint64_t mono_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Reads a whole file into a NUL-terminated buffer (free()), or NULL. */
static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    long size;

    if (f == NULL) {
        return NULL;
    }
    if (fseek(f, 0, SEEK_END) == 0 && (size = ftell(f)) >= 0 &&
        (unsigned long)size <= FILE_MAX_BYTES && fseek(f, 0, SEEK_SET) == 0) {
        buf = malloc((size_t)size + 1);
        if (buf != NULL && fread(buf, 1, (size_t)size, f) == (size_t)size) {
            buf[size] = '\0';
            *len = (size_t)size;
        } else {
            free(buf);
            buf = NULL;
        }
    }
    fclose(f);
    return buf;
}

/*
 * Decodes every case's "input" of |path| as OTLP/JSON into |out| (at
 * most |max| exports, *n set). Returns 0, or -1 after printing why.
 */
static int load_topic(const char *path, struct o2l_export **out, size_t max,
                      size_t *n)
{
    size_t len = 0;
    char *text = read_file(path, &len);
    cJSON *doc;
    const cJSON *c;
    int rc = -1;

    *n = 0;
    if (text == NULL) {
        fprintf(stderr,
                "map_bench: cannot read %s (missing, unreadable "
                "or over %u bytes)\n",
                path, FILE_MAX_BYTES);
        return -1;
    }
    doc = cJSON_Parse(text);
    free(text);
    if (!cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(doc, "cases"))) {
        fprintf(stderr, "map_bench: %s: no \"cases\" array\n", path);
        goto out;
    }
    cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(doc, "cases"))
    {
        const cJSON *in = cJSON_GetObjectItemCaseSensitive(c, "input");
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(c, "name");
        char err[256] = "";
        char *body;
        int drc;

        if (in == NULL) {
            continue;
        }
        if (*n == max) {
            fprintf(stderr, "map_bench: %s: more than %zu cases\n", path, max);
            goto out;
        }
        body = cJSON_PrintUnformatted(in);
        if (body == NULL) {
            fprintf(stderr, "map_bench: out of memory\n");
            goto out;
        }
        drc =
            o2l_otlp_decode(body, strlen(body), O2L_OTLP_JSON,
                            1700000000000000000ull, &out[*n], err, sizeof(err));
        cJSON_free(body);
        if (drc != O2L_OK) {
            fprintf(stderr,
                    "map_bench: %s: case \"%s\" does not decode: "
                    "%s%s%s\n",
                    path, cJSON_IsString(name) ? name->valuestring : "?",
                    o2l_strerror(drc), err[0] ? ": " : "", err);
            goto out;
        }
        (*n)++;
    }
    rc = 0;
out:
    cJSON_Delete(doc);
    return rc;
}

/*
 * One pass over |n| exports: map, encode both ways, free, adding the
 * time and allocations of each step to |r| when |timed|. Returns 0, or
 * -1 when out of memory.
 */
static int run_once(struct o2l_export *const *ex, size_t n,
                    const struct o2l_map_config *cfg, struct topic_result *r,
                    bool timed)
{
    struct o2l_event_list ing = {0};
    struct o2l_event_list otlp = {0};

    for (size_t i = 0; i < n; i++) {
        struct o2l_mapped *m = NULL;
        unsigned long long a0 = ALLOCS(), a1, a2, a3;
        uint64_t t0 = mono_ns(), t1, t2, t3, t4;
        int rc = o2l_map_export(ex[i], cfg, &m);

        t1 = mono_ns();
        a1 = ALLOCS();
        if (rc != O2L_OK) {
            return -1;
        }
        rc = o2l_encode_ingestion(m, O2L_EVENT_MAX_BYTES, &ing);
        if (timed) {
            r->events += ing.len;
        }
        o2l_event_list_clear(&ing);
        t2 = mono_ns();
        a2 = ALLOCS();
        if (rc == O2L_OK) {
            rc = o2l_encode_otlp(ex[i], m, NULL, &otlp);
        }
        o2l_event_list_clear(&otlp);
        t3 = mono_ns();
        a3 = ALLOCS();
        o2l_mapped_free(m);
        t4 = mono_ns();
        if (rc != O2L_OK) {
            return -1;
        }
        if (timed) {
            r->ns_map += (double)(t1 - t0);
            r->ns_ing += (double)(t2 - t1);
            r->ns_otlp += (double)(t3 - t2);
            r->ns_free += (double)(t4 - t3);
            r->allocs_map += a1 - a0;
            r->allocs_ing += a2 - a1;
            r->allocs_otlp += a3 - a2;
        }
    }
    return 0;
}

/* Runs one topic for |seconds| or |max_iter| iterations, the first to
 * come. Returns 0, 1 when an input does not decode, -1 out of memory. */
static int bench_topic(const char *path, const char *name, double seconds,
                       unsigned long max_iter, const struct o2l_map_config *cfg,
                       struct topic_result *r)
{
    struct o2l_export *ex[256] = {0};
    size_t n = 0;
    uint64_t deadline;
    int rc = 0;

    memset(r, 0, sizeof(*r));
    snprintf(r->name, sizeof(r->name), "%s", name);
    if (load_topic(path, ex, sizeof(ex) / sizeof(ex[0]), &n) != 0) {
        rc = 1;
        goto out;
    }
    r->cases = n;
    for (size_t i = 0; i < n; i++) {
        r->spans += ex[i]->n_spans;
    }
    for (int w = 0; w < WARMUP_ITERS; w++) {
        if (run_once(ex, n, cfg, r, false) != 0) {
            rc = -1;
            goto out;
        }
    }
    deadline = mono_ns() + (uint64_t)(seconds * 1e9);
    while (r->iters < max_iter && mono_ns() < deadline) {
        if (run_once(ex, n, cfg, r, true) != 0) {
            rc = -1;
            goto out;
        }
        r->iters++;
    }
    if (r->iters > 0) {
        r->events /= r->iters;
    }
out:
    for (size_t i = 0; i < n; i++) {
        o2l_export_free(ex[i]);
    }
    return rc;
}

static double per_span(const struct topic_result *r, double v)
{
    double spans = (double)r->spans * (double)r->iters;

    return spans > 0 ? v / spans : 0;
}

static double total_ns(const struct topic_result *r)
{
    return per_span(r, r->ns_map + r->ns_free + r->ns_ing + r->ns_otlp);
}

static void print_table(const struct topic_result *res, size_t n,
                        double seconds, unsigned long max_iter)
{
    size_t fastest = 0;

    printf("map and encode cost per convention (default mapping config; "
           "up to %.2f s or %lu iterations each)\n\n",
           seconds, max_iter);
    printf("%-16s %5s %6s %6s %8s %8s %8s %8s %8s %8s", "convention", "cases",
           "spans", "events", "iters", "map", "free", "ingest", "otlp",
           "total");
#ifdef O2L_BENCH_COUNT_ALLOCS
    printf(" %7s %7s %7s", "allocs", "allocs", "allocs");
#endif
    printf("\n%-16s %5s %6s %6s %8s %8s %8s %8s %8s %8s", "", "", "/iter",
           "/iter", "", "ns/span", "ns/span", "ns/span", "ns/span", "ns/span");
#ifdef O2L_BENCH_COUNT_ALLOCS
    printf(" %7s %7s %7s", "map", "ingest", "otlp");
#endif
    printf("\n");
    for (size_t i = 0; i < n; i++) {
        const struct topic_result *r = &res[i];

        printf("%-16s %5zu %6zu %6zu %8lu %8.0f %8.0f %8.0f %8.0f %8.0f",
               r->name, r->cases, r->spans, r->events, r->iters,
               per_span(r, r->ns_map), per_span(r, r->ns_free),
               per_span(r, r->ns_ing), per_span(r, r->ns_otlp), total_ns(r));
#ifdef O2L_BENCH_COUNT_ALLOCS
        printf(" %7.1f %7.1f %7.1f", per_span(r, (double)r->allocs_map),
               per_span(r, (double)r->allocs_ing),
               per_span(r, (double)r->allocs_otlp));
#endif
        printf("\n");
        if (total_ns(r) > 0 && (total_ns(&res[fastest]) <= 0 ||
                                total_ns(r) < total_ns(&res[fastest]))) {
            fastest = i;
        }
    }
    if (n == 0) {
        return;
    }
    printf("\nratio of total ns/span to the fastest (%s):", res[fastest].name);
    for (size_t i = 0; i < n; i++) {
        double f = total_ns(&res[fastest]);

        printf(" %s %.2fx%s", res[i].name, f > 0 ? total_ns(&res[i]) / f : 0,
               i + 1 < n ? "," : "\n");
    }
    printf("\nmap: o2l_map_export; free: o2l_mapped_free; ingest: "
           "o2l_encode_ingestion;\notlp: o2l_encode_otlp (defaults); each "
           "with freeing its output events; total: the four.\n");
#ifdef O2L_BENCH_COUNT_ALLOCS
    printf("allocs: malloc, calloc and realloc calls per span (the "
           "project's wrappers and cJSON).\n");
#endif
}

static void usage(FILE *f)
{
    fprintf(f, "usage: o2l_map_bench [--dir DIR] [--seconds S] "
               "[--max-iter N] [TOPIC|FILE.json ...]\n"
               "  --dir DIR     golden topic files (default "
               "tests/data/golden)\n"
               "  --seconds S   time per convention, 0.01..60 (default 1)\n"
               "  --max-iter N  iterations per convention at most, "
               "1..100000000 (default 1000000)\n");
}

/* Builds the path of a topic argument: a .json path as it is, else
 * DIR/TOPIC.json; |name| gets the topic's name. */
static void topic_path(const char *dir, const char *arg, char *path,
                       size_t path_len, char *name, size_t name_len)
{
    size_t len = strlen(arg);

    if (len > 5 && strcmp(arg + len - 5, ".json") == 0) {
        const char *base = strrchr(arg, '/');

        base = base ? base + 1 : arg;
        snprintf(path, path_len, "%s", arg);
        snprintf(name, name_len, "%.*s", (int)(strlen(base) - 5), base);
    } else {
        snprintf(path, path_len, "%s/%s.json", dir, arg);
        snprintf(name, name_len, "%s", arg);
    }
}

int main(int argc, char **argv)
{
    const char *dir = "tests/data/golden";
    double seconds = 1.0;
    unsigned long max_iter = 1000000;
    const char *topics[MAX_TOPICS];
    size_t n_topics = 0;
    bool explicit_topics = false;
    static struct topic_result res[MAX_TOPICS];
    size_t n_res = 0;
    struct o2l_map_config cfg;
    int status = 0;

    for (int i = 1; i < argc; i++) {
        char *end = NULL;

        if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc) {
            dir = argv[++i];
        } else if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc) {
            seconds = strtod(argv[++i], &end);
            if (*end != '\0' || !(seconds >= 0.01 && seconds <= 60)) {
                usage(stderr);
                return 2;
            }
        } else if (strcmp(argv[i], "--max-iter") == 0 && i + 1 < argc) {
            max_iter = strtoul(argv[++i], &end, 10);
            if (*end != '\0' || max_iter < 1 || max_iter > 100000000) {
                usage(stderr);
                return 2;
            }
        } else if (strcmp(argv[i], "-h") == 0 ||
                   strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (argv[i][0] == '-') {
            usage(stderr);
            return 2;
        } else if (n_topics < MAX_TOPICS) {
            topics[n_topics++] = argv[i];
            explicit_topics = true;
        }
    }
    if (!explicit_topics) {
        for (size_t i = 0; default_topics[i] != NULL; i++) {
            topics[n_topics++] = default_topics[i];
        }
    }

    o2l_mem_init();
    o2l_map_config_defaults(&cfg);
    for (size_t i = 0; i < n_topics; i++) {
        char path[4096];
        char name[64];
        FILE *probe;
        int rc;

        topic_path(dir, topics[i], path, sizeof(path), name, sizeof(name));
        /* A convention not written yet is no failure of the default run. */
        probe = fopen(path, "rb");
        if (probe == NULL && !explicit_topics) {
            fprintf(stderr, "map_bench: %s: not found, skipped\n", path);
            continue;
        }
        if (probe != NULL) {
            fclose(probe);
        }
        rc = bench_topic(path, name, seconds, max_iter, &cfg, &res[n_res]);
        if (rc < 0) {
            fprintf(stderr, "map_bench: %s: out of memory\n", name);
            return 1;
        }
        if (rc > 0) {
            status = 1;
            continue;
        }
        n_res++;
    }
    if (n_res > 0) {
        print_table(res, n_res, seconds, max_iter);
    }
    return status;
}
