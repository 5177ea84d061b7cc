/* SPDX-License-Identifier: Apache-2.0 */
/*
 * flatten.c - rebuilds flattened indexed attribute keys
 * (llm.input_messages.0.message.role, gen_ai.prompt.1.content, ...) into
 * one JSON value, under a per-span budget of array slots.
 */
#include "o2l/map_util.h"

#include <string.h>

#include "o2l/common.h"

/* Keys deeper than this are dropped: no producer nests that far. */
#define FLAT_MAX_SEGMENTS 32

enum fkind {
    FK_UNSET = 0,
    FK_LEAF,
    FK_OBJ,
    FK_ARR
};

struct fnode {
    const char *key; /* object member name (not NUL-terminated) */
    size_t key_len;
    uint64_t index; /* array position */
    enum fkind kind;
    const cJSON *leaf;
    struct fnode *child; /* objects: insertion order; arrays: by index */
    struct fnode *next;
    /*
     * The last child in the list and the last one touched: keys arrive in
     * order (0.role, 0.content, 1.role, ...), so these two make most
     * look-ups and appends constant-time instead of a walk of the list.
     */
    struct fnode *tail;
    struct fnode *last;
    uint64_t slots; /* arrays: highest index + 1 */
};

struct seg {
    const char *s;
    size_t len;
    bool is_index;
    uint64_t index;
};

static void fnode_free(struct fnode *n)
{
    while (n) {
        struct fnode *next = n->next;

        fnode_free(n->child);
        o2l_free(n);
        n = next;
    }
}

/* Splits |suffix| on '.', dropping wrapper levels when |unwrap|. Returns
 * the segment count, or 0 when the key is unusable. */
static size_t split(const char *suffix, bool unwrap, struct seg *segs)
{
    static const char *const wrappers[] = {
        "message", "tool_call", "message_content", "document", "tool"};
    size_t n = 0;
    const char *p = suffix;

    for (;;) {
        const char *dot = strchr(p, '.');
        size_t len = dot ? (size_t)(dot - p) : strlen(p);
        struct seg sg = {p, len, len > 0, 0};
        bool skip = false;

        for (size_t i = 0; i < len; i++) {
            if (p[i] < '0' || p[i] > '9') {
                sg.is_index = false;
                break;
            }
        }
        if (sg.is_index) {
            if (len > 18) {
                return 0; /* an index no budget could hold */
            }
            for (size_t i = 0; i < len; i++) {
                sg.index = sg.index * 10 + (uint64_t)(p[i] - '0');
            }
        }
        if (unwrap && dot && n > 0 && segs[n - 1].is_index && !sg.is_index) {
            for (size_t i = 0; i < O2L_ARRAY_LEN(wrappers); i++) {
                if (strlen(wrappers[i]) == len &&
                    memcmp(wrappers[i], p, len) == 0) {
                    skip = true;
                }
            }
        }
        if (!skip) {
            if (n == FLAT_MAX_SEGMENTS) {
                return 0;
            }
            segs[n++] = sg;
        }
        if (!dot) {
            break;
        }
        p = dot + 1;
    }
    return n;
}

static bool child_is(const struct fnode *c, const struct seg *sg)
{
    if (sg->is_index) {
        return c->index == sg->index;
    }
    return c->key_len == sg->len && memcmp(c->key, sg->s, sg->len) == 0;
}

static struct fnode *find_child(const struct fnode *parent,
                                const struct seg *sg)
{
    if (parent->last && child_is(parent->last, sg)) {
        return parent->last;
    }
    if (sg->is_index && parent->tail && parent->tail->index < sg->index) {
        return NULL; /* past the highest index so far */
    }
    for (struct fnode *c = parent->child; c; c = c->next) {
        if (sg->is_index) {
            if (c->index == sg->index) {
                return c;
            }
            if (c->index > sg->index) {
                return NULL;
            }
        } else if (c->key_len == sg->len &&
                   memcmp(c->key, sg->s, sg->len) == 0) {
            return c;
        }
    }
    return NULL;
}

/*
 * Dry run: checks that the path fits the existing shapes and returns the
 * array slots it would add, or UINT64_MAX when it conflicts.
 */
static uint64_t path_cost(const struct fnode *root, const struct seg *segs,
                          size_t n)
{
    const struct fnode *node = root;
    uint64_t cost = 0;

    for (size_t i = 0; i < n; i++) {
        enum fkind want = segs[i].is_index ? FK_ARR : FK_OBJ;
        uint64_t have = 0;

        if (node) {
            if (node->kind != FK_UNSET && node->kind != FK_LEAF &&
                node->kind != want) {
                return UINT64_MAX;
            }
            if (node->kind == want) {
                have = node->slots;
            }
        }
        if (segs[i].is_index && segs[i].index + 1 > have) {
            cost += segs[i].index + 1 - have;
        }
        node = node ? find_child(node, &segs[i]) : NULL;
    }
    return cost;
}

