/* SPDX-License-Identifier: Apache-2.0 */
/*
 * assemble.c - the assemble stage: spans held per trace for a window and
 * released a whole trace at a time, and the facts of released traces kept
 * for spans that come late.
 *
 * A held trace is in three structures at once: a hash table keyed by the
 * trace id as received, a list in order of first arrival (the oldest go
 * first when a bound is crossed) and a binary heap ordered by due time
 * (what is due now, and when the next one is); each also indexes its
 * spans by span id, so a later copy of a span replaces the held one. A
 * release is chosen, sized and allocated before anything changes, so
 * O2L_ENOMEM leaves the stage as it was.
 *
 * Two memories outlive a released trace, bounded alike (facts_ttl_ms
 * since the last store, at most 4 * max_traces entries): the trace facts
 * by mapped trace id, and the custom trace id by original trace id.
 */
#include "o2l/assemble.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "o2l/common.h"

#define TABLE_MIN_BUCKETS 64
#define HEAP_MIN_CAP      64

/* ---- a hash table that also keeps its entries in a list ------------------ */

/* Embedded as the first member of what a table holds. */
struct entry {
    char id[33];
    uint64_t hash;
    struct entry *chain; /* next in the same bucket */
    struct entry *prev;  /* list order: oldest at the head */
    struct entry *next;
};

struct table {
    struct entry **buckets;
    size_t mask; /* bucket count - 1, a power of two minus one */
    size_t count;
    struct entry *head;
    struct entry *tail;
};

/* FNV-1a: ids are hex text, often random but not always (custom ids). */
static uint64_t hash_text(const char *s)
{
    uint64_t h = 1469598103934665603ULL;

    while (*s) {
        h = (h ^ (unsigned char)*s++) * 1099511628211ULL;
    }
    return h;
}

static int table_init(struct table *t)
{
    memset(t, 0, sizeof(*t));
    t->buckets = o2l_calloc(TABLE_MIN_BUCKETS, sizeof(*t->buckets));
    if (!t->buckets) {
        return O2L_ENOMEM;
    }
    t->mask = TABLE_MIN_BUCKETS - 1;
    return O2L_OK;
}

static struct entry *table_find(const struct table *t, const char *id)
{
    uint64_t h = hash_text(id);

    for (struct entry *e = t->buckets[h & t->mask]; e; e = e->chain) {
        if (e->hash == h && strcmp(e->id, id) == 0) {
            return e;
        }
    }
    return NULL;
}

/* Doubles the buckets. A failure only makes the chains longer. */
static void table_grow(struct table *t)
{
    size_t n = (t->mask + 1) * 2;
    struct entry **b = o2l_calloc(n, sizeof(*b));

    if (!b) {
        return;
    }
    for (struct entry *e = t->head; e; e = e->next) {
        e->chain = b[e->hash & (n - 1)];
        b[e->hash & (n - 1)] = e;
    }
    o2l_free(t->buckets);
    t->buckets = b;
    t->mask = n - 1;
}

static void list_append(struct table *t, struct entry *e)
{
    e->next = NULL;
    e->prev = t->tail;
    if (t->tail) {
        t->tail->next = e;
    } else {
        t->head = e;
    }
    t->tail = e;
}

static void list_unlink(struct table *t, struct entry *e)
{
    if (e->prev) {
        e->prev->next = e->next;
    } else {
        t->head = e->next;
    }
    if (e->next) {
        e->next->prev = e->prev;
    } else {
        t->tail = e->prev;
    }
    e->prev = NULL;
    e->next = NULL;
}

/* Adds |e| (its id set) at the end of the list. Never fails. */
static void table_add(struct table *t, struct entry *e)
{
    size_t b;

    if (t->count >= t->mask + 1) {
        table_grow(t);
    }
    e->hash = hash_text(e->id);
    b = e->hash & t->mask;
    e->chain = t->buckets[b];
    t->buckets[b] = e;
    list_append(t, e);
    t->count++;
}

static void table_remove(struct table *t, struct entry *e)
{
    struct entry **p = &t->buckets[e->hash & t->mask];

    while (*p && *p != e) {
        p = &(*p)->chain;
    }
    if (*p) {
        *p = e->chain;
    }
    e->chain = NULL;
    list_unlink(t, e);
    t->count--;
}

/* Moves |e| to the end of the list. */
static void table_touch(struct table *t, struct entry *e)
{
    list_unlink(t, e);
    list_append(t, e);
}

/* ---- what the stage holds ------------------------------------------------ */

/* One spool request and its decoded export. */
struct held_req {
    uint64_t id;
    size_t bytes;
    struct o2l_export *ex;
    size_t held; /* spans not yet released */
    size_t left; /* held, less the spans of the release being chosen */
    struct held_req *prev;
    struct held_req *next;
};

struct req_list {
    struct held_req *head;
    struct held_req *tail;
    size_t count;
};

struct span_ref {
    struct o2l_span *span;
    struct held_req *req;
};

struct held_trace {
    struct entry e; /* first: the table's key is the received trace id */
    uint64_t seq;   /* arrival order, for ties and release order */
    uint64_t first_ms;
    uint64_t due_ms;
    size_t heap_pos;
    /* In arrival order. A span that a later copy of it replaced (the
     * same span id again) stays in place with span == NULL. */
    struct span_ref *refs;
    size_t n_refs;
    size_t cap_refs;
    size_t n_live; /* refs with a span */
    /* Span id to the index + 1 of its live ref (0: empty), open
     * addressing; mask + 1 slots, at least twice n_refs. */
    size_t *ix;
    size_t ix_mask;
    size_t want;                /* spans of the request being added */
    struct held_trace *touched; /* traces the request being added uses */
    bool has_root;
    bool chosen;
};

