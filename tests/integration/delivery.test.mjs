// SPDX-License-Identifier: Apache-2.0
//
// Delivery through a misbehaving Langfuse: the fake goes away, answers
// 5xx, 429 with Retry-After in both forms, 401, answers too late, cuts its
// answer short, mixes per-event 400s and 500s in one 207 and refuses big
// batches with 413. Every accepted span must arrive (or, when Langfuse
// refused it for good, be in the dead-letter file), the daemon keeps
// serving and drops nothing. Then the spool cap (503 / UNAVAILABLE,
// /readyz) and `dead-letter replay`.

import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

import { adminGet, metricsOf, quietEnv, PUBLIC_KEY, readJsonLines, SECRET_KEY, startDaemon, startFakeLangfuse, waitFor, workDir } from './lib/harness.mjs';
import { call, close, connect, exportRequest, frame, GRPC } from './lib/h2client.mjs';

const bin = process.env.O2L_BIN;
const skip = !bin && 'O2L_BIN is not set';

// Quick retries so that every fault is over within seconds.
const FAST = {
    O2L_RETRY_INITIAL_MS: '50',
    O2L_RETRY_MAX_MS: '500',
    O2L_REQUEST_TIMEOUT_MS: '1000',
    O2L_AUTH_RETRY_MS: '200',
    O2L_SHUTDOWN_TIMEOUT_MS: '2000',
};

const hex = (n, width) => n.toString(16).padStart(width, '0');

function span(traceId, spanId, extra = {}) {
    return {
        traceId,
        spanId,
        name: `op-${spanId.slice(-4)}`,
        kind: 1,
        startTimeUnixNano: '1700000000000000000',
        endTimeUnixNano: '1700000001000000000',
        attributes: [{ key: 'input.value', value: { stringValue: 'hello' } }],
        ...extra,
    };
}

function exportOf(spans) {
    return JSON.stringify({
        resourceSpans: [
            {
                resource: { attributes: [{ key: 'service.name', value: { stringValue: 'delivery-it' } }] },
                scopeSpans: [{ scope: { name: 'delivery-it' }, spans }],
            },
        ],
    });
}

async function postTraces(daemon, body) {
    const res = await fetch(`${daemon.url}/v1/traces`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body,
        signal: AbortSignal.timeout(10000),
    });
    return { status: res.status, headers: res.headers, text: await res.text() };
}

// Span ids unique over the whole file: group (one per test) and index.
let nextGroup = 1;

/**
 * Posts |requests| OTLP/HTTP requests of |spans| spans each, all answered
 * 200 with no rejected spans; returns the span ids (= observation ids).
 */
async function sendSpans(daemon, { requests = 3, spans = 4 } = {}) {
    const group = nextGroup++;
    const ids = [];
    for (let r = 0; r < requests; r++) {
        const traceId = `d0${hex(group, 6)}${hex(r, 8)}${'0'.repeat(15)}1`;
        const list = [];
        for (let i = 0; i < spans; i++) {
            const id = `${hex(group, 6)}${hex(r, 4)}${hex(i + 1, 6)}`;
            list.push(span(traceId, id));
            ids.push(id);
        }
        const res = await postTraces(daemon, exportOf(list));
        assert.equal(res.status, 200, `request ${r}: ${res.text}`);
        const doc = JSON.parse(res.text || '{}');
        assert.ok(!doc.partialSuccess || !Number(doc.partialSuccess.rejectedSpans), `request ${r} rejected spans: ${res.text}`);
    }
    return ids;
}

/** Observation ids (span ids) the fake has accepted. */
function arrived(fake) {
    const out = new Set();
    for (const e of fake.events()) {
        if (e.type !== 'trace-create' && e.body && e.body.id) out.add(e.body.id);
    }
    return out;
}

function missing(fake, ids, except = new Set()) {
    const have = arrived(fake);
    return ids.filter((id) => !have.has(id) && !except.has(id));
}

/**
 * Waits until every id arrived (except the given ones) and the spool is
 * empty, then checks that the daemon serves on and dropped nothing.
 * Returns the metrics at the end.
 */
