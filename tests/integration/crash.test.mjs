// SPDX-License-Identifier: Apache-2.0
//
// Crash safety: a load client posts OTLP/HTTP requests while the daemon is
// killed with SIGKILL at random moments, first while Langfuse is away, then
// while it is back and the daemon delivers, and restarted each time on the
// same spool. Every span of a request answered 200 must reach Langfuse in
// the end; duplicates are allowed (re-sent events keep their ids) and are
// reported, not judged.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';

import { metricsOf, startDaemon, startFakeLangfuse, waitFor, workDir } from './lib/harness.mjs';

const skip = !process.env.O2L_BIN && 'O2L_BIN is not set';

const ROUNDS = 3;
const WORKERS = 3;
const SPANS_PER_REQUEST = 10;
// Each worker pauses between requests so that the load lasts through the
// kills; the cap bounds the work of a round whatever the machine's speed.
const PAUSE_MS = [10, 30];
const MAX_ACKED_REQUESTS = 600;
const KILLS_WHILE_DOWN = 3;

const ENV = {
    O2L_RETRY_INITIAL_MS: '50',
    O2L_RETRY_MAX_MS: '500',
    O2L_REQUEST_TIMEOUT_MS: '2000',
    O2L_SHUTDOWN_TIMEOUT_MS: '2000',
    O2L_SPOOL_SYNC: 'true',
    O2L_LOG_LEVEL: 'info',
};

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const between = (lo, hi) => lo + Math.floor(Math.random() * (hi - lo));
const hex = (n, width) => n.toString(16).padStart(width, '0');

/** One OTLP/JSON request of SPANS_PER_REQUEST spans with ids unique to (round, worker, seq). */
function makeRequest(round, worker, seq) {
    const traceId = `c${hex(round, 3)}${hex(worker, 4)}${hex(seq, 8)}${'0'.repeat(15)}1`;
    const spans = [];
    for (let i = 0; i < SPANS_PER_REQUEST; i++) {
        spans.push({
            traceId,
            spanId: `${hex(round, 2)}${hex(worker, 2)}${hex(seq, 8)}${hex(i + 1, 4)}`,
            name: `step-${i}`,
            kind: 1,
            startTimeUnixNano: '1700000000000000000',
            endTimeUnixNano: '1700000001000000000',
            attributes: [{ key: 'input.value', value: { stringValue: `request ${seq} span ${i}` } }],
        });
    }
    const body = JSON.stringify({
        resourceSpans: [
            {
                resource: { attributes: [{ key: 'service.name', value: { stringValue: 'crash-it' } }] },
                scopeSpans: [{ scope: { name: 'crash-it' }, spans }],
            },
        ],
    });
    return { ids: spans.map((s) => s.spanId), body };
}

/**
 * WORKERS loops posting requests to whatever daemon is current; a span id
 * goes into `acked` only when its request was answered 200 in full.
 */
class Load {
    constructor(round) {
        this.round = round;
        this.url = null;
        this.acked = new Set();
        this.ackedRequests = 0;
        this.failures = 0;
        this.refused = {};
        this.stopped = false;
        this.error = null;
        this.workers = [];
    }

    start() {
        for (let w = 0; w < WORKERS; w++) this.workers.push(this.work(w));
    }

    async work(worker) {
        let seq = 0;
        while (!this.stopped && this.ackedRequests < MAX_ACKED_REQUESTS) {
            const { ids, body } = makeRequest(this.round, worker, seq++);
            try {
                const res = await fetch(`${this.url}/v1/traces`, {
                    method: 'POST',
                    headers: { 'content-type': 'application/json' },
                    body,
                    signal: AbortSignal.timeout(5000),
                });
                const text = await res.text();
                if (res.status === 200) {
                    const doc = JSON.parse(text || '{}');
                    assert.ok(!doc.partialSuccess || !Number(doc.partialSuccess.rejectedSpans), `spans rejected: ${text}`);
                    for (const id of ids) this.acked.add(id);
                    this.ackedRequests += 1;
                    await sleep(between(...PAUSE_MS));
                } else {
                    this.refused[res.status] = (this.refused[res.status] || 0) + 1;
                    await sleep(20);
                }
            } catch (err) {
                if (err instanceof assert.AssertionError) {
                    this.error = err;
                    this.stopped = true;
                    return;
                }
                // The daemon is down or was killed mid-request: unknown fate.
                this.failures += 1;
                await sleep(20);
            }
        }
    }

