// SPDX-License-Identifier: Apache-2.0
//
// A strict stand-in for Langfuse's batch ingestion API
// (POST /api/public/ingestion), for the integration tests. It checks every
// event against the published ingestion schema, plus the promises
// otel2langfuse makes on top of it (no nulls, no empty ids, environments
// already normalised), records what it accepts and how often each event id
// arrived, and can be told to misbehave: error statuses with Retry-After,
// per-event errors, answers later than the client waits, answers cut off by
// a reset, and going away altogether (down()/up() on the same port).
//
// Node 20, node:http only. Use it as a module:
//   const fake = await startFakeLangfuse({ publicKey, secretKey });
// or from the command line:
//   node server.mjs --port 0 --public-key pk-lf-test --secret-key sk-lf-test
// which prints "listening <port>" once ready.

import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const INGESTION_PATH = '/api/public/ingestion';

// Langfuse refuses request bodies over 4.5 MB with 413.
export const MAX_BODY_BYTES = 4.5 * 1000 * 1000;

const ISO_DATETIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$/;
const ENVIRONMENT = /^[a-z0-9_-]+$/;
const LEVELS = new Set(['DEBUG', 'DEFAULT', 'WARNING', 'ERROR']);
const ID_MAX_CHARS = 800;
const TRACE_NAME_MAX_CHARS = 1000;
const ENVIRONMENT_MAX_CHARS = 40;

// Fields of each body kind, as in the ingestion schema.
const OBSERVATION_COMMON = [
    'id', 'traceId', 'name', 'startTime', 'metadata', 'input', 'output',
    'level', 'statusMessage', 'parentObservationId', 'version', 'environment',
];
const EVENT_FIELDS = new Set(OBSERVATION_COMMON);
const SPAN_FIELDS = new Set([...OBSERVATION_COMMON, 'endTime']);
const GENERATION_FIELDS = new Set([
    ...SPAN_FIELDS, 'completionStartTime', 'model', 'modelParameters', 'usage',
    'usageDetails', 'costDetails', 'promptName', 'promptVersion',
]);
const TRACE_FIELDS = new Set([
    'id', 'timestamp', 'name', 'userId', 'input', 'output', 'sessionId',
    'release', 'version', 'metadata', 'tags', 'environment', 'public',
]);
const SCORE_FIELDS = new Set([
    'id', 'traceId', 'sessionId', 'observationId', 'datasetRunId', 'name',
    'environment', 'queueId', 'value', 'comment', 'metadata', 'dataType', 'configId',
]);
const OBSERVATION_BODY_FIELDS = new Set([...GENERATION_FIELDS, 'type']);
const OBSERVATION_TYPES = new Set([
    'SPAN', 'GENERATION', 'EVENT', 'AGENT', 'TOOL', 'CHAIN', 'RETRIEVER',
    'EVALUATOR', 'EMBEDDING', 'GUARDRAIL',
]);

// Every event type the endpoint knows, with the fields its body may have.
// The generation-like observation types share the generation body.
export const EVENT_TYPES = {
    'trace-create': { fields: TRACE_FIELDS, kind: 'trace' },
    'span-create': { fields: SPAN_FIELDS, kind: 'observation' },
    'span-update': { fields: SPAN_FIELDS, kind: 'observation' },
    'event-create': { fields: EVENT_FIELDS, kind: 'observation' },
    'generation-create': { fields: GENERATION_FIELDS, kind: 'observation' },
    'generation-update': { fields: GENERATION_FIELDS, kind: 'observation' },
    'agent-create': { fields: GENERATION_FIELDS, kind: 'observation' },
    'tool-create': { fields: GENERATION_FIELDS, kind: 'observation' },
    'chain-create': { fields: GENERATION_FIELDS, kind: 'observation' },
    'retriever-create': { fields: GENERATION_FIELDS, kind: 'observation' },
    'embedding-create': { fields: GENERATION_FIELDS, kind: 'observation' },
    'evaluator-create': { fields: GENERATION_FIELDS, kind: 'observation' },
    'guardrail-create': { fields: GENERATION_FIELDS, kind: 'observation' },
    'observation-create': { fields: OBSERVATION_BODY_FIELDS, kind: 'observation' },
    'observation-update': { fields: OBSERVATION_BODY_FIELDS, kind: 'observation' },
    'score-create': { fields: SCORE_FIELDS, kind: 'score' },
    'sdk-log': { fields: new Set(['log']), kind: 'log' },
};

