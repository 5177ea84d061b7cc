/* SPDX-License-Identifier: Apache-2.0 */
/* otlp_pb.c - decodes a protobuf ExportTraceServiceRequest. */
#include "o2l/otlp_util.h"

#include <stdio.h>
#include <string.h>

#include "o2l/common.h"
#include "opentelemetry/proto/collector/trace/v1/trace_service.pb-c.h"

/*
 * Deepest message nesting accepted. protobuf-c unpacks recursively without
 * a limit, so a body of nested AnyValues could exhaust the stack; the
 * envelope needs 7 levels, each nested array or kvlist value 2 more.
 */
#define PB_MAX_DEPTH 128

/* Every arena allocation starts this many bytes after its size header. */
#define ARENA_ALIGN 16
#define ARENA_BLOCK (64 * 1024)

/*
 * protobuf-c allocates each message, array and string separately; a bump
 * arena makes that cheap and frees it all at once. It also records each
 * allocation's size, which is how string fields recover their length:
 * protobuf-c allocates len + 1 bytes for a string, and a C string alone
 * would end at an embedded NUL that must become U+FFFD instead.
 */
struct arena_block {
    struct arena_block *next;
    size_t used;
    size_t cap;
};

struct arena {
    struct arena_block *head;
    int failed;
};

static size_t round_up(size_t n)
{
    return (n + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
}

static void *arena_alloc(void *ctx, size_t n)
{
    struct arena *a = ctx;
    struct arena_block *blk = a->head;
    size_t need;
    unsigned char *p;

    if (n > SIZE_MAX / 2) {
        a->failed = 1;
        return NULL;
    }
    need = ARENA_ALIGN + round_up(n);
    if (!blk || blk->cap - blk->used < need) {
        size_t cap = need > ARENA_BLOCK ? need : ARENA_BLOCK;

        blk = o2l_malloc(round_up(sizeof(*blk)) + cap);
        if (!blk) {
            a->failed = 1;
            return NULL;
        }
        blk->cap = cap;
        blk->used = 0;
        /* An oversized block goes second so the current one keeps filling. */
        if (a->head && need > ARENA_BLOCK) {
            blk->next = a->head->next;
            a->head->next = blk;
        } else {
            blk->next = a->head;
            a->head = blk;
        }
    }
    p = (unsigned char *)blk + round_up(sizeof(*blk)) + blk->used;
    blk->used += need;
    memcpy(p, &n, sizeof(n));
    return p + ARENA_ALIGN;
}

static void arena_free_one(void *ctx, void *p)
{
    (void)ctx;
    (void)p; /* released with the whole arena */
}

static void arena_release(struct arena *a)
{
    while (a->head) {
        struct arena_block *next = a->head->next;

        o2l_free(a->head);
        a->head = next;
    }
}

/* Length of a string field that protobuf-c placed in the arena. */
static size_t pb_strlen(const char *s)
{
    size_t n;

    if (!s || s == protobuf_c_empty_string) {
        return 0;
    }
    memcpy(&n, s - ARENA_ALIGN, sizeof(n));
    return n - 1;
}

static char *pb_strdup(const char *s)
{
    return o2l_otlp_utf8_dup(s ? s : "", pb_strlen(s));
}

/* Message types of the request, for the nesting check. */
enum pb_type {
    T_NONE,
    T_REQUEST,
    T_RESOURCE_SPANS,
    T_RESOURCE,
    T_SCOPE_SPANS,
    T_SCOPE,
    T_SPAN,
    T_EVENT,
    T_LINK,
    T_KEY_VALUE,
    T_ANY_VALUE,
    T_ARRAY,
    T_KVLIST
};

static enum pb_type pb_child(enum pb_type t, uint64_t field)
{
    switch (t) {
    case T_REQUEST:
        return field == 1 ? T_RESOURCE_SPANS : T_NONE;
    case T_RESOURCE_SPANS:
        return field == 1 ? T_RESOURCE : field == 2 ? T_SCOPE_SPANS : T_NONE;
    case T_RESOURCE:
        return field == 1 ? T_KEY_VALUE : T_NONE;
    case T_SCOPE_SPANS:
        return field == 1 ? T_SCOPE : field == 2 ? T_SPAN : T_NONE;
    case T_SCOPE:
        return field == 3 ? T_KEY_VALUE : T_NONE;
    case T_SPAN:
        return field == 9    ? T_KEY_VALUE
               : field == 11 ? T_EVENT
               : field == 13 ? T_LINK
                             : T_NONE;
    case T_EVENT:
        return field == 3 ? T_KEY_VALUE : T_NONE;
    case T_LINK:
        return field == 4 ? T_KEY_VALUE : T_NONE;
    case T_KEY_VALUE:
        return field == 2 ? T_ANY_VALUE : T_NONE;
    case T_ANY_VALUE:
        return field == 5 ? T_ARRAY : field == 6 ? T_KVLIST : T_NONE;
    case T_ARRAY:
        return field == 1 ? T_ANY_VALUE : T_NONE;
    case T_KVLIST:
        return field == 1 ? T_KEY_VALUE : T_NONE;
    default:
        return T_NONE;
    }
}

static int read_varint(const uint8_t *p, size_t len, size_t *pos, uint64_t *out)
{
    uint64_t v = 0;

    for (int shift = 0; shift < 64; shift += 7) {
        uint8_t c;

        if (*pos >= len) {
            return 0;
        }
        c = p[(*pos)++];
        v |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80)) {
            *out = v;
            return 1;
        }
    }
    return 0;
}

