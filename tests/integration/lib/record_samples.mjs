#!/usr/bin/env node
// Regenerate the recorded exports of the LangGraph app:
//   tests/data/samples/langgraph_openinference.json   OTLP/JSON, one graph run
//   tests/data/samples/langgraph_langfuse.json        OTLP/JSON, one graph run
//   tests/data/samples/langgraph_langfuse_propagated.json  (with the
//       context-attribute processor, see app/graph.mjs)
//   bench/data/langgraph_openinference_512.pb         one protobuf
//       ExportTraceServiceRequest holding exactly 512 spans
// Run from tests/integration: node lib/record_samples.mjs

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startCapture, decodeRequest, flattenSpans } from './otlp_capture.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const itDir = path.resolve(here, '..');
const repo = path.resolve(itDir, '../..');

function runApp(args) {
    return new Promise((resolve, reject) => {
        const child = spawn(process.execPath, [path.join(itDir, 'app/run.mjs'), ...args], {
            cwd: itDir,
            stdio: ['ignore', 'pipe', 'pipe'],
            env: { ...process.env, LANGCHAIN_TRACING_V2: 'false', LANGSMITH_TRACING: 'false' },
        });
        let err = '';
        child.stderr.on('data', (d) => (err += d));
        const timer = setTimeout(() => child.kill('SIGKILL'), 120000);
        child.on('exit', (code) => {
            clearTimeout(timer);
            if (code === 0) resolve();
            else reject(new Error(`app exited ${code}: ${err}`));
        });
    });
}

async function recordJson(instrumentation, file, extra = []) {
    const cap = await startCapture();
    try {
        await runApp(['--instrumentation', instrumentation, '--protocol', 'http/json', '--url', cap.url, ...extra]);
        const reqs = cap.requests();
        if (reqs.length !== 1) throw new Error(`expected one request, got ${reqs.length}`);
        const body = JSON.parse(reqs[0].body.toString('utf8'));
        const out = path.join(repo, 'tests/data/samples', file);
        fs.mkdirSync(path.dirname(out), { recursive: true });
        fs.writeFileSync(out, `${JSON.stringify(body, null, 2)}\n`);
        console.log(`${out}: ${flattenSpans(body).length} spans`);
    } finally {
        await cap.close();
    }
}

async function recordBench() {
    const cap = await startCapture();
    try {
        // 52 runs of 10 spans; the batch processor sends a full batch of
        // 512 as soon as it has one, then the remaining 8 at shutdown.
        await runApp([
            '--instrumentation', 'openinference', '--protocol', 'http/protobuf', '--url', cap.url,
            '--runs', '52', '--batch-size', '512', '--queue-size', '8192',
        ]);
        const full = cap.requests().find((r) => flattenSpans(decodeRequest(r)).length === 512);
        if (!full) throw new Error(`no request with 512 spans: ${cap.requests().map((r) => flattenSpans(decodeRequest(r)).length)}`);
        if (full.contentEncoding) throw new Error('expected an uncompressed body');
        const out = path.join(repo, 'bench/data/langgraph_openinference_512.pb');
        fs.mkdirSync(path.dirname(out), { recursive: true });
        fs.writeFileSync(out, full.body);
        console.log(`${out}: 512 spans, ${full.body.length} bytes`);
    } finally {
        await cap.close();
    }
}

await recordJson('openinference', 'langgraph_openinference.json');
await recordJson('langfuse', 'langgraph_langfuse.json');
await recordJson('langfuse', 'langgraph_langfuse_propagated.json', ['--propagate']);
await recordBench();