const ENVELOPE_FIELDS = new Set(['id', 'type', 'timestamp', 'body', 'metadata']);
const GENERATION_ONLY = ['model', 'modelParameters', 'usage', 'usageDetails', 'costDetails', 'completionStartTime', 'promptName', 'promptVersion'];

const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);

// A rule failure: the message names the rule and the field.
class Invalid extends Error {}
const fail = (msg) => {
    throw new Invalid(msg);
};

function checkId(value, where) {
    if (typeof value !== 'string' || value.length === 0) fail(`${where} must be a non-empty string`);
    if (value.length > ID_MAX_CHARS) fail(`${where} is longer than ${ID_MAX_CHARS} characters`);
    if (value.includes('\r')) fail(`${where} contains a carriage return`);
}

function checkDatetime(value, where) {
    if (typeof value !== 'string' || !ISO_DATETIME.test(value) || Number.isNaN(Date.parse(value))) {
        fail(`${where} must be an ISO-8601 datetime with Z or an offset, got ${JSON.stringify(value)}`);
    }
}

function checkString(value, where) {
    if (typeof value !== 'string') fail(`${where} must be a string`);
}

function checkEnvironment(value, where) {
    checkString(value, where);
    if (value.length > ENVIRONMENT_MAX_CHARS) fail(`${where} is longer than ${ENVIRONMENT_MAX_CHARS} characters`);
    if (!ENVIRONMENT.test(value)) fail(`${where} must match ${ENVIRONMENT}, got ${JSON.stringify(value)}`);
    if (value.startsWith('langfuse')) fail(`${where} must not start with "langfuse"`);
}

function checkNoNullInside(value, where) {
    if (value === null) fail(`${where} is null`);
    if (Array.isArray(value)) value.forEach((v, i) => checkNoNullInside(v, `${where}[${i}]`));
    else if (isObject(value)) for (const [k, v] of Object.entries(value)) checkNoNullInside(v, `${where}.${k}`);
}

function checkUsageDetails(value, where) {
    if (!isObject(value)) fail(`${where} must be an object`);
    for (const [k, v] of Object.entries(value)) {
        if (!Number.isInteger(v) || v < 0) fail(`${where}.${k} must be an integer >= 0, got ${JSON.stringify(v)}`);
    }
}

function checkCostDetails(value, where) {
    if (!isObject(value)) fail(`${where} must be an object`);
    for (const [k, v] of Object.entries(value)) {
        if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) {
            fail(`${where}.${k} must be a number >= 0, got ${JSON.stringify(v)}`);
        }
    }
}

// Langfuse takes scalars, string arrays and string maps as parameters.
function checkModelParameters(value, where) {
    if (!isObject(value)) fail(`${where} must be an object`);
    for (const [k, v] of Object.entries(value)) {
        const scalar = ['string', 'number', 'boolean'].includes(typeof v);
        const strings = Array.isArray(v) && v.every((x) => typeof x === 'string');
        const stringMap = isObject(v) && Object.values(v).every((x) => typeof x === 'string');
        if (!scalar && !strings && !stringMap) {
            fail(`${where}.${k} must be a string, number, boolean, string array or string map`);
        }
    }
}

function checkUsage(value, where) {
    if (!isObject(value)) fail(`${where} must be an object`);
    for (const [k, v] of Object.entries(value)) {
        if (typeof v === 'number' && (!Number.isInteger(v) || v < 0)) fail(`${where}.${k} must be an integer >= 0`);
    }
}

function checkFieldSet(body, fields, type) {
    for (const key of Object.keys(body)) {
        if (fields.has(key)) continue;
        if (type === 'event-create' && key === 'endTime') fail('event-create must not have endTime');
        if ((type === 'span-create' || type === 'event-create') && GENERATION_ONLY.includes(key)) {
            fail(`${type} must not have ${key}`);
        }
        fail(`unknown field body.${key} for ${type}`);
    }
    for (const [key, v] of Object.entries(body)) {
        if (v === null) fail(`body.${key} is null (leave unknown fields out)`);
    }
}

