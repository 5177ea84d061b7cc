// End to end: a LangGraph JS app, instrumented with OpenInference or with
// Langfuse's LangChain handler, exports OTLP (HTTP/JSON or HTTP/protobuf,
// gzip or not) to otel2langfuse, which delivers ingestion events to a fake
// Langfuse. The first group checks the app and the capture server alone, so
// a failure there is not blamed on the daemon.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { FINAL_ANSWER, GRAPH_NAME, MODEL_NAME, TOOL_NAME, USAGE } from './app/script.mjs';
import { checkGraphTrace, SPANS_PER_RUN } from './lib/langgraph_checks.mjs';
import { appFailure, forTrace, runApp, spanSummary, startDaemon, startFakeLangfuse, summarize, traceIds, waitForOtlpSpans, waitForTrace } from './lib/harness.mjs';
import { attrs, startCapture } from './lib/otlp_capture.mjs';
import { eventsFromSpans, missingTraceFacts } from './lib/otlp_view.mjs';

const INSTRUMENTATIONS = ['openinference', 'langfuse'];
const PROTOCOLS = ['http/json', 'http/protobuf'];
const GZIP = [false, true];

const SCOPE = {
    openinference: '@arizeai/openinference-instrumentation-langchain',
    langfuse: 'langfuse-sdk',
};

function label(inst, proto, gzip, extra = '') {
    return `${inst} ${proto} ${gzip ? 'gzip' : 'plain'}${extra}`;
}

describe('the app exports sane spans (capture server, no daemon)', () => {
    for (const inst of INSTRUMENTATIONS) {
        for (const proto of PROTOCOLS) {
            for (const gzip of GZIP) {
                test(label(inst, proto, gzip), { timeout: 90000 }, async () => {
                    const cap = await startCapture();
                    try {
                        const run = await runApp({ instrumentation: inst, protocol: proto, url: cap.url, gzip });
                        assert.equal(run.code, 0, appFailure(run));
                        assert.equal(run.result.answer, FINAL_ANSWER);
                        const reqs = cap.requests();
                        assert.ok(reqs.length >= 1, 'no export request');
                        for (const r of reqs) {
                            assert.equal(r.path, '/v1/traces');
                            assert.match(r.contentType, proto === 'http/json' ? /^application\/json/ : /^application\/x-protobuf/);
                            assert.equal(r.contentEncoding, gzip ? 'gzip' : '');
                        }
                        const spans = cap.spans();
                        assert.equal(spans.length, SPANS_PER_RUN, spans.map((s) => s.span.name).join(','));
                        assert.equal(new Set(spans.map((s) => s.span.traceId)).size, 1);
                        for (const s of spans) assert.equal(s.scope.name, SCOPE[inst]);
                        const roots = spans.filter((s) => !s.span.parentSpanId);
                        assert.equal(roots.length, 1);
                        assert.equal(roots[0].span.name, GRAPH_NAME);
                        const names = spans.map((s) => s.span.name).sort();
                        assert.deepEqual(names, ['RunnableLambda', 'RunnableLambda', 'ScriptedChatModel', 'ScriptedChatModel', '__start__', 'agent', 'agent', GRAPH_NAME, TOOL_NAME, 'tools'].sort());
                        const llm = spans.filter((s) => s.span.name === 'ScriptedChatModel').map((s) => attrs(s.span));
                        if (inst === 'openinference') {
                            for (const a of llm) {
                                assert.equal(a['openinference.span.kind'], 'LLM');
                                assert.equal(a['llm.model_name'], MODEL_NAME);
                            }
                            assert.deepEqual(llm.map((a) => a['llm.token_count.total']).sort(), USAGE.map((u) => u.total).sort());
                        } else {
                            for (const a of llm) {
                                assert.equal(a['langfuse.observation.type'], 'generation');
                                assert.equal(a['langfuse.observation.model.name'], MODEL_NAME);
                            }
                            assert.deepEqual(llm.map((a) => JSON.parse(a['langfuse.observation.usage_details']).total).sort(), USAGE.map((u) => u.total).sort());
                        }
                    } finally {
                        await cap.close();
                    }
                });
            }
        }
    }
});

const haveDaemon = Boolean(process.env.O2L_BIN);

