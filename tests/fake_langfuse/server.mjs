// SPDX-License-Identifier: Apache-2.0
//
// A strict stand-in for Langfuse's public API as otel2langfuse uses it, for
// the integration tests: the batch ingestion route
// (POST /api/public/ingestion), the OpenTelemetry route
// (POST /api/public/otel/v1/traces) and the health route
// (GET /api/public/health) that tells the server version. It checks every
// ingestion event against the published ingestion schema, plus the promises
// otel2langfuse makes on top of it (no nulls, no empty ids, environments
// already normalised), decodes OTLP requests (protobuf or JSON, gzip or
// not) into flat span records, records what it accepts and how often each
// event or span id arrived, and can be told to misbehave: error statuses
// with Retry-After, per-event errors, answers later than the client waits,
// answers cut off by a reset, and going away altogether (down()/up() on the
// same port). In v4 mode the ingestion route refuses traces and
// observations, as Langfuse v4 does, so they must come over OTLP.
//
// Node 20 and node:http; the OTLP protobuf decoder loads protobufjs from
// tests/integration/node_modules on first use. Use it as a module:
//   const fake = await startFakeLangfuse({ publicKey, secretKey });
// or from the command line:
//   node server.mjs --port 0 --public-key pk-lf-test --secret-key sk-lf-test
// which prints "listening <port>" once ready.

import http from 'node:http';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import zlib from 'node:zlib';

export const INGESTION_PATH = '/api/public/ingestion';
export const OTLP_TRACES_PATH = '/api/public/otel/v1/traces';
export const HEALTH_PATH = '/api/public/health';

// The version the health route reports unless told otherwise: a v3 server.
export const DEFAULT_VERSION = '3.150.0';

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

// Langfuse v4 takes traces and observations only over OpenTelemetry; its
// ingestion route refuses these event types one by one.
export const V4_REFUSED_TYPES = new Set(Object.keys(EVENT_TYPES).filter((t) => ['trace', 'observation'].includes(EVENT_TYPES[t].kind)));

const v4RefusalMessage = (type) => `Event type not accepted: ${type}. Use the OpenTelemetry endpoint (${OTLP_TRACES_PATH}) on Langfuse v4`;

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

// OTLP: the project's own .proto files, found from this file's place in the
// repository, and protobufjs from the integration tests' node_modules.
const REPO_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const PROTO_DIR = path.join(REPO_DIR, 'proto');
const TRACE_ID_BYTES = 16;
const SPAN_ID_BYTES = 8;
const SPAN_KIND_MAX = 5;
const STATUS_CODE_MAX = 2;
const RPC_INVALID_ARGUMENT = 3;

let otlpProto = null;

/**
 * The protobufjs types built from proto/ (camelCase field names):
 * {request, response, status} for ExportTraceServiceRequest,
 * ExportTraceServiceResponse and google.rpc.Status. Loaded on first use, so
 * the ingestion route alone needs nothing from npm.
 */
export function otlpTypes() {
    if (otlpProto) return otlpProto;
    const requireFromTests = createRequire(path.join(REPO_DIR, 'tests/integration/package.json'));
    const protobuf = requireFromTests('protobufjs');
    const root = new protobuf.Root();
    root.resolvePath = (_origin, target) => (path.isAbsolute(target) ? target : path.join(PROTO_DIR, target));
    root.loadSync(['opentelemetry/proto/collector/trace/v1/trace_service.proto', 'google/rpc/status.proto'], { keepCase: false });
    root.resolveAll();
    otlpProto = {
        request: root.lookupType('opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest'),
        response: root.lookupType('opentelemetry.proto.collector.trace.v1.ExportTraceServiceResponse'),
        status: root.lookupType('google.rpc.Status'),
    };
    return otlpProto;
}

// An int64 as a plain value: a Number while it is exact, else its decimal
// string.
function plainInt(text) {
    const big = BigInt(text);
    const exact = big >= BigInt(Number.MIN_SAFE_INTEGER) && big <= BigInt(Number.MAX_SAFE_INTEGER);
    return exact ? Number(big) : big.toString();
}

const absent = (v) => v === undefined || v === null;

function listOf(value, where) {
    if (absent(value)) return [];
    if (!Array.isArray(value)) fail(`${where} must be an array`);
    return value;
}