/* The facts of a released trace, kept for its late spans. */
struct facts {
    struct entry e; /* first: the key is the mapped trace id */
    uint64_t stored_ms;
    char *name;
    char *user_id;
    char *session_id;
    char *release;
    char *version;
    char *environment;
    cJSON *tags;
    cJSON *metadata;
    int public_flag;
};

/* A custom trace id decided for an original trace, kept for its later
 * spans. */
struct move {
    struct entry e; /* first: the key is the original trace id */
    uint64_t stored_ms;
    char to[33];
};

/*
 * Span id to span index + 1 (0: empty), open addressing; every span is
 * in it, so of equal span ids the first one is found first. Also what
 * o2l_assemble_facts needs to know of the open release.
 */
struct o2l_release_index {
    const struct o2l_span *spans; /* the release's ex.spans */
    const char **orig;            /* per span: the trace id it arrived with */
    unsigned char *moved;         /* per span: given a remembered trace id */
    size_t mask;
    size_t slots[];
};

struct o2l_assemble {
    struct o2l_assemble_config cfg;
    size_t max_facts;
    struct table traces;
    struct table facts;
    struct table moves; /* original trace id -> custom trace id */
    const struct o2l_release_index *open; /* of the open release */
    /* Min-heap of held traces by due time. |chosen| has the same
     * capacity, so choosing a release never allocates. */
    struct held_trace **heap;
    struct held_trace **chosen;
    size_t heap_len;
    size_t heap_cap;
    uint64_t next_seq;
    size_t n_spans;
    size_t bytes;            /* of requests with spans still held */
    struct req_list live;    /* requests with spans still held */
    struct req_list drained; /* wholly released, freed by the next done */
};

void o2l_assemble_config_defaults(struct o2l_assemble_config *cfg)
{
    cfg->window_ms = 3000;
    cfg->root_grace_ms = 300;
    cfg->max_traces = 10000;
    cfg->max_bytes = (size_t)64 * 1024 * 1024;
    cfg->facts_ttl_ms = 600000;
}

static uint64_t add_ms(uint64_t t, uint64_t d)
{
    return t > UINT64_MAX - d ? UINT64_MAX : t + d;
}

static void req_push(struct req_list *l, struct held_req *r)
{
    r->next = NULL;
    r->prev = l->tail;
    if (l->tail) {
        l->tail->next = r;
    } else {
        l->head = r;
    }
    l->tail = r;
    l->count++;
}

static void req_unlink(struct req_list *l, struct held_req *r)
{
    if (r->prev) {
        r->prev->next = r->next;
    } else {
        l->head = r->next;
    }
    if (r->next) {
        r->next->prev = r->prev;
    } else {
        l->tail = r->prev;
    }
    r->prev = NULL;
    r->next = NULL;
    l->count--;
}

static void req_list_free(struct req_list *l)
{
    struct held_req *r = l->head;

    while (r) {
        struct held_req *next = r->next;

        o2l_export_free(r->ex);
        o2l_free(r);
        r = next;
    }
    memset(l, 0, sizeof(*l));
}

/* ---- the heap of due times ----------------------------------------------- */

static bool due_before(const struct held_trace *x, const struct held_trace *y)
{
    if (x->due_ms != y->due_ms) {
        return x->due_ms < y->due_ms;
    }
    return x->seq < y->seq;
}

static void heap_set(struct o2l_assemble *a, size_t pos, struct held_trace *t)
{
    a->heap[pos] = t;
    t->heap_pos = pos;
}

static void heap_up(struct o2l_assemble *a, size_t pos)
{
    struct held_trace *t = a->heap[pos];

    while (pos > 0 && due_before(t, a->heap[(pos - 1) / 2])) {
        heap_set(a, pos, a->heap[(pos - 1) / 2]);
        pos = (pos - 1) / 2;
    }
    heap_set(a, pos, t);
}

static void heap_down(struct o2l_assemble *a, size_t pos)
{
    struct held_trace *t = a->heap[pos];

    for (;;) {
        size_t c = 2 * pos + 1;

        if (c >= a->heap_len) {
            break;
        }
        if (c + 1 < a->heap_len && due_before(a->heap[c + 1], a->heap[c])) {
            c++;
        }
        if (!due_before(a->heap[c], t)) {
            break;
        }
        heap_set(a, pos, a->heap[c]);
        pos = c;
    }
    heap_set(a, pos, t);
}

/* Room reserved beforehand (heap_reserve). */
static void heap_push(struct o2l_assemble *a, struct held_trace *t)
{
    heap_set(a, a->heap_len++, t);
    heap_up(a, t->heap_pos);
}

static void heap_remove(struct o2l_assemble *a, struct held_trace *t)
{
    size_t pos = t->heap_pos;
    struct held_trace *last = a->heap[--a->heap_len];

    if (last == t) {
        return;
    }
    heap_set(a, pos, last);
    heap_up(a, pos);
    heap_down(a, last->heap_pos);
}

/* Makes room for |n| traces in the heap and in the chosen array. */
static int heap_reserve(struct o2l_assemble *a, size_t n)
{
    size_t cap = a->heap_cap ? a->heap_cap : HEAP_MIN_CAP;
    struct held_trace **p;

    if (n <= a->heap_cap) {
        return O2L_OK;
    }
    while (cap < n) {
        cap *= 2;
    }
    p = o2l_realloc(a->heap, cap * sizeof(*p));
    if (!p) {
        return O2L_ENOMEM;
    }
    a->heap = p;
    p = o2l_realloc(a->chosen, cap * sizeof(*p));
    if (!p) {
        return O2L_ENOMEM;
    }
    a->chosen = p;
    a->heap_cap = cap;
    return O2L_OK;
}

/* ---- creating, adding ---------------------------------------------------- */

struct o2l_assemble *o2l_assemble_new(const struct o2l_assemble_config *cfg)
{
    struct o2l_assemble *a = o2l_calloc(1, sizeof(*a));

