// The OTLP/HTTP receiver's answers: success, partial success and every kind
// of bad input, with the daemon still serving afterwards; and `convert`
// printing the same events the daemon delivers.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';

import { startDaemon, startFakeLangfuse, waitFor, workDir } from './lib/harness.mjs';

const haveBin = Boolean(process.env.O2L_BIN);
const TRACE = '5b8efff798038103d269b633813fc60c';

function span(spanId, extra = {}) {
    return {
        traceId: TRACE,
        spanId,
        name: `op-${spanId.slice(-2)}`,
        kind: 1,
        startTimeUnixNano: '1700000000000000000',
        endTimeUnixNano: '1700000001000000000',
        attributes: [{ key: 'input.value', value: { stringValue: 'hello' } }],
        ...extra,
    };
}

function exportOf(spans) {
    return {
        resourceSpans: [
            {
                resource: { attributes: [{ key: 'service.name', value: { stringValue: 'it' } }] },
                scopeSpans: [{ scope: { name: 'it-scope' }, spans }],
            },
        ],
    };
}

async function post(url, body, headers = {}, method = 'POST') {
    const res = await fetch(url, { method, headers, body: method === 'GET' ? undefined : body });
    const buf = Buffer.from(await res.arrayBuffer());
    return { status: res.status, headers: res.headers, body: buf };
}

const JSON_CT = { 'Content-Type': 'application/json' };
const PB_CT = { 'Content-Type': 'application/x-protobuf' };

