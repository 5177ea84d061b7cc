// A tiny OTLP/HTTP receiver for tests: it records every request body as
// received (with its content type and encoding) and answers success, so a
// test can see exactly what an OpenTelemetry client sends. It also decodes
// the bodies (gzip, protobuf, JSON) into the OTLP/JSON shape.

import http from 'node:http';
import path from 'node:path';
import zlib from 'node:zlib';
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const PROTO_ROOT = path.resolve(here, '../../../proto');

let requestType = null;
let responseType = null;

function loadTypes() {
    if (requestType) return;
    const root = new protobuf.Root();
    root.resolvePath = (_origin, target) => (path.isAbsolute(target) ? target : path.join(PROTO_ROOT, target));
    root.loadSync('opentelemetry/proto/collector/trace/v1/trace_service.proto', { keepCase: false });
    root.resolveAll();
    requestType = root.lookupType('opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest');
    responseType = root.lookupType('opentelemetry.proto.collector.trace.v1.ExportTraceServiceResponse');
}

/** The protobufjs type of ExportTraceServiceRequest, loaded from proto/. */
export function exportRequestType() {
    loadTypes();
    return requestType;
}

function hex(buf) {
    return Buffer.from(buf).toString('hex');
}

// protobufjs object -> OTLP/JSON (ids as hex, 64-bit numbers as strings,
// enum values as numbers), matching what the JSON exporter sends.
function anyValueToJson(v) {
    if (!v) return {};
    if (v.stringValue !== undefined && v.stringValue !== null) return { stringValue: v.stringValue };
    if (v.boolValue !== undefined && v.boolValue !== null) return { boolValue: v.boolValue };
    if (v.intValue !== undefined && v.intValue !== null) return { intValue: String(v.intValue) };
    if (v.doubleValue !== undefined && v.doubleValue !== null) return { doubleValue: v.doubleValue };
    if (v.arrayValue) return { arrayValue: { values: (v.arrayValue.values || []).map(anyValueToJson) } };
    if (v.kvlistValue) return { kvlistValue: { values: (v.kvlistValue.values || []).map(kvToJson) } };
    if (v.bytesValue) return { bytesValue: Buffer.from(v.bytesValue).toString('base64') };
    return {};
}

function kvToJson(kv) {
    return { key: kv.key, value: anyValueToJson(kv.value) };
}

/** Decode a protobuf ExportTraceServiceRequest into the OTLP/JSON shape. */
export function protobufToOtlpJson(buf) {
    loadTypes();
    const msg = requestType.toObject(requestType.decode(buf), { longs: String, enums: Number, bytes: Buffer, defaults: false, arrays: true });
    return {
        resourceSpans: (msg.resourceSpans || []).map((rs) => ({
            resource: { attributes: ((rs.resource && rs.resource.attributes) || []).map(kvToJson), droppedAttributesCount: (rs.resource && rs.resource.droppedAttributesCount) || 0 },
            scopeSpans: (rs.scopeSpans || []).map((ss) => ({
                scope: { name: (ss.scope && ss.scope.name) || '', version: (ss.scope && ss.scope.version) || '', attributes: ((ss.scope && ss.scope.attributes) || []).map(kvToJson) },
                spans: (ss.spans || []).map((s) => ({
                    traceId: hex(s.traceId || []),
                    spanId: hex(s.spanId || []),
                    ...(s.parentSpanId && s.parentSpanId.length ? { parentSpanId: hex(s.parentSpanId) } : {}),
                    ...(s.traceState ? { traceState: s.traceState } : {}),
                    name: s.name,
                    kind: s.kind || 0,
                    startTimeUnixNano: String(s.startTimeUnixNano || '0'),
                    endTimeUnixNano: String(s.endTimeUnixNano || '0'),
                    attributes: (s.attributes || []).map(kvToJson),
                    droppedAttributesCount: s.droppedAttributesCount || 0,
                    events: (s.events || []).map((e) => ({
                        timeUnixNano: String(e.timeUnixNano || '0'),
                        name: e.name,
                        attributes: (e.attributes || []).map(kvToJson),
                        droppedAttributesCount: e.droppedAttributesCount || 0,
                    })),
                    droppedEventsCount: s.droppedEventsCount || 0,
                    status: { code: (s.status && s.status.code) || 0, ...(s.status && s.status.message ? { message: s.status.message } : {}) },
                    links: (s.links || []).map((l) => ({ traceId: hex(l.traceId || []), spanId: hex(l.spanId || []), attributes: (l.attributes || []).map(kvToJson) })),
                    droppedLinksCount: s.droppedLinksCount || 0,
                    ...(s.flags ? { flags: s.flags } : {}),
                })),
                ...(ss.schemaUrl ? { schemaUrl: ss.schemaUrl } : {}),
            })),
            ...(rs.schemaUrl ? { schemaUrl: rs.schemaUrl } : {}),
        })),
    };
}

/** Decode one captured request (see startCapture) into OTLP/JSON. */
export function decodeRequest(req) {
    let body = req.body;
    const enc = (req.contentEncoding || '').toLowerCase();
    if (enc === 'gzip') body = zlib.gunzipSync(body);
    else if (enc && enc !== 'identity') throw new Error(`unsupported content-encoding ${enc}`);
    const type = (req.contentType || '').split(';')[0].trim().toLowerCase();
    if (type === 'application/json') return JSON.parse(body.toString('utf8'));
    if (type === 'application/x-protobuf' || type === 'application/protobuf') return protobufToOtlpJson(body);
    throw new Error(`unsupported content-type ${req.contentType}`);
}