    if (!a) {
        return NULL;
    }
    if (cfg) {
        a->cfg = *cfg;
    } else {
        o2l_assemble_config_defaults(&a->cfg);
    }
    a->max_facts =
        a->cfg.max_traces > SIZE_MAX / 4 ? SIZE_MAX : a->cfg.max_traces * 4;
    if (a->max_facts == 0) {
        a->max_facts = 1;
    }
    if (table_init(&a->traces) != O2L_OK || table_init(&a->facts) != O2L_OK ||
        table_init(&a->moves) != O2L_OK ||
        heap_reserve(a, HEAP_MIN_CAP) != O2L_OK) {
        o2l_assemble_free(a);
        return NULL;
    }
    return a;
}

static struct held_trace *trace_find(const struct o2l_assemble *a,
                                     const char *id)
{
    return (struct held_trace *)table_find(&a->traces, id);
}

static void trace_free(struct held_trace *t)
{
    if (t) {
        o2l_free(t->refs);
        o2l_free(t->ix);
        o2l_free(t);
    }
}

/* The slot of span id |id| in the span index of |t|: its live ref, or
 * the empty slot where it goes. */
static size_t *ix_slot(struct held_trace *t, const char *id)
{
    size_t h = (size_t)hash_text(id) & t->ix_mask;

    while (t->ix[h] && strcmp(t->refs[t->ix[h] - 1].span->span_id, id) != 0) {
        h = (h + 1) & t->ix_mask;
    }
    return &t->ix[h];
}

/* Makes the span index of |t| hold at least twice |n| slots, rebuilt
 * from the live refs. */
static int ix_reserve(struct held_trace *t, size_t n)
{
    size_t cap = t->ix ? t->ix_mask + 1 : 8;
    size_t *old = t->ix;

    if (t->ix && cap >= n * 2) {
        return O2L_OK;
    }
    while (cap < n * 2) {
        cap *= 2;
    }
    t->ix = o2l_calloc(cap, sizeof(*t->ix));
    if (!t->ix) {
        t->ix = old;
        return O2L_ENOMEM;
    }
    t->ix_mask = cap - 1;
    o2l_free(old);
    for (size_t i = 0; i < t->n_refs; i++) {
        if (t->refs[i].span) {
            *ix_slot(t, t->refs[i].span->span_id) = i + 1;
        }
    }
    return O2L_OK;
}

static int refs_reserve(struct held_trace *t, size_t n)
{
    size_t cap = t->cap_refs ? t->cap_refs : 4;
    struct span_ref *p;

    if (n <= t->cap_refs) {
        return O2L_OK;
    }
    while (cap < n) {
        cap *= 2;
    }
    p = o2l_realloc(t->refs, cap * sizeof(*p));
    if (!p) {
        return O2L_ENOMEM;
    }
    t->refs = p;
    t->cap_refs = cap;
    return O2L_OK;
}

/*
 * First half of an add, where everything that can fail happens: finds or
 * creates the trace of each span and reserves room for the spans. The
 * traces used are linked from *touched; new ones have no spans yet.
 */
static int add_prepare(struct o2l_assemble *a, const struct o2l_export *ex,
                       struct held_trace **touched)
{
    for (size_t i = 0; i < ex->n_spans; i++) {
        const char *id = ex->spans[i].trace_id;
        struct held_trace *t = trace_find(a, id);

        if (!t) {
            t = o2l_calloc(1, sizeof(*t));
            if (!t) {
                return O2L_ENOMEM;
            }
            memcpy(t->e.id, id, sizeof(t->e.id));
            t->e.id[sizeof(t->e.id) - 1] = '\0';
            table_add(&a->traces, &t->e);
        }
        if (t->want++ == 0) {
            t->touched = *touched;
            *touched = t;
        }
    }
    for (struct held_trace *t = *touched; t; t = t->touched) {
        if (refs_reserve(t, t->n_refs + t->want) != O2L_OK ||
            ix_reserve(t, t->n_refs + t->want) != O2L_OK) {
            return O2L_ENOMEM;
        }
    }
    return heap_reserve(a, a->traces.count);
}

/* One span of request |r| is no longer held (released or replaced). */
static void req_release_one(struct o2l_assemble *a, struct held_req *r)
{
    r->held--;
    r->left = r->held;
    if (r->held == 0) {
        a->bytes -= r->bytes;
        req_unlink(&a->live, r);
        req_push(&a->drained, r);
    }
}

/*
 * Duplicate spans held in one window: a span id that trace |t|
 * already holds is replaced by this later copy. The earlier one is
 * dropped unsent; a request left with no held span is wholly released.
 * Returns the slot for the new ref.
 */
static size_t *replace_duplicate(struct o2l_assemble *a, struct held_trace *t,
                                 const struct o2l_span *s)
{
    size_t *slot = ix_slot(t, s->span_id);
    struct span_ref *old;

    if (*slot == 0) {
        return slot;
    }
    old = &t->refs[*slot - 1];
    old->span = NULL;
    t->n_live--;
    a->n_spans--;
    req_release_one(a, old->req);
    old->req = NULL;
    return slot;
}

/* Second half: cannot fail. */
static void add_commit(struct o2l_assemble *a, struct held_req *r,
                       uint64_t now_ms)
{
    for (size_t i = 0; i < r->ex->n_spans; i++) {
        struct o2l_span *s = &r->ex->spans[i];
        struct held_trace *t = trace_find(a, s->trace_id);

        if (t->n_refs == 0) {
            t->seq = a->next_seq++;
            t->first_ms = now_ms;
            t->due_ms = add_ms(now_ms, a->cfg.window_ms);
            heap_push(a, t);
        }
        *replace_duplicate(a, t, s) = t->n_refs + 1;
        t->refs[t->n_refs].span = s;
        t->refs[t->n_refs].req = r;
        t->n_refs++;
        t->n_live++;
        if (s->parent_id[0] == '\0' && !t->has_root) {
            uint64_t due = add_ms(now_ms, a->cfg.root_grace_ms);

            t->has_root = true;
            if (due < t->due_ms) {
                t->due_ms = due;
                heap_up(a, t->heap_pos);
            }
        }
    }
}