    async stop() {
        this.stopped = true;
        await Promise.all(this.workers);
        if (this.error) throw this.error;
    }
}

function arrivedIds(fake) {
    const out = new Set();
    for (const e of fake.events()) {
        if (e.type !== 'trace-create' && e.body && e.body.id) out.add(e.body.id);
    }
    return out;
}

function lost(fake, acked) {
    const have = arrivedIds(fake);
    return [...acked].filter((id) => !have.has(id));
}

describe('SIGKILL under load loses no acknowledged span', { skip }, () => {
    let fake;

    before(async () => {
        // Langfuse starts away: the port is known, nothing listens on it.
        fake = await startFakeLangfuse();
        await fake.down();
    });

    after(async () => {
        if (fake) await fake.close();
    });

    for (let round = 1; round <= ROUNDS; round++) {
        test(`round ${round}`, { timeout: 28000 }, async (t) => {
            await fake.down();
            fake.reset();
            const spoolDir = path.join(workDir(`crash-${round}`), 'spool');
            const daemons = [];
            const start = async () => {
                const d = await startDaemon({ langfuseUrl: fake.url, name: `crash-${round}`, spoolDir, env: ENV });
                daemons.push(d);
                return d;
            };
            const load = new Load(round);
            const schedule = [];
            const recovered = [];
            let daemon = await start();

            const killAndRestart = async (when) => {
                const ackedBefore = load.acked.size;
                await daemon.kill();
                daemon = await start();
                load.url = daemon.url;
                const m = /spool recovered requests=(\d+) bytes=(\d+)/.exec(daemon.log());
                assert.ok(m, `restart after a kill ${when} logs "spool recovered"; log:\n${daemon.logTail(20)}`);
                recovered.push(`requests=${m[1]} bytes=${m[2]}`);
                schedule.push(`${when} (acked spans ${ackedBefore})`);
            };

            try {
                load.url = daemon.url;
                load.start();

                // Langfuse away: the spool only grows.
                for (let k = 0; k < KILLS_WHILE_DOWN; k++) {
                    await sleep(between(150, 700));
                    await killAndRestart('while Langfuse is down');
                }
                await sleep(between(100, 400));

                // Langfuse back: kill as soon as delivery is under way.
                await fake.up();
                await waitFor(() => fake.events().length > 0, { timeoutMs: 10000, intervalMs: 10, what: 'delivery to begin' });
                await sleep(between(0, 150));
                const delivered = arrivedIds(fake).size;
                await killAndRestart(`while delivering (${delivered} spans in Langfuse)`);
                await sleep(between(100, 400));
                await load.stop();

                assert.ok(load.acked.size > 0, 'some requests were acknowledged');
                await waitFor(() => lost(fake, load.acked).length === 0, {
                    timeoutMs: 15000,
                    intervalMs: 200,
                    what: 'every acknowledged span to reach Langfuse',
                    describe: () => `${lost(fake, load.acked).length} of ${load.acked.size} acknowledged spans missing; log:\n${daemon.logTail(30)}`,
                });

                const metrics = await metricsOf(daemon);
                assert.equal(metrics.otel2langfuse_events_dropped_total, 0, 'events_dropped_total');
                const extra = arrivedIds(fake).size - load.acked.size;
                const report = [
                    `round ${round}: ${load.ackedRequests} requests (${load.acked.size} spans) acknowledged, 0 lost`,
                    `duplicate deliveries: ${fake.duplicates()} of ${fake.events().length} events delivered`,
                    `unacknowledged spans that arrived anyway: ${extra}`,
                    `failed posts (daemon down or killed): ${load.failures}; other answers: ${JSON.stringify(load.refused)}`,
                    `kills: ${schedule.join('; ')}`,
                    `recovered: ${recovered.join('; ')}`,
                ];
                for (const line of report) t.diagnostic(line);
                console.log(report.join('\n'));

                await daemon.stop();
            } finally {
                if (!load.stopped) await load.stop().catch(() => {});
                await Promise.all(daemons.map((d) => d.kill()));
            }
            for (const d of daemons) assert.doesNotMatch(d.log(), /AddressSanitizer|runtime error/);
        });
    }
});