function checkTraceBody(b) {
    if (b.timestamp !== undefined) checkDatetime(b.timestamp, 'body.timestamp');
    if (b.name !== undefined) {
        checkString(b.name, 'body.name');
        if ([...b.name].length > TRACE_NAME_MAX_CHARS) fail(`body.name is longer than ${TRACE_NAME_MAX_CHARS} characters`);
    }
    for (const k of ['userId', 'sessionId', 'release', 'version']) {
        if (b[k] !== undefined) checkString(b[k], `body.${k}`);
    }
    if (b.public !== undefined && typeof b.public !== 'boolean') fail('body.public must be a boolean');
    if (b.tags !== undefined) {
        if (!Array.isArray(b.tags) || !b.tags.every((t) => typeof t === 'string')) fail('body.tags must be an array of strings');
    }
}

function checkObservationBody(type, b) {
    checkId(b.traceId, 'body.traceId');
    if (b.parentObservationId !== undefined) checkId(b.parentObservationId, 'body.parentObservationId');
    for (const k of ['startTime', 'endTime', 'completionStartTime']) {
        if (b[k] !== undefined) checkDatetime(b[k], `body.${k}`);
    }
    if (b.level !== undefined && !LEVELS.has(b.level)) fail(`body.level must be one of ${[...LEVELS].join(', ')}`);
    for (const k of ['name', 'statusMessage', 'version', 'model']) {
        if (b[k] !== undefined) checkString(b[k], `body.${k}`);
    }
    if (b.modelParameters !== undefined) checkModelParameters(b.modelParameters, 'body.modelParameters');
    if (b.usageDetails !== undefined) checkUsageDetails(b.usageDetails, 'body.usageDetails');
    if (b.costDetails !== undefined) checkCostDetails(b.costDetails, 'body.costDetails');
    if (b.usage !== undefined) checkUsage(b.usage, 'body.usage');
    if ((b.promptName === undefined) !== (b.promptVersion === undefined)) {
        fail('body.promptName and body.promptVersion must be given together');
    }
    if (b.promptName !== undefined) {
        checkString(b.promptName, 'body.promptName');
        if (!Number.isInteger(b.promptVersion)) fail('body.promptVersion must be an integer');
    }
    if (type.startsWith('observation-') && !OBSERVATION_TYPES.has(b.type)) {
        fail(`body.type must be one of ${[...OBSERVATION_TYPES].join(', ')}`);
    }
}

function checkScoreBody(b) {
    checkString(b.name, 'body.name');
    if (typeof b.value !== 'number' && typeof b.value !== 'string') fail('body.value must be a number or a string');
    if (b.traceId !== undefined) checkId(b.traceId, 'body.traceId');
}

/** Checks one ingestion event; throws Invalid with the rule that failed. */
export function validateEvent(ev) {
    if (!isObject(ev)) fail('event must be an object');
    for (const key of Object.keys(ev)) {
        if (!ENVELOPE_FIELDS.has(key)) fail(`unknown envelope field ${key}`);
    }
    checkId(ev.id, 'id');
    const spec = EVENT_TYPES[ev.type];
    if (!spec) fail(`type must be a known event type, got ${JSON.stringify(ev.type)}`);
    checkDatetime(ev.timestamp, 'timestamp');
    if (ev.metadata === null) fail('metadata is null');
    if (!isObject(ev.body)) fail('body must be an object');

    const b = ev.body;
    checkFieldSet(b, spec.fields, ev.type);
    if (spec.kind !== 'log') checkId(b.id, 'body.id');
    if (b.environment !== undefined) checkEnvironment(b.environment, 'body.environment');
    if (b.metadata !== undefined && !isObject(b.metadata)) fail('body.metadata must be an object');
    // Structured fields may not hide nulls either; input, output and
    // metadata are the application's data and may.
    for (const k of ['tags', 'usageDetails', 'costDetails', 'modelParameters']) {
        if (b[k] !== undefined) checkNoNullInside(b[k], `body.${k}`);
    }
    if (spec.kind === 'trace') checkTraceBody(b);
    else if (spec.kind === 'observation') checkObservationBody(ev.type, b);
    else if (spec.kind === 'score') checkScoreBody(b);
}

