// SPDX-License-Identifier: Apache-2.0
//
// A strict stand-in for Langfuse's batch ingestion API
// (POST /api/public/ingestion), for the integration tests. It checks every
// event against the published ingestion schema, plus the promises
// otel2langfuse makes on top of it (no nulls, no empty ids, environments
// already normalised), records what it accepts, and can be told to
// misbehave (error statuses, per-event errors, slow answers).
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

/**
 * Starts the fake on 127.0.0.1. Resolves to a handle:
 *   url, port
 *   events()      accepted events in arrival order (parsed envelopes)
 *   batches()     number of ingestion requests answered 207
 *   rejections()  [{id, type, status, reason, event}] for events refused
 *   requests()    [{status, events, headers}] for every ingestion request
 *   setFault(f)   inject a fault (see README); null clears all faults
 *   reset()       forget events, counters and faults
 *   close()
 */
export async function startFakeLangfuse({ publicKey, secretKey, port = 0, host = '127.0.0.1' } = {}) {
    if (!publicKey || !secretKey) throw new Error('startFakeLangfuse needs publicKey and secretKey');
    const expectedAuth = 'Basic ' + Buffer.from(`${publicKey}:${secretKey}`).toString('base64');

    let accepted = [];
    let rejected = [];
    let requestLog = [];
    let batchCount = 0;
    let faults = {};

    function setFault(fault) {
        if (fault === null || fault === undefined || fault.type === 'none') {
            faults = {};
            return;
        }
        const count = fault.count ?? 1;
        if (fault.type === 'status') {
            if (!Number.isInteger(fault.status)) throw new Error('status fault needs an integer status');
            faults.status = { status: fault.status, retryAfter: fault.retryAfter, left: count };
        } else if (fault.type === 'event-status') {
            if (!Number.isInteger(fault.status)) throw new Error('event-status fault needs an integer status');
            faults.eventStatus = { status: fault.status, left: count };
        } else if (fault.type === 'slow') {
            faults.slow = { ms: fault.ms ?? 1000, left: count };
        } else {
            throw new Error(`unknown fault type ${fault.type}`);
        }
    }

    function reset() {
        accepted = [];
        rejected = [];
        requestLog = [];
        batchCount = 0;
        faults = {};
    }

    // Takes one use of a fault; returns it while it lasts.
    function useFault(name) {
        const f = faults[name];
        if (!f || f.left <= 0) return null;
        f.left -= 1;
        if (f.left <= 0) delete faults[name];
        return f;
    }

    function ingest(batch) {
        const successes = [];
        const errors = [];
        for (const ev of batch) {
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
                continue;
            }
            const injected = useFault('eventStatus');
            if (injected) {
                const message = injected.status >= 500 ? 'Internal Server Error (injected)' : 'Invalid request data (injected)';
                errors.push({ id, status: injected.status, message, error: 'injected fault' });
                if (injected.status < 500) rejected.push({ id, type, status: injected.status, reason: 'injected fault', event: ev });
                continue;
            }
            accepted.push(ev);
            successes.push({ id, status: 201 });
        }
        return { successes, errors };
    }

    function logRequest(req, status, events) {
        const headers = { ...req.headers };
        delete headers.authorization;
        requestLog.push({ status, events, headers });
    }

    async function handleIngestion(req, res, raw) {
        const slow = useFault('slow');
        if (slow) await sleep(slow.ms);

        const statusFault = useFault('status');
        if (statusFault) {
            const headers = statusFault.retryAfter !== undefined ? { 'retry-after': String(statusFault.retryAfter) } : {};
            logRequest(req, statusFault.status, 0);
            sendJson(res, statusFault.status, { message: `injected status ${statusFault.status}` }, headers);
            return;
        }
        if (req.headers.authorization !== expectedAuth) {
            logRequest(req, 401, 0);
            sendJson(res, 401, { message: 'Invalid credentials. Confirm that you have used the correct public and secret key.' });
            return;
        }
        if (raw === null) {
            logRequest(req, 413, 0);
            sendJson(res, 413, { message: `request body over ${MAX_BODY_BYTES} bytes` });
            return;
        }
        const ctype = (req.headers['content-type'] || '').split(';')[0].trim().toLowerCase();
        if (ctype !== 'application/json') {
            logRequest(req, 400, 0);
            sendJson(res, 400, { message: 'content-type must be application/json' });
            return;
        }
        let doc;
        try {
            doc = JSON.parse(raw.toString('utf8'));
        } catch {
            logRequest(req, 400, 0);
            sendJson(res, 400, { message: 'body is not valid JSON' });
            return;
        }
        if (!isObject(doc) || !Array.isArray(doc.batch)) {
            logRequest(req, 400, 0);
            sendJson(res, 400, { message: 'body must be an object with a batch array' });
            return;
        }
        const answer = ingest(doc.batch);
        batchCount += 1;
        logRequest(req, 207, doc.batch.length);
        sendJson(res, 207, answer);
    }

    async function handleControl(req, res, raw) {
        const route = `${req.method} ${req.url}`;
        if (route === 'GET /_fake/events') {
            sendJson(res, 200, { events: accepted, batches: batchCount, rejections: rejected, requests: requestLog });
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
        readBody(req)
            .then(async (raw) => {
                if (url.pathname.startsWith('/_fake/')) return handleControl(req, res, raw);
                if (url.pathname !== INGESTION_PATH) return sendJson(res, 404, { message: 'not found' });
                if (req.method !== 'POST') return sendJson(res, 405, { message: 'method not allowed' }, { allow: 'POST' });
                return handleIngestion(req, res, raw);
            })
            .catch((e) => {
                if (!res.headersSent) sendJson(res, 500, { message: `fake failed: ${e.message}` });
            });
    });

    await new Promise((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, host, resolve);
    });
    const actualPort = server.address().port;

    return {
        url: `http://${host}:${actualPort}`,
        port: actualPort,
        events: () => accepted.slice(),
        batches: () => batchCount,
        rejections: () => rejected.slice(),
        requests: () => requestLog.slice(),
        setFault,
        reset,
        close: () =>
            new Promise((resolve) => {
                server.closeAllConnections();
                server.close(() => resolve());
            }),
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