int o2l_assemble_add(struct o2l_assemble *a, uint64_t id, size_t bytes,
                     struct o2l_export *ex, uint64_t now_ms)
{
    struct held_trace *touched = NULL;
    struct held_req *r;
    int rc;

    r = o2l_calloc(1, sizeof(*r));
    if (!r) {
        o2l_export_free(ex);
        return O2L_ENOMEM;
    }
    r->id = id;
    r->bytes = bytes;
    r->ex = ex;
    r->held = ex->n_spans;
    r->left = ex->n_spans;

    /* Nothing to hold: wholly released at once. */
    if (ex->n_spans == 0) {
        req_push(&a->drained, r);
        return O2L_OK;
    }

    rc = add_prepare(a, ex, &touched);
    if (rc == O2L_OK) {
        /* In the live list first: a span of |r| may replace another. */
        req_push(&a->live, r);
        a->bytes += bytes;
        a->n_spans += ex->n_spans;
        add_commit(a, r, now_ms);
    }

    while (touched) {
        struct held_trace *t = touched;

        touched = t->touched;
        t->touched = NULL;
        t->want = 0;
        if (t->n_refs == 0) {
            table_remove(&a->traces, &t->e);
            trace_free(t);
        }
    }
    if (rc != O2L_OK) {
        o2l_export_free(ex);
        o2l_free(r);
    }
    return rc;
}

/* ---- custom trace ids of original traces --------------------------------- */

static void move_drop(struct o2l_assemble *a, struct move *mv)
{
    table_remove(&a->moves, &mv->e);
    o2l_free(mv);
}

/* In order of last store, like the facts: expired entries at the head. */
static void moves_expire(struct o2l_assemble *a, uint64_t now_ms)
{
    while (a->moves.head) {
        struct move *mv = (struct move *)a->moves.head;

        if (add_ms(mv->stored_ms, a->cfg.facts_ttl_ms) > now_ms) {
            break;
        }
        move_drop(a, mv);
    }
}

/* Remembers that original trace |from| went to trace |to|. */
static int move_store(struct o2l_assemble *a, const char *from, const char *to,
                      uint64_t now_ms)
{
    struct move *mv = (struct move *)table_find(&a->moves, from);

    if (!mv) {
        mv = o2l_calloc(1, sizeof(*mv));
        if (!mv) {
            return O2L_ENOMEM;
        }
        snprintf(mv->e.id, sizeof(mv->e.id), "%s", from);
        table_add(&a->moves, &mv->e);
    }
    snprintf(mv->to, sizeof(mv->to), "%s", to);
    mv->stored_ms = now_ms;
    table_touch(&a->moves, &mv->e);
    while (a->moves.count > a->max_facts) {
        move_drop(a, (struct move *)a->moves.head);
    }
    return O2L_OK;
}

/* ---- releasing ----------------------------------------------------------- */

static bool over_bounds(const struct o2l_assemble *a, size_t traces,
                        size_t bytes)
{
    return traces > a->cfg.max_traces || bytes > a->cfg.max_bytes;
}

/* Marks |t| for release and counts what would be left. */
static void choose(struct o2l_assemble *a, struct held_trace *t, size_t *n,
                   size_t *traces_left, size_t *bytes_left)
{
    t->chosen = true;
    a->chosen[(*n)++] = t;
    (*traces_left)--;
    for (size_t i = 0; i < t->n_refs; i++) {
        struct held_req *r = t->refs[i].req;

        if (!r) {
            continue;
        }
        if (--r->left == 0) {
            *bytes_left -= r->bytes;
        }
    }
}

static void unchoose(struct o2l_assemble *a, size_t n)
{
    for (size_t k = 0; k < n; k++) {
        struct held_trace *t = a->chosen[k];

        t->chosen = false;
        for (size_t i = 0; i < t->n_refs; i++) {
            if (t->refs[i].req) {
                t->refs[i].req->left = t->refs[i].req->held;
            }
        }
    }
}

/*
 * Fills a->chosen with the traces to release: those due by time, then,
 * while a bound is still crossed, the oldest of the rest. Returns how
 * many.
 */
static size_t choose_due(struct o2l_assemble *a, uint64_t now_ms, bool all)
{
    size_t traces_left = a->traces.count;
    size_t bytes_left = a->bytes;
    size_t n = 0;

    if (all) {
        for (struct entry *e = a->traces.head; e; e = e->next) {
            choose(a, (struct held_trace *)e, &n, &traces_left, &bytes_left);
        }
        return n;
    }

    /* Walks the heap from the top; below a trace not yet due, every
     * trace is later still. The chosen array is the walk's queue. */
    if (a->heap_len > 0 && a->heap[0]->due_ms <= now_ms) {
        choose(a, a->heap[0], &n, &traces_left, &bytes_left);
    }
    for (size_t q = 0; q < n; q++) {
        size_t c = 2 * a->chosen[q]->heap_pos + 1;

        for (size_t k = c; k < c + 2 && k < a->heap_len; k++) {
            if (a->heap[k]->due_ms <= now_ms) {
                choose(a, a->heap[k], &n, &traces_left, &bytes_left);
            }
        }
    }

    for (struct entry *e = a->traces.head;
         e && over_bounds(a, traces_left, bytes_left); e = e->next) {
        struct held_trace *t = (struct held_trace *)e;

        if (!t->chosen) {
            choose(a, t, &n, &traces_left, &bytes_left);
        }
    }
    return n;
}

