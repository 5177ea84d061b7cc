// SPDX-License-Identifier: Apache-2.0
//
// Self-test of the fake Langfuse (tests/fake_langfuse/server.mjs): it must
// accept what Langfuse accepts and refuse, with a reason, each rule the
// bridge promises to keep, on the ingestion route and on the OpenTelemetry
// route, and turn traces away from ingestion in v4 mode. OTLP protobuf
// requests are built with protobufjs from proto/, loaded here on its own
// (snake_case names) so the fake's decoder is not checked against itself.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { after, before, beforeEach, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import zlib from 'node:zlib';

import protobuf from 'protobufjs';

import { startFakeLangfuse, V4_REFUSED_TYPES } from '../fake_langfuse/server.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const SERVER = path.resolve(here, '../fake_langfuse/server.mjs');
const PK = 'pk-lf-selftest';
const SK = 'sk-lf-selftest';
const TRACE = '0af7651916cd43dd8448eb211c80319c';
const SPAN = 'b7ad6b7169203331';

const auth = (pk = PK, sk = SK) => 'Basic ' + Buffer.from(`${pk}:${sk}`).toString('base64');

async function post(url, body, { authorization = auth(), contentType = 'application/json', method = 'POST' } = {}) {
    const res = await fetch(`${url}/api/public/ingestion`, {
        method,
        headers: { authorization, 'content-type': contentType },
        body: method === 'POST' ? (typeof body === 'string' ? body : JSON.stringify(body)) : undefined,
    });
    const text = await res.text();
    let json = null;
    try {
        json = JSON.parse(text);
    } catch {
        json = null;
    }
    return { status: res.status, json, headers: res.headers };
}

// Polls fn (bounded: 10 s) until it is truthy.
async function waitUntil(fn, what, intervalMs = 20) {
    const deadline = Date.now() + 10000;
    while (!(await fn())) {
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
        await new Promise((r) => setTimeout(r, intervalMs));
    }
}

// A POST with node:http that reports how much of the answer arrived:
// {status, contentLength, received, error}. Never rejects. onSent() is
// called once the request is written. Goes to the ingestion route unless
// |target| names another path and content type.
function rawPost(port, body, onSent = () => {}, target = {}) {
    const { path: reqPath = '/api/public/ingestion', contentType = 'application/json' } = target;
    return new Promise((resolve) => {
        const out = { status: 0, contentLength: 0, received: 0, error: null };
        const timer = setTimeout(() => {
            out.error = out.error || new Error('no end within 10 s');
            req.destroy();
        }, 10000);
        const done = () => {
            clearTimeout(timer);
            resolve(out);
        };
        const req = http.request(
            { host: '127.0.0.1', port, method: 'POST', path: reqPath, agent: false, headers: { authorization: auth(), 'content-type': contentType } },
            (res) => {
                out.status = res.statusCode;
                out.contentLength = Number(res.headers['content-length']);
                res.on('data', (c) => (out.received += c.length));
                res.on('error', (e) => (out.error = out.error || e));
                res.on('aborted', () => (out.error = out.error || new Error('aborted')));
                res.on('close', () => {
                    if (out.received < out.contentLength) out.error = out.error || new Error('short body');
                    done();
                });
            },
        );
        req.on('error', (e) => {
            out.error = out.error || e;
            done();
        });
        req.on('finish', onSent);
        req.end(body);
    });
}

// The error code of a plain TCP connect to the port, or null when it connects.
function connectError(port) {
    return new Promise((resolve) => {
        const sock = net.connect(port, '127.0.0.1');
        sock.once('connect', () => {
            sock.destroy();
            resolve(null);
        });
        sock.once('error', (e) => resolve(e.code || String(e)));
    });
}

function envelope(type, body, extra = {}) {
    return { id: `${TRACE}-${body.id}-${type}`, type, timestamp: '2025-01-31T08:15:04.123456Z', body, ...extra };
}

const traceBody = () => ({
    id: TRACE,
    timestamp: '2025-01-31T08:15:02.123456Z',
    name: 'chat turn',
    userId: 'user-7',
    sessionId: 'sess-1',
    tags: ['a', 'b'],
    environment: 'production',
    public: false,
    metadata: { k: 'v' },
    input: 'hello',
});

const generationBody = () => ({
    id: SPAN,
    traceId: TRACE,
    name: 'ChatOpenAI',
    startTime: '2025-01-31T08:15:02.123456Z',
    endTime: '2025-01-31T08:15:04.123Z',
    completionStartTime: '2025-01-31T08:15:02.5+01:00',
    level: 'DEFAULT',
    environment: 'production',
    model: 'gpt-4o',
    modelParameters: { temperature: 0.2, stop: ['\n'], stream: false },
    usageDetails: { input: 12, output: 30 },
    costDetails: { total: 0.00042 },
    promptName: 'support',
    promptVersion: 3,
    input: [{ role: 'user', content: 'hi' }],
    output: { role: 'assistant', content: null, tool_calls: [] },
});

const spanBody = () => ({ id: '00f067aa0ba902b7', traceId: TRACE, parentObservationId: SPAN, name: 'step', startTime: '2025-01-31T08:15:02Z', endTime: '2025-01-31T08:15:03Z' });

