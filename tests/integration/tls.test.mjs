// TLS on both receivers: HTTPS exports, gRPC over TLS from node's http2 and
// from the OpenTelemetry JS gRPC exporter, clients that do not speak TLS
// (or not h2) failing alone while the daemon serves on, and certificate
// settings that stop the start.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import http2 from 'node:http2';
import https from 'node:https';
import path from 'node:path';

import { quietEnv, startDaemon, startFakeLangfuse, waitFor, workDir } from './lib/harness.mjs';
import { call, close, exportRequest, frame, GRPC } from './lib/h2client.mjs';

const haveBin = Boolean(process.env.O2L_BIN);
const haveOpenssl = spawnSync('openssl', ['version']).status === 0;
const skip = (!haveBin && 'O2L_BIN is not set') || (!haveOpenssl && 'the openssl command is missing');
const TRACE = '7d1e2f30415263748596a7b8c9d0e1f2';

function spanId(n) {
    return n.toString(16).padStart(16, '0');
}

/** A throwaway self-signed certificate for 127.0.0.1 and its key. */
function makeCert(dir, name) {
    const cert = path.join(dir, `${name}-cert.pem`);
    const key = path.join(dir, `${name}-key.pem`);
    const res = spawnSync(
        'openssl',
        ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
            '-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=127.0.0.1',
            '-addext', 'subjectAltName=IP:127.0.0.1'],
        { encoding: 'utf8' },
    );
    assert.equal(res.status, 0, `openssl req failed: ${res.stderr}`);
    return { cert, key };
}

function jsonExport(id) {
    return JSON.stringify({
        resourceSpans: [
            {
                resource: { attributes: [{ key: 'service.name', value: { stringValue: 'tls-it' } }] },
                scopeSpans: [
                    {
                        scope: { name: 'tls-it-scope' },
                        spans: [
                            {
                                traceId: TRACE,
                                spanId: id,
                                name: `https-${id.slice(-2)}`,
                                kind: 1,
                                startTimeUnixNano: '1700000000000000000',
                                endTimeUnixNano: '1700000001000000000',
                            },
                        ],
                    },
                ],
            },
        ],
    });
}

/** One request with node's https (or http): resolves {status, body}. */
function request(mod, options, body) {
    return new Promise((resolve, reject) => {
        const req = mod.request({ host: '127.0.0.1', method: 'POST', path: '/v1/traces', timeout: 10000, ...options }, (res) => {
            const chunks = [];
            res.on('data', (d) => chunks.push(d));
            res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString('utf8') }));
            res.on('error', reject);
        });
        req.on('timeout', () => req.destroy(new Error('request timed out')));
        req.on('error', reject);
        req.end(body);
    });
}

function postHttps(port, ca, id) {
    return request(https, { port, ca, headers: { 'Content-Type': 'application/json' }, agent: false }, jsonExport(id));
}

/** An http2 session over TLS; resolves once connected. */
function connectTls(port, ca) {
    return new Promise((resolve, reject) => {
        const session = http2.connect(`https://127.0.0.1:${port}`, { ca });
        session.once('error', reject);
        session.once('connect', () => {
            session.off('error', reject);
            session.on('error', () => {});
            resolve(session);
        });
    });
}

/** Resolves with the error a connection attempt ends with, or null. */
function failureOf(promise) {
    return promise.then(
        () => null,
        (err) => err,
    );
}

function delivered(fake, id) {
    return fake.events().some((e) => e.body && e.body.id === id);
}