static int cmp_seq(const void *x, const void *y)
{
    const struct held_trace *a = *(struct held_trace *const *)x;
    const struct held_trace *b = *(struct held_trace *const *)y;

    return a->seq < b->seq ? -1 : a->seq > b->seq;
}

static size_t pow2_at_least(size_t n)
{
    size_t cap = 16;

    while (cap < n) {
        cap *= 2;
    }
    return cap;
}

/* (request, scope index) to the scope's index in the release. */
struct scope_slot {
    const struct held_req *req;
    size_t from;
    size_t to;
};

struct scope_map {
    struct scope_slot *slots;
    size_t mask;
};

static size_t scope_hash(const struct held_req *r, size_t from)
{
    uint64_t h = (uint64_t)(uintptr_t)r * 0x9e3779b97f4a7c15ULL;

    h ^= (uint64_t)from * 0xff51afd7ed558ccdULL;
    return (size_t)(h ^ (h >> 29));
}

/* The index in |ex| of scope |from| of request |r|, copied there on first
 * use. An index the request does not have stays out of range (SIZE_MAX),
 * so the mapper skips that span as it would have before. */
static size_t scope_place(struct scope_map *sm, const struct held_req *r,
                          size_t from, struct o2l_export *ex)
{
    size_t h;

    if (from >= r->ex->n_scopes) {
        return SIZE_MAX;
    }
    h = scope_hash(r, from) & sm->mask;
    while (sm->slots[h].req) {
        if (sm->slots[h].req == r && sm->slots[h].from == from) {
            return sm->slots[h].to;
        }
        h = (h + 1) & sm->mask;
    }
    sm->slots[h].req = r;
    sm->slots[h].from = from;
    sm->slots[h].to = ex->n_scopes;
    ex->scopes[ex->n_scopes] = r->ex->scopes[from];
    return ex->n_scopes++;
}

/* Adds span |k| of |rel| to the index, after any with the same id. */
static void index_put(struct o2l_release_index *ix,
                      const struct o2l_release *rel, size_t k)
{
    size_t h = (size_t)hash_text(rel->ex.spans[k].span_id) & ix->mask;

    while (ix->slots[h]) {
        h = (h + 1) & ix->mask;
    }
    ix->slots[h] = k + 1;
}

/*
 * The next span of the release whose id is |id|, or SIZE_MAX. Start with
 * *pos = SIZE_MAX; each call goes on where the previous one stopped.
 */
static size_t index_next(const struct o2l_release_index *ix, const char *id,
                         size_t *pos)
{
    if (*pos == SIZE_MAX) {
        *pos = (size_t)hash_text(id) & ix->mask;
    }
    while (ix->slots[*pos]) {
        size_t k = ix->slots[*pos] - 1;

        *pos = (*pos + 1) & ix->mask;
        if (strcmp(ix->spans[k].span_id, id) == 0) {
            return k;
        }
    }
    return SIZE_MAX;
}

static void release_free(struct o2l_release *rel)
{
    if (rel->index) {
        o2l_free(rel->index->orig);
        o2l_free(rel->index->moved);
    }
    o2l_free(rel->ex.spans);
    o2l_free(rel->ex.scopes);
    o2l_free(rel->request_ids);
    o2l_free(rel->index);
    memset(rel, 0, sizeof(*rel));
}

/* Allocates the arrays of a release of |n_spans| spans. */
static int release_alloc(struct o2l_release *rel, struct scope_map *sm,
                         size_t n_spans)
{
    size_t cap = pow2_at_least(n_spans * 2);

    rel->ex.spans = o2l_calloc(n_spans, sizeof(*rel->ex.spans));
    rel->ex.scopes = o2l_calloc(n_spans, sizeof(*rel->ex.scopes));
    rel->request_ids = o2l_calloc(n_spans, sizeof(*rel->request_ids));
    rel->index =
        o2l_calloc(1, sizeof(*rel->index) + cap * sizeof(rel->index->slots[0]));
    sm->slots = o2l_calloc(cap, sizeof(*sm->slots));
    if (rel->index) {
        rel->index->orig = o2l_calloc(n_spans, sizeof(*rel->index->orig));
        rel->index->moved = o2l_calloc(n_spans, 1);
    }
    if (!rel->ex.spans || !rel->ex.scopes || !rel->request_ids || !rel->index ||
        !rel->index->orig || !rel->index->moved || !sm->slots) {
        release_free(rel);
        o2l_free(sm->slots);
        sm->slots = NULL;
        return O2L_ENOMEM;
    }
    rel->index->spans = rel->ex.spans;
    rel->index->mask = cap - 1;
    sm->mask = cap - 1;
    return O2L_OK;
}

/*
 * Moves the spans of chosen trace |t| into |rel| and frees |t|. When a
 * custom trace id is remembered for the trace, the copies carry it as
 * their trace id, so the mapper joins them to the trace their earlier
 * spans went to (o2l_assemble_facts puts the original back as
 * otel_trace_id).
 */
static void release_trace(struct o2l_assemble *a, struct held_trace *t,
                          struct o2l_release *rel, struct scope_map *sm)
{
    const struct move *mv = (const struct move *)table_find(&a->moves, t->e.id);

    for (size_t i = 0; i < t->n_refs; i++) {
        struct span_ref *ref = &t->refs[i];
        size_t k;

        if (!ref->span) {
            continue; /* replaced by a later copy */
        }
        k = rel->ex.n_spans++;
        rel->ex.spans[k] = *ref->span;
        rel->ex.spans[k].scope =
            scope_place(sm, ref->req, ref->span->scope, &rel->ex);
        rel->index->orig[k] = ref->span->trace_id;
        if (mv) {
            memcpy(rel->ex.spans[k].trace_id, mv->to,
                   sizeof(rel->ex.spans[k].trace_id));
            rel->index->moved[k] = 1;
        }
        rel->request_ids[k] = ref->req->id;
        index_put(rel->index, rel, k);
        req_release_one(a, ref->req);
    }
    a->n_spans -= t->n_live;
    heap_remove(a, t);
    table_remove(&a->traces, &t->e);
    trace_free(t);
}

