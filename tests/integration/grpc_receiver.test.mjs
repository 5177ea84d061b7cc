// The OTLP/gRPC receiver: the OpenTelemetry JS gRPC exporter sending the
// LangGraph app's spans, many streams and connections at once, every kind
// of bad input answered with its gRPC status (the daemon serving on
// afterwards), the spool-full retry hint, and a graceful stop.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import path from 'node:path';

import { FINAL_ANSWER } from './app/script.mjs';
import { checkGraphTrace, SPANS_PER_RUN } from './lib/langgraph_checks.mjs';
import { forTrace, runApp, startDaemon, startFakeLangfuse, summarize, traceIds, waitFor, waitForTrace, workDir } from './lib/harness.mjs';
import {
    call,
    close,
    connect,
    decodeExportResponse,
    decodeStatusDetails,
    exportRequest,
    frame,
    gzipFrame,
    GRPC,
    HEALTH_PATH,
    messageOf,
    startCall,
    TRACE_SERVICE,
} from './lib/h2client.mjs';

const haveBin = Boolean(process.env.O2L_BIN);
const TRACE = '6c9f0e1d2a3b4c5d6e7f8091a2b3c4d5';
const LIMIT = 1024 * 1024;

/** The gRPC port the daemon logged (it listens on 127.0.0.1:0). */
function grpcPortOf(daemon) {
    const m = /listening grpc=127\.0\.0\.1:(\d+)/.exec(daemon.log());
    assert.ok(m, `no "listening grpc=" line in the log:\n${daemon.logTail()}`);
    return Number(m[1]);
}

function spanId(n) {
    return n.toString(16).padStart(16, '0');
}

function oneSpan(id) {
    return exportRequest([{ traceId: TRACE, spanId: id }]);
}

/** grpc.health.v1.HealthCheckRequest{service}. */
function healthRequest(service) {
    const name = Buffer.from(service);
    return service ? Buffer.concat([Buffer.from([0x0a, name.length]), name]) : Buffer.alloc(0);
}

function assertStatus(res, code, what) {
    assert.equal(res.status, 200, `${what}: HTTP status`);
    assert.equal(res.grpcStatus, code, `${what}: grpc-status ${res.grpcStatus} (${res.grpcMessage})`);
    if (code !== GRPC.OK) assert.ok(res.grpcMessage && res.grpcMessage.length > 0, `${what}: grpc-message`);
}

function assertOk(res, what) {
    assertStatus(res, GRPC.OK, what);
    assert.match(res.headers['content-type'], /^application\/grpc/);
    assert.equal(res.trailers['grpc-status'], '0', `${what}: status in the trailers`);
    return decodeExportResponse(messageOf(res));
}

function delivered(fake, id) {
    return fake.events().some((e) => e.body && e.body.id === id);
}