describe('OTLP/HTTP receiver', { skip: !haveBin && 'O2L_BIN is not set' }, () => {
    let fake;
    let daemon;
    let traces;

    before(async () => {
        fake = await startFakeLangfuse();
        daemon = await startDaemon({
            langfuseUrl: fake.url,
            name: 'http-receiver',
            env: { O2L_HTTP_MAX_BODY_BYTES: String(1024 * 1024) },
        });
        traces = `${daemon.url}/v1/traces`;
    });

    after(async () => {
        if (daemon) await daemon.stop();
        if (fake) await fake.close();
    });

    test('a JSON export is accepted and delivered', async () => {
        const res = await post(traces, JSON.stringify(exportOf([span('00000000000000a1')])), JSON_CT);
        assert.equal(res.status, 200);
        assert.match(res.headers.get('content-type'), /application\/json/);
        assert.deepEqual(JSON.parse(res.body.toString()), {});
        await waitFor(() => fake.events().some((e) => e.body.id === '00000000000000a1'), {
            what: 'the span to reach Langfuse',
        });
    });

    test('content type parameters and gzip are accepted', async () => {
        const body = zlib.gzipSync(JSON.stringify(exportOf([span('00000000000000a2')])));
        const res = await post(traces, body, {
            'Content-Type': 'application/json; charset=utf-8',
            'Content-Encoding': 'gzip',
        });
        assert.equal(res.status, 200);
        await waitFor(() => fake.events().some((e) => e.body.id === '00000000000000a2'), {
            what: 'the gzip span to reach Langfuse',
        });

        // Several gzip members join into one body.
        const text = JSON.stringify(exportOf([span('00000000000000a3')]));
        const half = Math.floor(text.length / 2);
        const members = Buffer.concat([zlib.gzipSync(text.slice(0, half)), zlib.gzipSync(text.slice(half))]);
        const joined = await post(traces, members, { ...JSON_CT, 'Content-Encoding': 'gzip' });
        assert.equal(joined.status, 200, joined.body.toString());
        await waitFor(() => fake.events().some((e) => e.body.id === '00000000000000a3'), {
            what: 'the span from two gzip members',
        });
    });

    test('an empty export is a 200 and sends nothing', async () => {
        const before = fake.requests().length;
        for (const body of ['{}', '{"resourceSpans":[]}']) {
            const res = await post(traces, body, JSON_CT);
            assert.equal(res.status, 200);
        }
        const pb = await post(traces, Buffer.alloc(0), PB_CT);
        assert.equal(pb.status, 200);
        assert.match(pb.headers.get('content-type'), /application\/x-protobuf/);
        await new Promise((r) => setTimeout(r, 600));
        assert.equal(fake.requests().length, before);
    });

    test('bad span ids give a partial success; the good spans go on', async () => {
        const spans = [
            span('00000000000000b1'),
            span('00000000000000b2', { traceId: '00000000000000000000000000000000' }),
            span('xyz'),
        ];
        const res = await post(traces, JSON.stringify(exportOf(spans)), JSON_CT);
        assert.equal(res.status, 200);
        const body = JSON.parse(res.body.toString());
        assert.equal(Number(body.partialSuccess.rejectedSpans), 2);
        assert.ok(body.partialSuccess.errorMessage.length > 0);
        await waitFor(() => fake.events().some((e) => e.body.id === '00000000000000b1'), {
            what: 'the good span',
        });
        assert.ok(!fake.events().some((e) => e.body.id === '00000000000000b2'));
    });

    test('undecodable bodies are a 400 with a google.rpc.Status', async () => {
        const bad = await post(traces, '{"resourceSpans": [', JSON_CT);
        assert.equal(bad.status, 400);
        const status = JSON.parse(bad.body.toString());
        assert.equal(status.code, 3);
        assert.ok(status.message.length > 0);

        const notObject = await post(traces, '[1,2]', JSON_CT);
        assert.equal(notObject.status, 400);

        const pb = await post(traces, Buffer.from([0x0a, 0xff, 0xff, 0xff, 0x0f, 0x01]), PB_CT);
        assert.equal(pb.status, 400);
        assert.match(pb.headers.get('content-type'), /application\/x-protobuf/);

        const gz = await post(traces, Buffer.from('not gzip at all'), { ...JSON_CT, 'Content-Encoding': 'gzip' });
        assert.equal(gz.status, 400);

        const trailing = Buffer.concat([zlib.gzipSync('{}'), Buffer.from('garbage')]);
        const tr = await post(traces, trailing, { ...JSON_CT, 'Content-Encoding': 'gzip' });
        assert.equal(tr.status, 400);

        const cut = zlib.gzipSync(JSON.stringify(exportOf([span('00000000000000a9')])));
        const short = await post(traces, cut.subarray(0, cut.length - 6), { ...JSON_CT, 'Content-Encoding': 'gzip' });
        assert.equal(short.status, 400);
    });

    test('bodies over the limit are a 413, also when they only grow on inflating', async () => {
        const big = await post(traces, Buffer.alloc(2 * 1024 * 1024, 0x20), JSON_CT);
        assert.equal(big.status, 413);
        const bomb = zlib.gzipSync(Buffer.alloc(8 * 1024 * 1024, 0x20));
        assert.ok(bomb.length < 64 * 1024);
        const res = await post(traces, bomb, { ...JSON_CT, 'Content-Encoding': 'gzip' });
        assert.equal(res.status, 413);
        assert.ok(JSON.parse(res.body.toString()).message.includes('decompression'));
    });

    test('unknown content types and encodings are a 415', async () => {
        const ct = await post(traces, '{}', { 'Content-Type': 'text/plain' });
        assert.equal(ct.status, 415);
        const none = await post(traces, '{}', {});
        assert.equal(none.status, 415);
        const enc = await post(traces, '{}', { ...JSON_CT, 'Content-Encoding': 'br' });
        assert.equal(enc.status, 415);
    });

    test('wrong methods are a 405 and unknown paths a 404', async () => {
        const get = await post(traces, null, {}, 'GET');
        assert.equal(get.status, 405);
        assert.equal(get.headers.get('allow'), 'POST');
        const missing = await post(`${daemon.url}/v1/metrics`, '{}', JSON_CT);
        assert.equal(missing.status, 404);
    });

    test('the daemon still serves after all of that', async () => {
        const res = await post(traces, JSON.stringify(exportOf([span('00000000000000c1')])), JSON_CT);
        assert.equal(res.status, 200);
        await waitFor(() => fake.events().some((e) => e.body.id === '00000000000000c1'), {
            what: 'the last span',
        });
        assert.deepEqual(fake.rejections(), []);
    });
});