int o2l_assemble_release(struct o2l_assemble *a, uint64_t now_ms, bool all,
                         struct o2l_release *out)
{
    struct scope_map sm = {NULL, 0};
    size_t n_spans = 0;
    size_t n;
    int rc;

    memset(out, 0, sizeof(*out));
    a->open = NULL;
    moves_expire(a, now_ms);
    n = choose_due(a, now_ms, all);
    if (n == 0) {
        return O2L_OK;
    }
    qsort(a->chosen, n, sizeof(*a->chosen), cmp_seq);
    for (size_t k = 0; k < n; k++) {
        n_spans += a->chosen[k]->n_live;
    }

    rc = release_alloc(out, &sm, n_spans);
    if (rc != O2L_OK) {
        unchoose(a, n);
        return rc;
    }
    for (size_t k = 0; k < n; k++) {
        release_trace(a, a->chosen[k], out, &sm);
    }
    o2l_free(sm.slots);
    a->open = out->index;
    return O2L_OK;
}

uint64_t o2l_release_request(const struct o2l_release *rel, const char *span_id)
{
    size_t pos = SIZE_MAX;
    size_t k;

    if (!rel->index || !span_id) {
        return 0;
    }
    k = index_next(rel->index, span_id, &pos);
    return k == SIZE_MAX ? 0 : rel->request_ids[k];
}

int o2l_assemble_done(struct o2l_assemble *a, struct o2l_release *rel,
                      uint64_t **ids, size_t *n_ids)
{
    uint64_t *list;
    size_t n = 0;

    *ids = NULL;
    *n_ids = 0;
    a->open = NULL;
    if (rel) {
        release_free(rel);
    }
    if (a->drained.count == 0) {
        return O2L_OK;
    }

    /* On failure the requests stay drained for the next call. */
    list = o2l_malloc(a->drained.count * sizeof(*list));
    if (!list) {
        return O2L_ENOMEM;
    }
    while (a->drained.head) {
        struct held_req *r = a->drained.head;

        req_unlink(&a->drained, r);
        list[n++] = r->id;
        o2l_export_free(r->ex);
        o2l_free(r);
    }
    *ids = list;
    *n_ids = n;
    return O2L_OK;
}

/* ---- facts of released traces -------------------------------------------- */

static void facts_clear(struct facts *f)
{
    o2l_free(f->name);
    o2l_free(f->user_id);
    o2l_free(f->session_id);
    o2l_free(f->release);
    o2l_free(f->version);
    o2l_free(f->environment);
    cJSON_Delete(f->tags);
    cJSON_Delete(f->metadata);
    f->name = NULL;
    f->user_id = NULL;
    f->session_id = NULL;
    f->release = NULL;
    f->version = NULL;
    f->environment = NULL;
    f->tags = NULL;
    f->metadata = NULL;
}

static void facts_drop(struct o2l_assemble *a, struct facts *f)
{
    table_remove(&a->facts, &f->e);
    facts_clear(f);
    o2l_free(f);
}

/* The memory is in order of last store: expired entries are at the head. */
static void facts_expire(struct o2l_assemble *a, uint64_t now_ms)
{
    while (a->facts.head) {
        struct facts *f = (struct facts *)a->facts.head;

        if (add_ms(f->stored_ms, a->cfg.facts_ttl_ms) > now_ms) {
            break;
        }
        facts_drop(a, f);
    }
}

/* Copies |s| into *out; NULL stays NULL. */
static int copy_text(const char *s, char **out)
{
    *out = s ? o2l_strdup(s) : NULL;
    return !s || *out ? O2L_OK : O2L_ENOMEM;
}

static int copy_json(const cJSON *v, cJSON **out)
{
    *out = v ? cJSON_Duplicate(v, 1) : NULL;
    return !v || *out ? O2L_OK : O2L_ENOMEM;
}

/* Replaces the memory of |f| with copies of the facts of |t|. */
static int facts_store(struct facts *f, const struct o2l_trace *t)
{
    struct facts c;
    int rc;

    memset(&c, 0, sizeof(c));
    rc = copy_text(t->name, &c.name);
    rc = rc == O2L_OK ? copy_text(t->user_id, &c.user_id) : rc;
    rc = rc == O2L_OK ? copy_text(t->session_id, &c.session_id) : rc;
    rc = rc == O2L_OK ? copy_text(t->release, &c.release) : rc;
    rc = rc == O2L_OK ? copy_text(t->version, &c.version) : rc;
    rc = rc == O2L_OK ? copy_text(t->environment, &c.environment) : rc;
    rc = rc == O2L_OK ? copy_json(t->tags, &c.tags) : rc;
    rc = rc == O2L_OK ? copy_json(t->metadata, &c.metadata) : rc;
    if (rc != O2L_OK) {
        facts_clear(&c);
        return rc;
    }
    facts_clear(f);
    f->name = c.name;
    f->user_id = c.user_id;
    f->session_id = c.session_id;
    f->release = c.release;
    f->version = c.version;
    f->environment = c.environment;
    f->tags = c.tags;
    f->metadata = c.metadata;
    f->public_flag = t->public_flag;
    return O2L_OK;
}

/* Fills *dst from |src| when it has no value. */
static int fill_text(char **dst, const char *src)
{
    if (*dst || !src) {
        return O2L_OK;
    }
    return copy_text(src, dst);
}

static int cmp_text(const void *x, const void *y)
{
    return strcmp(*(const char *const *)x, *(const char *const *)y);
}

static size_t push_tags(const cJSON *arr, const char **v, size_t n)
{
    const cJSON *it;

    cJSON_ArrayForEach(it, arr)
    {
        if (cJSON_IsString(it) && it->valuestring) {
            v[n++] = it->valuestring;
        }
    }
    return n;
}

