// SPDX-License-Identifier: Apache-2.0
//
// The assemble stage: a trace whose spans come in several export requests,
// children first and the root last, with the trace-level facts (session,
// user, tags) only on children, ends up in Langfuse exactly as when all of
// it comes in one request, with the ingestion output (v3) and with the
// OTLP output (v4). Also: a server that says it is v3 but refuses trace
// events on the ingestion API makes the daemon switch to OTLP and send
// everything again from the spool.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { forTrace, observations, startDaemon, startFakeLangfuse, trace, traceCreates, waitFor } from './lib/harness.mjs';
import { eventsFromSpans, missingTraceFacts } from './lib/otlp_view.mjs';

const skip = !process.env.O2L_BIN && 'O2L_BIN is not set';

const ENV = { O2L_RETRY_INITIAL_MS: '50', O2L_RETRY_MAX_MS: '300', O2L_AUTH_RETRY_MS: '300' };

const str = (v) => ({ stringValue: v });

/**
 * One small agent trace: a root without facts, a node with the session
 * and a tag, a node whose LangGraph metadata names the user and another
 * tag, and a model call under the first node.
 */
function traceSpans(traceId) {
    const t0 = 1700000000000000000n;
    const at = (ms) => String(t0 + BigInt(ms) * 1000000n);
    const span = (spanId, parent, name, start, end, attributes) => ({
        traceId,
        spanId,
        ...(parent ? { parentSpanId: parent } : {}),
        name,
        kind: 1,
        startTimeUnixNano: at(start),
        endTimeUnixNano: at(end),
        attributes,
    });
    const p = traceId.slice(0, 8);
    return {
        root: span(`${p}00000001`, null, 'support_graph', 0, 900, [
            { key: 'openinference.span.kind', value: str('CHAIN') },
            { key: 'input.value', value: str('{"question":"weather?"}') },
            { key: 'output.value', value: str('{"answer":"sunny"}') },
        ]),
        agent: span(`${p}00000002`, `${p}00000001`, 'agent', 10, 500, [
            { key: 'openinference.span.kind', value: str('CHAIN') },
            { key: 'session.id', value: str('sess-42') },
            { key: 'langfuse.trace.tags', value: { arrayValue: { values: [str('alpha')] } } },
        ]),
        tools: span(`${p}00000003`, `${p}00000001`, 'tools', 510, 800, [
            { key: 'openinference.span.kind', value: str('CHAIN') },
            { key: 'metadata', value: str('{"langgraph_node":"tools","langfuse_user_id":"user-7","langfuse_tags":["beta"]}') },
        ]),
        llm: span(`${p}00000004`, `${p}00000002`, 'ChatModel', 20, 400, [
            { key: 'openinference.span.kind', value: str('LLM') },
            { key: 'llm.model_name', value: str('gpt-4o-mini') },
            { key: 'llm.token_count.prompt', value: { intValue: '12' } },
            { key: 'llm.token_count.completion', value: { intValue: '5' } },
        ]),
    };
}

function exportOf(spans) {
    return JSON.stringify({
        resourceSpans: [
            {
                resource: { attributes: [{ key: 'service.name', value: str('assemble-it') }] },
                scopeSpans: [{ scope: { name: '@arizeai/openinference-instrumentation-langchain' }, spans }],
            },
        ],
    });
}

async function post(daemon, spans) {
    const res = await fetch(`${daemon.url}/v1/traces`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: exportOf(spans),
    });
    await res.arrayBuffer();
    assert.equal(res.status, 200);
}

const WHOLE = 'aaaa0000000000000000000000000001';
const SPLIT = 'bbbb0000000000000000000000000002';

/** Sends WHOLE in one request, SPLIT in three, children first. */
async function sendBoth(daemon) {
    const w = traceSpans(WHOLE);
    await post(daemon, [w.root, w.agent, w.tools, w.llm]);
    const s = traceSpans(SPLIT);
    await post(daemon, [s.llm]);
    await post(daemon, [s.agent, s.tools]);
    await new Promise((r) => setTimeout(r, 150));
    await post(daemon, [s.root]);
}