function sendJson(res, status, obj, headers = {}) {
    const text = JSON.stringify(obj);
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
    res.end(text);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// The batch array of a request body, or null when there is none; used for
// the request log and fault conditions, never for the answer itself.
function peekBatch(raw) {
    if (!raw) return null;
    try {
        const doc = JSON.parse(raw.toString('utf8'));
        return isObject(doc) && Array.isArray(doc.batch) ? doc.batch : null;
    } catch {
        return null;
    }
}

const idsOf = (batch) => (batch || []).map((ev) => (isObject(ev) && typeof ev.id === 'string' ? ev.id : ''));

function checkCount(value, what) {
    if (!Number.isInteger(value) || value < 1) throw new Error(`${what} must be an integer >= 1`);
    return value;
}

function checkMs(value, what) {
    if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) throw new Error(`${what} must be a number of ms >= 0`);
    return value;
}

// Validates a fault description and returns [slot, state] for it.
function parseFault(fault) {
    if (!isObject(fault)) throw new Error('a fault is an object with a type');
    const left = checkCount(fault.count ?? 1, 'count');
    const acceptFirst = fault.acceptFirst === true;
    switch (fault.type) {
        case 'status': {
            if (!Number.isInteger(fault.status) || fault.status < 100 || fault.status > 599) {
                throw new Error('status fault needs an integer status');
            }
            if (fault.retryAfter !== undefined && fault.retryAfterDate !== undefined) {
                throw new Error('give retryAfter or retryAfterDate, not both');
            }
            if (fault.retryAfterDate !== undefined) checkMs(fault.retryAfterDate, 'retryAfterDate');
            const minEvents = fault.minEvents === undefined ? 0 : checkCount(fault.minEvents, 'minEvents');
            return ['status', { status: fault.status, retryAfter: fault.retryAfter, retryAfterDate: fault.retryAfterDate, minEvents, left }];
        }
        case 'event-status': {
            if (fault.statuses !== undefined) {
                const ok = Array.isArray(fault.statuses) && fault.statuses.length > 0 && fault.statuses.every((s) => Number.isInteger(s) && s >= 100 && s <= 599);
                if (!ok) throw new Error('event-status statuses must be a non-empty array of integer statuses');
                return ['eventStatuses', { statuses: fault.statuses.slice(), left }];
            }
            if (!Number.isInteger(fault.status)) throw new Error('event-status fault needs an integer status');
            return ['eventStatus', { status: fault.status, left }];
        }
        case 'slow':
            return ['slow', { ms: checkMs(fault.ms ?? 1000, 'ms'), acceptFirst, left }];
        case 'reset':
            return ['reset', { afterMs: checkMs(fault.afterMs ?? 50, 'afterMs'), acceptFirst, left }];
        default:
            throw new Error(`unknown fault type ${fault.type}`);
    }
}

/**
 * Starts the fake on 127.0.0.1. Resolves to a handle:
 *   url, port
 *   events()          accepted events in arrival order (parsed envelopes),
 *                     every delivery, so a re-sent event shows twice
 *   deliveries(id)    how many times an event with that id was accepted
 *   deliveryCounts()  {id: count} over all accepted events
 *   duplicates()      accepted deliveries beyond the first of each id
 *   batches()         number of ingestion requests answered 207
 *   rejections()      [{id, type, status, reason, event}] for events refused
 *   requests()        [{status, events, ids, errors, fault, headers}] for
 *                     every ingestion request; status 0 when the client
 *                     never got a complete answer
 *   setFault(f)       inject a fault (see README); null clears all faults
 *   reset()           forget events, counters and faults
 *   down(), up()      stop listening (connections closed), listen again on
 *                     the same port; isUp()
 *   close()
 */