/* *dst becomes the sorted, de-duplicated union of itself and |src|. */
static int tags_union(cJSON **dst, const cJSON *src)
{
    size_t cap = (size_t)cJSON_GetArraySize(src);
    const char **v;
    cJSON *arr = NULL;
    size_t n;
    int rc = O2L_ENOMEM;

    if (!cJSON_IsArray(src) || cap == 0) {
        return O2L_OK;
    }
    if (cJSON_IsArray(*dst)) {
        cap += (size_t)cJSON_GetArraySize(*dst);
    }
    v = o2l_malloc(cap * sizeof(*v));
    if (!v) {
        return O2L_ENOMEM;
    }
    n = push_tags(src, v, 0);
    if (cJSON_IsArray(*dst)) {
        n = push_tags(*dst, v, n);
    }
    qsort(v, n, sizeof(*v), cmp_text);

    arr = cJSON_CreateArray();
    if (!arr) {
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        cJSON *s;

        if (i > 0 && strcmp(v[i], v[i - 1]) == 0) {
            continue;
        }
        s = cJSON_CreateString(v[i]);
        if (!s || !cJSON_AddItemToArray(arr, s)) {
            cJSON_Delete(s);
            goto out;
        }
    }
    cJSON_Delete(*dst);
    *dst = arr;
    arr = NULL;
    rc = O2L_OK;

out:
    cJSON_Delete(arr);
    o2l_free(v);
    return rc;
}

/* Adds to *dst each key of |src| it does not have. */
static int metadata_under(cJSON **dst, const cJSON *src)
{
    const cJSON *it;

    if (!cJSON_IsObject(src) || !src->child) {
        return O2L_OK;
    }
    if (!cJSON_IsObject(*dst)) {
        cJSON_Delete(*dst);
        *dst = cJSON_Duplicate(src, 1);
        return *dst ? O2L_OK : O2L_ENOMEM;
    }
    cJSON_ArrayForEach(it, src)
    {
        cJSON *copy;

        if (!it->string || cJSON_GetObjectItemCaseSensitive(*dst, it->string)) {
            continue;
        }
        copy = cJSON_Duplicate(it, 1);
        if (!copy || !cJSON_AddItemToObject(*dst, it->string, copy)) {
            cJSON_Delete(copy);
            return O2L_ENOMEM;
        }
    }
    return O2L_OK;
}

/*
 * "default" is what the mapper writes when no span names an environment,
 * so a remembered explicit one replaces it, on the trace and on its
 * observations (each carries the trace's environment).
 */
static int environment_under(struct o2l_mapped *m, struct o2l_trace *t,
                             const char *remembered)
{
    char *env;

    if (!remembered || strcmp(remembered, "default") == 0 ||
        (t->environment && strcmp(t->environment, "default") != 0)) {
        return O2L_OK;
    }
    for (size_t i = 0; i < m->n_obs; i++) {
        struct o2l_observation *o = &m->obs[i];

        if (strcmp(o->trace_id, t->id) != 0) {
            continue;
        }
        env = o2l_strdup(remembered);
        if (!env) {
            return O2L_ENOMEM;
        }
        o2l_free(o->environment);
        o->environment = env;
    }
    env = o2l_strdup(remembered);
    if (!env) {
        return O2L_ENOMEM;
    }
    o2l_free(t->environment);
    t->environment = env;
    return O2L_OK;
}

/* Lays the remembered facts |f| under those of |t|. */
static int facts_under(struct o2l_mapped *m, struct o2l_trace *t,
                       const struct facts *f)
{
    int rc;

    rc = fill_text(&t->name, f->name);
    rc = rc == O2L_OK ? fill_text(&t->user_id, f->user_id) : rc;
    rc = rc == O2L_OK ? fill_text(&t->session_id, f->session_id) : rc;
    rc = rc == O2L_OK ? fill_text(&t->release, f->release) : rc;
    rc = rc == O2L_OK ? fill_text(&t->version, f->version) : rc;
    rc = rc == O2L_OK ? environment_under(m, t, f->environment) : rc;
    rc = rc == O2L_OK ? tags_union(&t->tags, f->tags) : rc;
    rc = rc == O2L_OK ? metadata_under(&t->metadata, f->metadata) : rc;
    if (rc == O2L_OK && t->public_flag < 0) {
        t->public_flag = f->public_flag;
    }
    return rc;
}

static int facts_trace(struct o2l_assemble *a, struct o2l_mapped *m,
                       struct o2l_trace *t, uint64_t now_ms)
{
    struct facts *f = (struct facts *)table_find(&a->facts, t->id);
    bool fresh = false;
    int rc;

    if (f) {
        rc = facts_under(m, t, f);
        if (rc != O2L_OK) {
            return rc;
        }
    } else {
        f = o2l_calloc(1, sizeof(*f));
        if (!f) {
            return O2L_ENOMEM;
        }
        memcpy(f->e.id, t->id, sizeof(f->e.id));
        f->e.id[sizeof(f->e.id) - 1] = '\0';
        f->public_flag = -1;
        table_add(&a->facts, &f->e);
        fresh = true;
    }

    rc = facts_store(f, t);
    if (rc != O2L_OK) {
        if (fresh) {
            facts_drop(a, f);
        }
        return rc;
    }
    f->stored_ms = now_ms;
    table_touch(&a->facts, &f->e);
    while (a->facts.count > a->max_facts) {
        facts_drop(a, (struct facts *)a->facts.head);
    }
    return O2L_OK;
}

/* The metadata key that keeps an observation's original trace id. */
#define OTEL_TRACE_ID "otel_trace_id"