describe('OTLP/gRPC receiver', { skip: !haveBin && 'O2L_BIN is not set' }, () => {
    let fake;
    let daemon;
    let port;
    let session;

    before(async () => {
        fake = await startFakeLangfuse();
        daemon = await startDaemon({
            langfuseUrl: fake.url,
            name: 'grpc-receiver',
            env: { O2L_GRPC_MAX_MESSAGE_BYTES: String(LIMIT) },
        });
        port = grpcPortOf(daemon);
        session = await connect(port);
    });

    after(async () => {
        if (session) await close(session);
        if (daemon) await daemon.stop();
        if (fake) await fake.close();
    });

    test('an export is answered OK and delivered', async () => {
        const res = await call(session, { body: frame(oneSpan(spanId(0xa1))) });
        const body = assertOk(res, 'plain export');
        assert.deepEqual(body, {});
        assert.match(res.headers['grpc-accept-encoding'], /gzip/);
        await waitFor(() => delivered(fake, spanId(0xa1)), { what: 'the span to reach Langfuse' });
    });

    test('gzip and identity messages, with or without the +proto subtype', async () => {
        const cases = [
            { id: 0xa2, body: gzipFrame(oneSpan(spanId(0xa2))), headers: { 'grpc-encoding': 'gzip' } },
            // gzip announced, this message sent uncompressed (flag 0).
            { id: 0xa3, body: frame(oneSpan(spanId(0xa3))), headers: { 'grpc-encoding': 'gzip' } },
            { id: 0xa4, body: frame(oneSpan(spanId(0xa4))), headers: { 'grpc-encoding': 'identity' } },
            { id: 0xa5, body: frame(oneSpan(spanId(0xa5))), headers: { 'content-type': 'application/grpc+proto' } },
        ];
        for (const c of cases) {
            assertOk(await call(session, { body: c.body, headers: c.headers }), `span ${c.id.toString(16)}`);
        }
        for (const c of cases) {
            await waitFor(() => delivered(fake, spanId(c.id)), { what: `span ${c.id.toString(16)}` });
        }
    });

    test('an empty export is OK and sends nothing', async () => {
        assertOk(await call(session, { body: frame(Buffer.alloc(0)) }), 'empty export');
    });

    test('bad span ids give a partial success; the good spans go on', async () => {
        const body = exportRequest([
            { traceId: TRACE, spanId: spanId(0xb1) },
            { traceId: '00000000000000000000000000000000', spanId: spanId(0xb2) },
        ]);
        const res = assertOk(await call(session, { body: frame(body) }), 'partial success');
        assert.equal(res.partialSuccess.rejectedSpans, 1);
        assert.ok(res.partialSuccess.errorMessage.length > 0);
        await waitFor(() => delivered(fake, spanId(0xb1)), { what: 'the good span' });
        assert.ok(!delivered(fake, spanId(0xb2)));
    });

    test('the health check says SERVING', async () => {
        for (const service of ['', TRACE_SERVICE]) {
            const res = await call(session, { path: HEALTH_PATH, body: frame(healthRequest(service)) });
            assertStatus(res, GRPC.OK, `health ${service || '(server)'}`);
            assert.deepEqual([...messageOf(res)], [0x08, 0x01], 'HealthCheckResponse{status: SERVING}');
        }
        const unknown = await call(session, { path: HEALTH_PATH, body: frame(healthRequest('no.Such')) });
        assertStatus(unknown, GRPC.NOT_FOUND, 'health of an unknown service');
    });

    test('unknown methods and encodings are UNIMPLEMENTED', async () => {
        const body = frame(oneSpan(spanId(0xc1)));
        assertStatus(await call(session, { path: '/opentelemetry.proto.collector.metrics.v1.MetricsService/Export', body }), GRPC.UNIMPLEMENTED, 'metrics');
        assertStatus(await call(session, { path: '/grpc.health.v1.Health/Watch', body: frame(Buffer.alloc(0)) }), GRPC.UNIMPLEMENTED, 'health watch');
        const br = await call(session, { body, headers: { 'grpc-encoding': 'br' } });
        assertStatus(br, GRPC.UNIMPLEMENTED, 'br encoding');
        assert.match(br.headers['grpc-accept-encoding'], /gzip/);
        assert.match(br.grpcMessage, /br/);
        await new Promise((r) => setTimeout(r, 400));
        assert.ok(!delivered(fake, spanId(0xc1)));
    });

    test('broken framing and undecodable messages are INVALID_ARGUMENT', async () => {
        const msg = oneSpan(spanId(0xc2));
        const cases = {
            'lying length prefix': frame(msg, { length: msg.length + 100 }),
            'prefix cut short': frame(msg).subarray(0, 3),
            'no message at all': Buffer.alloc(0),
            'flag byte 2': frame(msg, { flag: 2 }),
            'two messages in a unary call': Buffer.concat([frame(msg), frame(msg)]),
            'compressed flag without grpc-encoding': gzipFrame(msg),
            'garbage protobuf': frame(Buffer.from([0x0a, 0xff, 0xff, 0xff, 0x0f, 0x01])),
        };
        for (const [what, body] of Object.entries(cases)) {
            assertStatus(await call(session, { body }), GRPC.INVALID_ARGUMENT, what);
        }
        const identity = await call(session, { body: gzipFrame(msg), headers: { 'grpc-encoding': 'identity' } });
        assertStatus(identity, GRPC.INVALID_ARGUMENT, 'compressed flag with identity encoding');
        const notGzip = await call(session, { body: frame(Buffer.from('not gzip'), { flag: 1 }), headers: { 'grpc-encoding': 'gzip' } });
        assertStatus(notGzip, GRPC.INVALID_ARGUMENT, 'flag set, bytes not gzip');
        await new Promise((r) => setTimeout(r, 400));
        assert.ok(!delivered(fake, spanId(0xc2)));
    });

    test('messages over the limit are RESOURCE_EXHAUSTED, decided on the prefix or while inflating', async () => {
        // Only the prefix is sent and the stream stays open: the answer must
        // come from the prefix alone, before any of the body is buffered.
        const { req, result } = startCall(session);
        const head = Buffer.alloc(5);
        head.writeUInt32BE(LIMIT + 1, 1);
        req.write(head);
        const over = await result;
        assertStatus(over, GRPC.RESOURCE_EXHAUSTED, 'over-limit prefix');
        assert.equal(over.detailsBin, undefined, 'no retry hint for a message that will never fit');
        req.close();

        const bomb = gzipFrame(Buffer.alloc(8 * LIMIT, 0x20));
        assert.ok(bomb.length < 64 * 1024);
        const res = await call(session, { body: bomb, headers: { 'grpc-encoding': 'gzip' } });
        assertStatus(res, GRPC.RESOURCE_EXHAUSTED, 'gzip bomb');
        assert.match(res.grpcMessage, /decompression/);
        assert.equal(res.detailsBin, undefined);

        // A real message over the limit, sent in full.
        const big = await call(session, { body: frame(Buffer.alloc(LIMIT + 10)) });
        assertStatus(big, GRPC.RESOURCE_EXHAUSTED, 'large message');
    });

    test('one connection holds at most a few full messages at once', { timeout: 60000 }, async () => {
        // Nine streams each send all but the last byte of a message at the
        // limit; together they pass what one connection may buffer.
        const own = await connect(port);
        try {
            const calls = [];
            for (let i = 0; i < 9; i++) {
                const c = startCall(own);
                c.req.write(frame(Buffer.alloc(LIMIT - 1), { length: LIMIT }));
                calls.push(c);
            }
            const first = await Promise.race(calls.map((c, i) => c.result.then((res) => ({ res, i }))));
            // Transient: UNAVAILABLE with a retry hint, so clients retry.
            assertStatus(first.res, GRPC.UNAVAILABLE, 'the stream over the connection bound');
            assert.ok(first.res.detailsBin, 'retry info');
            assert.match(first.res.grpcMessage, /connection/);
            for (const c of calls) c.req.close();
            await Promise.allSettled(calls.map((c) => c.result));
            assertOk(await call(own, { body: frame(oneSpan(spanId(0xc4))) }), 'the same connection afterwards');
        } finally {
            await close(own);
        }
    });

    test('a request that is not gRPC is refused', async () => {
        const res = await call(session, { body: frame(oneSpan(spanId(0xc3))), headers: { 'content-type': 'application/json' } });
        assert.equal(res.status, 415);
        assert.equal(res.grpcStatus, GRPC.INVALID_ARGUMENT);
    });

    test('a connection speaking garbage is closed; other connections go on', async () => {
        await new Promise((resolve, reject) => {
            const sock = net.connect(port, '127.0.0.1', () => sock.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
            const timer = setTimeout(() => reject(new Error('garbage connection was not closed')), 10000);
            sock.on('error', () => {});
            sock.on('close', () => {
                clearTimeout(timer);
                resolve();
            });
            sock.resume();
        });
        assert.ok(!session.closed && !session.destroyed, 'the first connection is still open');
        assertOk(await call(session, { body: frame(oneSpan(spanId(0xd1))) }), 'after garbage');
    });

    test('50 streams on each of 4 connections at once', { timeout: 120000 }, async () => {
        const sessions = await Promise.all([0, 1, 2, 3].map(() => connect(port)));
        const ids = [];
        try {
            const calls = [];
            sessions.forEach((s, c) => {
                for (let i = 0; i < 50; i++) {
                    const id = spanId(0x10000 + c * 0x100 + i);
                    ids.push(id);
                    const gzip = i % 2 === 1;
                    const body = gzip ? gzipFrame(oneSpan(id)) : frame(oneSpan(id));
                    calls.push(call(s, { body, headers: gzip ? { 'grpc-encoding': 'gzip' } : {} }));
                }
            });
            const results = await Promise.all(calls);
            results.forEach((r, i) => assertOk(r, `call ${i}`));
        } finally {
            await Promise.all(sessions.map(close));
        }
        await waitFor(() => ids.every((id) => delivered(fake, id)), {
            timeoutMs: 30000,
            what: 'all 200 spans to reach Langfuse',
            describe: () => `${ids.filter((id) => !delivered(fake, id)).length} missing`,
        });
    });

    test('the daemon still serves after all of that', async () => {
        assertOk(await call(session, { body: frame(oneSpan(spanId(0xe1))) }), 'last export');
        await waitFor(() => delivered(fake, spanId(0xe1)), { what: 'the last span' });
        assert.deepEqual(fake.rejections(), []);
        assert.doesNotMatch(daemon.log(), /AddressSanitizer|runtime error/);
    });
});

describe('OTLP/gRPC with a full spool', { skip: !haveBin && 'O2L_BIN is not set' }, () => {
    test('UNAVAILABLE with a RetryInfo of 5 s; OK again once the spool drains', { timeout: 60000 }, async () => {
        const fake = await startFakeLangfuse();
        fake.setFault({ type: 'status', status: 503, retryAfter: '1', count: 100000 });
        const daemon = await startDaemon({
            langfuseUrl: fake.url,
            name: 'grpc-spool-full',
            env: { O2L_SPOOL_MAX_BYTES: '4096', O2L_SHUTDOWN_TIMEOUT_MS: '500', O2L_RETRY_MAX_MS: '1000' },
        });
        let session;
        try {
            session = await connect(grpcPortOf(daemon));
            // New span ids each time: copies of one span would replace
            // each other in the assemble stage instead of filling the spool.
            let n = 0xf100;
            const next = () => {
                n += 2;
                return frame(exportRequest([
                    { traceId: TRACE, spanId: spanId(n) },
                    { traceId: TRACE, spanId: spanId(n + 1) },
                ]));
            };
            assertOk(await call(session, { body: next() }), 'first export');
            // Langfuse answers 503, so nothing leaves and the spool fills.
            let accepted = 1;
            while (accepted < 200 && (await call(session, { body: next() })).grpcStatus === GRPC.OK) accepted += 1;
            assert.ok(accepted < 200, 'the spool fills up');
            for (const what of ['export at the cap', 'next export at the cap']) {
                const res = await call(session, { body: next() });
                assertStatus(res, GRPC.UNAVAILABLE, what);
                assert.ok(res.detailsBin, `${what}: grpc-status-details-bin`);
                assert.doesNotMatch(res.detailsBin, /=/, 'base64 without padding');
                const details = decodeStatusDetails(res.detailsBin);
                assert.equal(details.code, GRPC.UNAVAILABLE);
                assert.deepEqual(details.typeUrls, ['type.googleapis.com/google.rpc.RetryInfo']);
                assert.equal(details.retryDelaySeconds, 5);
            }
            const health = await call(session, { path: HEALTH_PATH, body: frame(Buffer.alloc(0)) });
            assertStatus(health, GRPC.OK, 'health while full');

            fake.setFault(null);
            await waitFor(
                async () => {
                    const res = await call(session, { body: next() });
                    return res.grpcStatus === GRPC.OK;
                },
                { timeoutMs: 30000, intervalMs: 300, what: 'an export to be accepted once Langfuse recovers' },
            );
        } finally {
            if (session) await close(session);
            await daemon.stop().catch(() => {});
            await fake.close();
        }
    });
});

describe('OTLP/gRPC graceful stop', { skip: !haveBin && 'O2L_BIN is not set' }, () => {
    test('a call in progress at SIGTERM finishes and is delivered', { timeout: 60000 }, async () => {
        const fake = await startFakeLangfuse();
        const spoolDir = path.join(workDir('grpc-stop'), 'spool');
        const daemon = await startDaemon({ langfuseUrl: fake.url, name: 'grpc-stop', spoolDir });
        let again = null;
        let stopped = null;
        let session;
        try {
            session = await connect(grpcPortOf(daemon));
            const goaway = new Promise((resolve) => session.once('goaway', resolve));
            const wire = frame(oneSpan(spanId(0x5701)));
            const { req, result } = startCall(session);
            req.write(wire.subarray(0, 10));
            // Let the server see the stream before the stop begins.
            await new Promise((r) => setTimeout(r, 300));
            stopped = daemon.stop();
            await goaway;
            req.end(wire.subarray(10));
            assertOk(await result, 'the call begun before the stop');
            await stopped;
            stopped = null;
            assert.match(daemon.log(), /stopping on SIGTERM/);
            // Sent during the stop, or kept in the spool for the next start.
            if (!delivered(fake, spanId(0x5701))) {
                again = await startDaemon({ langfuseUrl: fake.url, name: 'grpc-stop-2', spoolDir });
                await waitFor(() => delivered(fake, spanId(0x5701)), { what: 'the span after the next start' });
            }
        } finally {
            if (session) session.destroy();
            if (stopped) await stopped.catch(() => {});
            if (again) await again.stop().catch(() => {});
            await fake.close();
        }
    });
});

describe('LangGraph through OTLP/gRPC into Langfuse', { skip: !haveBin && 'O2L_BIN is not set' }, () => {
    let fake;
    let daemon;
    let url;

    before(async () => {
        fake = await startFakeLangfuse();
        daemon = await startDaemon({ langfuseUrl: fake.url, name: 'grpc-langgraph' });
        url = `http://127.0.0.1:${grpcPortOf(daemon)}`;
    });

    after(async () => {
        if (daemon) await daemon.stop();
        if (fake) await fake.close();
    });

    for (const inst of ['openinference', 'langfuse']) {
        for (const gzip of [false, true]) {
            test(`${inst} grpc ${gzip ? 'gzip' : 'plain'}`, { timeout: 120000 }, async () => {
                fake.reset();
                try {
                    const run = await runApp({ instrumentation: inst, protocol: 'grpc', url, gzip });
                    assert.equal(run.code, 0, `app exit ${run.code}\nstdout:\n${run.stdout}\nstderr:\n${run.stderr}`);
                    assert.equal(run.result.answer, FINAL_ANSWER);
                    const { traceId, events: all } = await waitForTrace(fake, { minObservations: SPANS_PER_RUN });
                    assert.deepEqual(fake.rejections(), [], 'the fake Langfuse rejected events');
                    assert.deepEqual(traceIds(all), [traceId], 'events for more than one trace');
                    checkGraphTrace(inst, traceId, forTrace(all, traceId));
                    const compressed = /grpc conn=\d+ stream=\d+ accepted spans=\d+ rejected=0 compressed=yes/;
                    if (gzip) assert.match(daemon.log(), compressed, 'the exporter sent gzip messages');
                } catch (err) {
                    err.message += `\n--- events ---\n${summarize(fake.events())}\n--- daemon log (tail) ---\n${daemon.logTail(80)}`;
                    throw err;
                }
            });
        }
    }
});
