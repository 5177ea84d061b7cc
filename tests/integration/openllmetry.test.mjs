// End to end: the LangGraph app (same graph and scripted model as
// langgraph.test.mjs), instrumented with OpenLLMetry's LangChain
// instrumentation for JS, exports OTLP to otel2langfuse, which delivers to a
// fake Langfuse: v3 (ingestion events) and v4 (OTLP, read back through the
// OTLP view). The first group checks the app and the capture server alone.
//
// The spans of this instrumentation do not carry the graph, node and tool
// names or the tool calls in the model output (docs/KNOWN_LIMITATIONS.md),
// so the checks expect the names it does send.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { FINAL_ANSWER } from './app/script.mjs';
import {
    checkOpenLLMetryGraphTrace,
    OPENLLMETRY_REQUEST_SPAN,
    OPENLLMETRY_SENT_NAMES,
    OPENLLMETRY_SPANS_PER_RUN,
} from './lib/langgraph_checks.mjs';
import { appFailure, forTrace, runExportApp, spanSummary, startDaemon, startFakeLangfuse, stopAll, summarize, traceIds, waitForOtlpSpans, waitForTrace } from './lib/harness.mjs';
import { attrs, startCapture } from './lib/otlp_capture.mjs';
import { eventsFromSpans, missingTraceFacts } from './lib/otlp_view.mjs';

const SCOPE = '@traceloop/instrumentation-langchain';

const runOpenLLMetryApp = (opts) => runExportApp('openllmetry.mjs', opts);

const haveDaemon = Boolean(process.env.O2L_BIN);

describe('the OpenLLMetry app exports sane spans (capture server, no daemon)', () => {
    test('http/json', { timeout: 90000 }, async () => {
        const cap = await startCapture();
        try {
            const run = await runOpenLLMetryApp({ url: cap.url });
            assert.equal(run.code, 0, appFailure(run));
            assert.equal(run.result.answer, FINAL_ANSWER);
            const spans = cap.spans();
            assert.equal(spans.length, OPENLLMETRY_SPANS_PER_RUN, spans.map((s) => s.span.name).join(','));
            assert.equal(new Set(spans.map((s) => s.span.traceId)).size, 1, 'one trace');
            const roots = spans.filter((s) => !s.span.parentSpanId);
            assert.equal(roots.length, 1);
            assert.equal(roots[0].span.name, OPENLLMETRY_REQUEST_SPAN);
            const lc = spans.filter((s) => s.scope.name === SCOPE);
            assert.equal(lc.length, OPENLLMETRY_SPANS_PER_RUN - 1, 'every LangChain run from the instrumentation');
            for (const s of lc) {
                const a = attrs(s.span);
                assert.equal(s.span.parentSpanId, roots[0].span.spanId, `${s.span.name} hangs under the request span`);
                assert.equal(a['traceloop.association.properties.user_id'], 'user-7');
                assert.equal(a['traceloop.association.properties.thread_id'], 'thread-42');
            }
            const names = lc.map((s) => s.span.name).sort();
            assert.deepEqual(
                names,
                [
                    'chat fake-gpt-4o-mini',
                    'chat fake-gpt-4o-mini',
                    'execute_tool DynamicStructuredTool',
                    'workflow CompiledStateGraph',
                    'workflow RunnableLambda',
                    'workflow RunnableLambda',
                    'workflow RunnableSequence',
                    'workflow RunnableSequence',
                    'workflow RunnableSequence',
                    'workflow RunnableSequence',
                ],
            );
            const chat = lc.filter((s) => s.span.name.startsWith('chat ')).map((s) => attrs(s.span));
            for (const a of chat) {
                assert.equal(a['gen_ai.operation.name'], 'chat');
                assert.ok(a['gen_ai.input.messages'], 'input messages on the chat span');
            }
            const tool = lc.find((s) => s.span.name.startsWith('execute_tool'));
            assert.equal(attrs(tool.span)['traceloop.span.kind'], 'task');
        } finally {
            await cap.close();
        }
    });
});

describe('OpenLLMetry JS LangGraph run into Langfuse v3 (ingestion)', { skip: haveDaemon ? false : 'O2L_BIN is not set' }, () => {
    let fake;
    let daemon;
    let lastRun = null;

    before(async () => {
        fake = await startFakeLangfuse();
        daemon = await startDaemon({ langfuseUrl: fake.url, name: 'openllmetry' });
    });
    after(stopAll(() => daemon, () => fake));

    for (const c of [
        { protocol: 'http/protobuf', gzip: true },
        { protocol: 'http/json', gzip: false },
    ]) {
        test(`${c.protocol} ${c.gzip ? 'gzip' : 'plain'}`, { timeout: 120000 }, async () => {
            fake.reset();
            try {
                const run = await runOpenLLMetryApp({ url: daemon.url, ...c });
                assert.equal(run.code, 0, appFailure(run));
                assert.equal(run.result.answer, FINAL_ANSWER);
                const { traceId, events: all } = await waitForTrace(fake, { minObservations: OPENLLMETRY_SPANS_PER_RUN });
                assert.deepEqual(fake.rejections(), [], 'the fake Langfuse rejected events');
                assert.deepEqual(traceIds(all), [traceId], 'events for more than one trace');
                lastRun = { traceId, events: forTrace(all, traceId) };
                checkOpenLLMetryGraphTrace(traceId, lastRun.events);
            } catch (err) {
                err.message += `\n--- events ---\n${summarize(fake.events())}\n--- daemon log (tail) ---\n${daemon.logTail(60)}`;
                throw err;
            }
        });
    }

});

describe('OpenLLMetry JS LangGraph run into Langfuse v4 (OTLP)', { skip: haveDaemon ? false : 'O2L_BIN is not set' }, () => {
    let fake;
    let daemon;
    let lastRun = null;

    before(async () => {
        fake = await startFakeLangfuse({ version: '4.0.0' });
        // O2L_OUTPUT is not set: the daemon asks the server and picks OTLP.
        daemon = await startDaemon({ langfuseUrl: fake.url, name: 'openllmetry-v4' });
    });
    after(stopAll(() => daemon, () => fake));

    test('http/protobuf plain', { timeout: 120000 }, async () => {
        fake.reset();
        try {
            const run = await runOpenLLMetryApp({ url: daemon.url, protocol: 'http/protobuf' });
            assert.equal(run.code, 0, appFailure(run));
            const spans = await waitForOtlpSpans(fake, daemon, OPENLLMETRY_SPANS_PER_RUN);
            assert.equal(missingTraceFacts(spans), null, 'every span carries user, session and trace name');
            const traceId = spans[0].traceId;
            lastRun = { traceId, events: eventsFromSpans(spans) };
            checkOpenLLMetryGraphTrace(traceId, lastRun.events);
        } catch (err) {
            err.message += `\n--- spans ---\n${spanSummary(fake)}\n--- daemon log (tail) ---\n${daemon.logTail(60)}`;
            throw err;
        }
    });

});