/*
 * The span of the open release observation |o| was mapped from: of the
 * spans with its span id (span events: the first 16 characters of the
 * observation id), the one under the same trace id, else the one under
 * the trace id its metadata names as original, else the first. SIZE_MAX
 * when there is none.
 */
static size_t span_of(const struct o2l_release_index *ix,
                      const struct o2l_observation *o)
{
    const cJSON *md =
        cJSON_GetObjectItemCaseSensitive(o->metadata, OTEL_TRACE_ID);
    const char *named = cJSON_IsString(md) ? md->valuestring : NULL;
    size_t first = SIZE_MAX;
    size_t second = SIZE_MAX;
    size_t pos = SIZE_MAX;
    size_t k;
    char id[17];

    snprintf(id, sizeof(id), "%.16s", o->id);
    while ((k = index_next(ix, id, &pos)) != SIZE_MAX) {
        if (strcmp(ix->spans[k].trace_id, o->trace_id) == 0) {
            return k;
        }
        if (first == SIZE_MAX) {
            first = k;
        }
        if (second == SIZE_MAX && named &&
            strcmp(ix->spans[k].trace_id, named) == 0) {
            second = k;
        }
    }
    return second != SIZE_MAX ? second : first;
}

/*
 * The mapper saw the remembered trace id as the span's own, so it could
 * not name the original: otel_trace_id becomes |orig|, or
 * goes when the span ended up under its original trace id after all.
 */
static int set_origin(struct o2l_observation *o, const char *orig,
                      const char *given)
{
    cJSON *v;

    if (strcmp(o->trace_id, orig) == 0) {
        v = cJSON_GetObjectItemCaseSensitive(o->metadata, OTEL_TRACE_ID);
        if (cJSON_IsString(v) && strcmp(v->valuestring, given) == 0) {
            cJSON_DeleteItemFromObjectCaseSensitive(o->metadata, OTEL_TRACE_ID);
        }
        return O2L_OK;
    }
    if (!o->metadata) {
        o->metadata = cJSON_CreateObject();
        if (!o->metadata) {
            return O2L_ENOMEM;
        }
    }
    v = cJSON_CreateString(orig);
    if (!v) {
        return O2L_ENOMEM;
    }
    if (cJSON_GetObjectItemCaseSensitive(o->metadata, OTEL_TRACE_ID)) {
        cJSON_ReplaceItemInObjectCaseSensitive(o->metadata, OTEL_TRACE_ID, v);
    } else if (!cJSON_AddItemToObject(o->metadata, OTEL_TRACE_ID, v)) {
        cJSON_Delete(v);
        return O2L_ENOMEM;
    }
    return O2L_OK;
}

/*
 * Custom trace ids across windows: remembers, per original trace id, the trace
 * id its spans of the open release were mapped to when that differs, and
 * names the original of the spans that release_trace() moved.
 */
static int follow_moves(struct o2l_assemble *a, struct o2l_mapped *m,
                        uint64_t now_ms)
{
    const struct o2l_release_index *ix = a->open;
    int rc = O2L_OK;

    if (!ix) {
        return O2L_OK;
    }
    for (size_t i = 0; i < m->n_obs && rc == O2L_OK; i++) {
        struct o2l_observation *o = &m->obs[i];
        size_t k = span_of(ix, o);
        const char *orig;

        if (k == SIZE_MAX) {
            continue;
        }
        orig = ix->orig[k];
        if (ix->moved[k]) {
            rc = set_origin(o, orig, ix->spans[k].trace_id);
        }
        if (rc == O2L_OK && strcmp(o->trace_id, orig) != 0) {
            rc = move_store(a, orig, o->trace_id, now_ms);
        }
    }
    return rc;
}

int o2l_assemble_facts(struct o2l_assemble *a, struct o2l_mapped *m,
                       uint64_t now_ms)
{
    int rc;

    facts_expire(a, now_ms);
    moves_expire(a, now_ms);
    rc = follow_moves(a, m, now_ms);
    if (rc != O2L_OK) {
        return rc;
    }
    for (size_t i = 0; i < m->n_traces && rc == O2L_OK; i++) {
        rc = facts_trace(a, m, &m->traces[i], now_ms);
    }
    return rc;
}

/* ---- state --------------------------------------------------------------- */

uint32_t o2l_assemble_next_due(const struct o2l_assemble *a, uint64_t now_ms)
{
    uint64_t due;

    if (a->heap_len == 0) {
        return UINT32_MAX;
    }
    if (over_bounds(a, a->traces.count, a->bytes)) {
        return 0;
    }
    due = a->heap[0]->due_ms;
    if (due <= now_ms) {
        return 0;
    }
    return due - now_ms >= UINT32_MAX ? UINT32_MAX - 1
                                      : (uint32_t)(due - now_ms);
}

void o2l_assemble_counts(const struct o2l_assemble *a, size_t *traces,
                         size_t *spans, size_t *bytes)
{
    if (traces) {
        *traces = a->traces.count;
    }
    if (spans) {
        *spans = a->n_spans;
    }
    if (bytes) {
        *bytes = a->bytes;
    }
}

void o2l_assemble_free(struct o2l_assemble *a)
{
    struct entry *e;

    if (!a) {
        return;
    }
    e = a->traces.head;
    while (e) {
        struct entry *next = e->next;

        trace_free((struct held_trace *)e);
        e = next;
    }
    e = a->facts.head;
    while (e) {
        struct entry *next = e->next;

        facts_clear((struct facts *)e);
        o2l_free(e);
        e = next;
    }
    e = a->moves.head;
    while (e) {
        struct entry *next = e->next;

        o2l_free(e);
        e = next;
    }
    req_list_free(&a->live);
    req_list_free(&a->drained);
    o2l_free(a->traces.buckets);
    o2l_free(a->facts.buckets);
    o2l_free(a->moves.buckets);
    o2l_free(a->heap);
    o2l_free(a->chosen);
    o2l_free(a);
}