describe('LangGraph through otel2langfuse into Langfuse', { skip: haveDaemon ? false : 'O2L_BIN is not set' }, () => {
    let fake;
    let daemon;

    before(async () => {
        fake = await startFakeLangfuse();
        daemon = await startDaemon({ langfuseUrl: fake.url, name: 'langgraph' });
    });

    after(async () => {
        let stopError = null;
        if (daemon) {
            try {
                await daemon.stop();
            } catch (err) {
                stopError = err;
            }
        }
        if (fake) await fake.close();
        if (stopError) throw stopError;
    });

    const cases = [];
    for (const inst of INSTRUMENTATIONS) {
        for (const proto of PROTOCOLS) {
            for (const gzip of GZIP) cases.push({ inst, proto, gzip, propagate: false });
        }
    }
    // Langfuse's handler keeps user, session and tags in the OpenTelemetry
    // context; with the context copied onto spans (as Langfuse's own span
    // processor does) the root span carries user.id and session.id.
    cases.push({ inst: 'langfuse', proto: 'http/protobuf', gzip: true, propagate: true });

    for (const c of cases) {
        test(label(c.inst, c.proto, c.gzip, c.propagate ? ' propagated' : ''), { timeout: 120000 }, async () => {
            fake.reset();
            try {
                const run = await runApp({ instrumentation: c.inst, protocol: c.proto, url: daemon.url, gzip: c.gzip, propagate: c.propagate });
                assert.equal(run.code, 0, appFailure(run));
                assert.equal(run.result.answer, FINAL_ANSWER);

                const { traceId, events: all } = await waitForTrace(fake, { minObservations: SPANS_PER_RUN });
                assert.deepEqual(fake.rejections(), [], 'the fake Langfuse rejected events');
                assert.deepEqual(traceIds(all), [traceId], 'events for more than one trace');
                checkGraphTrace(c.inst, traceId, forTrace(all, traceId));
            } catch (err) {
                err.message += `\n--- events ---\n${summarize(fake.events())}\n--- daemon log (tail) ---\n${daemon.logTail(80)}`;
                throw err;
            }
        });
    }
});

describe('LangGraph into Langfuse v4, output chosen automatically', { skip: haveDaemon ? false : 'O2L_BIN is not set' }, () => {
    let fake;
    let daemon;

    before(async () => {
        fake = await startFakeLangfuse({ version: '4.0.0' });
        // O2L_OUTPUT is not set: the daemon asks the server and picks OTLP.
        daemon = await startDaemon({ langfuseUrl: fake.url, name: 'langgraph-v4' });
    });

    after(async () => {
        let stopError = null;
        if (daemon) {
            try {
                await daemon.stop();
            } catch (err) {
                stopError = err;
            }
        }
        if (fake) await fake.close();
        if (stopError) throw stopError;
    });

    const cases = [
        { inst: 'openinference', proto: 'http/protobuf', gzip: true, propagate: false },
        { inst: 'openinference', proto: 'http/json', gzip: false, propagate: false },
        { inst: 'langfuse', proto: 'http/protobuf', gzip: false, propagate: false },
        { inst: 'langfuse', proto: 'http/json', gzip: true, propagate: true },
    ];
    for (const c of cases) {
        test(label(c.inst, c.proto, c.gzip, c.propagate ? ' propagated' : ''), { timeout: 120000 }, async () => {
            fake.reset();
            try {
                const run = await runApp({ instrumentation: c.inst, protocol: c.proto, url: daemon.url, gzip: c.gzip, propagate: c.propagate });
                assert.equal(run.code, 0, appFailure(run));
                assert.equal(run.result.answer, FINAL_ANSWER);

                const spans = await waitForOtlpSpans(fake, daemon, SPANS_PER_RUN);
                assert.equal(missingTraceFacts(spans), null, 'every span carries user, session and trace name');
                const traceId = spans[0].traceId;
                checkGraphTrace(c.inst, traceId, eventsFromSpans(spans));
            } catch (err) {
                err.message += `\n--- spans ---\n${spanSummary(fake)}\n--- daemon log (tail) ---\n${daemon.logTail(80)}`;
                throw err;
            }
        });
    }
});
