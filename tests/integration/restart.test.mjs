// SPDX-License-Identifier: Apache-2.0
//
// Stops and starts around the spool: a SIGTERM while Langfuse is away
// exits 0 and leaves the undelivered requests for the next start; a torn
// tail of the write-ahead log after a SIGKILL costs nothing acknowledged;
// a spool file that is not a database is moved aside and the daemon
// serves with a new one.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';

import { freePort, metricsOf, startDaemon, startFakeLangfuse, waitFor, workDir } from './lib/harness.mjs';

const skip = !process.env.O2L_BIN && 'O2L_BIN is not set';

const ENV = {
    O2L_RETRY_INITIAL_MS: '50',
    O2L_RETRY_MAX_MS: '300',
    O2L_REQUEST_TIMEOUT_MS: '2000',
    O2L_SHUTDOWN_TIMEOUT_MS: '1000',
    O2L_LOG_LEVEL: 'info',
};

const hex = (n, width) => n.toString(16).padStart(width, '0');

/** An OTLP/JSON export of |n| spans whose ids start with |tag|. */
function exportBody(tag, n) {
    const traceId = `${hex(tag, 8)}${'0'.repeat(23)}1`;
    const spans = Array.from({ length: n }, (_, i) => ({
        traceId,
        spanId: `${hex(tag, 8)}${hex(i + 1, 8)}`,
        name: `restart-${i}`,
        kind: 1,
        startTimeUnixNano: '1700000000000000000',
        endTimeUnixNano: '1700000001000000000',
    }));
    return {
        ids: spans.map((s) => s.spanId),
        body: JSON.stringify({ resourceSpans: [{ scopeSpans: [{ spans }] }] }),
    };
}

async function post(daemon, body) {
    const res = await fetch(`${daemon.url}/v1/traces`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body,
    });
    await res.arrayBuffer();
    return res.status;
}

/** Sends |requests| exports of |spans| spans; returns the span ids acknowledged. */
async function load(daemon, firstTag, requests, spans) {
    const acked = [];
    for (let i = 0; i < requests; i++) {
        const { ids, body } = exportBody(firstTag + i, spans);
        assert.equal(await post(daemon, body), 200);
        acked.push(...ids);
    }
    return acked;
}

function arrived(fake, ids) {
    const seen = new Set(fake.events().map((e) => e.body && e.body.id));
    return ids.filter((id) => !seen.has(id));
}

async function waitAllArrived(fake, ids) {
    await waitFor(() => arrived(fake, ids).length === 0, {
        timeoutMs: 30000,
        what: 'every acknowledged span to arrive',
        describe: () => `${arrived(fake, ids).length} of ${ids.length} missing`,
    });
}

describe('restarts around the spool', { skip }, () => {
    test('SIGTERM with Langfuse away exits 0 and the next start delivers', { timeout: 60000 }, async () => {
        const spoolDir = path.join(workDir('restart-term'), 'spool');
        const port = await freePort();
        const langfuseUrl = `http://127.0.0.1:${port}`;
        const first = await startDaemon({ langfuseUrl, spoolDir, env: ENV, name: 'restart-term-1' });
        const acked = await load(first, 0x100, 20, 5);
        await first.stop();
        assert.match(first.log(), /stopping on SIGTERM/);
        assert.doesNotMatch(first.log(), /dropped=[1-9]/);

        const fake = await startFakeLangfuse({ port });
        const second = await startDaemon({ langfuseUrl, spoolDir, env: ENV, name: 'restart-term-2' });
        try {
            assert.match(second.log(), /spool recovered requests=20 bytes=\d+/);
            await waitAllArrived(fake, acked);
            await waitFor(async () => (await metricsOf(second)).otel2langfuse_spool_requests === 0, {
                what: 'the spool to empty',
            });
            assert.equal((await metricsOf(second)).otel2langfuse_events_dropped_total, 0);
        } finally {
            await second.stop();
            await fake.close();
        }
    });

    test('a torn end of the write-ahead log after SIGKILL loses nothing acknowledged', { timeout: 60000 }, async () => {
        const spoolDir = path.join(workDir('restart-torn'), 'spool');
        const port = await freePort();
        const langfuseUrl = `http://127.0.0.1:${port}`;
        const first = await startDaemon({ langfuseUrl, spoolDir, env: ENV, name: 'restart-torn-1' });
        const acked = await load(first, 0x200, 10, 5);
        await first.kill();

        // Half a frame of garbage, as a write cut short by a power loss leaves.
        const wal = path.join(spoolDir, 'spool.db-wal');
        assert.ok(fs.existsSync(wal), 'the write-ahead log is there after SIGKILL');
        fs.appendFileSync(wal, Buffer.alloc(2000, 0xa5));

        const fake = await startFakeLangfuse({ port });
        const second = await startDaemon({ langfuseUrl, spoolDir, env: ENV, name: 'restart-torn-2' });
        try {
            assert.match(second.log(), /spool recovered requests=10 bytes=\d+/);
            await waitAllArrived(fake, acked);
        } finally {
            await second.stop();
            await fake.close();
        }
    });

    test('a spool file that is not a database is moved aside', { timeout: 60000 }, async () => {
        const spoolDir = path.join(workDir('restart-garbage'), 'spool');
        fs.mkdirSync(spoolDir, { mode: 0o700 });
        fs.writeFileSync(path.join(spoolDir, 'spool.db'), Buffer.alloc(8192, 0x42));
        const fake = await startFakeLangfuse();
        const daemon = await startDaemon({ langfuseUrl: fake.url, spoolDir, env: ENV, name: 'restart-garbage' });
        try {
            assert.match(daemon.log(), /corrupt/);
            const aside = fs.readdirSync(spoolDir).filter((f) => f.startsWith('spool.db.corrupt-'));
            assert.equal(aside.length, 1, `moved aside: ${fs.readdirSync(spoolDir).join(', ')}`);
            const acked = await load(daemon, 0x300, 2, 3);
            await waitAllArrived(fake, acked);
        } finally {
            await daemon.stop();
            await fake.close();
        }
    });
});