describe('TLS on the receivers', { skip }, () => {
    let dir;
    let pem;
    let ca;
    let fake;
    let daemon;
    let grpcPort;

    before(async () => {
        dir = workDir('tls-certs');
        pem = makeCert(dir, 'server');
        ca = fs.readFileSync(pem.cert);
        fake = await startFakeLangfuse();
        daemon = await startDaemon({
            langfuseUrl: fake.url,
            name: 'tls',
            env: { O2L_TLS_CERT_FILE: pem.cert, O2L_TLS_KEY_FILE: pem.key, O2L_GRPC_LISTEN: '127.0.0.1:0' },
        });
        const m = /listening grpc=127\.0\.0\.1:(\d+)/.exec(daemon.log());
        assert.ok(m, `no "listening grpc=" line:\n${daemon.logTail()}`);
        grpcPort = Number(m[1]);
    });

    after(async () => {
        if (daemon) await daemon.stop();
        if (fake) await fake.close();
    });

    test('an OTLP/JSON export over HTTPS is answered 200 and delivered', async () => {
        const id = spanId(0xc1);
        const res = await postHttps(daemon.port, ca, id);
        assert.equal(res.status, 200, res.body);
        await waitFor(() => delivered(fake, id), { what: 'the HTTPS span to reach Langfuse' });
        assert.match(daemon.log(), /receivers serve TLS only/);
    });

    test('a gRPC Export over TLS (ALPN h2) is OK and delivered', async () => {
        const id = spanId(0xc2);
        const session = await connectTls(grpcPort, ca);
        try {
            assert.equal(session.alpnProtocol, 'h2');
            const res = await call(session, { body: frame(exportRequest([{ traceId: TRACE, spanId: id }])) });
            assert.equal(res.grpcStatus, GRPC.OK, `grpc-status ${res.grpcStatus} (${res.grpcMessage})`);
        } finally {
            await close(session);
        }
        await waitFor(() => delivered(fake, id), { what: 'the gRPC span to reach Langfuse' });
    });

    test('the OpenTelemetry JS gRPC exporter delivers over TLS', async () => {
        const grpc = await import('@grpc/grpc-js');
        const { OTLPTraceExporter } = await import('@opentelemetry/exporter-trace-otlp-grpc');
        const { BasicTracerProvider, SimpleSpanProcessor } = await import('@opentelemetry/sdk-trace-base');
        const exporter = new OTLPTraceExporter({
            url: `https://127.0.0.1:${grpcPort}`,
            credentials: grpc.credentials.createSsl(ca),
            timeoutMillis: 10000,
        });
        // Count what the exporter reports, so a refused export fails here.
        const results = [];
        const original = exporter.export.bind(exporter);
        exporter.export = (spans, done) => original(spans, (r) => {
            results.push(r);
            done(r);
        });
        const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
        const tracer = provider.getTracer('tls-it');
        const names = ['tls-exporter-a', 'tls-exporter-b', 'tls-exporter-c'];
        for (const name of names) tracer.startSpan(name).end();
        await provider.forceFlush();
        await provider.shutdown();
        assert.equal(results.length, names.length, 'one export per span');
        for (const r of results) assert.equal(r.code, 0, `export failed: ${r.error}`);
        await waitFor(() => names.every((n) => fake.events().some((e) => e.body && e.body.name === n)), {
            what: 'the exporter spans to reach Langfuse',
        });
    });

    test('clients without TLS, or without h2, fail alone; TLS still works after', async () => {
        // Plain HTTP to the HTTPS port.
        const plainHttp = await failureOf(
            request(http, { port: daemon.port, headers: { 'Content-Type': 'application/json' }, agent: false }, jsonExport(spanId(0xd1))),
        );
        assert.ok(plainHttp, 'plain HTTP must not get an answer from the HTTPS port');
        // h2c with prior knowledge to the gRPC TLS port.
        const h2c = await failureOf(
            new Promise((resolve, reject) => {
                const s = http2.connect(`http://127.0.0.1:${grpcPort}`);
                s.on('error', reject);
                s.on('close', () => reject(new Error('closed')));
                const req = s.request({ ':method': 'POST', ':path': '/grpc.health.v1.Health/Check', 'content-type': 'application/grpc' });
                req.on('response', resolve);
                req.on('error', reject);
                req.end(frame(Buffer.alloc(0)));
            }),
        );
        assert.ok(h2c, 'h2c must not get an answer from the TLS port');
        // TLS offering only http/1.1 to the gRPC port: refused by ALPN.
        const noH2 = await failureOf(request(https, { port: grpcPort, ca, ALPNProtocols: ['http/1.1'], agent: false }, 'x'));
        assert.ok(noH2, 'a TLS client without h2 must be refused on the gRPC port');
        // Garbage bytes.
        const garbage = await failureOf(request(http, { port: grpcPort, agent: false }, 'not tls at all'));
        assert.ok(garbage);

        await waitFor(() => /peer=127\.0\.0\.1:\d+ TLS handshake failed/.test(daemon.log()), { what: 'the handshake failure log line' });
        await waitFor(() => /ALPN offer lacks h2/.test(daemon.log()), { what: 'the ALPN refusal log line' });

        const id = spanId(0xd2);
        assert.equal((await postHttps(daemon.port, ca, id)).status, 200);
        const session = await connectTls(grpcPort, ca);
        try {
            const res = await call(session, { body: frame(exportRequest([{ traceId: TRACE, spanId: spanId(0xd3) }])) });
            assert.equal(res.grpcStatus, GRPC.OK);
        } finally {
            await close(session);
        }
        await waitFor(() => delivered(fake, id) && delivered(fake, spanId(0xd3)), { what: 'spans sent after the failures' });
        assert.doesNotMatch(daemon.log(), /BEGIN [A-Z ]*PRIVATE KEY/);
    });
});

