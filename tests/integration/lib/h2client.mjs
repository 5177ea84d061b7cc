// A bare gRPC client on node's http2 module, for tests that need to send
// what a real gRPC library never would: broken length prefixes, unknown
// encodings, lying compressed flags. It also builds and reads the OTLP and
// google.rpc messages involved.

import http2 from 'node:http2';
import path from 'node:path';
import zlib from 'node:zlib';
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const PROTO_ROOT = path.resolve(here, '../../../proto');

export const EXPORT_PATH = '/opentelemetry.proto.collector.trace.v1.TraceService/Export';
export const HEALTH_PATH = '/grpc.health.v1.Health/Check';
export const TRACE_SERVICE = 'opentelemetry.proto.collector.trace.v1.TraceService';

/** gRPC status codes the receiver answers with. */
export const GRPC = Object.freeze({
    OK: 0,
    INVALID_ARGUMENT: 3,
    NOT_FOUND: 5,
    RESOURCE_EXHAUSTED: 8,
    UNIMPLEMENTED: 12,
    UNAVAILABLE: 14,
});

let types = null;

function loadTypes() {
    if (types) return types;
    const root = new protobuf.Root();
    root.resolvePath = (_origin, target) => (path.isAbsolute(target) ? target : path.join(PROTO_ROOT, target));
    root.loadSync(['opentelemetry/proto/collector/trace/v1/trace_service.proto', 'google/rpc/status.proto'], { keepCase: false });
    root.resolveAll();
    types = {
        request: root.lookupType('opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest'),
        response: root.lookupType('opentelemetry.proto.collector.trace.v1.ExportTraceServiceResponse'),
        status: root.lookupType('google.rpc.Status'),
        retryInfo: root.lookupType('google.rpc.RetryInfo'),
    };
    return types;
}

/**
 * An ExportTraceServiceRequest with one resource and scope holding spans
 * given as {traceId, spanId (hex), name?, attributes?}.
 */
export function exportRequest(spans) {
    const { request } = loadTypes();
    const msg = request.fromObject({
        resourceSpans: [
            {
                resource: { attributes: [{ key: 'service.name', value: { stringValue: 'grpc-it' } }] },
                scopeSpans: [
                    {
                        scope: { name: 'grpc-it-scope' },
                        spans: spans.map((s) => ({
                            traceId: Buffer.from(s.traceId, 'hex'),
                            spanId: Buffer.from(s.spanId, 'hex'),
                            name: s.name || `op-${s.spanId.slice(-4)}`,
                            kind: 1,
                            startTimeUnixNano: 1700000000000000000n.toString(),
                            endTimeUnixNano: 1700000001000000000n.toString(),
                            attributes: s.attributes || [{ key: 'input.value', value: { stringValue: 'hello' } }],
                        })),
                    },
                ],
            },
        ],
    });
    return Buffer.from(request.encode(msg).finish());
}

/** Decodes an ExportTraceServiceResponse into a plain object. */
export function decodeExportResponse(buf) {
    const { response } = loadTypes();
    return response.toObject(response.decode(buf), { longs: Number, defaults: false });
}

/**
 * Decodes a grpc-status-details-bin value (base64, padding optional) into
 * {code, message, retryDelaySeconds, typeUrls}.
 */
export function decodeStatusDetails(value) {
    const { status, retryInfo } = loadTypes();
    const st = status.decode(Buffer.from(value, 'base64'));
    let retryDelaySeconds = null;
    const typeUrls = [];
    for (const d of st.details || []) {
        typeUrls.push(d.typeUrl);
        if (d.typeUrl === 'type.googleapis.com/google.rpc.RetryInfo') {
            const info = retryInfo.decode(d.value);
            retryDelaySeconds = info.retryDelay ? Number(info.retryDelay.seconds) : null;
        }
    }
    return { code: st.code, message: st.message, retryDelaySeconds, typeUrls };
}

