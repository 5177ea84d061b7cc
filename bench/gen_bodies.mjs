// SPDX-License-Identifier: Apache-2.0
// gen_bodies.mjs - prepares a protobuf OTLP fixture so that every request of
// the benchmark can carry trace ids of its own.
//
// The daemon holds the spans of a trace for a window and collapses copies
// of a span (same trace id and span id) that meet in it, so sending one
// body over and over would measure one set of events, not the load. This
// script replaces each distinct trace id of FILE by a placeholder, the same
// 16 bytes wherever that trace id occurs (spans and links):
//
//   bytes 0..11  the marker "o2l-bench-id" (ASCII)
//   bytes 12..15 the trace's index in the body, big-endian (0, 1, 2, ...)
//
// The load tool then rewrites bytes 0..7 of every placeholder with a
// per-request counter (bench/wrk/post_body.lua does it for wrk), so trace
// k of request n gets the id  n (8 bytes) || "h-id" || k (4 bytes): unique
// per request and per trace, never all zero. Span ids are kept. In an
// OTLP/JSON body the same placeholder is its 32 hex digits
// (6f326c2d62656e63682d6964 then the index as 8 hex digits).
//
// Modes:
//   node gen_bodies.mjs --in FILE --out OUT
//       writes the placeholder body (protobuf) to OUT
//   node gen_bodies.mjs --in FILE --pool N --out OUT [--gzip LEVEL] [--grpc]
//       writes N bodies with the counters 1..N already filled in, each
//       gzipped when --gzip is given (level 1..9) and framed as one gRPC
//       message (flag byte, 4-byte length) when --grpc is given, as a pool
//       file: for each body its length (4 bytes, big-endian) then its
//       bytes. For bodies the load tool cannot rewrite itself (gzip).
//
// FILE may already hold placeholders (they are kept as they are). Needs
// protobufjs, taken from tests/integration/node_modules.

import { createRequire } from 'node:module';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '..');

const args = process.argv.slice(2);
function opt(name, dflt) {
    const i = args.indexOf(name);
    return i >= 0 && i + 1 < args.length ? args[i + 1] : dflt;
}
const input = opt('--in', null);
const out = opt('--out', null);
const pool = Number(opt('--pool', '0'));
const gzipLevel = args.includes('--gzip') ? Number(opt('--gzip', '9')) : 0;
const grpc = args.includes('--grpc');
if (!input || !out || !Number.isInteger(pool) || pool < 0 || pool > 10000000 ||
    !Number.isInteger(gzipLevel) || gzipLevel < 0 || gzipLevel > 9) {
    process.stderr.write('usage: gen_bodies.mjs --in FILE --out OUT [--pool N [--gzip LEVEL] [--grpc]]\n');
    process.exit(2);
}

const MARKER = Buffer.from('o2l-bench-id');

function placeholder(k) {
    const b = Buffer.alloc(16);
    MARKER.copy(b, 0);
    b.writeUInt32BE(k, 12);
    return b;
}

/* The body with placeholder trace ids, re-encoded with protobufjs. */
function withPlaceholders(bytes) {
    const require = createRequire(path.join(repo, 'tests/integration/package.json'));
    const protobuf = require('protobufjs');
    const root = new protobuf.Root();
    root.resolvePath = (_origin, target) => path.join(repo, 'proto', target);
    root.loadSync('opentelemetry/proto/collector/trace/v1/trace_service.proto', { keepCase: false });
    const Request = root.lookupType('opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest');
    const msg = Request.decode(bytes);
    const index = new Map();
    const idOf = (id) => {
        const b = Buffer.from(id);
        if (b.length === 16 && b.subarray(0, 12).equals(MARKER)) return b; // already one
        const hex = b.toString('hex');
        if (!index.has(hex)) index.set(hex, placeholder(index.size));
        return index.get(hex);
    };
    for (const rs of msg.resourceSpans || []) {
        for (const ss of rs.scopeSpans || []) {
            for (const s of ss.spans || []) {
                s.traceId = idOf(s.traceId);
                for (const l of s.links || []) {
                    if (l.traceId && l.traceId.length) l.traceId = idOf(l.traceId);
                }
            }
        }
    }
    return Buffer.from(Request.encode(msg).finish());
}

/* Offsets of the placeholders in a body (bytes 0..7 of each are rewritten). */
function offsets(body) {
    const at = [];
    let i = body.indexOf(MARKER, 0);
    while (i >= 0) {
        at.push(i);
        i = body.indexOf(MARKER, i + 16);
    }
    return at;
}

const body = withPlaceholders(fs.readFileSync(input));
const slots = offsets(body);
if (slots.length === 0) {
    process.stderr.write(`gen_bodies.mjs: ${input} has no spans\n`);
    process.exit(1);
}
fs.mkdirSync(path.dirname(path.resolve(out)), { recursive: true });

if (pool === 0) {
    fs.writeFileSync(out, body);
    process.stdout.write(`wrote ${out}: ${body.length} bytes, ${slots.length} trace ids to rewrite\n`);
} else {
    const fd = fs.openSync(out, 'w');
    const work = Buffer.from(body);
    let total = 0;
    for (let n = 1; n <= pool; n++) {
        for (const at of slots) work.writeBigUInt64BE(BigInt(n), at);
        let b = gzipLevel ? zlib.gzipSync(work, { level: gzipLevel }) : work;
        if (grpc) {
            const f = Buffer.alloc(5 + b.length);
            f[0] = gzipLevel ? 1 : 0;
            f.writeUInt32BE(b.length, 1);
            b.copy(f, 5);
            b = f;
        }
        const len = Buffer.alloc(4);
        len.writeUInt32BE(b.length, 0);
        fs.writeSync(fd, len);
        fs.writeSync(fd, b);
        total += b.length;
    }
    fs.closeSync(fd);
    process.stdout.write(`wrote ${out}: ${pool} bodies, ${Math.round(total / pool)} bytes each on average\n`);
}