/*
 * Walks the wire format of a message of type |t| and fails when messages
 * nest deeper than PB_MAX_DEPTH or a length runs past the end. Each byte is
 * looked at once, by the innermost message holding it.
 */
static int pb_check(const uint8_t *p, size_t len, enum pb_type t, int depth)
{
    size_t pos = 0;

    if (depth > PB_MAX_DEPTH) {
        return 0;
    }
    while (pos < len) {
        uint64_t tag;
        uint64_t n;

        if (!read_varint(p, len, &pos, &tag)) {
            return 0;
        }
        switch (tag & 7) {
        case 0:
            if (!read_varint(p, len, &pos, &n)) {
                return 0;
            }
            break;
        case 1:
        case 5:
            n = (tag & 7) == 1 ? 8 : 4;
            if (len - pos < n) {
                return 0;
            }
            pos += n;
            break;
        case 2:
            if (!read_varint(p, len, &pos, &n) || n > len - pos) {
                return 0;
            }
            if (pb_child(t, tag >> 3) != T_NONE &&
                !pb_check(p + pos, (size_t)n, pb_child(t, tag >> 3),
                          depth + 1)) {
                return 0;
            }
            pos += (size_t)n;
            break;
        default:
            return 0; /* groups are not part of proto3 */
        }
    }
    return 1;
}

static int any_to_json(const Opentelemetry__Proto__Common__V1__AnyValue *v,
                       cJSON **out);

/* Fills |obj| from |n| key/values; empty values are left out. */
static int kvs_to_json(Opentelemetry__Proto__Common__V1__KeyValue *const *kvs,
                       size_t n, cJSON *obj)
{
    int rc;

    for (size_t i = 0; i < n; i++) {
        cJSON *val = NULL;

        if (!kvs[i]) {
            continue;
        }
        rc = any_to_json(kvs[i]->value, &val);
        if (rc != O2L_OK) {
            return rc;
        }
        if (!val) {
            continue;
        }
        rc = o2l_otlp_attrs_add(obj, pb_strdup(kvs[i]->key), val);
        if (rc != O2L_OK) {
            return rc;
        }
    }
    return o2l_otlp_attrs_finish(obj);
}

/* Returns a new attribute object, or NULL when out of memory. */
static cJSON *
attrs_to_json(Opentelemetry__Proto__Common__V1__KeyValue *const *kvs, size_t n,
              int *rc)
{
    cJSON *obj = cJSON_CreateObject();

    if (!obj) {
        *rc = O2L_ENOMEM;
        return NULL;
    }
    *rc = kvs_to_json(kvs, n, obj);
    if (*rc != O2L_OK) {
        cJSON_Delete(obj);
        return NULL;
    }
    return obj;
}