async function settle(daemon, fake, ids, { except = new Set(), what = 'the spans', timeoutMs = 30000 } = {}) {
    await waitFor(() => missing(fake, ids, except).length === 0, {
        timeoutMs,
        what: `${what} to reach Langfuse`,
        describe: () => `${missing(fake, ids, except).length} of ${ids.length} missing; requests: ${JSON.stringify(fake.requests().map((r) => [r.status, r.events, r.fault]))}\nlog:\n${daemon.logTail(30)}`,
    });
    let last = null;
    await waitFor(
        async () => {
            last = await metricsOf(daemon);
            return last.otel2langfuse_spool_requests === 0;
        },
        { timeoutMs: 10000, what: 'the spool to empty', describe: () => JSON.stringify(last) },
    );
    assert.equal(daemon.exited(), null, 'the daemon is still running');
    assert.equal((await adminGet(daemon, '/healthz')).status, 200);
    assert.equal(last.otel2langfuse_events_dropped_total, 0, 'events_dropped_total');
    assert.doesNotMatch(daemon.log(), /AddressSanitizer|runtime error/);
    return last;
}

function deadLettersFor(file, eventIds) {
    const wanted = new Set(eventIds);
    return readJsonLines(file).filter((l) => l.event && wanted.has(l.event.id));
}

