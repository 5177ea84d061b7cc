// What a Langfuse v4 server makes of the enriched spans otel2langfuse sends
// to its OTLP endpoint, written as the ingestion events a v3 server would
// have received, so that one set of assertions checks both outputs.
//
// Only the explicit langfuse.* attributes are read (they come first in
// Langfuse's own priority rules, so they decide what it stores): one
// observation per span, and one trace per trace id built from the facts
// every span carries and, for input and output, from the true root.

const TRACE_FACTS = {
    name: 'langfuse.trace.name',
    userId: 'langfuse.user.id',
    sessionId: 'langfuse.session.id',
    release: 'langfuse.release',
    environment: 'langfuse.environment',
};

/** A string attribute holding JSON becomes the value, any other stays. */
function jsonish(v) {
    if (typeof v !== 'string') return v;
    const t = v.trimStart();
    if (!t.startsWith('{') && !t.startsWith('[') && !t.startsWith('"')) return v;
    try {
        return JSON.parse(v);
    } catch {
        return v;
    }
}

/** Unix nanoseconds (decimal text) as ISO-8601 with microseconds. */
export function isoFromNanos(ns) {
    const n = BigInt(ns);
    const ms = Number(n / 1000000n);
    const micros = Number((n / 1000n) % 1000000n);
    return `${new Date(ms).toISOString().slice(0, 19)}.${String(micros).padStart(6, '0')}Z`;
}

function dropUndefined(o) {
    return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined));
}

/** The spans stored by the fake's OTLP route, as ingestion events. */
export function eventsFromSpans(spans) {
    const events = [];
    const byTrace = new Map();
    for (const s of spans) {
        if (!byTrace.has(s.traceId)) byTrace.set(s.traceId, []);
        byTrace.get(s.traceId).push(s);
    }
    for (const [traceId, list] of byTrace) {
        const root = list.find((s) => !s.parentSpanId) ?? list[0];
        const a = root.attributes;
        const body = { id: traceId, timestamp: isoFromNanos(root.startTimeUnixNano) };
        for (const [field, key] of Object.entries(TRACE_FACTS)) body[field] = a[key];
        body.tags = a['langfuse.trace.tags'];
        body.input = jsonish(a['langfuse.trace.input']);
        body.output = jsonish(a['langfuse.trace.output']);
        events.push({ id: `${traceId}-trace`, type: 'trace-create', body: dropUndefined(body) });
        for (const s of list) {
            const o = s.attributes;
            const type = o['langfuse.observation.type'] ?? 'span';
            events.push({
                id: `${traceId}-${s.spanId}`,
                type: `${type}-create`,
                body: dropUndefined({
                    id: s.spanId,
                    traceId,
                    name: s.name,
                    parentObservationId: s.parentSpanId || undefined,
                    startTime: isoFromNanos(s.startTimeUnixNano),
                    endTime: type === 'event' ? undefined : isoFromNanos(s.endTimeUnixNano),
                    level: o['langfuse.observation.level'],
                    statusMessage: o['langfuse.observation.status_message'],
                    model: o['langfuse.observation.model.name'],
                    modelParameters: jsonish(o['langfuse.observation.model.parameters']),
                    usageDetails: jsonish(o['langfuse.observation.usage_details']),
                    costDetails: jsonish(o['langfuse.observation.cost_details']),
                    input: jsonish(o['langfuse.observation.input']),
                    output: jsonish(o['langfuse.observation.output']),
                    metadata: jsonish(o['langfuse.observation.metadata']),
                    environment: o['langfuse.environment'],
                    version: o['langfuse.version'],
                }),
            });
        }
    }
    return events;
}

/**
 * The trace facts every span of a trace must carry in v4 (rows are
 * immutable and filtered on what each carries): returns the first span
 * and key where one differs from the root, or null.
 */
export function missingTraceFacts(spans, keys = ['langfuse.user.id', 'langfuse.session.id', 'langfuse.trace.name']) {
    const root = spans.find((s) => !s.parentSpanId) ?? spans[0];
    for (const s of spans) {
        for (const k of keys) {
            if (JSON.stringify(s.attributes[k]) !== JSON.stringify(root.attributes[k]) || s.attributes[k] === undefined) {
                return { span: s.name, key: k, value: s.attributes[k], root: root.attributes[k] };
            }
        }
    }
    return null;
}