/** The parts of a trace that must not depend on how it arrived. */
function shape(events, traceId) {
    const t = trace(events, traceId).body;
    const obs = observations(forTrace(events, traceId))
        .map((o) => ({ type: o.type, name: o.body.name, model: o.body.model, usage: o.body.usageDetails, parent: o.body.parentObservationId?.slice(8) }))
        .sort((a, b) => a.name.localeCompare(b.name));
    return { name: t.name, userId: t.userId, sessionId: t.sessionId, tags: t.tags, input: t.input, output: t.output, obs };
}

describe('a trace split over several requests', { skip }, () => {
    test('ingestion output (Langfuse v3): the same trace as from one request', { timeout: 60000 }, async () => {
        const fake = await startFakeLangfuse();
        const daemon = await startDaemon({ langfuseUrl: fake.url, env: ENV, name: 'assemble-v3' });
        try {
            await sendBoth(daemon);
            await waitFor(() => observations(fake.events()).length >= 8, { what: 'eight observations' });
            await new Promise((r) => setTimeout(r, 500));
            const events = fake.events();
            assert.deepEqual(fake.rejections(), []);
            assert.equal(traceCreates(forTrace(events, SPLIT)).length, 1, 'one trace-create for the split trace');
            const whole = shape(events, WHOLE);
            assert.equal(whole.sessionId, 'sess-42');
            assert.equal(whole.userId, 'user-7');
            assert.deepEqual(whole.tags, ['alpha', 'beta']);
            assert.equal(whole.name, 'support_graph');
            assert.deepEqual(shape(events, SPLIT), whole);
        } finally {
            await daemon.stop();
            await fake.close();
        }
    });

    test('OTLP output (Langfuse v4): every span carries the facts, as from one request', { timeout: 60000 }, async () => {
        const fake = await startFakeLangfuse({ version: '4.1.0' });
        const daemon = await startDaemon({ langfuseUrl: fake.url, env: ENV, name: 'assemble-v4' });
        try {
            await sendBoth(daemon);
            await waitFor(() => fake.spans().length >= 8, { what: 'eight spans' });
            await new Promise((r) => setTimeout(r, 500));
            const spans = fake.spans();
            assert.equal(spans.length, 8, 'each span once');
            const of = (id) => spans.filter((s) => s.traceId === id);
            for (const id of [WHOLE, SPLIT]) {
                assert.equal(missingTraceFacts(of(id), ['langfuse.user.id', 'langfuse.session.id', 'langfuse.trace.name', 'langfuse.trace.tags']), null, id);
                for (const s of of(id)) {
                    assert.equal(s.attributes['langfuse.user.id'], 'user-7');
                    assert.equal(s.attributes['langfuse.session.id'], 'sess-42');
                    assert.deepEqual(s.attributes['langfuse.trace.tags'], ['alpha', 'beta']);
                }
            }
            const events = eventsFromSpans(spans);
            assert.deepEqual(shape(events, SPLIT), shape(events, WHOLE));
        } finally {
            await daemon.stop();
            await fake.close();
        }
    });
});

describe('choosing the output', { skip }, () => {
    test('a server that refuses trace events on the ingestion API gets them over OTLP', { timeout: 60000 }, async () => {
        // Says 3.x, behaves like v4: only the refusal can tell.
        const fake = await startFakeLangfuse({ version: '3.150.0', mode: 'v4' });
        const daemon = await startDaemon({ langfuseUrl: fake.url, env: ENV, name: 'assemble-switch' });
        try {
            await sendBoth(daemon);
            await waitFor(() => fake.spans().length >= 8, {
                timeoutMs: 30000,
                what: 'eight spans over OTLP after the switch',
                describe: () => `${fake.spans().length} spans; log:\n${daemon.logTail(20)}`,
            });
            assert.match(daemon.log(), /switching output ingestion -> otlp/);
            assert.ok(fake.rejections().length > 0, 'the ingestion route refused first');
            assert.equal(new Set(fake.spans().map((s) => s.spanId)).size, 8, 'every span arrived');
            assert.equal(missingTraceFacts(fake.spans().filter((s) => s.traceId === SPLIT)), null);
        } finally {
            await daemon.stop();
            await fake.close();
        }
    });
});