function attributeMap(kvs, where, leaves) {
    const out = {};
    listOf(kvs, where).forEach((kv, i) => {
        if (!isObject(kv)) fail(`${where}[${i}] must be a KeyValue object`);
        out[leaves.text(kv.key, `${where}[${i}].key`)] = leaves.value(kv.value, `${where}[${i}].value`);
    });
    return out;
}

// Leaf values of a protobuf request, as protobufjs' toObject() gives them
// (oneofs named in `value`, 64-bit numbers as strings, bytes as Buffers).
const PROTOBUF_LEAVES = {
    id: (v) => Buffer.from(v || []),
    nanos: (v) => (absent(v) ? '0' : String(v)),
    enumValue: (v) => v ?? 0,
    text: (v) => v ?? '',
    value(av, where) {
        if (!av || !av.value) return null;
        switch (av.value) {
            case 'intValue':
                return plainInt(av.intValue);
            case 'arrayValue':
                return listOf(av.arrayValue.values, where).map((x, i) => PROTOBUF_LEAVES.value(x, `${where}[${i}]`));
            case 'kvlistValue':
                return attributeMap(av.kvlistValue.values, where, PROTOBUF_LEAVES);
            case 'bytesValue':
                return Buffer.from(av.bytesValue).toString('base64');
            default:
                return av[av.value];
        }
    },
};

const HEX_BYTES = /^(?:[0-9a-fA-F]{2})*$/;
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const ANY_VALUE_KEYS = ['stringValue', 'boolValue', 'intValue', 'doubleValue', 'arrayValue', 'kvlistValue', 'bytesValue'];

function jsonDouble(v, where) {
    if (typeof v === 'number') return v;
    if (v === 'NaN' || v === 'Infinity' || v === '-Infinity') return Number(v);
    if (typeof v === 'string' && v.trim() !== '' && Number.isFinite(Number(v))) return Number(v);
    fail(`${where}.doubleValue must be a number`);
}

function jsonInt(v, where) {
    if (Number.isSafeInteger(v)) return v;
    if (typeof v === 'string' && /^-?\d+$/.test(v)) return plainInt(v);
    fail(`${where}.intValue must be an integer or its decimal string`);
}

// Leaf values of an OTLP/JSON request, checked against the OTLP JSON
// mapping: ids in hex, enums as integers, 64-bit integers as numbers or
// decimal strings, bytes in base64. Unknown keys are ignored, as the
// mapping asks of receivers; a field under its proto name (trace_id) is
// therefore missing.
const JSON_LEAVES = {
    id(v, where) {
        if (absent(v) || v === '') return Buffer.alloc(0);
        if (typeof v !== 'string' || !HEX_BYTES.test(v)) fail(`${where} must be a hex string in OTLP/JSON, got ${JSON.stringify(v)}`);
        return Buffer.from(v, 'hex');
    },
    nanos(v, where) {
        if (absent(v)) return '0';
        if (typeof v === 'string' && /^\d+$/.test(v)) return BigInt(v).toString();
        if (Number.isSafeInteger(v) && v >= 0) return String(v);
        fail(`${where} must be an unsigned integer or its decimal string`);
    },
    enumValue(v, where) {
        if (absent(v)) return 0;
        if (!Number.isInteger(v)) fail(`${where} must be an integer (OTLP/JSON sends enums as numbers), got ${JSON.stringify(v)}`);
        return v;
    },
    text(v, where) {
        if (absent(v)) return '';
        if (typeof v !== 'string') fail(`${where} must be a string`);
        return v;
    },
    value(av, where) {
        if (absent(av)) return null;
        if (!isObject(av)) fail(`${where} must be an AnyValue object`);
        const keys = ANY_VALUE_KEYS.filter((k) => !absent(av[k]));
        if (keys.length > 1) fail(`${where} holds more than one value: ${keys.join(', ')}`);
        if (keys.length === 0) return null;
        const v = av[keys[0]];
        switch (keys[0]) {
            case 'stringValue':
                if (typeof v !== 'string') fail(`${where}.stringValue must be a string`);
                return v;
            case 'boolValue':
                if (typeof v !== 'boolean') fail(`${where}.boolValue must be a boolean`);
                return v;
            case 'intValue':
                return jsonInt(v, where);
            case 'doubleValue':
                return jsonDouble(v, where);
            case 'arrayValue':
                if (!isObject(v)) fail(`${where}.arrayValue must be an object`);
                return listOf(v.values, `${where}.arrayValue.values`).map((x, i) => JSON_LEAVES.value(x, `${where}.arrayValue.values[${i}]`));
            case 'kvlistValue':
                if (!isObject(v)) fail(`${where}.kvlistValue must be an object`);
                return attributeMap(v.values, `${where}.kvlistValue.values`, JSON_LEAVES);
            default:
                if (typeof v !== 'string' || !BASE64.test(v)) fail(`${where}.bytesValue must be base64`);
                return v;
        }
    },
};

