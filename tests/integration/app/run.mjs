#!/usr/bin/env node
// Command-line entry point: run the LangGraph app once in this process and
// export its spans.
//
//   node app/run.mjs --instrumentation openinference|langfuse \
//       --protocol http/json|http/protobuf|grpc --url http://127.0.0.1:4318 \
//       [--gzip] [--runs N] [--batch-size N] [--propagate]
//
// Prints one JSON line with the final answer on success; exits non-zero on
// any failure.

import { exportArgs, watchExportErrors } from './otel.mjs';

process.env.LANGCHAIN_TRACING_V2 = 'false';
process.env.LANGSMITH_TRACING = 'false';

const values = exportArgs('run.mjs', {
    instrumentation: { type: 'string', default: 'openinference' },
    runs: { type: 'string', default: '1' },
    'batch-size': { type: 'string', default: '512' },
    'queue-size': { type: 'string', default: '4096' },
    propagate: { type: 'boolean', default: false },
});

const { runGraph } = await import('./graph.mjs');

// Export failures show in the test output.
const exportErrors = await watchExportErrors();

try {
    const results = await runGraph({
        instrumentation: values.instrumentation,
        protocol: values.protocol,
        url: values.url,
        gzip: values.gzip,
        runs: Number(values.runs),
        batch: { maxExportBatchSize: Number(values['batch-size']), maxQueueSize: Number(values['queue-size']) },
        propagate: values.propagate,
    });
    const last = results[results.length - 1];
    const answer = last.messages[last.messages.length - 1].content;
    process.stdout.write(`${JSON.stringify({ ok: exportErrors.length === 0, runs: results.length, answer, exportErrors })}\n`);
    process.exit(exportErrors.length === 0 ? 0 : 1);
} catch (err) {
    process.stderr.write(`run.mjs: ${err && err.stack ? err.stack : err}\n`);
    process.exit(1);
}