export async function startFakeLangfuse({ publicKey, secretKey, port = 0, host = '127.0.0.1' } = {}) {
    if (!publicKey || !secretKey) throw new Error('startFakeLangfuse needs publicKey and secretKey');
    const expectedAuth = 'Basic ' + Buffer.from(`${publicKey}:${secretKey}`).toString('base64');

    let accepted = [];
    let deliveryCount = new Map();
    let rejected = [];
    let requestLog = [];
    let batchCount = 0;
    let faults = {};

    function setFault(fault) {
        if (fault === null || fault === undefined || fault.type === 'none') {
            faults = {};
            return;
        }
        const [slot, state] = parseFault(fault);
        // The two forms of event-status exclude each other.
        if (slot === 'eventStatus') delete faults.eventStatuses;
        if (slot === 'eventStatuses') delete faults.eventStatus;
        faults[slot] = state;
    }

    function reset() {
        accepted = [];
        deliveryCount = new Map();
        rejected = [];
        requestLog = [];
        batchCount = 0;
        faults = {};
    }

    // Takes one use of a fault that applies; returns it while it lasts.
    function useFault(name, applies = () => true) {
        const f = faults[name];
        if (!f || f.left <= 0 || !applies(f)) return null;
        f.left -= 1;
        if (f.left <= 0) delete faults[name];
        return f;
    }

    function accept(ev, id) {
        accepted.push(ev);
        deliveryCount.set(id, (deliveryCount.get(id) || 0) + 1);
    }

    // The status injected for the event at |index| of the batch, if any.
    function injectedStatus(perBatch, index) {
        if (perBatch) return perBatch.statuses[index % perBatch.statuses.length];
        const single = useFault('eventStatus');
        return single ? single.status : null;
    }

    function ingest(batch) {
        const successes = [];
        const errors = [];
        const perBatch = useFault('eventStatuses');
        batch.forEach((ev, index) => {
            const id = isObject(ev) && typeof ev.id === 'string' ? ev.id : '';
            const type = isObject(ev) ? ev.type : undefined;
            let reason = null;
            try {
                validateEvent(ev);
            } catch (e) {
                if (!(e instanceof Invalid)) throw e;
                reason = e.message;
            }
            if (reason) {
                errors.push({ id, status: 400, message: `Invalid request data: ${reason}`, error: reason });
                rejected.push({ id, type, status: 400, reason, event: ev });
                return;
            }
            const status = injectedStatus(perBatch, index);
            if (status !== null && (status < 200 || status > 299)) {
                const message = status >= 500 ? 'Internal Server Error (injected)' : 'Invalid request data (injected)';
                errors.push({ id, status, message, error: 'injected fault' });
                if (status < 500) rejected.push({ id, type, status, reason: 'injected fault', event: ev });
                return;
            }
            accept(ev, id);
            successes.push({ id, status: status ?? 201 });
        });
        return { successes, errors };
    }

    function logRequest(req, entry) {
        const headers = { ...req.headers };
        delete headers.authorization;
        const record = { status: entry.status, events: entry.ids.length, ids: entry.ids, errors: entry.errors || [], fault: entry.fault || null, headers };
        requestLog.push(record);
        return record;
    }

    function retryAfterHeader(f) {
        if (f.retryAfterDate !== undefined) return { 'retry-after': new Date(Date.now() + f.retryAfterDate).toUTCString() };
        if (f.retryAfter !== undefined) return { 'retry-after': String(f.retryAfter) };
        return {};
    }

    // Decides the answer to one ingestion request, recording what it
    // accepts: {status, obj, headers, ids, errors, fault}.
    function answer(req, raw, batch) {
        const ids = idsOf(batch);
        const statusFault = useFault('status', (f) => ids.length >= f.minEvents);
        if (statusFault) {
            const status = statusFault.status;
            return { status, obj: { message: `injected status ${status}` }, headers: retryAfterHeader(statusFault), ids, fault: 'status' };
        }
        if (req.headers.authorization !== expectedAuth) {
            return { status: 401, obj: { message: 'Invalid credentials. Confirm that you have used the correct public and secret key.' }, ids };
        }
        if (raw === null) return { status: 413, obj: { message: `request body over ${MAX_BODY_BYTES} bytes` }, ids };
        const ctype = (req.headers['content-type'] || '').split(';')[0].trim().toLowerCase();
        if (ctype !== 'application/json') return { status: 400, obj: { message: 'content-type must be application/json' }, ids };
        let doc;
        try {
            doc = JSON.parse(raw.toString('utf8'));
        } catch {
            return { status: 400, obj: { message: 'body is not valid JSON' }, ids };
        }
        if (!isObject(doc) || !Array.isArray(doc.batch)) {
            return { status: 400, obj: { message: 'body must be an object with a batch array' }, ids };
        }
        const result = ingest(doc.batch);
        batchCount += 1;
        const errors = result.errors.map((e) => ({ id: e.id, status: e.status }));
        return { status: 207, obj: result, headers: {}, ids, errors };
    }

    // Writes the head and part of the body of |a|, then resets the
    // connection, so the client sees a response cut short.
    async function cutShort(res, a, afterMs) {
        const text = JSON.stringify(a.obj);
        res.writeHead(a.status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...(a.headers || {}) });
        res.flushHeaders();
        await new Promise((resolve) => res.write(text.slice(0, Math.floor(text.length / 2)), () => resolve()));
        await sleep(afterMs);
        const sock = res.socket;
        if (sock && !sock.destroyed) {
            if (typeof sock.resetAndDestroy === 'function') sock.resetAndDestroy();
            else sock.destroy();
        }
    }

    async function handleIngestion(req, res, raw, clientGone) {
        const batch = peekBatch(raw);
        const slow = useFault('slow');
        const cut = useFault('reset');
        const fault = [slow && 'slow', cut && 'reset'].filter(Boolean).join('+') || null;
        const ids = idsOf(batch);
        // With acceptFirst the request is taken as Langfuse would (stored)
        // before the client learns anything; otherwise only an answer the
        // client is still waiting for counts.
        const early = (slow && slow.acceptFirst) || (cut && cut.acceptFirst) ? answer(req, raw, batch) : null;
        if (slow) await sleep(slow.ms);
        if (clientGone()) {
            const entry = logRequest(req, { status: 0, ids, errors: early && early.errors, fault });
            entry.answered = early ? early.status : null;
            return;
        }
        if (cut) {
            const a = early || { status: 207, obj: { successes: ids.map((id) => ({ id, status: 201 })), errors: [] }, ids };
            const entry = logRequest(req, { status: 0, ids, errors: early && early.errors, fault });
            entry.answered = early ? early.status : null;
            await cutShort(res, a, cut.afterMs);
            return;
        }
        const a = early || answer(req, raw, batch);
        logRequest(req, { ...a, fault: [fault, a.fault].filter(Boolean).join('+') || null });
        sendJson(res, a.status, a.obj, a.headers || {});
    }

    // Listening state, for down() and up().
    let listening = false;
    let upTimer = null;

    async function handleControl(req, res, raw) {
        const route = `${req.method} ${req.url}`;
        if (route === 'GET /_fake/events') {
            sendJson(res, 200, {
                events: accepted,
                batches: batchCount,
                rejections: rejected,
                requests: requestLog,
                deliveries: Object.fromEntries(deliveryCount),
            });
            return;
        }
        if (route === 'POST /_fake/reset') {
            reset();
            sendJson(res, 200, { ok: true });
            return;
        }
        if (route === 'POST /_fake/fault') {
            try {
                setFault(JSON.parse((raw || Buffer.alloc(0)).toString('utf8') || 'null'));
            } catch (e) {
                sendJson(res, 400, { message: e.message });
                return;
            }
            sendJson(res, 200, { ok: true });
            return;
        }
        if (route === 'POST /_fake/down') {
            let ms;
            try {
                const doc = JSON.parse((raw || Buffer.alloc(0)).toString('utf8') || '{}');
                ms = checkMs(doc.ms ?? 1000, 'ms');
            } catch (e) {
                sendJson(res, 400, { message: e.message });
                return;
            }
            // Answer first; the connection goes with the others.
            res.once('finish', () => {
                down().then(() => {
                    upTimer = setTimeout(() => {
                        upTimer = null;
                        up().catch(() => {});
                    }, ms);
                });
            });
            sendJson(res, 200, { ok: true, downMs: ms });
            return;
        }
        sendJson(res, 404, { message: 'no such control endpoint' });
    }

    // Reads the request body; null when it grew past the limit.
    function readBody(req) {
        return new Promise((resolve, reject) => {
            const chunks = [];
            let size = 0;
            let tooBig = Number(req.headers['content-length'] || 0) > MAX_BODY_BYTES;
            req.on('data', (c) => {
                size += c.length;
                if (size > MAX_BODY_BYTES) tooBig = true;
                if (!tooBig) chunks.push(c);
            });
            req.on('end', () => resolve(tooBig ? null : Buffer.concat(chunks)));
            req.on('error', reject);
        });
    }

    const server = http.createServer((req, res) => {
        const url = new URL(req.url, 'http://fake');
        // An HTTP/1.1 client does not half-close while it waits, so an end
        // of its side or a closed socket means it has given up.
        let gone = false;
        const markGone = () => {
            if (!res.writableFinished) gone = true;
        };
        req.socket.once('end', markGone);
        req.socket.once('close', markGone);
        res.once('close', markGone);
        res.once('finish', () => {
            req.socket.off('end', markGone);
            req.socket.off('close', markGone);
        });
        const clientGone = () => gone || req.socket.destroyed;
        readBody(req)
            .then(async (raw) => {
                if (url.pathname.startsWith('/_fake/')) return handleControl(req, res, raw);
                if (url.pathname !== INGESTION_PATH) return sendJson(res, 404, { message: 'not found' });
                if (req.method !== 'POST') return sendJson(res, 405, { message: 'method not allowed' }, { allow: 'POST' });
                return handleIngestion(req, res, raw, clientGone);
            })
            .catch((e) => {
                if (!res.headersSent && !res.destroyed) sendJson(res, 500, { message: `fake failed: ${e.message}` });
            });
    });

    function listen(onPort) {
        return new Promise((resolve, reject) => {
            const onError = (e) => reject(e);
            server.once('error', onError);
            server.listen(onPort, host, () => {
                server.off('error', onError);
                listening = true;
                resolve();
            });
        });
    }

    // Stops listening and closes every connection, idle or busy, so
    // clients get "connection refused" until up().
    function down() {
        if (!listening) return Promise.resolve();
        listening = false;
        return new Promise((resolve) => {
            server.close(() => resolve());
            server.closeAllConnections();
        });
    }

    function up() {
        return listening ? Promise.resolve() : listen(actualPort);
    }

    await listen(port);
    const actualPort = server.address().port;

    return {
        url: `http://${host}:${actualPort}`,
        port: actualPort,
        events: () => accepted.slice(),
        deliveries: (id) => deliveryCount.get(id) || 0,
        deliveryCounts: () => Object.fromEntries(deliveryCount),
        duplicates: () => {
            let n = 0;
            for (const c of deliveryCount.values()) n += c - 1;
            return n;
        },
        batches: () => batchCount,
        rejections: () => rejected.slice(),
        requests: () => requestLog.slice(),
        setFault,
        reset,
        down,
        up,
        isUp: () => listening,
        close: async () => {
            if (upTimer) clearTimeout(upTimer);
            upTimer = null;
            await down();
        },
    };
}

function parseArgs(argv) {
    const opts = { port: 0, publicKey: 'pk-lf-test', secretKey: 'sk-lf-test' };
    for (let i = 0; i < argv.length; i += 1) {
        const next = () => {
            if (i + 1 >= argv.length) throw new Error(`${argv[i]} needs a value`);
            i += 1;
            return argv[i];
        };
        switch (argv[i]) {
            case '--port':
                opts.port = Number(next());
                break;
            case '--public-key':
                opts.publicKey = next();
                break;
            case '--secret-key':
                opts.secretKey = next();
                break;
            default:
                throw new Error(`unknown option ${argv[i]}`);
        }
    }
    if (!Number.isInteger(opts.port) || opts.port < 0 || opts.port > 65535) throw new Error('--port must be 0..65535');
    return opts;
}

async function main() {
    let opts;
    try {
        opts = parseArgs(process.argv.slice(2));
    } catch (e) {
        process.stderr.write(`fake langfuse: ${e.message}\n`);
        process.exit(2);
    }
    const fake = await startFakeLangfuse(opts);
    process.stdout.write(`listening ${fake.port}\n`);
    const stop = () => fake.close().then(() => process.exit(0));
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
    main();
}
