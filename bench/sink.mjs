// SPDX-License-Identifier: Apache-2.0
// sink.mjs - the Langfuse stand-in of the benchmark: accepts every
// POST /api/public/ingestion with a 207 {"successes":[],"errors":[]} (which
// the daemon reads as "all delivered") and counts what it received, as
// cheaply as it can so that it never becomes the bottleneck.
//
// Events are counted by searching each body for the envelope marker
// `-create","timestamp":"` (the encoder writes every event as
// {"id":..,"type":"<kind>-create","timestamp":..,"body":..}); the first few
// bodies are also parsed with JSON.parse and the two counts compared, so a
// change of the envelope shows up as a "count_mismatches" instead of a wrong
// figure.
//
// Usage: node sink.mjs [--port N] [--host 127.0.0.1] [--verify-bodies N]
//                      [--max-seconds N]
// Prints "sink listening port=N" once ready. GET /stats answers the counters
// as JSON; SIGTERM/SIGINT prints them and exits. The process exits by
// itself after --max-seconds (default 900) so it can never be left behind.

import http from 'node:http';

const args = process.argv.slice(2);
function opt(name, dflt) {
    const i = args.indexOf(name);
    return i >= 0 && i + 1 < args.length ? args[i + 1] : dflt;
}

const host = opt('--host', '127.0.0.1');
const port = Number(opt('--port', '0'));
const verifyBodies = Number(opt('--verify-bodies', '3'));
const maxSeconds = Number(opt('--max-seconds', '900'));

const MARKER = Buffer.from('-create","timestamp":"');
const REPLY = Buffer.from('{"successes":[],"errors":[]}');

const stats = {
    requests: 0,
    events: 0,
    bytes: 0,
    first_ms: 0, // wall clock of the first body, ms since the epoch
    last_ms: 0, // wall clock of the last body
    verified_bodies: 0,
    count_mismatches: 0,
    bad_requests: 0,
};

function countMarkers(buf) {
    let n = 0;
    let at = buf.indexOf(MARKER, 0);
    while (at >= 0) {
        n++;
        at = buf.indexOf(MARKER, at + MARKER.length);
    }
    return n;
}

function snapshot() {
    const cpu = process.cpuUsage();
    return { ...stats, cpu_user_ms: cpu.user / 1000, cpu_system_ms: cpu.system / 1000, now_ms: Date.now() };
}

const server = http.createServer((req, res) => {
    if (req.method === 'GET' && req.url === '/stats') {
        const body = Buffer.from(JSON.stringify(snapshot()));
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': body.length });
        res.end(body);
        return;
    }
    if (req.method !== 'POST' || !req.url.startsWith('/api/public/ingestion')) {
        stats.bad_requests++;
        res.writeHead(404, { 'content-length': 0 });
        res.end();
        return;
    }
    const chunks = [];
    let len = 0;
    req.on('data', (c) => {
        chunks.push(c);
        len += c.length;
    });
    req.on('end', () => {
        const body = chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, len);
        const n = countMarkers(body);
        if (stats.verified_bodies < verifyBodies) {
            stats.verified_bodies++;
            try {
                const parsed = JSON.parse(body.toString('utf8'));
                if (!Array.isArray(parsed.batch) || parsed.batch.length !== n) stats.count_mismatches++;
            } catch {
                stats.count_mismatches++;
            }
        }
        const now = Date.now();
        if (stats.requests === 0) stats.first_ms = now;
        stats.last_ms = now;
        stats.requests++;
        stats.events += n;
        stats.bytes += len;
        res.writeHead(207, { 'content-type': 'application/json', 'content-length': REPLY.length });
        res.end(REPLY);
    });
});
server.keepAliveTimeout = 60000;
server.headersTimeout = 65000;

function stop() {
    process.stdout.write(`sink stats ${JSON.stringify(snapshot())}\n`);
    server.close();
    process.exit(0);
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
setTimeout(stop, maxSeconds * 1000).unref();

server.listen(port, host, () => {
    process.stdout.write(`sink listening port=${server.address().port}\n`);
});