static int array_to_json(const Opentelemetry__Proto__Common__V1__ArrayValue *a,
                         cJSON **out)
{
    cJSON *arr = cJSON_CreateArray();
    int rc = O2L_OK;

    if (!arr) {
        return O2L_ENOMEM;
    }
    for (size_t i = 0; a && i < a->n_values; i++) {
        cJSON *el = NULL;

        rc = any_to_json(a->values[i], &el);
        if (rc != O2L_OK) {
            goto out;
        }
        /* An empty element keeps its place as null. */
        if (!el) {
            el = cJSON_CreateNull();
        }
        if (!el || !cJSON_AddItemToArray(arr, el)) {
            cJSON_Delete(el);
            rc = O2L_ENOMEM;
            goto out;
        }
    }

out:
    if (rc != O2L_OK) {
        cJSON_Delete(arr);
        arr = NULL;
    }
    *out = arr;
    return rc;
}

/* *out is NULL for an empty value. */
static int any_to_json(const Opentelemetry__Proto__Common__V1__AnyValue *v,
                       cJSON **out)
{
    int rc = O2L_OK;

    *out = NULL;
    if (!v) {
        return O2L_OK;
    }
    switch (v->value_case) {
    case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE:
        *out = o2l_otlp_json_take_string(pb_strdup(v->string_value));
        break;
    case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_BOOL_VALUE:
        *out = cJSON_CreateBool(v->bool_value);
        break;
    case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_INT_VALUE:
        *out = o2l_otlp_json_int(v->int_value);
        break;
    case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_DOUBLE_VALUE:
        *out = o2l_otlp_json_double(v->double_value);
        break;
    case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_ARRAY_VALUE:
        return array_to_json(v->array_value, out);
    case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_KVLIST_VALUE:
        *out = v->kvlist_value ? attrs_to_json(v->kvlist_value->values,
                                               v->kvlist_value->n_values, &rc)
                               : cJSON_CreateObject();
        if (rc != O2L_OK) {
            return rc;
        }
        break;
    case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_BYTES_VALUE:
        *out = o2l_otlp_json_take_string(
            o2l_otlp_base64_encode(v->bytes_value.data, v->bytes_value.len));
        break;
    default:
        return O2L_OK;
    }
    return *out ? O2L_OK : O2L_ENOMEM;
}

static int decode_events(const Opentelemetry__Proto__Trace__V1__Span *in,
                         struct o2l_span *s)
{
    int rc = O2L_OK;

    if (in->n_events == 0) {
        return O2L_OK;
    }
    s->events = o2l_calloc(in->n_events, sizeof(*s->events));
    if (!s->events) {
        return O2L_ENOMEM;
    }
    for (size_t i = 0; i < in->n_events; i++) {
        const Opentelemetry__Proto__Trace__V1__Span__Event *e = in->events[i];
        struct o2l_span_event *ev = &s->events[s->n_events];

        if (!e) {
            continue;
        }
        s->n_events++;
        ev->time_ns = e->time_unix_nano;
        ev->name = pb_strdup(e->name);
        if (!ev->name) {
            return O2L_ENOMEM;
        }
        ev->attrs = attrs_to_json(e->attributes, e->n_attributes, &rc);
        if (rc != O2L_OK) {
            return rc;
        }
    }
    return O2L_OK;
}

/* A tracestate string, NULL when empty (*rc O2L_ENOMEM when a copy
 * failed). */
static char *pb_trace_state(const char *s, int *rc)
{
    char *out;

    if (pb_strlen(s) == 0) {
        return NULL;
    }
    out = pb_strdup(s);
    if (!out) {
        *rc = O2L_ENOMEM;
    }
    return out;
}

/* Links whose ids are not both valid are left out (span.h). */
static int decode_links(const Opentelemetry__Proto__Trace__V1__Span *in,
                        struct o2l_span *s)
{
    int rc = O2L_OK;