describe('TLS settings that stop the start', { skip }, () => {
    let dir;
    let pem;
    let other;

    before(() => {
        dir = workDir('tls-bad');
        pem = makeCert(dir, 'server');
        other = makeCert(dir, 'other');
    });

    function run(env, args = []) {
        return spawnSync(process.env.O2L_BIN, ['serve', ...args], {
            cwd: dir,
            encoding: 'utf8',
            timeout: 15000,
            env: quietEnv({
                O2L_HTTP_LISTEN: '127.0.0.1:0',
                O2L_GRPC_LISTEN: '127.0.0.1:0',
                O2L_FILE_SINK: path.join(dir, 'events.jsonl'),
                ...env,
            }),
        });
    }

    test('a certificate without a key (and the reverse)', () => {
        let res = run({ O2L_TLS_CERT_FILE: pem.cert });
        assert.equal(res.status, 2, res.stderr);
        assert.match(res.stderr, /receivers\.tls\.key_file/);
        res = run({}, ['--tls-key-file', pem.key]);
        assert.equal(res.status, 2, res.stderr);
        assert.match(res.stderr, /receivers\.tls\.cert_file/);
    });

    test('a file that cannot be read or is not PEM', () => {
        let res = run({ O2L_TLS_CERT_FILE: path.join(dir, 'missing.pem'), O2L_TLS_KEY_FILE: pem.key });
        assert.equal(res.status, 2, res.stderr);
        assert.match(res.stderr, /setting receivers\.tls\.cert_file: cannot open .*missing\.pem/);
        const junk = path.join(dir, 'junk.pem');
        fs.writeFileSync(junk, 'not a certificate\n');
        res = run({ O2L_TLS_CERT_FILE: pem.cert, O2L_TLS_KEY_FILE: junk });
        assert.equal(res.status, 2, res.stderr);
        assert.match(res.stderr, /setting receivers\.tls\.key_file/);
        res = run({}, ['--tls-cert-file', junk, '--tls-key-file', pem.key]);
        assert.equal(res.status, 2, res.stderr);
        assert.match(res.stderr, /setting receivers\.tls\.cert_file/);
    });

    test('a key that does not match the certificate', () => {
        const res = run({ O2L_TLS_CERT_FILE: pem.cert, O2L_TLS_KEY_FILE: other.key });
        assert.equal(res.status, 2, res.stderr);
        assert.match(res.stderr, /setting receivers\.tls\.key_file/);
        assert.doesNotMatch(res.stderr, /BEGIN [A-Z ]*PRIVATE KEY/);
    });
});