describe('spool bounds', { skip: !haveBin && 'O2L_BIN is not set' }, () => {
    test('a full spool answers 503 with Retry-After; a request larger than the spool 413', async () => {
        const fake = await startFakeLangfuse();
        fake.setFault({ type: 'status', status: 503, retryAfter: '1', count: 1000 });
        const daemon = await startDaemon({
            langfuseUrl: fake.url,
            name: 'spool-full',
            env: { O2L_SPOOL_MAX_BYTES: '4096', O2L_SHUTDOWN_TIMEOUT_MS: '500' },
        });
        try {
            // Larger than the whole spool: never, not later.
            const many = Array.from({ length: 40 }, (_, i) => span(`00000000000000${(0xa0 + i).toString(16)}`));
            const huge = await post(`${daemon.url}/v1/traces`, JSON.stringify(exportOf(many)), JSON_CT);
            assert.equal(huge.status, 413);
            assert.match(JSON.parse(huge.body.toString()).message, /larger than the whole spool/);

            // New span ids each time: copies of one span would replace
            // each other in the assemble stage instead of filling the spool.
            const body = (i) => JSON.stringify(exportOf([span((0xd100 + 2 * i).toString(16).padStart(16, '0')), span((0xd101 + 2 * i).toString(16).padStart(16, '0'))]));
            const first = await post(`${daemon.url}/v1/traces`, body(0), JSON_CT);
            assert.equal(first.status, 200);
            // Langfuse answers 503, so nothing leaves and the spool fills.
            let refused = null;
            for (let i = 1; i < 100 && !refused; i += 1) {
                const res = await post(`${daemon.url}/v1/traces`, body(i), JSON_CT);
                if (res.status !== 200) refused = res;
            }
            assert.ok(refused, 'a request is refused once the spool is full');
            assert.equal(refused.status, 503);
            assert.ok(Number(refused.headers.get('retry-after')) > 0);
            assert.equal(JSON.parse(refused.body.toString()).code, 14);
            assert.match(JSON.parse(refused.body.toString()).message, /spool is full/);

        } finally {
            await daemon.stop().catch(() => {});
            await fake.close();
        }
    });
});

describe('convert', { skip: !haveBin && 'O2L_BIN is not set' }, () => {
    test('prints exactly the events the daemon delivers', async () => {
        const sample = path.resolve(import.meta.dirname, '../data/samples/langgraph_openinference.json');
        const out = spawnSync(process.env.O2L_BIN, ['convert', sample], { encoding: 'utf8' });
        assert.equal(out.status, 0, out.stderr);
        const converted = JSON.parse(out.stdout).batch;
        assert.ok(converted.length > 0);

        const fake = await startFakeLangfuse();
        const daemon = await startDaemon({ langfuseUrl: fake.url, name: 'convert-same' });
        try {
            const res = await post(`${daemon.url}/v1/traces`, fs.readFileSync(sample), JSON_CT);
            assert.equal(res.status, 200);
            await waitFor(() => fake.events().length >= converted.length, { what: 'all events' });
        } finally {
            await daemon.stop();
            await fake.close();
        }
        const byId = (list) => Object.fromEntries(list.map((e) => [e.id, e]));
        assert.deepEqual(byId(fake.events()), byId(converted));
    });

    test('reads protobuf from stdin and reports bad input', () => {
        const dir = workDir('convert');
        const bad = path.join(dir, 'bad.json');
        fs.writeFileSync(bad, '{"resourceSpans": 5}');
        const res = spawnSync(process.env.O2L_BIN, ['convert', bad], { encoding: 'utf8' });
        assert.notEqual(res.status, 0);
        assert.ok(res.stderr.length > 0);
        const empty = spawnSync(process.env.O2L_BIN, ['convert'], { input: Buffer.alloc(0), encoding: 'utf8' });
        assert.equal(empty.status, 0, empty.stderr);
        assert.deepEqual(JSON.parse(empty.stdout), { batch: [] });
    });
});

describe('without Langfuse credentials', { skip: !haveBin && 'O2L_BIN is not set' }, () => {
    test('events are written as JSON lines and the log says where', async () => {
        const daemon = await startDaemon({
            langfuseUrl: 'http://127.0.0.1:9',
            name: 'file-sink',
            env: { LANGFUSE_PUBLIC_KEY: '', LANGFUSE_SECRET_KEY: '', LANGFUSE_BASE_URL: '' },
        });
        const file = path.join(path.dirname(daemon.logPath), 'events.jsonl');
        const res = await post(`${daemon.url}/v1/traces`, JSON.stringify(exportOf([span('00000000000000e1')])), JSON_CT);
        assert.equal(res.status, 200);
        await daemon.stop();
        assert.match(daemon.log(), /no Langfuse credentials: writing ingestion events to \S*events\.jsonl/);
        const lines = fs.readFileSync(file, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
        assert.deepEqual(lines.map((e) => e.type).sort(), ['span-create', 'trace-create']);
        assert.equal(lines.find((e) => e.type === 'span-create').body.id, '00000000000000e1');
    });
});