    if (in->n_links == 0) {
        return O2L_OK;
    }
    s->links = o2l_calloc(in->n_links, sizeof(*s->links));
    if (!s->links) {
        return O2L_ENOMEM;
    }
    for (size_t i = 0; i < in->n_links; i++) {
        const Opentelemetry__Proto__Trace__V1__Span__Link *l = in->links[i];
        struct o2l_span_link *out = &s->links[s->n_links];

        if (!l ||
            o2l_otlp_id_from_bytes(l->trace_id.data, l->trace_id.len,
                                   O2L_OTLP_TRACE_ID_BYTES,
                                   out->trace_id) != O2L_OTLP_ID_OK ||
            o2l_otlp_id_from_bytes(l->span_id.data, l->span_id.len,
                                   O2L_OTLP_SPAN_ID_BYTES,
                                   out->span_id) != O2L_OTLP_ID_OK) {
            memset(out, 0, sizeof(*out));
            continue;
        }
        s->n_links++;
        out->dropped_attributes_count = l->dropped_attributes_count;
        out->flags = l->flags;
        out->trace_state = pb_trace_state(l->trace_state, &rc);
        if (rc != O2L_OK) {
            return rc;
        }
        out->attrs = attrs_to_json(l->attributes, l->n_attributes, &rc);
        if (rc != O2L_OK) {
            return rc;
        }
    }
    return O2L_OK;
}

/* Schema URLs and the dropped counts of the span are not kept. */
static int decode_span(struct o2l_otlp_builder *b,
                       const Opentelemetry__Proto__Trace__V1__Span *in,
                       size_t scope)
{
    char trace_hex[33];
    char span_hex[17];
    char parent_hex[17];
    struct o2l_span *s;
    int rc;

    rc = o2l_otlp_builder_check_ids(
        b, 1, in->trace_id.data, in->trace_id.len, in->span_id.data,
        in->span_id.len, in->parent_span_id.data, in->parent_span_id.len,
        in->name, pb_strlen(in->name), trace_hex, span_hex, parent_hex);
    if (rc != 0) {
        return rc > 0 ? O2L_OK : rc;
    }

    s = o2l_otlp_builder_new_span(b);
    if (!s) {
        return O2L_ENOMEM;
    }
    memcpy(s->trace_id, trace_hex, sizeof(s->trace_id));
    memcpy(s->span_id, span_hex, sizeof(s->span_id));
    memcpy(s->parent_id, parent_hex, sizeof(s->parent_id));
    s->scope = scope;
    s->kind = (int)in->kind;
    s->flags = in->flags;
    s->start_ns = in->start_time_unix_nano;
    s->end_ns = in->end_time_unix_nano;
    s->name = pb_strdup(in->name);
    if (!s->name) {
        return O2L_ENOMEM;
    }
    if (in->status) {
        if ((int)in->status->code == O2L_STATUS_OK ||
            (int)in->status->code == O2L_STATUS_ERROR) {
            s->status_code = (enum o2l_status_code)in->status->code;
        }
        if (pb_strlen(in->status->message) > 0) {
            s->status_message = pb_strdup(in->status->message);
            if (!s->status_message) {
                return O2L_ENOMEM;
            }
        }
    }
    s->attrs = attrs_to_json(in->attributes, in->n_attributes, &rc);
    if (rc != O2L_OK) {
        return rc;
    }
    rc = decode_events(in, s);
    if (rc != O2L_OK) {
        return rc;
    }
    s->trace_state = pb_trace_state(in->trace_state, &rc);
    if (rc == O2L_OK) {
        rc = decode_links(in, s);
    }
    if (rc != O2L_OK) {
        return rc;
    }
    return o2l_otlp_builder_end_span(b);
}