/** Merge several OTLP/JSON requests into one (resource spans concatenated). */
export function mergeRequests(decoded) {
    return { resourceSpans: decoded.flatMap((d) => d.resourceSpans || []) };
}

/** Every span of an OTLP/JSON request, each with its resource and scope. */
export function flattenSpans(otlp) {
    const out = [];
    for (const rs of otlp.resourceSpans || []) {
        for (const ss of rs.scopeSpans || []) {
            for (const span of ss.spans || []) {
                out.push({ span, scope: ss.scope || {}, resource: rs.resource || {} });
            }
        }
    }
    return out;
}

/** OTLP/JSON AnyValue -> plain JavaScript value. */
export function plainValue(v) {
    if (!v) return undefined;
    if ('stringValue' in v) return v.stringValue;
    if ('boolValue' in v) return v.boolValue;
    if ('intValue' in v) return Number(v.intValue);
    if ('doubleValue' in v) return v.doubleValue;
    if ('arrayValue' in v) return ((v.arrayValue && v.arrayValue.values) || []).map(plainValue);
    if ('kvlistValue' in v) return Object.fromEntries(((v.kvlistValue && v.kvlistValue.values) || []).map((kv) => [kv.key, plainValue(kv.value)]));
    if ('bytesValue' in v) return v.bytesValue;
    return undefined;
}

/** Attributes of an OTLP/JSON span as a plain object. */
export function attrs(span) {
    return Object.fromEntries((span.attributes || []).map((kv) => [kv.key, plainValue(kv.value)]));
}

/**
 * Start the capture server on 127.0.0.1 (port 0 picks a free port).
 * Returns {url, port, requests(), decoded(), spans(), reset(), close()}.
 */
export async function startCapture({ port = 0 } = {}) {
    loadTypes();
    const requests = [];
    const emptyProto = Buffer.from(responseType.encode(responseType.create({})).finish());
    const server = http.createServer((req, res) => {
        const chunks = [];
        req.on('data', (c) => chunks.push(c));
        req.on('end', () => {
            const body = Buffer.concat(chunks);
            requests.push({
                method: req.method,
                path: req.url,
                contentType: req.headers['content-type'] || '',
                contentEncoding: req.headers['content-encoding'] || '',
                headers: { ...req.headers },
                body,
            });
            const isProto = (req.headers['content-type'] || '').includes('protobuf');
            if (isProto) {
                res.writeHead(200, { 'content-type': 'application/x-protobuf', 'content-length': emptyProto.length });
                res.end(emptyProto);
            } else {
                res.writeHead(200, { 'content-type': 'application/json', 'content-length': 2 });
                res.end('{}');
            }
        });
    });
    await new Promise((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, '127.0.0.1', resolve);
    });
    const actual = server.address().port;
    return {
        url: `http://127.0.0.1:${actual}`,
        port: actual,
        requests: () => requests.slice(),
        decoded: () => requests.map(decodeRequest),
        spans: () => flattenSpans(mergeRequests(requests.map(decodeRequest))),
        reset: () => {
            requests.length = 0;
        },
        close: () =>
            new Promise((resolve) => {
                server.closeAllConnections?.();
                server.close(() => resolve());
            }),
    };
}

/**
 * Start an OTLP/gRPC capture server on 127.0.0.1 (plaintext h2c). Records
 * each Export request (protobuf bytes, metadata) and answers OK with an
 * empty response. grpc-js undoes gRPC message compression before the handler
 * runs, so bodies are always plain protobuf here. Returns {url, port, requests(), decoded(), spans(), close()}.
 */
export async function startGrpcCapture({ port = 0 } = {}) {
    loadTypes();
    const grpc = await import('@grpc/grpc-js');
    const requests = [];
    const identity = (b) => b;
    const service = {
        Export: {
            path: '/opentelemetry.proto.collector.trace.v1.TraceService/Export',
            requestStream: false,
            responseStream: false,
            requestSerialize: identity,
            requestDeserialize: identity,
            responseSerialize: identity,
            responseDeserialize: identity,
        },
    };
    const emptyProto = Buffer.from(responseType.encode(responseType.create({})).finish());
    const server = new grpc.Server();
    server.addService(service, {
        Export: (call, callback) => {
            requests.push({
                method: 'grpc',
                path: service.Export.path,
                contentType: 'application/x-protobuf',
                contentEncoding: '',
                headers: call.metadata.getMap(),
                body: Buffer.from(call.request),
            });
            callback(null, emptyProto);
        },
    });
    const actual = await new Promise((resolve, reject) => {
        server.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p)));
    });
    return {
        url: `http://127.0.0.1:${actual}`,
        port: actual,
        requests: () => requests.slice(),
        decoded: () => requests.map(decodeRequest),
        spans: () => flattenSpans(mergeRequests(requests.map(decodeRequest))),
        reset: () => {
            requests.length = 0;
        },
        close: () => new Promise((resolve) => server.tryShutdown(() => resolve())),
    };
}