// A trace or span id as lowercase hex; an optional id may be empty (null).
function idHex(buf, bytes, where, optional) {
    if (optional && buf.length === 0) return null;
    if (buf.length !== bytes) fail(`${where} must be ${bytes} bytes, got ${buf.length}`);
    if (buf.every((b) => b === 0)) fail(`${where} must not be all zeros`);
    return buf.toString('hex');
}

function enumIn(value, max, where) {
    if (value < 0 || value > max) fail(`${where} must be 0..${max}, got ${value}`);
    return value;
}

function objectOrEmpty(value, where) {
    if (absent(value)) return {};
    if (!isObject(value)) fail(`${where} must be an object`);
    return value;
}

function spanRecord(span, at, leaves, ctx) {
    if (!isObject(span)) fail(`${at} must be an object`);
    const status = objectOrEmpty(span.status, `${at}.status`);
    return {
        traceId: idHex(leaves.id(span.traceId, `${at}.traceId`), TRACE_ID_BYTES, `${at}.traceId`, false),
        spanId: idHex(leaves.id(span.spanId, `${at}.spanId`), SPAN_ID_BYTES, `${at}.spanId`, false),
        parentSpanId: idHex(leaves.id(span.parentSpanId, `${at}.parentSpanId`), SPAN_ID_BYTES, `${at}.parentSpanId`, true),
        name: leaves.text(span.name, `${at}.name`),
        kind: enumIn(leaves.enumValue(span.kind, `${at}.kind`), SPAN_KIND_MAX, `${at}.kind`),
        startTimeUnixNano: leaves.nanos(span.startTimeUnixNano, `${at}.startTimeUnixNano`),
        endTimeUnixNano: leaves.nanos(span.endTimeUnixNano, `${at}.endTimeUnixNano`),
        status: {
            code: enumIn(leaves.enumValue(status.code, `${at}.status.code`), STATUS_CODE_MAX, `${at}.status.code`),
            message: leaves.text(status.message, `${at}.status.message`),
        },
        attributes: attributeMap(span.attributes, `${at}.attributes`, leaves),
        events: listOf(span.events, `${at}.events`).map((ev, i) => {
            const where = `${at}.events[${i}]`;
            if (!isObject(ev)) fail(`${where} must be an object`);
            return {
                name: leaves.text(ev.name, `${where}.name`),
                timeUnixNano: leaves.nanos(ev.timeUnixNano, `${where}.timeUnixNano`),
                attributes: attributeMap(ev.attributes, `${where}.attributes`, leaves),
            };
        }),
        resource: { ...ctx.resource },
        scope: { ...ctx.scope },
        headers: ctx.headers,
    };
}

/**
 * Every span of a decoded ExportTraceServiceRequest as a flat record (see
 * README); throws Invalid naming the first thing that is wrong, so one bad
 * span refuses the whole request.
 */
function otlpRecords(doc, leaves, headers) {
    if (!isObject(doc)) fail('body must be an ExportTraceServiceRequest object');
    const out = [];
    listOf(doc.resourceSpans, 'resourceSpans').forEach((rs, r) => {
        const at = `resourceSpans[${r}]`;
        if (!isObject(rs)) fail(`${at} must be an object`);
        const resource = attributeMap(objectOrEmpty(rs.resource, `${at}.resource`).attributes, `${at}.resource.attributes`, leaves);
        listOf(rs.scopeSpans, `${at}.scopeSpans`).forEach((ss, s) => {
            const sat = `${at}.scopeSpans[${s}]`;
            if (!isObject(ss)) fail(`${sat} must be an object`);
            const sc = objectOrEmpty(ss.scope, `${sat}.scope`);
            const scope = { name: leaves.text(sc.name, `${sat}.scope.name`), version: leaves.text(sc.version, `${sat}.scope.version`) };
            listOf(ss.spans, `${sat}.spans`).forEach((span, i) => {
                out.push(spanRecord(span, `${sat}.spans[${i}]`, leaves, { resource, scope, headers }));
            });
        });
    });
    return out;
}

