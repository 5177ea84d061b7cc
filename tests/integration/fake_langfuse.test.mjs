// SPDX-License-Identifier: Apache-2.0
//
// Self-test of the fake Langfuse (tests/fake_langfuse/server.mjs): it must
// accept what Langfuse accepts and refuse, with a reason, each rule the
// bridge promises to keep. Needs no npm packages.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
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