/* Creates the path (already checked by path_cost) and sets the leaf. */
static int insert(struct fnode *root, const struct seg *segs, size_t n,
                  const cJSON *leaf)
{
    struct fnode *node = root;

    for (size_t i = 0; i < n; i++) {
        enum fkind want = segs[i].is_index ? FK_ARR : FK_OBJ;
        struct fnode *c;
        struct fnode **link;

        if (node->kind != want) {
            /* Deeper keys win over a leaf at the same path. */
            node->kind = want;
            node->leaf = NULL;
        }
        c = find_child(node, &segs[i]);
        if (!c) {
            c = o2l_calloc(1, sizeof(*c));
            if (!c) {
                return O2L_ENOMEM;
            }
            c->key = segs[i].s;
            c->key_len = segs[i].len;
            c->index = segs[i].index;
            if (node->tail &&
                (!segs[i].is_index || node->tail->index < segs[i].index)) {
                link = &node->tail->next;
            } else {
                link = &node->child;
                while (*link &&
                       (!segs[i].is_index || (*link)->index < segs[i].index)) {
                    link = &(*link)->next;
                }
            }
            c->next = *link;
            *link = c;
            if (!c->next) {
                node->tail = c;
            }
            if (segs[i].is_index && segs[i].index + 1 > node->slots) {
                node->slots = segs[i].index + 1;
            }
        }
        node->last = c;
        node = c;
    }
    if (node->kind == FK_UNSET) {
        node->kind = FK_LEAF;
        node->leaf = leaf;
    }
    return O2L_OK;
}

static int emit(const struct fnode *node, cJSON **out);

static int emit_children(const struct fnode *node, cJSON *container)
{
    char small[128];
    char *key;
    cJSON *item;
    int rc;

    for (const struct fnode *c = node->child; c; c = c->next) {
        rc = emit(c, &item);
        if (rc != O2L_OK) {
            return rc;
        }
        if (!item) {
            continue;
        }
        if (node->kind == FK_ARR) {
            if (!cJSON_AddItemToArray(container, item)) {
                cJSON_Delete(item);
                return O2L_ENOMEM;
            }
            continue;
        }
        key = c->key_len < sizeof(small) ? small : o2l_malloc(c->key_len + 1);
        if (!key) {
            cJSON_Delete(item);
            return O2L_ENOMEM;
        }
        memcpy(key, c->key, c->key_len);
        key[c->key_len] = '\0';
        rc = o2l_mu_add(container, key, item, true);
        if (key != small) {
            o2l_free(key);
        }
        if (rc != O2L_OK) {
            return rc;
        }
    }
    return O2L_OK;
}

static int emit(const struct fnode *node, cJSON **out)
{
    cJSON *container;
    int rc;

    *out = NULL;
    if (node->kind == FK_LEAF) {
        *out = cJSON_Duplicate(node->leaf, 1);
        return *out ? O2L_OK : O2L_ENOMEM;
    }
    if (node->kind == FK_UNSET || !node->child) {
        return O2L_OK;
    }
    container =
        node->kind == FK_ARR ? cJSON_CreateArray() : cJSON_CreateObject();
    if (!container) {
        return O2L_ENOMEM;
    }
    rc = emit_children(node, container);
    if (rc != O2L_OK) {
        cJSON_Delete(container);
        return rc;
    }
    *out = container;
    return O2L_OK;
}

int o2l_mu_flatten(const cJSON *attrs, const char *prefix, bool unwrap,
                   size_t *slots_left, size_t *dropped, cJSON **out)
{
    struct fnode root;
    struct seg segs[FLAT_MAX_SEGMENTS];
    size_t plen = strlen(prefix);
    int rc = O2L_OK;

    *out = NULL;
    memset(&root, 0, sizeof(root));
    for (const cJSON *a = attrs ? attrs->child : NULL; a; a = a->next) {
        size_t n;
        uint64_t cost;

        if (!a->string || strncmp(a->string, prefix, plen) != 0 ||
            !o2l_mu_usable(a)) {
            continue;
        }
        n = split(a->string + plen, unwrap, segs);
        if (n == 0) {
            (*dropped)++;
            continue;
        }
        cost = path_cost(&root, segs, n);
        if (cost == UINT64_MAX || cost > *slots_left) {
            (*dropped)++;
            continue;
        }
        rc = insert(&root, segs, n, a);
        if (rc != O2L_OK) {
            goto out;
        }
        *slots_left -= (size_t)cost;
    }
    rc = emit(&root, out);
    if (rc == O2L_OK && *out && !o2l_mu_usable(*out)) {
        cJSON_Delete(*out);
        *out = NULL;
    }

out:
    fnode_free(root.child);
    return rc;
}
