// SPDX-License-Identifier: Apache-2.0
//
// Self-test of the fake Langfuse (tests/fake_langfuse/server.mjs): it must
// accept what Langfuse accepts and refuse, with a reason, each rule the
// bridge promises to keep. Needs no npm packages.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { after, before, beforeEach, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { startFakeLangfuse } from '../fake_langfuse/server.mjs';

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
// called once the request is written.
function rawPost(port, body, onSent = () => {}) {
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
            { host: '127.0.0.1', port, method: 'POST', path: '/api/public/ingestion', agent: false, headers: { authorization: auth(), 'content-type': 'application/json' } },
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
        fake.setFault({ type: 'slow', ms: 200, count: 1 });
        const t0 = Date.now();
        const r = await post(fake.url, { batch: [] });
        assert.equal(r.status, 207);
        assert.ok(Date.now() - t0 >= 150);
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