describe('fake langfuse', () => {
    let fake;

    before(async () => {
        fake = await startFakeLangfuse({ publicKey: PK, secretKey: SK });
    });
    after(async () => {
        await fake.close();
    });
    beforeEach(() => fake.reset());

    test('accepts valid events of every type the bridge sends', async () => {
        const types = ['agent-create', 'tool-create', 'chain-create', 'retriever-create', 'embedding-create', 'evaluator-create', 'guardrail-create'];
        const batch = [
            envelope('trace-create', traceBody()),
            envelope('generation-create', generationBody()),
            envelope('span-create', spanBody()),
            envelope('event-create', { id: `${SPAN}-event-0`, traceId: TRACE, startTime: '2025-01-31T08:15:02Z', level: 'ERROR', statusMessage: 'boom' }),
            ...types.map((t, i) => envelope(t, { id: `a${i}`, traceId: TRACE, model: 'm', usageDetails: { input: 1 } })),
        ];
        const r = await post(fake.url, { batch });
        assert.equal(r.status, 207);
        assert.deepEqual(r.json.errors, []);
        assert.equal(r.json.successes.length, batch.length);
        assert.deepEqual(r.json.successes[0], { id: batch[0].id, status: 201 });
        assert.equal(fake.events().length, batch.length);
        assert.deepEqual(fake.events()[1], batch[1]);
        assert.equal(fake.batches(), 1);
        assert.deepEqual(fake.rejections(), []);
    });

    const broken = [
        ['envelope id missing', () => ({ ...envelope('span-create', spanBody()), id: '' }), /id must be a non-empty string/],
        ['unknown event type', () => envelope('span-upsert', spanBody()), /known event type/],
        ['envelope timestamp without offset', () => envelope('span-create', spanBody(), { timestamp: '2025-01-31T08:15:04' }), /timestamp must be an ISO-8601/],
        ['unknown envelope field', () => envelope('span-create', spanBody(), { usage: {} }), /unknown envelope field usage/],
        ['body not an object', () => ({ ...envelope('span-create', spanBody()), body: [] }), /body must be an object/],
        ['body.id missing', () => envelope('span-create', { ...spanBody(), id: undefined }), /body.id must be a non-empty string/],
        ['traceId missing', () => envelope('generation-create', { ...generationBody(), traceId: undefined }), /body.traceId/],
        ['startTime not ISO', () => envelope('span-create', { ...spanBody(), startTime: '1738311302' }), /body.startTime must be an ISO-8601/],
        ['level not in the enum', () => envelope('span-create', { ...spanBody(), level: 'INFO' }), /body.level must be one of/],
        ['float usage', () => envelope('generation-create', { ...generationBody(), usageDetails: { input: 1.5 } }), /usageDetails.input must be an integer/],
        ['negative usage', () => envelope('generation-create', { ...generationBody(), usageDetails: { input: -1 } }), /usageDetails.input must be an integer >= 0/],
        ['string cost', () => envelope('generation-create', { ...generationBody(), costDetails: { total: '0.1' } }), /costDetails.total must be a number/],
        ['prompt name without version', () => envelope('generation-create', { ...generationBody(), promptVersion: undefined }), /together/],
        ['prompt version not an integer', () => envelope('generation-create', { ...generationBody(), promptVersion: '3' }), /promptVersion must be an integer/],
        ['null field', () => envelope('span-create', { ...spanBody(), name: null }), /body.name is null/],
        ['null inside usage', () => envelope('generation-create', { ...generationBody(), usageDetails: { input: null } }), /usageDetails/],
        ['unknown body field', () => envelope('span-create', { ...spanBody(), colour: 'red' }), /unknown field body.colour/],
        ['endTime on an event', () => envelope('event-create', { ...spanBody() }), /event-create must not have endTime/],
        ['model on a span', () => envelope('span-create', { ...spanBody(), model: 'gpt-4o' }), /span-create must not have model/],
        ['usage on an event', () => envelope('event-create', { id: 'e1', traceId: TRACE, usageDetails: { input: 1 } }), /event-create must not have usageDetails/],
        ['tags not strings', () => envelope('trace-create', { ...traceBody(), tags: ['a', 1] }), /tags must be an array of strings/],
        ['metadata not an object', () => envelope('trace-create', { ...traceBody(), metadata: 'x' }), /metadata must be an object/],
        ['public not boolean', () => envelope('trace-create', { ...traceBody(), public: 'yes' }), /public must be a boolean/],
        ['environment not normalised', () => envelope('trace-create', { ...traceBody(), environment: 'Prod' }), /environment must match/],
        ['environment with langfuse prefix', () => envelope('trace-create', { ...traceBody(), environment: 'langfuse-test' }), /must not start with "langfuse"/],
        ['trace name too long', () => envelope('trace-create', { ...traceBody(), name: 'x'.repeat(1001) }), /longer than 1000/],
        ['id with carriage return', () => envelope('span-create', { ...spanBody(), id: 'a\rb' }), /carriage return/],
        ['model parameter object of numbers', () => envelope('generation-create', { ...generationBody(), modelParameters: { x: { a: 1 } } }), /modelParameters.x/],
    ];

    for (const [name, make, reason] of broken) {
        test(`rejects: ${name}`, async () => {
            const good = envelope('trace-create', traceBody());
            const bad = make();
            const r = await post(fake.url, { batch: [good, bad] });
            assert.equal(r.status, 207);
            assert.equal(r.json.successes.length, 1);
            assert.equal(r.json.errors.length, 1);
            assert.equal(r.json.errors[0].status, 400);
            assert.match(r.json.errors[0].message, reason);
            assert.equal(fake.events().length, 1);
            assert.equal(fake.rejections().length, 1);
            assert.match(fake.rejections()[0].reason, reason);
        });
    }

    test('answers 401 without the right credentials', async () => {
        for (const authorization of ['', auth(PK, 'wrong'), auth('pk-other', SK), 'Bearer x']) {
            const r = await post(fake.url, { batch: [] }, { authorization });
            assert.equal(r.status, 401);
            assert.equal(typeof r.json.message, 'string');
        }
        assert.equal(fake.batches(), 0);
    });

    test('answers 400 for a body that is not a batch', async () => {
        assert.equal((await post(fake.url, 'not json')).status, 400);
        assert.equal((await post(fake.url, { events: [] })).status, 400);
        assert.equal((await post(fake.url, { batch: {} })).status, 400);
        assert.equal((await post(fake.url, { batch: [] }, { contentType: 'text/plain' })).status, 400);
    });

    test('answers 413 over 4.5 MB', async () => {
        const big = envelope('span-create', { ...spanBody(), input: 'x'.repeat(4_600_000) });
        const r = await post(fake.url, { batch: [big] });
        assert.equal(r.status, 413);
        assert.equal(fake.events().length, 0);
    });

    test('answers 404 and 405 outside the one route', async () => {
        const r404 = await fetch(`${fake.url}/api/public/traces`, { method: 'POST', headers: { authorization: auth() } });
        assert.equal(r404.status, 404);
        const r405 = await post(fake.url, null, { method: 'GET' });
        assert.equal(r405.status, 405);
    });

    test('fault: whole-request status with Retry-After, for N requests', async () => {
        fake.setFault({ type: 'status', status: 429, retryAfter: '1', count: 2 });
        const body = { batch: [envelope('trace-create', traceBody())] };
        const r1 = await post(fake.url, body);
        assert.equal(r1.status, 429);
        assert.equal(r1.headers.get('retry-after'), '1');
        assert.equal((await post(fake.url, body)).status, 429);
        assert.equal((await post(fake.url, body)).status, 207);
        assert.equal(fake.events().length, 1);
    });

    test('fault: per-event 500 and 400 for the next N events', async () => {
        fake.setFault({ type: 'event-status', status: 500, count: 1 });
        const batch = [envelope('trace-create', traceBody()), envelope('span-create', spanBody())];
        let r = await post(fake.url, { batch });
        assert.equal(r.json.errors.length, 1);
        assert.equal(r.json.errors[0].status, 500);
        assert.equal(r.json.errors[0].id, batch[0].id);
        assert.equal(r.json.successes.length, 1);
        assert.equal(fake.rejections().length, 0);

        fake.setFault({ type: 'event-status', status: 400, count: 1 });
        r = await post(fake.url, { batch });
        assert.equal(r.json.errors[0].status, 400);
        assert.equal(fake.rejections().length, 1);
        assert.equal(fake.events().length, 2);
    });

    test('fault: slow answers', async () => {
        fake.setFault({ type: 'slow', ms: 500, count: 1 });
        // The slowed request is overtaken by a later, plain one.
        const order = [];
        const slow = post(fake.url, { batch: [] }).then((r) => (order.push('slow'), r));
        await new Promise((r) => setTimeout(r, 50));
        const plain = post(fake.url, { batch: [] }).then((r) => (order.push('plain'), r));
        const [a, b] = await Promise.all([slow, plain]);
        assert.equal(a.status, 207);
        assert.equal(b.status, 207);
        assert.deepEqual(order, ['plain', 'slow']);
    });

    test('fault: Retry-After as an HTTP date', async () => {
        fake.setFault({ type: 'status', status: 503, retryAfterDate: 5000 });
        const r = await post(fake.url, { batch: [] });
        assert.equal(r.status, 503);
        const value = r.headers.get('retry-after');
        assert.match(value, /^[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT$/);
        const ahead = Date.parse(value) - Date.now();
        assert.ok(ahead > 2000 && ahead <= 5000, `date ${ahead} ms ahead`);
        assert.throws(() => fake.setFault({ type: 'status', status: 503, retryAfter: '1', retryAfterDate: 10 }), /not both/);
    });

    test('fault: 413 only for requests with at least minEvents events', async () => {
        fake.setFault({ type: 'status', status: 413, minEvents: 2, count: 100 });
        const two = [envelope('trace-create', traceBody()), envelope('span-create', spanBody())];
        assert.equal((await post(fake.url, { batch: two })).status, 413);
        for (const ev of two) assert.equal((await post(fake.url, { batch: [ev] })).status, 207);
        assert.equal((await post(fake.url, { batch: two })).status, 413);
        assert.equal(fake.events().length, 2);
        assert.deepEqual(fake.requests().map((r) => [r.status, r.events, r.fault]), [
            [413, 2, 'status'],
            [207, 1, null],
            [207, 1, null],
            [413, 2, 'status'],
        ]);
        assert.deepEqual(fake.requests()[0].ids, two.map((e) => e.id));
    });

    test('fault: per-event statuses round-robin within one batch', async () => {
        fake.setFault({ type: 'event-status', statuses: [400, 500, 201], count: 1 });
        const batch = [0, 1, 2, 3, 4].map((i) => envelope('span-create', { ...spanBody(), id: `s${i}` }));
        const r = await post(fake.url, { batch });
        assert.equal(r.status, 207);
        const statusOf = Object.fromEntries([...r.json.errors, ...r.json.successes].map((e) => [e.id, e.status]));
        assert.deepEqual(batch.map((e) => statusOf[e.id]), [400, 500, 201, 400, 500]);
        assert.match(r.json.errors.find((e) => e.status === 400).message, /injected/);
        assert.deepEqual(fake.rejections().map((x) => x.id), [batch[0].id, batch[3].id]);
        assert.deepEqual(fake.events().map((e) => e.id), [batch[2].id]);
        assert.deepEqual(fake.requests()[0].errors, [
            { id: batch[0].id, status: 400 },
            { id: batch[1].id, status: 500 },
            { id: batch[3].id, status: 400 },
            { id: batch[4].id, status: 500 },
        ]);
        // Used up: the next batch goes through whole.
        const again = await post(fake.url, { batch });
        assert.equal(again.json.successes.length, 5);
        assert.throws(() => fake.setFault({ type: 'event-status', statuses: [] }), /non-empty/);
    });

    test('deliveries are counted per event id', async () => {
        const a = envelope('trace-create', traceBody());
        const b = envelope('span-create', spanBody());
        await post(fake.url, { batch: [a, b] });
        await post(fake.url, { batch: [a] });
        await post(fake.url, { batch: [a] });
        assert.equal(fake.deliveries(a.id), 3);
        assert.equal(fake.deliveries(b.id), 1);
        assert.equal(fake.deliveries('never'), 0);
        assert.deepEqual(fake.deliveryCounts(), { [a.id]: 3, [b.id]: 1 });
        assert.equal(fake.duplicates(), 2);
        fake.reset();
        assert.equal(fake.duplicates(), 0);
    });

    test('fault: an answer later than the client waits accepts nothing', async () => {
        fake.setFault({ type: 'slow', ms: 600, count: 1 });
        const ev = envelope('trace-create', traceBody());
        await assert.rejects(
            fetch(`${fake.url}/api/public/ingestion`, {
                method: 'POST',
                headers: { authorization: auth(), 'content-type': 'application/json' },
                body: JSON.stringify({ batch: [ev] }),
                signal: AbortSignal.timeout(100),
            }),
        );
        await waitUntil(() => fake.requests().length === 1, 'the slow request to be logged');
        assert.equal(fake.requests()[0].status, 0);
        assert.equal(fake.requests()[0].fault, 'slow');
        assert.equal(fake.events().length, 0);
        // The client re-sends; now it counts, once.
        assert.equal((await post(fake.url, { batch: [ev] })).status, 207);
        assert.equal(fake.deliveries(ev.id), 1);
    });

    test('fault: slow with acceptFirst accepts although the client gave up', async () => {
        fake.setFault({ type: 'slow', ms: 600, acceptFirst: true });
        const ev = envelope('trace-create', traceBody());
        await assert.rejects(
            fetch(`${fake.url}/api/public/ingestion`, {
                method: 'POST',
                headers: { authorization: auth(), 'content-type': 'application/json' },
                body: JSON.stringify({ batch: [ev] }),
                signal: AbortSignal.timeout(100),
            }),
        );
        assert.equal(fake.deliveries(ev.id), 1);
        await post(fake.url, { batch: [ev] });
        assert.equal(fake.deliveries(ev.id), 2);
        assert.equal(fake.duplicates(), 1);
        await waitUntil(() => fake.requests().length === 2, 'both requests to be logged');
        const slow = fake.requests().find((r) => r.fault === 'slow');
        assert.equal(slow.status, 0);
        assert.equal(slow.answered, 207);
    });

    test('fault: a slow answer the client waits for is accepted', async () => {
        fake.setFault({ type: 'slow', ms: 200 });
        const r = await post(fake.url, { batch: [envelope('trace-create', traceBody())] });
        assert.equal(r.status, 207);
        assert.equal(fake.events().length, 1);
        assert.equal(fake.requests()[0].fault, 'slow');
    });

    test('fault: reset sends head and half a body, then resets', async () => {
        fake.setFault({ type: 'reset', count: 1 });
        const ev = envelope('trace-create', traceBody());
        const raw = await rawPost(fake.port, JSON.stringify({ batch: [ev] }));
        assert.equal(raw.status, 207);
        assert.ok(raw.received > 0 && raw.received < raw.contentLength, `${raw.received} of ${raw.contentLength} bytes`);
        assert.ok(raw.error, 'the response ended in an error');
        assert.equal(fake.events().length, 0);
        assert.equal(fake.requests()[0].status, 0);
        assert.equal(fake.requests()[0].fault, 'reset');

        fake.setFault({ type: 'reset', acceptFirst: true });
        await assert.rejects(async () => {
            const res = await fetch(`${fake.url}/api/public/ingestion`, {
                method: 'POST',
                headers: { authorization: auth(), 'content-type': 'application/json' },
                body: JSON.stringify({ batch: [ev] }),
            });
            await res.text();
        });
        assert.equal(fake.deliveries(ev.id), 1);
        assert.equal((await post(fake.url, { batch: [ev] })).status, 207);
    });

    test('down() refuses connections and drops open ones; up() serves on the same port', async () => {
        const port = fake.port;
        // A keep-alive connection in the middle of a slow request.
        fake.setFault({ type: 'slow', ms: 2000 });
        let sent = false;
        const pending = rawPost(port, JSON.stringify({ batch: [envelope('trace-create', traceBody())] }), () => (sent = true));
        await waitUntil(() => sent, 'the slow request to be sent');
        // Give the fake a moment to read it; it then sleeps in the fault.
        await new Promise((r) => setTimeout(r, 100));
        try {
            await fake.down();
            assert.equal(fake.isUp(), false);
            const cut = await pending;
            assert.ok(cut.error, 'the open request was cut off');
            assert.equal(await connectError(port), 'ECONNREFUSED');
            await assert.rejects(post(fake.url, { batch: [] }));
            await fake.down(); // twice is harmless
        } finally {
            await fake.up();
        }
        assert.equal(fake.isUp(), true);
        assert.equal(fake.port, port);
        const r = await post(fake.url, { batch: [envelope('trace-create', traceBody())] });
        assert.equal(r.status, 207);
        assert.equal(fake.events().length, 1, 'the request cut off by down() was not accepted');
        await fake.up(); // up while up is harmless
    });

    test('control: POST /_fake/down takes the fake away for a while', async () => {
        const r = await fetch(`${fake.url}/_fake/down`, { method: 'POST', body: JSON.stringify({ ms: 300 }) });
        assert.equal(r.status, 200);
        await waitUntil(async () => (await connectError(fake.port)) === 'ECONNREFUSED', 'the fake to go down', 10);
        await waitUntil(async () => (await connectError(fake.port)) === null, 'the fake to come back', 50);
        assert.equal((await post(fake.url, { batch: [] })).status, 207);
        const bad = await fetch(`${fake.url}/_fake/down`, { method: 'POST', body: '{"ms": -1}' });
        assert.equal(bad.status, 400);
    });

    test('control endpoints mirror the module API', async () => {
        await post(fake.url, { batch: [envelope('trace-create', traceBody())] });
        let r = await fetch(`${fake.url}/_fake/events`);
        let doc = await r.json();
        assert.equal(doc.events.length, 1);
        assert.equal(doc.batches, 1);

        r = await fetch(`${fake.url}/_fake/fault`, { method: 'POST', body: JSON.stringify({ type: 'status', status: 503, count: 1 }) });
        assert.equal(r.status, 200);
        assert.equal((await post(fake.url, { batch: [] })).status, 503);

        r = await fetch(`${fake.url}/_fake/fault`, { method: 'POST', body: '{"type":"teleport"}' });
        assert.equal(r.status, 400);

        await fetch(`${fake.url}/_fake/reset`, { method: 'POST' });
        doc = await (await fetch(`${fake.url}/_fake/events`)).json();
        assert.equal(doc.events.length, 0);
        assert.equal(doc.batches, 0);
    });
});

test('command line: prints the port and serves', async () => {
    const child = spawn(process.execPath, [SERVER, '--port', '0', '--public-key', PK, '--secret-key', SK], { stdio: ['ignore', 'pipe', 'inherit'] });
    try {
        const port = await new Promise((resolve, reject) => {
            const timer = setTimeout(() => reject(new Error('no "listening" line within 10 s')), 10000);
            let out = '';
            child.stdout.on('data', (d) => {
                out += d;
                const m = /^listening (\d+)\n/.exec(out);
                if (m) {
                    clearTimeout(timer);
                    resolve(Number(m[1]));
                }
            });
            child.once('exit', (code) => reject(new Error(`exited with ${code}`)));
        });
        const r = await post(`http://127.0.0.1:${port}`, { batch: [envelope('trace-create', traceBody())] });
        assert.equal(r.status, 207);
        assert.equal(r.json.successes.length, 1);
    } finally {
        child.kill('SIGTERM');
    }
});

// OTLP requests, built from the repository's own .proto files.
const PROTO_DIR = path.resolve(here, '../../proto');
const OTLP_PATH = '/api/public/otel/v1/traces';
const SPAN2 = '00f067aa0ba902b7';
const ROOT_SPAN = '53995c3f42cd8ad8';

function loadProto() {
    const root = new protobuf.Root();
    root.resolvePath = (_origin, target) => (path.isAbsolute(target) ? target : path.join(PROTO_DIR, target));
    root.loadSync(['opentelemetry/proto/collector/trace/v1/trace_service.proto', 'google/rpc/status.proto'], { keepCase: true });
    root.resolveAll();
    return {
        request: root.lookupType('opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest'),
        status: root.lookupType('google.rpc.Status'),
    };
}
const proto = loadProto();

const kv = (key, value) => ({ key, value });

// One resource with one scope holding |spans| (snake_case, as protobufjs
// with keepCase takes them), encoded.
function protobufRequest(spans, resourceAttrs = [kv('service.name', { string_value: 'svc' })]) {
    const doc = { resource_spans: [{ resource: { attributes: resourceAttrs }, scope_spans: [{ scope: { name: 'my.scope', version: '1.2.3' }, spans }] }] };
    return Buffer.from(proto.request.encode(proto.request.fromObject(doc)).finish());
}

const protoSpan = (over = {}) => ({
    trace_id: Buffer.from(TRACE, 'hex'),
    span_id: Buffer.from(SPAN, 'hex'),
    parent_span_id: Buffer.from(ROOT_SPAN, 'hex'),
    name: 'ChatOpenAI',
    kind: 3,
    start_time_unix_nano: '1738311302123456789',
    end_time_unix_nano: '1738311304123000000',
    status: { code: 2, message: 'boom' },
    attributes: [
        kv('str', { string_value: 'v' }),
        kv('empty', { string_value: '' }),
        kv('int', { int_value: 42 }),
        kv('zero', { int_value: 0 }),
        kv('neg', { int_value: -7 }),
        kv('big', { int_value: '9223372036854775807' }),
        kv('dbl', { double_value: 0.25 }),
        kv('no', { bool_value: false }),
        kv('list', { array_value: { values: [{ string_value: 'a' }, { int_value: 1 }, { bool_value: true }] } }),
        kv('map', { kvlist_value: { values: [kv('k', { string_value: 'x' }), kv('n', { double_value: 1.5 })] } }),
        kv('raw', { bytes_value: Buffer.from([0, 1, 2, 250]) }),
        kv('unset', {}),
        kv('langfuse.user.id', { string_value: 'user-7' }),
    ],
    events: [{ time_unix_nano: '1738311303000000000', name: 'exception', attributes: [kv('exception.message', { string_value: 'bad' })] }],
    ...over,
});

const jsonSpan = (over = {}) => ({
    traceId: TRACE,
    spanId: SPAN2,
    name: 'step',
    kind: 1,
    startTimeUnixNano: '1738311302000000000',
    endTimeUnixNano: 1738311303000,
    status: { code: 1 },
    attributes: [
        kv('str', { stringValue: 'v' }),
        kv('int', { intValue: '42' }),
        kv('intNumber', { intValue: 43 }),
        kv('big', { intValue: '-9223372036854775808' }),
        kv('dbl', { doubleValue: 2.5 }),
        kv('nan', { doubleValue: 'NaN' }),
        kv('yes', { boolValue: true }),
        kv('list', { arrayValue: { values: [{ stringValue: 'a' }, { intValue: '2' }] } }),
        kv('map', { kvlistValue: { values: [kv('k', { stringValue: 'x' })] } }),
        kv('raw', { bytesValue: Buffer.from([0, 1, 2, 250]).toString('base64') }),
    ],
    events: [],
    ...over,
});

const jsonRequest = (spans) => ({ resourceSpans: [{ resource: { attributes: [kv('service.name', { stringValue: 'svc-json' })] }, scopeSpans: [{ scope: { name: 'json.scope' }, spans }] }] });

async function postOtlp(url, body, { format = 'protobuf', gzip = false, authorization = auth(), contentType, contentEncoding, headers = {}, signal } = {}) {
    let payload = format === 'json' && !Buffer.isBuffer(body) && typeof body !== 'string' ? JSON.stringify(body) : body;
    if (gzip) payload = zlib.gzipSync(payload);
    const h = { authorization, 'content-type': contentType ?? (format === 'json' ? 'application/json' : 'application/x-protobuf'), ...headers };
    if (contentEncoding ?? (gzip ? 'gzip' : undefined)) h['content-encoding'] = contentEncoding ?? 'gzip';
    const res = await fetch(`${url}${OTLP_PATH}`, { method: 'POST', headers: h, body: payload, signal });
    const buf = Buffer.from(await res.arrayBuffer());
    return { status: res.status, contentType: res.headers.get('content-type'), headers: res.headers, body: buf };
}

const getHealth = async (url) => {
    const res = await fetch(`${url}/api/public/health`);
    return { status: res.status, json: await res.json() };
};

describe('fake langfuse: health, OTLP and v4', () => {
    let fake;

    before(async () => {
        fake = await startFakeLangfuse({ publicKey: PK, secretKey: SK });
    });
    after(async () => {
        await fake.close();
    });
    beforeEach(() => {
        fake.reset();
        fake.setVersion('3.150.0');
        fake.setMode(null);
    });

    test('health reports a v3 version by default, no auth needed, changeable at run time', async () => {
        assert.deepEqual(await getHealth(fake.url), { status: 200, json: { status: 'OK', version: '3.150.0' } });
        assert.equal(fake.mode(), 'v3');
        fake.setVersion('4.2.1');
        assert.deepEqual((await getHealth(fake.url)).json, { status: 'OK', version: '4.2.1' });
        assert.equal(fake.mode(), 'v4', 'the mode follows the version when not fixed');
        assert.deepEqual(fake.healthChecks().map((h) => [h.status, h.version]), [
            [200, '3.150.0'],
            [200, '4.2.1'],
        ]);
        assert.equal((await fetch(`${fake.url}/api/public/health`, { method: 'POST' })).status, 405);
        assert.throws(() => fake.setVersion(''), /non-empty/);
        assert.throws(() => fake.setMode('v5'), /mode/);
        assert.equal(fake.requests().length, 0, 'health checks are not data requests');
    });

    test('health of a v4 fake, by version or by mode', async () => {
        const v4 = await startFakeLangfuse({ publicKey: PK, secretKey: SK, version: '4.0.0' });
        const lying = await startFakeLangfuse({ publicKey: PK, secretKey: SK, mode: 'v4' });
        try {
            assert.deepEqual(await getHealth(v4.url), { status: 200, json: { status: 'OK', version: '4.0.0' } });
            assert.equal(v4.mode(), 'v4');
            assert.deepEqual((await getHealth(lying.url)).json, { status: 'OK', version: '3.150.0' });
            assert.equal(lying.mode(), 'v4');
            lying.setVersion('3.1.0');
            assert.equal(lying.mode(), 'v4', 'a fixed mode stays');
        } finally {
            await v4.close();
            await lying.close();
        }
    });

    for (const gzip of [false, true]) {
        test(`OTLP protobuf${gzip ? ' gzip' : ''}: spans stored with their fields and attribute types`, async () => {
            const root = protoSpan({ span_id: Buffer.from(ROOT_SPAN, 'hex'), parent_span_id: Buffer.alloc(0), name: 'root', kind: 0, status: undefined, attributes: [], events: [] });
            const body = protobufRequest([root, protoSpan()]);
            const r = await postOtlp(fake.url, body, { gzip, headers: { 'x-langfuse-ingestion-version': '4' } });
            assert.equal(r.status, 200);
            assert.equal(r.contentType, 'application/x-protobuf');
            assert.equal(r.body.length, 0, 'an empty ExportTraceServiceResponse');

            const [first, span] = fake.spans();
            assert.equal(fake.spans().length, 2);
            assert.deepEqual(
                { traceId: first.traceId, spanId: first.spanId, parentSpanId: first.parentSpanId, kind: first.kind, status: first.status, attributes: first.attributes, events: first.events },
                { traceId: TRACE, spanId: ROOT_SPAN, parentSpanId: null, kind: 0, status: { code: 0, message: '' }, attributes: {}, events: [] },
            );
            assert.equal(span.traceId, TRACE);
            assert.equal(span.spanId, SPAN);
            assert.equal(span.parentSpanId, ROOT_SPAN);
            assert.equal(span.name, 'ChatOpenAI');
            assert.equal(span.kind, 3);
            assert.equal(span.startTimeUnixNano, '1738311302123456789');
            assert.equal(span.endTimeUnixNano, '1738311304123000000');
            assert.deepEqual(span.status, { code: 2, message: 'boom' });
            assert.deepEqual(span.attributes, {
                str: 'v',
                empty: '',
                int: 42,
                zero: 0,
                neg: -7,
                big: '9223372036854775807',
                dbl: 0.25,
                no: false,
                list: ['a', 1, true],
                map: { k: 'x', n: 1.5 },
                raw: Buffer.from([0, 1, 2, 250]).toString('base64'),
                unset: null,
                'langfuse.user.id': 'user-7',
            });
            assert.deepEqual(span.events, [{ name: 'exception', timeUnixNano: '1738311303000000000', attributes: { 'exception.message': 'bad' } }]);
            assert.deepEqual(span.resource, { 'service.name': 'svc' });
            assert.deepEqual(span.scope, { name: 'my.scope', version: '1.2.3' });
            assert.equal(span.headers['x-langfuse-ingestion-version'], '4');
            assert.equal(span.headers.authorization, undefined);

            const [req] = fake.requests();
            assert.equal(req.route, 'otlp');
            assert.equal(req.status, 200);
            assert.equal(req.events, 2);
            assert.deepEqual(req.ids, [ROOT_SPAN, SPAN]);
            assert.equal(req.ingestionVersion, '4');
            assert.equal(req.headers['content-encoding'], gzip ? 'gzip' : undefined);
            assert.equal(fake.events().length, 0);
            assert.equal(fake.batches(), 0);
        });
    }

    test('OTLP JSON: hex ids and the JSON forms of values; answers {}', async () => {
        for (const gzip of [false, true]) {
            const upper = jsonSpan({ spanId: SPAN2.toUpperCase(), parentSpanId: SPAN });
            const r = await postOtlp(fake.url, jsonRequest([upper]), { format: 'json', gzip });
            assert.equal(r.status, 200);
            assert.equal(r.contentType, 'application/json');
            assert.deepEqual(JSON.parse(r.body.toString()), {});
        }
        const spans = fake.spans();
        assert.equal(spans.length, 2);
        const span = spans[0];
        assert.equal(span.spanId, SPAN2, 'ids are stored as lowercase hex');
        assert.equal(span.parentSpanId, SPAN);
        assert.equal(span.kind, 1);
        assert.equal(span.startTimeUnixNano, '1738311302000000000');
        assert.equal(span.endTimeUnixNano, '1738311303000');
        assert.deepEqual(span.status, { code: 1, message: '' });
        assert.equal(Number.isNaN(span.attributes.nan), true);
        delete span.attributes.nan;
        assert.deepEqual(span.attributes, {
            str: 'v',
            int: 42,
            intNumber: 43,
            big: '-9223372036854775808',
            dbl: 2.5,
            yes: true,
            list: ['a', 2],
            map: { k: 'x' },
            raw: Buffer.from([0, 1, 2, 250]).toString('base64'),
        });
        assert.deepEqual(span.resource, { 'service.name': 'svc-json' });
        assert.deepEqual(span.scope, { name: 'json.scope', version: '' });
        assert.equal(fake.spanDeliveries(SPAN2), 2);
        assert.equal(fake.spanDuplicates(), 1);
        assert.deepEqual(fake.spanDeliveryCounts(), { [SPAN2]: 2 });
        assert.equal(fake.requests()[0].ingestionVersion, null);
    });

    const badProtobuf = [
        ['a span id of 7 bytes', () => protoSpan({ span_id: Buffer.alloc(7, 1) }), /spanId must be 8 bytes, got 7/],
        ['no trace id', () => protoSpan({ trace_id: Buffer.alloc(0) }), /traceId must be 16 bytes, got 0/],
        ['a trace id of 8 bytes', () => protoSpan({ trace_id: Buffer.alloc(8, 1) }), /traceId must be 16 bytes/],
        ['an all-zero trace id', () => protoSpan({ trace_id: Buffer.alloc(16) }), /must not be all zeros/],
        ['a parent span id of 4 bytes', () => protoSpan({ parent_span_id: Buffer.alloc(4, 1) }), /parentSpanId must be 8 bytes/],
    ];
    for (const [name, make, reason] of badProtobuf) {
        test(`OTLP protobuf: 400 for the whole request with ${name}`, async () => {
            const good = protoSpan({ span_id: Buffer.from(ROOT_SPAN, 'hex') });
            const r = await postOtlp(fake.url, protobufRequest([good, make()]));
            assert.equal(r.status, 400);
            assert.equal(r.contentType, 'application/x-protobuf');
            const status = proto.status.toObject(proto.status.decode(r.body));
            assert.equal(status.code, 3);
            assert.match(status.message, reason);
            assert.equal(fake.spans().length, 0, 'nothing of a refused request is stored');
            assert.equal(fake.requests()[0].status, 400);
        });
    }

    const badJson = [
        ['proto field names', () => jsonRequest([{ trace_id: TRACE, span_id: SPAN }]), /traceId must be 16 bytes, got 0/],
        ['base64 ids', () => jsonRequest([jsonSpan({ traceId: Buffer.from(TRACE, 'hex').toString('base64') })]), /traceId must be a hex string/],
        ['a short span id', () => jsonRequest([jsonSpan({ spanId: 'abcd' })]), /spanId must be 8 bytes, got 2/],
        ['kind as a name', () => jsonRequest([jsonSpan({ kind: 'SPAN_KIND_CLIENT' })]), /kind must be an integer/],
        ['a kind out of range', () => jsonRequest([jsonSpan({ kind: 9 })]), /kind must be 0..5/],
        ['a fractional intValue', () => jsonRequest([jsonSpan({ attributes: [kv('x', { intValue: 1.5 })] })]), /intValue must be an integer/],
        ['two values in one AnyValue', () => jsonRequest([jsonSpan({ attributes: [kv('x', { stringValue: 'a', boolValue: true })] })]), /more than one value/],
        ['a body that is not JSON', () => '{"resourceSpans": [', /not valid JSON/],
        ['resourceSpans not an array', () => ({ resourceSpans: {} }), /resourceSpans must be an array/],
    ];
    for (const [name, make, reason] of badJson) {
        test(`OTLP JSON: 400 with ${name}`, async () => {
            const r = await postOtlp(fake.url, make(), { format: 'json' });
            assert.equal(r.status, 400);
            assert.equal(r.contentType, 'application/json');
            const doc = JSON.parse(r.body.toString());
            assert.equal(doc.code, 3);
            assert.match(doc.message, reason);
            assert.equal(fake.spans().length, 0);
        });
    }

    test('OTLP: 400 for bodies that do not decode', async () => {
        assert.equal((await postOtlp(fake.url, Buffer.from([0x0a, 0xff, 0xff]))).status, 400);
        assert.equal((await postOtlp(fake.url, Buffer.from('not gzip'), { contentEncoding: 'gzip' })).status, 400);
        assert.equal(fake.spans().length, 0);
    });

    test('OTLP: 401 without the right credentials, before the body is looked at', async () => {
        const body = protobufRequest([protoSpan()]);
        for (const authorization of ['', auth(PK, 'wrong'), auth('pk-other', SK), 'Bearer x']) {
            assert.equal((await postOtlp(fake.url, body, { authorization })).status, 401);
        }
        assert.equal((await postOtlp(fake.url, 'garbage', { authorization: '', contentType: 'text/plain' })).status, 401);
        assert.equal(fake.spans().length, 0);
        assert.deepEqual(fake.requests().map((r) => [r.route, r.status]), Array(5).fill(['otlp', 401]));
    });

    test('OTLP: 415 for other content types and encodings', async () => {
        const body = protobufRequest([protoSpan()]);
        for (const contentType of ['text/plain', 'application/protobuf', 'application/octet-stream', '']) {
            const r = await postOtlp(fake.url, body, { contentType });
            assert.equal(r.status, 415, contentType);
            assert.match(JSON.parse(r.body.toString()).message, /content-type/);
        }
        const r = await postOtlp(fake.url, zlib.brotliCompressSync(body), { contentEncoding: 'br' });
        assert.equal(r.status, 415);
        assert.match(JSON.parse(r.body.toString()).message, /content-encoding/);
        assert.equal((await postOtlp(fake.url, body, { contentType: 'application/x-protobuf; charset=binary' })).status, 200);
        assert.equal(fake.spans().length, 1);
    });

    test('OTLP: 413 over 4.5 MB, packed or unpacked', async () => {
        const big = protobufRequest([protoSpan({ attributes: [kv('input', { string_value: 'x'.repeat(4_600_000) })] })]);
        assert.equal((await postOtlp(fake.url, big)).status, 413);
        assert.equal((await postOtlp(fake.url, big, { gzip: true })).status, 413);
        assert.equal(fake.spans().length, 0);
    });

    test('OTLP: 405 for other methods', async () => {
        const r = await fetch(`${fake.url}${OTLP_PATH}`, { headers: { authorization: auth() } });
        assert.equal(r.status, 405);
    });

    test('v4 mode: ingestion refuses traces and observations per event, takes scores and sdk logs', async () => {
        const refusedTypes = [...V4_REFUSED_TYPES].sort();
        assert.deepEqual(refusedTypes, [
            'agent-create', 'chain-create', 'embedding-create', 'evaluator-create', 'event-create', 'generation-create', 'generation-update',
            'guardrail-create', 'observation-create', 'observation-update', 'retriever-create', 'span-create', 'span-update', 'tool-create', 'trace-create',
        ]);
        const bodyOf = (type, i) => {
            if (type === 'trace-create') return traceBody();
            if (type.startsWith('observation-')) return { id: `o${i}`, traceId: TRACE, type: 'SPAN' };
            if (type === 'event-create') return { id: `o${i}`, traceId: TRACE };
            return { id: `o${i}`, traceId: TRACE, name: 'x' };
        };
        const batch = [
            ...refusedTypes.map((t, i) => envelope(t, bodyOf(t, i))),
            envelope('score-create', { id: 'score-1', traceId: TRACE, name: 'quality', value: 0.9 }),
            { id: 'log-1', type: 'sdk-log', timestamp: '2025-01-31T08:15:04Z', body: { log: { msg: 'hi' } } },
        ];
        // The same batch is fine on v3.
        let r = await post(fake.url, { batch });
        assert.equal(r.status, 207);
        assert.deepEqual(r.json.errors, []);
        fake.reset();

        fake.setMode('v4');
        r = await post(fake.url, { batch });
        assert.equal(r.status, 207);
        const scoreId = batch[refusedTypes.length].id;
        assert.deepEqual(r.json.successes, [
            { id: scoreId, status: 201 },
            { id: 'log-1', status: 201 },
        ]);
        assert.equal(r.json.errors.length, refusedTypes.length);
        refusedTypes.forEach((type, i) => {
            const e = r.json.errors[i];
            assert.equal(e.id, batch[i].id);
            assert.equal(e.status, 400);
            assert.equal(e.message, `Event type not accepted: ${type}. Use the OpenTelemetry endpoint (/api/public/otel/v1/traces) on Langfuse v4`);
            assert.equal(typeof e.error, 'string');
        });
        assert.deepEqual(fake.rejections().map((x) => [x.type, x.status]), refusedTypes.map((t) => [t, 400]));
        assert.match(fake.rejections()[0].reason, /^Event type not accepted: /);
        assert.deepEqual(fake.events().map((e) => e.id), [scoreId, 'log-1']);
        assert.equal(fake.requests()[0].route, 'ingestion');

        // A broken score is still refused for what is wrong with it.
        r = await post(fake.url, { batch: [envelope('score-create', { id: 's2', name: 'q' })] });
        assert.match(r.json.errors[0].message, /body.value must be a number or a string/);
    });

    test('v4 mode by version: the OTLP route takes what ingestion refuses', async () => {
        fake.setVersion('4.0.0');
        const r = await post(fake.url, { batch: [envelope('trace-create', traceBody())] });
        assert.equal(r.json.errors[0].status, 400);
        assert.equal((await postOtlp(fake.url, protobufRequest([protoSpan()]))).status, 200);
        assert.equal(fake.spans().length, 1);
    });

    test('v4View groups spans per trace with the trace-level attributes of every span', async () => {
        const OTHER = '4bf92f3577b34da6a3ce929d0e0e4736';
        const tl = (user, session, name) => [
            ...(user ? [kv('langfuse.user.id', { string_value: user })] : []),
            kv('langfuse.session.id', { string_value: session }),
            kv('langfuse.trace.name', { string_value: name }),
        ];
        await postOtlp(
            fake.url,
            protobufRequest([
                protoSpan({ span_id: Buffer.from(ROOT_SPAN, 'hex'), attributes: tl('u1', 's1', 'turn') }),
                protoSpan({ trace_id: Buffer.from(OTHER, 'hex'), attributes: tl(null, 's2', 'other') }),
                protoSpan({ attributes: tl('u1', 's1', 'turn') }),
                protoSpan({ trace_id: Buffer.from(OTHER, 'hex'), span_id: Buffer.from(SPAN2, 'hex'), attributes: tl('u2', 's2', 'other') }),
            ]),
        );
        const view = fake.v4View();
        assert.deepEqual(view.map((t) => t.traceId), [TRACE, OTHER]);
        assert.deepEqual(view[0].spans.map((s) => s.spanId), [ROOT_SPAN, SPAN]);
        assert.deepEqual(view[0].userIds, new Set(['u1']));
        assert.deepEqual(view[0].sessionIds, new Set(['s1']));
        assert.deepEqual(view[0].traceNames, new Set(['turn']));
        assert.deepEqual(view[1].userIds, new Set([undefined, 'u2']), 'a span without the attribute shows as undefined');
        assert.deepEqual(view[1].sessionIds, new Set(['s2']));

        const doc = await (await fetch(`${fake.url}/_fake/v4view`)).json();
        assert.deepEqual(doc.traces[0].userIds, ['u1']);
        assert.equal(doc.traces[1].spans.length, 2);
    });

    test('fault: status with Retry-After on the OTLP route, and faults aimed at one route', async () => {
        const body = protobufRequest([protoSpan()]);
        fake.setFault({ type: 'status', status: 503, retryAfter: '2', count: 1 });
        let r = await postOtlp(fake.url, body);
        assert.equal(r.status, 503);
        assert.equal(r.headers.get('retry-after'), '2');
        assert.equal((await postOtlp(fake.url, body)).status, 200);

        fake.setFault({ type: 'status', status: 429, route: 'ingestion' });
        fake.setFault({ type: 'status', status: 502, route: 'otlp' });
        assert.equal((await postOtlp(fake.url, body)).status, 502);
        assert.equal((await postOtlp(fake.url, body)).status, 200);
        assert.equal((await post(fake.url, { batch: [] })).status, 429);
        assert.equal((await post(fake.url, { batch: [] })).status, 207);

        fake.setFault({ type: 'status', status: 413, minEvents: 2, count: 10 });
        assert.equal((await postOtlp(fake.url, protobufRequest([protoSpan(), protoSpan({ span_id: Buffer.from(SPAN2, 'hex') })]))).status, 413);
        assert.equal((await postOtlp(fake.url, body)).status, 200);
        fake.setFault(null);

        assert.deepEqual(fake.requests().map((x) => [x.route, x.status, x.fault]), [
            ['otlp', 503, 'status'],
            ['otlp', 200, null],
            ['otlp', 502, 'status'],
            ['otlp', 200, null],
            ['ingestion', 429, 'status'],
            ['ingestion', 207, null],
            ['otlp', 413, 'status'],
            ['otlp', 200, null],
        ]);
        assert.equal(fake.spanDeliveries(SPAN), 3);
        assert.throws(() => fake.setFault({ type: 'event-status', status: 500, route: 'otlp' }), /does not apply/);
        assert.throws(() => fake.setFault({ type: 'reset', route: 'health' }), /does not apply/);
        assert.throws(() => fake.setFault({ type: 'slow', route: 'elsewhere' }), /route must be/);
    });

    test('fault: slow OTLP answers, given up or accepted first', async () => {
        const body = protobufRequest([protoSpan()]);
        fake.setFault({ type: 'slow', ms: 600 });
        await assert.rejects(postOtlp(fake.url, body, { signal: AbortSignal.timeout(100) }));
        await waitUntil(() => fake.requests().length === 1, 'the slow request to be logged');
        assert.deepEqual([fake.requests()[0].route, fake.requests()[0].status, fake.requests()[0].fault], ['otlp', 0, 'slow']);
        assert.equal(fake.spans().length, 0, 'a request the client gave up on stores nothing');

        fake.setFault({ type: 'slow', ms: 600, acceptFirst: true });
        await assert.rejects(postOtlp(fake.url, body, { signal: AbortSignal.timeout(100) }));
        assert.equal(fake.spanDeliveries(SPAN), 1);
        assert.equal((await postOtlp(fake.url, body)).status, 200);
        assert.equal(fake.spanDuplicates(), 1);
        await waitUntil(() => fake.requests().length === 3, 'all requests to be logged');
        assert.equal(fake.requests().find((x) => x.answered !== undefined && x.answered !== null).answered, 200);
    });

    test('fault: reset cuts OTLP answers', async () => {
        const target = { path: OTLP_PATH, contentType: 'application/x-protobuf' };
        fake.setFault({ type: 'reset', count: 1 });
        let raw = await rawPost(fake.port, protobufRequest([protoSpan()]), () => {}, target);
        assert.equal(raw.status, 0, 'an empty protobuf answer is reset before its head');
        assert.ok(raw.error);
        assert.equal(fake.spans().length, 0);

        fake.setFault({ type: 'reset', count: 1, acceptFirst: true });
        raw = await rawPost(fake.port, JSON.stringify(jsonRequest([jsonSpan()])), () => {}, { path: OTLP_PATH, contentType: 'application/json' });
        assert.equal(raw.status, 200);
        assert.ok(raw.received < raw.contentLength, `${raw.received} of ${raw.contentLength} bytes`);
        assert.ok(raw.error);
        assert.equal(fake.spanDeliveries(SPAN2), 1, 'accepted first, then cut');
        assert.deepEqual(fake.requests().map((x) => [x.route, x.status, x.fault, x.answered]), [
            ['otlp', 0, 'reset', null],
            ['otlp', 0, 'reset', 200],
        ]);
    });

    test('down() takes the OTLP and health routes away too', async () => {
        await fake.down();
        try {
            await assert.rejects(postOtlp(fake.url, protobufRequest([protoSpan()])));
            await assert.rejects(getHealth(fake.url));
        } finally {
            await fake.up();
        }
        assert.equal((await postOtlp(fake.url, protobufRequest([protoSpan()]))).status, 200);
    });

    test('fault: health answers only faults aimed at it', async () => {
        fake.setFault({ type: 'status', status: 503, count: 1 });
        assert.equal((await getHealth(fake.url)).status, 200, 'a fault without a route waits for a data request');
        fake.setFault({ type: 'status', status: 500, route: 'health' });
        assert.equal((await getHealth(fake.url)).status, 500);
        assert.equal((await getHealth(fake.url)).status, 200);
        assert.equal((await post(fake.url, { batch: [] })).status, 503);
        assert.deepEqual(fake.healthChecks().map((h) => [h.status, h.fault]), [
            [200, null],
            [500, 'status'],
            [200, null],
        ]);
    });

    test('control: version, spans and health over HTTP', async () => {
        let r = await fetch(`${fake.url}/_fake/version`, { method: 'POST', body: JSON.stringify({ version: '4.5.0' }) });
        assert.deepEqual(await r.json(), { version: '4.5.0', mode: 'v4' });
        r = await fetch(`${fake.url}/_fake/version`, { method: 'POST', body: JSON.stringify({ mode: 'v3' }) });
        assert.deepEqual(await r.json(), { version: '4.5.0', mode: 'v3' });
        r = await fetch(`${fake.url}/_fake/version`, { method: 'POST', body: JSON.stringify({ version: '5.0.0', mode: 'v9' }) });
        assert.equal(r.status, 400);
        assert.equal(fake.version(), '4.5.0', 'a refused change changes nothing');
        await getHealth(fake.url);
        await postOtlp(fake.url, protobufRequest([protoSpan()]));
        const doc = await (await fetch(`${fake.url}/_fake/events`)).json();
        assert.equal(doc.spans.length, 1);
        assert.equal(doc.spans[0].attributes.big, '9223372036854775807');
        assert.deepEqual(doc.spanDeliveries, { [SPAN]: 1 });
        assert.equal(doc.healthChecks.length, 1);
        assert.equal(doc.version, '4.5.0');
        assert.equal(doc.mode, 'v3');
    });
});

test('command line: --version-string and --mode', async () => {
    const child = spawn(process.execPath, [SERVER, '--port', '0', '--public-key', PK, '--secret-key', SK, '--version-string', '4.1.0', '--mode', 'v4'], { stdio: ['ignore', 'pipe', 'inherit'] });
    try {
        const port = await new Promise((resolve, reject) => {
            const timer = setTimeout(() => reject(new Error('no "listening" line within 10 s')), 10000);
            let out = '';
            child.stdout.on('data', (d) => {
                out += d;
                const m = /^listening (\d+)\n/.exec(out);
                if (m) {
                    clearTimeout(timer);
                    resolve(Number(m[1]));
                }
            });
            child.once('exit', (code) => reject(new Error(`exited with ${code}`)));
        });
        const url = `http://127.0.0.1:${port}`;
        assert.deepEqual((await getHealth(url)).json, { status: 'OK', version: '4.1.0' });
        const r = await post(url, { batch: [envelope('trace-create', traceBody())] });
        assert.match(r.json.errors[0].message, /Event type not accepted: trace-create/);
        assert.equal((await postOtlp(url, protobufRequest([protoSpan()]))).status, 200);
    } finally {
        child.kill('SIGTERM');
    }
});