static int
decode_scope_spans(struct o2l_otlp_builder *b,
                   const Opentelemetry__Proto__Trace__V1__ScopeSpans *ss,
                   cJSON *res_attrs)
{
    const Opentelemetry__Proto__Common__V1__InstrumentationScope *sc;
    cJSON *attrs = NULL;
    char *name = NULL;
    char *version = NULL;
    size_t index;
    int rc = O2L_OK;

    sc = ss->scope;
    if (sc) {
        name = pb_strdup(sc->name);
        version = pb_strdup(sc->version);
        attrs = attrs_to_json(sc->attributes, sc->n_attributes, &rc);
        if (rc == O2L_OK && (!name || !version)) {
            rc = O2L_ENOMEM;
        }
        if (rc != O2L_OK) {
            o2l_free(name);
            o2l_free(version);
            cJSON_Delete(attrs);
            cJSON_Delete(res_attrs);
            return rc;
        }
    }
    rc = o2l_otlp_builder_add_scope(b, res_attrs, name, version, attrs);
    if (rc != O2L_OK) {
        return rc;
    }
    index = b->ex->n_scopes - 1;

    for (size_t i = 0; i < ss->n_spans; i++) {
        if (!ss->spans[i]) {
            continue;
        }
        rc = decode_span(b, ss->spans[i], index);
        if (rc != O2L_OK) {
            return rc;
        }
    }
    return O2L_OK;
}

static int
decode_resource_spans(struct o2l_otlp_builder *b,
                      const Opentelemetry__Proto__Trace__V1__ResourceSpans *rs)
{
    cJSON *res_attrs = NULL;
    int used = 0;
    int rc = O2L_OK;

    if (rs->resource) {
        res_attrs = attrs_to_json(rs->resource->attributes,
                                  rs->resource->n_attributes, &rc);
        if (rc != O2L_OK) {
            return rc;
        }
    }
    for (size_t i = 0; i < rs->n_scope_spans; i++) {
        cJSON *mine;

        if (!rs->scope_spans[i] || rs->scope_spans[i]->n_spans == 0) {
            continue;
        }
        /* Each scope owns its resource attributes; later ones copy. */
        if (!used) {
            mine = res_attrs;
            used = 1;
        } else if (res_attrs) {
            mine = cJSON_Duplicate(res_attrs, 1);
            if (!mine) {
                return O2L_ENOMEM;
            }
        } else {
            mine = NULL;
        }
        rc = decode_scope_spans(b, rs->scope_spans[i], mine);
        if (rc != O2L_OK) {
            break;
        }
    }
    if (!used) {
        cJSON_Delete(res_attrs);
    }
    return rc;
}

static void set_err(char *err, size_t err_len, const char *msg)
{
    if (err && err_len > 0) {
        snprintf(err, err_len, "%s", msg);
    }
}

int o2l_otlp_decode_pb(const void *buf, size_t len, uint64_t now_ns,
                       struct o2l_export **out, char *err, size_t err_len)
{
    struct arena arena = {NULL, 0};
    ProtobufCAllocator alloc = {arena_alloc, arena_free_one, &arena};
    struct o2l_otlp_builder b;
    Opentelemetry__Proto__Collector__Trace__V1__ExportTraceServiceRequest *req =
        NULL;
    int rc;

    *out = NULL;
    rc = o2l_otlp_builder_init(&b, now_ns);
    if (rc != O2L_OK) {
        return rc;
    }
    if (!pb_check(buf, len, T_REQUEST, 0)) {
        set_err(err, err_len,
                "invalid protobuf: malformed or nested too deeply");
        rc = O2L_EPARSE;
        goto out;
    }
    req =
        opentelemetry__proto__collector__trace__v1__export_trace_service_request__unpack(
            &alloc, len, buf);
    if (!req) {
        rc = arena.failed ? O2L_ENOMEM : O2L_EPARSE;
        if (rc == O2L_EPARSE) {
            set_err(err, err_len,
                    "invalid protobuf: not an ExportTraceServiceRequest");
        }
        goto out;
    }

    for (size_t i = 0; i < req->n_resource_spans; i++) {
        if (!req->resource_spans[i]) {
            continue;
        }
        rc = decode_resource_spans(&b, req->resource_spans[i]);
        if (rc != O2L_OK) {
            goto out;
        }
    }
    rc = o2l_otlp_builder_finish(&b, out);

out:
    /* The arena holds the whole unpacked request; no per-message frees. */
    arena_release(&arena);
    o2l_otlp_builder_abort(&b);
    return rc;
}