/** Runs the binary without blocking the loop the fake runs on. */
function runBin(args, env, timeoutMs = 60000) {
    return new Promise((resolve, reject) => {
        const child = spawn(bin, args, { env: quietEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
        let stdout = '';
        let stderr = '';
        child.stdout.on('data', (d) => (stdout += d));
        child.stderr.on('data', (d) => (stderr += d));
        const timer = setTimeout(() => {
            child.kill('SIGKILL');
            reject(new Error(`${args.join(' ')} ran over ${timeoutMs} ms; stderr:\n${stderr}`));
        }, timeoutMs);
        child.on('close', (code) => {
            clearTimeout(timer);
            resolve({ code, stdout, stderr });
        });
    });
}

test('an observation id is the span id it came from (convert)', { skip }, () => {
    const dir = workDir('delivery-convert');
    const file = path.join(dir, 'in.json');
    fs.writeFileSync(file, exportOf([span('d0000000000000000000000000000001', '00000000000000f1')]));
    const out = spawnSync(bin, ['convert', file], { encoding: 'utf8', timeout: 20000 });
    assert.equal(out.status, 0, out.stderr);
    const obs = JSON.parse(out.stdout).batch.filter((e) => e.type !== 'trace-create');
    assert.deepEqual(obs.map((e) => e.body.id), ['00000000000000f1']);
});

describe('delivery through Langfuse faults', { skip }, () => {
    let fake;
    let daemon;
    let spoolDir;
    let deadLetterFile;

    before(async () => {
        fake = await startFakeLangfuse();
        spoolDir = path.join(workDir('delivery-spool'), 'spool');
        deadLetterFile = path.join(spoolDir, 'dead-letter.jsonl');
        daemon = await startDaemon({ langfuseUrl: fake.url, name: 'delivery', spoolDir, env: FAST });
        assert.ok(daemon.adminUrl, `the start line names admin=; log:\n${daemon.logTail(20)}`);
    });

    after(async () => {
        if (daemon) await daemon.stop();
        if (fake) await fake.close();
    });

    beforeEach(async () => {
        await fake.up();
        fake.reset();
    });

    const retried = async () => (await metricsOf(daemon)).otel2langfuse_events_retried_total;

    test('Langfuse down, then up again', { timeout: 60000 }, async () => {
        const before = await retried();
        await fake.down();
        const ids = await sendSpans(daemon);
        // Let the daemon meet the refused connection before Langfuse returns.
        await waitFor(async () => (await retried()) > before, { timeoutMs: 15000, what: 'a retry while Langfuse is down' });
        await fake.up();
        await settle(daemon, fake, ids);
    });

    for (const status of [500, 503]) {
        test(`${status} for a few requests`, { timeout: 60000 }, async () => {
            const before = await retried();
            fake.setFault({ type: 'status', status, count: 3 });
            const ids = await sendSpans(daemon);
            const m = await settle(daemon, fake, ids);
            assert.equal(fake.requests().filter((r) => r.status === status).length, 3);
            assert.ok(m.otel2langfuse_events_retried_total > before, 'events_retried_total went up');
        });
    }

    const retryAfters = [
        ['seconds', { retryAfter: '1' }],
        ['an HTTP date', { retryAfterDate: 1500 }],
    ];
    for (const [form, opts] of retryAfters) {
        test(`429 with Retry-After as ${form}`, { timeout: 60000 }, async () => {
            fake.setFault({ type: 'status', status: 429, count: 2, ...opts });
            const ids = await sendSpans(daemon);
            await settle(daemon, fake, ids);
            assert.equal(fake.requests().filter((r) => r.status === 429).length, 2);
        });
    }

    test('401 pauses delivery, then it goes on', { timeout: 60000 }, async () => {
        fake.setFault({ type: 'status', status: 401, count: 2 });
        const ids = await sendSpans(daemon);
        await settle(daemon, fake, ids);
        assert.equal(fake.requests().filter((r) => r.status === 401).length, 2);
    });

    test('an answer later than O2L_REQUEST_TIMEOUT_MS is retried', { timeout: 60000 }, async (t) => {
        fake.setFault({ type: 'slow', ms: 3000 });
        const ids = await sendSpans(daemon, { requests: 1 });
        await settle(daemon, fake, ids);
        // The late answer counts for nothing: the daemon had to re-send.
        await waitFor(() => fake.requests().some((r) => r.fault === 'slow'), { timeoutMs: 10000, what: 'the slow request to be over' });
        assert.equal(fake.requests().find((r) => r.fault === 'slow').status, 0, 'the daemon gave up on the slow answer');

        // Langfuse stored the batch but answered too late: a duplicate.
        fake.reset();
        fake.setFault({ type: 'slow', ms: 3000, acceptFirst: true });
        const again = await sendSpans(daemon, { requests: 1 });
        await settle(daemon, fake, again);
        t.diagnostic(`duplicate deliveries after a late answer: ${fake.duplicates()}`);
    });

    test('an answer reset midway is retried', { timeout: 60000 }, async () => {
        fake.setFault({ type: 'reset', count: 2 });
        const ids = await sendSpans(daemon);
        await settle(daemon, fake, ids);
        assert.equal(fake.requests().filter((r) => r.fault === 'reset').length, 2);
    });

    test('a 207 with per-event 400s and 500s: 400s dead-lettered, 500s retried', { timeout: 60000 }, async () => {
        fake.setFault({ type: 'event-status', statuses: [400, 500, 201], count: 1 });
        const ids = await sendSpans(daemon, { requests: 1, spans: 8 });
        // Which events got what depends on how the daemon batched them.
        await waitFor(() => fake.requests().some((r) => r.errors.length > 0), { timeoutMs: 15000, what: 'the mixed 207' });
        const mixed = fake.requests().find((r) => r.errors.length > 0);
        const refused = mixed.errors.filter((e) => e.status === 400).map((e) => e.id);
        const failed = mixed.errors.filter((e) => e.status === 500).map((e) => e.id);
        assert.ok(refused.length > 0 && failed.length > 0, `one 207 holds both: ${JSON.stringify(mixed.errors)}`);
        const refusedSpans = new Set(fake.rejections().filter((r) => refused.includes(r.id)).map((r) => r.event.body.id));

        const m = await settle(daemon, fake, ids, { except: refusedSpans });
        for (const id of failed) assert.ok(fake.deliveries(id) >= 1, `event ${id} answered 500 arrived later`);
        for (const id of refused) assert.equal(fake.deliveries(id), 0, `event ${id} answered 400 was not re-sent`);

        await waitFor(() => deadLettersFor(deadLetterFile, refused).length >= refused.length, {
            timeoutMs: 10000,
            what: 'the refused events in the dead-letter file',
            describe: () => `file ${deadLetterFile}: ${JSON.stringify(readJsonLines(deadLetterFile)).slice(0, 2000)}`,
        });
        for (const line of deadLettersFor(deadLetterFile, refused)) {
            assert.equal(line.status, 400);
            assert.match(line.message, /injected/);
            assert.ok(!Number.isNaN(Date.parse(line.time)), `time ${line.time}`);
        }
        assert.deepEqual(deadLettersFor(deadLetterFile, failed), [], 'no 500 is dead-lettered');
        assert.ok(m.otel2langfuse_events_dead_lettered_total >= refused.length, 'events_dead_lettered_total');
    });

    test('413 splits the batch until it fits', { timeout: 60000 }, async () => {
        // Any request with two events or more is too large.
        fake.setFault({ type: 'status', status: 413, minEvents: 2, count: 100000 });
        const ids = await sendSpans(daemon, { requests: 2, spans: 4 });
        await settle(daemon, fake, ids);
        const reqs = fake.requests();
        assert.ok(reqs.some((r) => r.status === 413), 'a batch was refused as too large');
        assert.ok(reqs.filter((r) => r.status === 207).every((r) => r.events === 1));
        assert.deepEqual(fake.rejections(), []);
    });
});

describe('a full spool', { skip }, () => {
    test('503 / UNAVAILABLE and not ready while full; accepting again once drained', { timeout: 90000 }, async () => {
        const fake = await startFakeLangfuse();
        await fake.down();
        const daemon = await startDaemon({
            langfuseUrl: fake.url,
            name: 'spool-full',
            env: { ...FAST, O2L_SPOOL_MAX_BYTES: '4096' },
        });
        let session;
        try {
            assert.ok(daemon.adminUrl, 'the start line names admin=');
            assert.equal((await adminGet(daemon, '/readyz')).status, 200);

            // Fill the spool: Langfuse is away, so nothing leaves it.
            const acked = [];
            let full = null;
            for (let i = 0; i < 100 && !full; i++) {
                const group = nextGroup++;
                const traceId = `f0${hex(group, 6)}${'0'.repeat(23)}1`;
                const spans = [1, 2].map((n) => span(traceId, `${hex(group, 6)}${hex(n, 10)}`, { attributes: [{ key: 'input.value', value: { stringValue: 'y'.repeat(500) } }] }));
                const body = exportOf(spans);
                const res = await postTraces(daemon, body);
                if (res.status === 200) acked.push(...spans.map((s) => s.spanId));
                else full = { ...res, body };
            }
            assert.ok(full, 'the spool filled up within 100 requests');
            assert.equal(full.status, 503, full.text);
            const retryAfter = full.headers.get('retry-after');
            assert.ok(retryAfter && (Number(retryAfter) > 0 || !Number.isNaN(Date.parse(retryAfter))), `Retry-After ${retryAfter}`);
            assert.ok(acked.length > 0, 'some requests fitted');

            assert.ok(daemon.grpcPort, 'the gRPC port is logged');
            session = await connect(daemon.grpcPort);
            // Larger than the refused HTTP body, so that it cannot fit either.
            const grpcSpans = [1, 2, 3, 4].map((n) => ({
                traceId: 'f1000000000000000000000000000001',
                spanId: `f1000000000000a${n}`,
                attributes: [{ key: 'input.value', value: { stringValue: 'z'.repeat(550) } }],
            }));
            const grpcMsg = exportRequest(grpcSpans);
            assert.ok(grpcMsg.length > Buffer.byteLength(full.body) && grpcMsg.length < 4096, `gRPC message of ${grpcMsg.length} bytes`);
            const grpcBody = frame(grpcMsg);
            const refused = await call(session, { body: grpcBody });
            assert.equal(refused.grpcStatus, GRPC.UNAVAILABLE, `grpc-status ${refused.grpcStatus} (${refused.grpcMessage})`);

            // Checked at the end, so that a wrong answer here does not hide
            // how the rest behaves.
            const readyWhileFull = await adminGet(daemon, '/readyz');
            assert.equal((await adminGet(daemon, '/healthz')).status, 200, 'alive while not ready');
            const m = await metricsOf(daemon);
            assert.ok(m.otel2langfuse_spool_bytes > 0 && m.otel2langfuse_spool_requests > 0, JSON.stringify(m));

            await fake.up();
            await waitFor(async () => (await metricsOf(daemon)).otel2langfuse_spool_requests === 0, {
                timeoutMs: 30000,
                what: 'the spool to drain once Langfuse is back',
            });
            const readyAfter = await adminGet(daemon, '/readyz');
            assert.equal(readyAfter.status, 200, readyAfter.text);
            const later = await sendSpans(daemon, { requests: 1, spans: 2 });
            const ok = await call(session, { body: grpcBody });
            assert.equal(ok.grpcStatus, GRPC.OK, `grpc-status ${ok.grpcStatus} (${ok.grpcMessage})`);
            await settle(daemon, fake, [...acked, ...later, ...grpcSpans.map((x) => x.spanId)]);

            assert.equal(readyWhileFull.status, 503, `/readyz while full answered ${readyWhileFull.status} ${readyWhileFull.text}`);
            assert.match(readyWhileFull.text, /^not ready: \S/);
        } finally {
            if (session) await close(session);
            await daemon.stop().catch(() => {});
            await fake.close();
        }
    });
});

describe('dead-letter replay', { skip }, () => {
    test('refused events wait in the dead-letter file until replayed', { timeout: 90000 }, async () => {
        const fake = await startFakeLangfuse();
        const dir = workDir('replay-files');
        const file = path.join(dir, 'refused.jsonl');
        const daemon = await startDaemon({
            langfuseUrl: fake.url,
            name: 'replay',
            spoolDir: path.join(dir, 'spool'),
            env: { ...FAST, O2L_DEAD_LETTER_FILE: file },
        });
        let stopped = false;
        try {
            // Every request refused whole with 422 (however the daemon
            // splits, each event ends refused) ...
            fake.setFault({ type: 'status', status: 422, count: 100000 });
            const first = await sendSpans(daemon, { requests: 1, spans: 3 });
            const spansIn = (status) => new Set(readJsonLines(file).filter((l) => l.status === status).map((l) => l.event && l.event.body && l.event.body.id));
            await waitFor(() => first.every((id) => spansIn(422).has(id)), {
                timeoutMs: 15000,
                what: 'the spans refused with 422 in the dead-letter file',
                describe: () => `${JSON.stringify(readJsonLines(file)).slice(0, 2000)}\nlog:\n${daemon.logTail(20)}`,
            });

            // ... and every event of the next batches refused one by one.
            fake.setFault(null);
            fake.setFault({ type: 'event-status', statuses: [400], count: 100000 });
            const second = await sendSpans(daemon, { requests: 1, spans: 3 });
            await waitFor(() => second.every((id) => spansIn(400).has(id)), {
                timeoutMs: 15000,
                what: 'the spans refused with 400 in the dead-letter file',
                describe: () => `${JSON.stringify(readJsonLines(file)).slice(0, 2000)}\nlog:\n${daemon.logTail(20)}`,
            });
            const ids = [...first, ...second];
            const m = await settle(daemon, fake, ids, { except: new Set(ids) });
            assert.deepEqual(missing(fake, ids), ids, 'no refused span is in Langfuse');
            // Trace events included: everything the file holds was refused.
            const refused = [...new Set(readJsonLines(file).map((l) => l.event.id))];
            const fileIds = () => new Set(readJsonLines(file).map((l) => l.event && l.event.id));
            assert.ok(m.otel2langfuse_events_dead_lettered_total >= refused.length, 'events_dead_lettered_total');
            await daemon.stop();
            stopped = true;

            const env = {
                LANGFUSE_PUBLIC_KEY: PUBLIC_KEY,
                LANGFUSE_SECRET_KEY: SECRET_KEY,
                LANGFUSE_BASE_URL: fake.url,
                O2L_SPOOL_DIR: path.join(dir, 'spool'),
                O2L_ADMIN_LISTEN: 'off',
                ...FAST,
            };
            // The cause is still there: back into the file, exit 1.
            const failing = await runBin(['dead-letter', 'replay', '--file', file], env);
            assert.equal(failing.code, 1, `exit ${failing.code}\n${failing.stderr}`);
            assert.ok(refused.every((id) => fileIds().has(id)), 'the refused events are still in the dead-letter file');
            assert.deepEqual(missing(fake, ids), ids, 'nothing arrived');

            // Cause fixed: everything arrives, exit 0.
            fake.setFault(null);
            const fixed = await runBin(['dead-letter', 'replay', '--file', file], env);
            assert.equal(fixed.code, 0, `exit ${fixed.code}\n${fixed.stderr}`);
            assert.deepEqual(missing(fake, ids), [], 'every span is in Langfuse');
            for (const id of refused) assert.ok(fake.deliveries(id) >= 1, `event ${id} replayed`);
            assert.doesNotMatch(failing.stderr + fixed.stderr, /AddressSanitizer|runtime error/);
        } finally {
            if (!stopped) await daemon.stop().catch(() => {});
            await fake.close();
        }
    });
});

function spanIdsOver(fake) {
    return new Set(fake.spans().map((s) => s.spanId));
}

describe('choosing and leaving an output', { skip }, () => {
    test('a 503 from the health route is asked again, not taken for an old server', { timeout: 60000 }, async () => {
        const fake = await startFakeLangfuse({ version: '4.1.0' });
        fake.setFault({ type: 'status', status: 503, count: 2, route: 'health' });
        const daemon = await startDaemon({ langfuseUrl: fake.url, name: 'health-503', env: { ...FAST, O2L_OUTPUT: 'auto' } });
        try {
            const ids = await sendSpans(daemon, { requests: 1, spans: 2 });
            await waitFor(() => ids.every((id) => spanIdsOver(fake).has(id)), {
                timeoutMs: 30000,
                what: 'the spans over OTLP',
                describe: () => `health: ${JSON.stringify(fake.healthChecks().map((h) => h.status))}\nlog:\n${daemon.logTail(20)}`,
            });
            assert.deepEqual(fake.healthChecks().map((h) => h.status).slice(0, 3), [503, 503, 200]);
            assert.equal(fake.events().length, 0, 'nothing went to the ingestion API');
            const log = daemon.log();
            assert.match(log, /Langfuse reports version 4\.1\.0: output otlp/);
            // Said once for the one cause, not per attempt.
            assert.equal((log.match(/cannot ask Langfuse its version \(its health route answered status 503\)/g) || []).length, 1);
            assert.doesNotMatch(log, /output ingestion|switching output/);
        } finally {
            await daemon.stop();
            await fake.close();
        }
    });

    test('a 404 from the health route means a server before v4', { timeout: 60000 }, async () => {
        const fake = await startFakeLangfuse({ version: '3.150.0' });
        fake.setFault({ type: 'status', status: 404, count: 1, route: 'health' });
        const daemon = await startDaemon({ langfuseUrl: fake.url, name: 'health-404', env: { ...FAST, O2L_OUTPUT: 'auto' } });
        try {
            const ids = await sendSpans(daemon, { requests: 1, spans: 2 });
            await settle(daemon, fake, ids);
            assert.equal(fake.healthChecks().length, 1, 'asked once');
            assert.match(daemon.log(), /no health route \(status 404\)[^\n]*output ingestion/);
        } finally {
            await daemon.stop();
            await fake.close();
        }
    });

    test('switching output does not wait out the old route\'s pause', { timeout: 60000 }, async () => {
        // Says 3.x, behaves like v4: the refusal pauses the ingestion route
        // for ten minutes, and so would the shutdown timeout: a switch that
        // waited for either would miss the 30 s wait for the spans.
        const fake = await startFakeLangfuse({ version: '3.150.0', mode: 'v4' });
        const daemon = await startDaemon({
            langfuseUrl: fake.url,
            name: 'switch-fast',
            env: { ...FAST, O2L_OUTPUT: 'auto', O2L_AUTH_RETRY_MS: '600000', O2L_SHUTDOWN_TIMEOUT_MS: '600000' },
        });
        try {
            const ids = await sendSpans(daemon, { requests: 2, spans: 2 });
            await waitFor(() => ids.every((id) => spanIdsOver(fake).has(id)), {
                timeoutMs: 30000,
                what: 'the spans over OTLP after the switch',
                describe: () => `log:\n${daemon.logTail(30)}`,
            });
            assert.match(daemon.log(), /switching output ingestion -> otlp/);
            assert.match(daemon.log(), /started sink=otlp/);
            // The old route got nothing after its refusal.
            const ingestion = fake.requests().filter((r) => r.route === 'ingestion');
            assert.equal(ingestion.length, 1, JSON.stringify(ingestion.map((r) => [r.status, r.events])));
            assert.match(daemon.log(), /left_for_next_start=\d+ dropped=0/);
        } finally {
            await daemon.stop();
            await fake.close();
        }
    });

    test('SIGTERM in a long backoff does not wait for the shutdown timeout', { timeout: 90000 }, async () => {
        const fake = await startFakeLangfuse();
        const spoolDir = path.join(workDir('stop-backoff'), 'spool');
        // A stop that waited out the backoff or the shutdown timeout would
        // outlast stop()'s 30 s and be killed, failing the clean-exit check.
        const env = { ...FAST, O2L_OUTPUT: 'ingestion', O2L_RETRY_INITIAL_MS: '600000', O2L_RETRY_MAX_MS: '600000', O2L_SHUTDOWN_TIMEOUT_MS: '600000' };
        const first = await startDaemon({ langfuseUrl: fake.url, name: 'stop-backoff', spoolDir, env });
        let second = null;
        try {
            fake.setFault({ type: 'status', status: 503, count: 100000 });
            const ids = await sendSpans(first, { requests: 1, spans: 3 });
            await waitFor(() => fake.requests().some((r) => r.status === 503), { timeoutMs: 15000, what: 'a 503' });
            await waitFor(() => /retry in \d+ms/.test(first.log()), { timeoutMs: 5000, what: 'the backoff to begin' });
            await first.stop({ timeoutMs: 30000 });
            assert.match(first.log(), /left_for_next_start=[1-9]\d* dropped=0/);

            // Still in the spool: the next start delivers it.
            fake.setFault(null);
            second = await startDaemon({ langfuseUrl: fake.url, name: 'stop-backoff-2', spoolDir, env });
            await settle(second, fake, ids);
        } finally {
            if (second) await second.stop().catch(() => {});
            await first.stop().catch(() => {});
            await fake.close();
        }
    });

    test('OTLP: a 1.6 MB output.value is trimmed to fit, not dead-lettered', { timeout: 60000 }, async () => {
        const fake = await startFakeLangfuse({ version: '4.1.0' });
        const dir = workDir('otlp-big-output');
        const deadLetters = path.join(dir, 'dead.jsonl');
        const daemon = await startDaemon({
            langfuseUrl: fake.url,
            name: 'otlp-big-output',
            spoolDir: path.join(dir, 'spool'),
            env: { ...FAST, O2L_OUTPUT: 'otlp', O2L_DEAD_LETTER_FILE: deadLetters },
        });
        try {
            const group = nextGroup++;
            const traceId = `b0${hex(group, 6)}${'0'.repeat(23)}1`;
            const rootId = `${hex(group, 6)}00000000b1`;
            const childId = `${hex(group, 6)}00000000b2`;
            const big = 'o'.repeat(1600000);
            const root = span(traceId, rootId, {
                attributes: [
                    { key: 'input.value', value: { stringValue: 'question' } },
                    { key: 'output.value', value: { stringValue: big } },
                ],
            });
            const child = span(traceId, childId, { parentSpanId: rootId });
            const res = await postTraces(daemon, exportOf([root, child]));
            assert.equal(res.status, 200, res.text);
            await waitFor(() => spanIdsOver(fake).has(rootId) && spanIdsOver(fake).has(childId), {
                timeoutMs: 30000,
                what: 'both spans over OTLP',
                describe: () => `requests: ${JSON.stringify(fake.requests().map((r) => [r.route, r.status]))}\nlog:\n${daemon.logTail(20)}`,
            });
            const got = fake.spans().find((s) => s.spanId === rootId);
            const marker = /^\[otel2langfuse: .* of 1600000 bytes removed: event over the 1000000-byte limit\]$/;
            assert.match(got.attributes['output.value'], marker);
            assert.match(got.attributes['langfuse.observation.output'], marker);
            assert.match(got.attributes['langfuse.trace.output'], marker);
            assert.equal(got.attributes['langfuse.observation.input'], 'question');
            assert.ok(!fake.requests().some((r) => r.status === 413), 'nothing was refused as too large');
            assert.deepEqual(fs.existsSync(deadLetters) ? readJsonLines(deadLetters) : [], []);
        } finally {
            await daemon.stop();
            await fake.close();
        }
    });
});