/**
 * One gRPC message: flag byte, 4-byte big-endian length, bytes. `length`
 * overrides the announced length (to lie); `flag` the first byte.
 */
export function frame(msg, { flag = 0, length } = {}) {
    const head = Buffer.alloc(5);
    head[0] = flag;
    head.writeUInt32BE(length === undefined ? msg.length : length, 1);
    return Buffer.concat([head, msg]);
}

/** A gzip-compressed message with the compressed flag set. */
export function gzipFrame(msg) {
    return frame(zlib.gzipSync(msg), { flag: 1 });
}

/** Opens an h2c connection; resolves once the server's SETTINGS arrived. */
export function connect(port) {
    return new Promise((resolve, reject) => {
        const session = http2.connect(`http://127.0.0.1:${port}`);
        const onError = (err) => reject(err);
        session.once('error', onError);
        session.once('connect', () => {
            session.off('error', onError);
            // Errors after connecting reach the pending calls instead.
            session.on('error', () => {});
            resolve(session);
        });
    });
}

/**
 * Starts one call. Returns {req, result}: result resolves with {status,
 * headers, trailers, data, grpcStatus, grpcMessage, detailsBin}. With
 * `body` the request ends after it; without, the caller writes and ends
 * req itself.
 */
export function startCall(session, { path: callPath = EXPORT_PATH, body, headers = {}, timeoutMs = 15000 } = {}) {
    const req = session.request({
        ':method': 'POST',
        ':path': callPath,
        'content-type': 'application/grpc',
        te: 'trailers',
        ...headers,
    });
    const result = new Promise((resolve, reject) => {
        let resHeaders = null;
        let trailers = {};
        const chunks = [];
        const timer = setTimeout(() => {
            req.close(http2.constants.NGHTTP2_CANCEL);
            reject(new Error(`call ${callPath} timed out after ${timeoutMs} ms`));
        }, timeoutMs);
        req.on('response', (h) => (resHeaders = h));
        req.on('trailers', (t) => (trailers = t));
        req.on('data', (d) => chunks.push(d));
        req.on('error', (err) => {
            clearTimeout(timer);
            reject(err);
        });
        let settled = false;
        // The answer is complete when the server ends its side, even while
        // the request side is still open.
        const finish = () => {
            if (settled) return;
            settled = true;
            clearTimeout(timer);
            if (!resHeaders) {
                reject(new Error(`call ${callPath} closed without a response (rst code ${req.rstCode})`));
                return;
            }
            // A trailers-only answer carries the status in its headers.
            const pick = (name) => (trailers[name] !== undefined ? trailers[name] : resHeaders[name]);
            const grpcStatus = pick('grpc-status');
            const rawMessage = pick('grpc-message');
            resolve({
                status: resHeaders[':status'],
                headers: resHeaders,
                trailers,
                data: Buffer.concat(chunks),
                grpcStatus: grpcStatus === undefined ? undefined : Number(grpcStatus),
                grpcMessage: rawMessage === undefined ? undefined : decodeURIComponent(rawMessage),
                detailsBin: pick('grpc-status-details-bin'),
            });
        };
        req.on('end', finish);
        req.on('close', finish);
    });
    if (body !== undefined) req.end(body);
    return { req, result };
}

/** One call with a complete body. */
export function call(session, options) {
    return startCall(session, options).result;
}

/** The single message of an OK answer (the frame's payload). */
export function messageOf(res) {
    if (res.data.length < 5) throw new Error(`answer has ${res.data.length} bytes, no message`);
    const len = res.data.readUInt32BE(1);
    if (res.data[0] !== 0 || res.data.length !== 5 + len) throw new Error('answer is not one uncompressed message');
    return res.data.subarray(5);
}

/** Closes a session and waits for it. */
export function close(session) {
    return new Promise((resolve) => {
        if (session.closed || session.destroyed) {
            resolve();
            return;
        }
        session.close(() => resolve());
    });
}