function decodeProtobufRequest(body) {
    const { request } = otlpTypes();
    let msg;
    try {
        msg = request.decode(body);
    } catch (e) {
        fail(`body is not a protobuf ExportTraceServiceRequest: ${e.message}`);
    }
    return request.toObject(msg, { longs: String, enums: Number, oneofs: true, arrays: true });
}

function parseJsonRequest(body) {
    try {
        return JSON.parse(body.toString('utf8'));
    } catch {
        return fail('body is not valid JSON');
    }
}

const mediaType = (req) => (req.headers['content-type'] || '').split(';')[0].trim().toLowerCase();

/**
 * Reads an OTLP request up to, not including, auth and faults:
 * {format, status, message, records}. format is 'protobuf', 'json' or null
 * (unknown content type); status is 200 when the body holds valid spans,
 * else the error status it earns (413, 415 or 400).
 */
function readOtlp(req, raw, headers) {
    const ctype = mediaType(req);
    const format = { 'application/x-protobuf': 'protobuf', 'application/json': 'json' }[ctype] || null;
    if (raw === null) return { format, status: 413, message: `request body over ${MAX_BODY_BYTES} bytes` };
    if (!format) return { format, status: 415, message: `content-type must be application/x-protobuf or application/json, got ${JSON.stringify(ctype)}` };
    const encoding = (req.headers['content-encoding'] || '').trim().toLowerCase();
    let body = raw;
    if (encoding === 'gzip') {
        try {
            body = zlib.gunzipSync(raw, { maxOutputLength: MAX_BODY_BYTES });
        } catch (e) {
            if (e.code === 'ERR_BUFFER_TOO_LARGE') return { format, status: 413, message: `unpacked body over ${MAX_BODY_BYTES} bytes` };
            return { format, status: 400, message: `body is not valid gzip: ${e.message}` };
        }
    } else if (encoding !== '' && encoding !== 'identity') {
        return { format, status: 415, message: `content-encoding must be gzip or none, got ${JSON.stringify(encoding)}` };
    }
    try {
        const records = format === 'protobuf' ? otlpRecords(decodeProtobufRequest(body), PROTOBUF_LEAVES, headers) : otlpRecords(parseJsonRequest(body), JSON_LEAVES, headers);
        return { format, status: 200, records };
    } catch (e) {
        if (!(e instanceof Invalid)) throw e;
        return { format, status: 400, message: e.message };
    }
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

// Routes a fault can be aimed at; without `route` it hits the first
// ingestion or OTLP request, never the health route.
const FAULT_ROUTES = new Set(['ingestion', 'otlp', 'health']);
const ROUTES_OF_SLOT = {
    status: FAULT_ROUTES,
    slow: FAULT_ROUTES,
    reset: new Set(['ingestion', 'otlp']),
    eventStatus: new Set(['ingestion']),
    eventStatuses: new Set(['ingestion']),
};

// Validates a fault description and returns [slot, state] for it; state.route
// is the route it is aimed at, or '*'.
function parseFault(fault) {
    if (!isObject(fault)) throw new Error('a fault is an object with a type');
    const [slot, state] = parseFaultKind(fault);
    const route = fault.route ?? '*';
    if (route !== '*' && !FAULT_ROUTES.has(route)) throw new Error(`route must be one of ${[...FAULT_ROUTES].join(', ')}`);
    if (route !== '*' && !ROUTES_OF_SLOT[slot].has(route)) throw new Error(`a ${fault.type} fault does not apply to the ${route} route`);
    // A fault that fits one route only is filed under any route.
    state.route = ROUTES_OF_SLOT[slot].size === 1 ? '*' : route;
    return [slot, state];
}

function parseFaultKind(fault) {
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

const modeOfVersion = (v) => {
    const m = /^v?(\d+)/.exec(v);
    return m && Number(m[1]) >= 4 ? 'v4' : 'v3';
};

function checkVersion(v) {
    if (typeof v !== 'string' || v.length === 0) throw new Error('version must be a non-empty string');
    return v;
}

function checkMode(m) {
    if (m !== null && m !== undefined && m !== 'v3' && m !== 'v4') throw new Error("mode must be 'v3', 'v4' or null");
    return m ?? null;
}

const INVALID_CREDENTIALS = 'Invalid credentials. Confirm that you have used the correct public and secret key.';

function jsonAnswer(status, obj, extra = {}) {
    return { status, body: JSON.stringify(obj), contentType: 'application/json', headers: {}, ...extra };
}

function sendAnswer(res, a) {
    res.writeHead(a.status, { 'content-type': a.contentType, 'content-length': Buffer.byteLength(a.body), ...(a.headers || {}) });
    res.end(a.body);
}

// The OTLP success answer: an empty ExportTraceServiceResponse in the
// request's format.
function otlpSuccess(format, ids) {
    if (format !== 'protobuf') return jsonAnswer(200, {}, { ids });
    const { response } = otlpTypes();
    return { status: 200, body: Buffer.from(response.encode(response.create({})).finish()), contentType: 'application/x-protobuf', headers: {}, ids };
}

// A refused OTLP body: a google.rpc.Status in the request's format, as
// OTLP/HTTP asks.
function otlpBadRequest(format, message, ids) {
    if (format !== 'protobuf') return jsonAnswer(400, { code: RPC_INVALID_ARGUMENT, message }, { ids });
    const { status } = otlpTypes();
    const body = Buffer.from(status.encode(status.create({ code: RPC_INVALID_ARGUMENT, message })).finish());
    return { status: 400, body, contentType: 'application/x-protobuf', headers: {}, ids };
}

function headersOf(req) {
    const headers = { ...req.headers };
    delete headers.authorization;
    return headers;
}

function countUp(counts, id) {
    counts.set(id, (counts.get(id) || 0) + 1);
}

function beyondFirst(counts) {
    let n = 0;
    for (const c of counts.values()) n += c - 1;
    return n;
}

/**
 * Starts the fake on 127.0.0.1. Options: publicKey and secretKey (needed),
 * port, host, version (what the health route reports, DEFAULT_VERSION
 * unless given) and mode ('v3' or 'v4'; unset, the major version decides).
 * Resolves to a handle:
 *   url, port
 *   events()          accepted events in arrival order (parsed envelopes),
 *                     every delivery, so a re-sent event shows twice
 *   deliveries(id)    how many times an event with that id was accepted
 *   deliveryCounts()  {id: count} over all accepted events
 *   duplicates()      accepted deliveries beyond the first of each id
 *   batches()         number of ingestion requests answered 207
 *   rejections()      [{id, type, status, reason, event}] for events refused
 *   spans()           stored OTLP span records in arrival order, every
 *                     delivery; spanDeliveries(spanId),
 *                     spanDeliveryCounts(), spanDuplicates() count them
 *   v4View()          stored spans grouped per trace id, with the user ids,
 *                     session ids and trace names their spans carry
 *   requests()        [{route, status, events, ids, errors, fault, headers}]
 *                     for every ingestion and OTLP request; status 0 when
 *                     the client never got a complete answer
 *   healthChecks()    [{status, version, fault, headers}] per health request
 *   version(), setVersion(v), mode(), setMode(m)
 *   setFault(f)       inject a fault (see README); null clears all faults
 *   reset()           forget events, spans, counters and faults
 *   down(), up()      stop listening (connections closed), listen again on
 *                     the same port; isUp()
 *   close()
 */
export async function startFakeLangfuse({ publicKey, secretKey, port = 0, host = '127.0.0.1', version = DEFAULT_VERSION, mode = null } = {}) {
    if (!publicKey || !secretKey) throw new Error('startFakeLangfuse needs publicKey and secretKey');
    const expectedAuth = 'Basic ' + Buffer.from(`${publicKey}:${secretKey}`).toString('base64');

    let currentVersion = checkVersion(version);
    let fixedMode = checkMode(mode);
    let accepted = [];
    let deliveryCount = new Map();
    let storedSpans = [];
    let spanCount = new Map();
    let rejected = [];
    let requestLog = [];
    let healthLog = [];
    let batchCount = 0;
    let faults = new Map();

    const currentMode = () => fixedMode || modeOfVersion(currentVersion);

    function setFault(fault) {
        if (fault === null || fault === undefined || fault.type === 'none') {
            faults = new Map();
            return;
        }
        const [slot, state] = parseFault(fault);
        // The two forms of event-status exclude each other.
        if (slot === 'eventStatus') faults.delete(`eventStatuses@${state.route}`);
        if (slot === 'eventStatuses') faults.delete(`eventStatus@${state.route}`);
        faults.set(`${slot}@${state.route}`, state);
    }

    function reset() {
        accepted = [];
        deliveryCount = new Map();
        storedSpans = [];
        spanCount = new Map();
        rejected = [];
        requestLog = [];
        healthLog = [];
        batchCount = 0;
        faults = new Map();
    }

    // Takes one use of a fault that applies to a request on |route|: one
    // aimed at that route first, else one aimed at any data route.
    function useFault(name, route, applies = () => true) {
        const keys = route === 'health' ? [`${name}@health`] : [`${name}@${route}`, `${name}@*`];
        for (const key of keys) {
            const f = faults.get(key);
            if (!f || f.left <= 0 || !applies(f)) continue;
            f.left -= 1;
            if (f.left <= 0) faults.delete(key);
            return f;
        }
        return null;
    }

    function accept(ev, id) {
        accepted.push(ev);
        countUp(deliveryCount, id);
    }

    // The status injected for the event at |index| of the batch, if any.
    function injectedStatus(perBatch, index) {
        if (perBatch) return perBatch.statuses[index % perBatch.statuses.length];
        const single = useFault('eventStatus', 'ingestion');
        return single ? single.status : null;
    }

    // Why an event is refused, or null: v4 turns traces and observations
    // away before looking at them, as Langfuse v4 does.
    function refusal(ev) {
        const type = isObject(ev) ? ev.type : undefined;
        if (currentMode() === 'v4' && V4_REFUSED_TYPES.has(type)) {
            const message = v4RefusalMessage(type);
            return { message, reason: message, error: `event type ${type} not accepted` };
        }
        try {
            validateEvent(ev);
            return null;
        } catch (e) {
            if (!(e instanceof Invalid)) throw e;
            return { message: `Invalid request data: ${e.message}`, reason: e.message, error: e.message };
        }
    }

    function ingest(batch) {
        const successes = [];
        const errors = [];
        const perBatch = useFault('eventStatuses', 'ingestion');
        batch.forEach((ev, index) => {
            const id = isObject(ev) && typeof ev.id === 'string' ? ev.id : '';
            const type = isObject(ev) ? ev.type : undefined;
            const refused = refusal(ev);
            if (refused) {
                errors.push({ id, status: 400, message: refused.message, error: refused.error });
                rejected.push({ id, type, status: 400, reason: refused.reason, event: ev });
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

    function logRequest(route, headers, entry) {
        const record = { route, status: entry.status, events: entry.ids.length, ids: entry.ids, errors: entry.errors || [], fault: entry.fault || null, headers };
        if (route === 'otlp') record.ingestionVersion = headers['x-langfuse-ingestion-version'] ?? null;
        requestLog.push(record);
        return record;
    }

    function retryAfterHeader(f) {
        if (f.retryAfterDate !== undefined) return { 'retry-after': new Date(Date.now() + f.retryAfterDate).toUTCString() };
        if (f.retryAfter !== undefined) return { 'retry-after': String(f.retryAfter) };
        return {};
    }

    function statusFaultAnswer(f, ids) {
        return jsonAnswer(f.status, { message: `injected status ${f.status}` }, { headers: retryAfterHeader(f), ids, fault: 'status' });
    }

    // Decides the answer to one ingestion request, recording what it
    // accepts: {status, body, contentType, headers, ids, errors, fault}.
    function answerIngestion(req, raw, batch) {
        const ids = idsOf(batch);
        const statusFault = useFault('status', 'ingestion', (f) => ids.length >= f.minEvents);
        if (statusFault) return statusFaultAnswer(statusFault, ids);
        if (req.headers.authorization !== expectedAuth) return jsonAnswer(401, { message: INVALID_CREDENTIALS }, { ids });
        if (raw === null) return jsonAnswer(413, { message: `request body over ${MAX_BODY_BYTES} bytes` }, { ids });
        if (mediaType(req) !== 'application/json') return jsonAnswer(400, { message: 'content-type must be application/json' }, { ids });
        let doc;
        try {
            doc = JSON.parse(raw.toString('utf8'));
        } catch {
            return jsonAnswer(400, { message: 'body is not valid JSON' }, { ids });
        }
        if (!isObject(doc) || !Array.isArray(doc.batch)) {
            return jsonAnswer(400, { message: 'body must be an object with a batch array' }, { ids });
        }
        const result = ingest(doc.batch);
        batchCount += 1;
        const errors = result.errors.map((e) => ({ id: e.id, status: e.status }));
        return jsonAnswer(207, result, { ids, errors });
    }

    // Decides the answer to one OTLP request read by readOtlp(), storing
    // its spans when it is taken.
    function answerOtlp(req, read, ids) {
        const statusFault = useFault('status', 'otlp', (f) => ids.length >= f.minEvents);
        if (statusFault) return statusFaultAnswer(statusFault, ids);
        if (req.headers.authorization !== expectedAuth) return jsonAnswer(401, { message: INVALID_CREDENTIALS }, { ids });
        if (read.status === 400) return otlpBadRequest(read.format, read.message, ids);
        if (read.status !== 200) return jsonAnswer(read.status, { message: read.message }, { ids });
        for (const record of read.records) {
            storedSpans.push(record);
            countUp(spanCount, record.spanId);
        }
        return otlpSuccess(read.format, ids);
    }

    // Writes the head and part of the body of |a|, then resets the
    // connection, so the client sees a response cut short. An answer
    // without a body to cut (an OTLP protobuf success) is reset before its
    // head.
    async function cutShort(res, a, afterMs) {
        const body = Buffer.from(a.body);
        if (body.length >= 2) {
            res.writeHead(a.status, { 'content-type': a.contentType, 'content-length': body.length, ...(a.headers || {}) });
            res.flushHeaders();
            await new Promise((resolve) => res.write(body.subarray(0, Math.floor(body.length / 2)), () => resolve()));
        }
        await sleep(afterMs);
        const sock = res.socket;
        if (sock && !sock.destroyed) {
            if (typeof sock.resetAndDestroy === 'function') sock.resetAndDestroy();
            else sock.destroy();
        }
    }

    // One request to the ingestion or the OTLP route, faults included.
    async function handleData(route, req, res, raw, clientGone) {
        const headers = headersOf(req);
        let ids;
        let decide;
        let taken;
        if (route === 'otlp') {
            const read = readOtlp(req, raw, headers);
            ids = read.records ? read.records.map((r) => r.spanId) : [];
            decide = () => answerOtlp(req, read, ids);
            taken = () => otlpSuccess(read.format, ids);
        } else {
            const batch = peekBatch(raw);
            ids = idsOf(batch);
            decide = () => answerIngestion(req, raw, batch);
            taken = () => jsonAnswer(207, { successes: ids.map((id) => ({ id, status: 201 })), errors: [] }, { ids });
        }
        const slow = useFault('slow', route);
        const cut = useFault('reset', route);
        const fault = [slow && 'slow', cut && 'reset'].filter(Boolean).join('+') || null;
        // With acceptFirst the request is taken as Langfuse would (stored)
        // before the client learns anything; otherwise only an answer the
        // client is still waiting for counts.
        const early = (slow && slow.acceptFirst) || (cut && cut.acceptFirst) ? decide() : null;
        if (slow) await sleep(slow.ms);
        if (clientGone()) {
            const entry = logRequest(route, headers, { status: 0, ids, errors: early && early.errors, fault });
            entry.answered = early ? early.status : null;
            return;
        }
        if (cut) {
            const entry = logRequest(route, headers, { status: 0, ids, errors: early && early.errors, fault });
            entry.answered = early ? early.status : null;
            await cutShort(res, early || taken(), cut.afterMs);
            return;
        }
        const a = early || decide();
        logRequest(route, headers, { ...a, fault: [fault, a.fault].filter(Boolean).join('+') || null });
        sendAnswer(res, a);
    }

    // GET /api/public/health: no auth, answers the version; only faults
    // aimed at the health route touch it.
    async function handleHealth(req, res, clientGone) {
        if (req.method !== 'GET') return sendJson(res, 405, { message: 'method not allowed' }, { allow: 'GET' });
        const headers = headersOf(req);
        const slow = useFault('slow', 'health');
        const statusFault = useFault('status', 'health');
        const fault = [slow && 'slow', statusFault && 'status'].filter(Boolean).join('+') || null;
        if (slow) await sleep(slow.ms);
        const a = statusFault ? statusFaultAnswer(statusFault, []) : jsonAnswer(200, { status: 'OK', version: currentVersion });
        const gone = clientGone();
        healthLog.push({ status: gone ? 0 : a.status, version: currentVersion, fault, headers });
        if (!gone) sendAnswer(res, a);
    }

    function setVersion(v) {
        currentVersion = checkVersion(v);
    }

    function setMode(m) {
        fixedMode = checkMode(m);
    }

    // Stored spans per trace id, in order of first arrival. Each set holds
    // the value of its attribute on every span, undefined for a span
    // without it, so a set of one value means every span carries it.
    function v4View() {
        const traces = new Map();
        for (const span of storedSpans) {
            let t = traces.get(span.traceId);
            if (!t) {
                t = { traceId: span.traceId, spans: [], userIds: new Set(), sessionIds: new Set(), traceNames: new Set() };
                traces.set(span.traceId, t);
            }
            t.spans.push(span);
            t.userIds.add(span.attributes['langfuse.user.id']);
            t.sessionIds.add(span.attributes['langfuse.session.id']);
            t.traceNames.add(span.attributes['langfuse.trace.name']);
        }
        return [...traces.values()];
    }

    // Listening state, for down() and up().
    let listening = false;
    let upTimer = null;

    function parseControlBody(raw, fallback) {
        return JSON.parse((raw || Buffer.alloc(0)).toString('utf8') || fallback);
    }

    async function handleControl(req, res, raw) {
        const route = `${req.method} ${req.url}`;
        if (route === 'GET /_fake/events') {
            sendJson(res, 200, {
                events: accepted,
                batches: batchCount,
                rejections: rejected,
                requests: requestLog,
                deliveries: Object.fromEntries(deliveryCount),
                spans: storedSpans,
                spanDeliveries: Object.fromEntries(spanCount),
                healthChecks: healthLog,
                version: currentVersion,
                mode: currentMode(),
            });
            return;
        }
        if (route === 'GET /_fake/v4view') {
            const traces = v4View().map((t) => ({ ...t, userIds: [...t.userIds], sessionIds: [...t.sessionIds], traceNames: [...t.traceNames] }));
            sendJson(res, 200, { traces });
            return;
        }
        if (route === 'POST /_fake/reset') {
            reset();
            sendJson(res, 200, { ok: true });
            return;
        }
        if (route === 'POST /_fake/fault') {
            try {
                setFault(parseControlBody(raw, 'null'));
            } catch (e) {
                sendJson(res, 400, { message: e.message });
                return;
            }
            sendJson(res, 200, { ok: true });
            return;
        }
        if (route === 'POST /_fake/version') {
            try {
                const doc = parseControlBody(raw, '{}');
                if (!isObject(doc)) throw new Error('body must be an object');
                // Check both before changing either.
                if (doc.version !== undefined) checkVersion(doc.version);
                if (doc.mode !== undefined) checkMode(doc.mode);
                if (doc.version !== undefined) setVersion(doc.version);
                if (doc.mode !== undefined) setMode(doc.mode);
            } catch (e) {
                sendJson(res, 400, { message: e.message });
                return;
            }
            sendJson(res, 200, { version: currentVersion, mode: currentMode() });
            return;
        }
        if (route === 'POST /_fake/down') {
            let ms;
            try {
                const doc = parseControlBody(raw, '{}');
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

    const DATA_ROUTES = { [INGESTION_PATH]: 'ingestion', [OTLP_TRACES_PATH]: 'otlp' };

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
                if (url.pathname === HEALTH_PATH) return handleHealth(req, res, clientGone);
                const route = DATA_ROUTES[url.pathname];
                if (!route) return sendJson(res, 404, { message: 'not found' });
                if (req.method !== 'POST') return sendJson(res, 405, { message: 'method not allowed' }, { allow: 'POST' });
                return handleData(route, req, res, raw, clientGone);
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
        duplicates: () => beyondFirst(deliveryCount),
        batches: () => batchCount,
        rejections: () => rejected.slice(),
        spans: () => storedSpans.slice(),
        spanDeliveries: (spanId) => spanCount.get(spanId) || 0,
        spanDeliveryCounts: () => Object.fromEntries(spanCount),
        spanDuplicates: () => beyondFirst(spanCount),
        v4View,
        requests: () => requestLog.slice(),
        healthChecks: () => healthLog.slice(),
        version: () => currentVersion,
        setVersion,
        mode: currentMode,
        setMode,
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
    const opts = { port: 0, publicKey: 'pk-lf-test', secretKey: 'sk-lf-test', version: DEFAULT_VERSION, mode: null };
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
            case '--version-string':
                opts.version = next();
                break;
            case '--mode':
                opts.mode = next();
                break;
            default:
                throw new Error(`unknown option ${argv[i]}`);
        }
    }
    if (!Number.isInteger(opts.port) || opts.port < 0 || opts.port > 65535) throw new Error('--port must be 0..65535');
    checkVersion(opts.version);
    if (opts.mode !== null && opts.mode !== 'v3' && opts.mode !== 'v4') throw new Error('--mode must be v3 or v4');
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
