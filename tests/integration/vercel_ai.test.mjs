// End to end: a Vercel AI SDK app (app/vercel_ai.mjs: generateText with a
// tool step, then streamText, on the SDK's mock model) exports its own
// telemetry over OTLP to otel2langfuse, which delivers to a fake Langfuse:
// v3 (ingestion events) and v4 (OTLP, read back through the OTLP view).
// The checks follow the README's mapping for the Vercel AI SDK.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { VERCEL } from './app/vercel_ai.mjs';
import {
    appFailure,
    byStart,
    forTrace,
    observationById,
    observations,
    observationsByType,
    observationType,
    runExportApp,
    spanSummary,
    startDaemon,
    startFakeLangfuse,
    stopAll,
    summarize,
    trace,
    traceCreates,
    waitFor,
    waitForOtlpSpans,
} from './lib/harness.mjs';
import { attrs, startCapture } from './lib/otlp_capture.mjs';
import { eventsFromSpans, missingTraceFacts } from './lib/otlp_view.mjs';

const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{3}|\.\d{6})?Z$/;

const NAMES = {
    generate: `${VERCEL.functionId}:ai.generateText`,
    doGenerate: `${VERCEL.functionId}:ai.generateText.doGenerate`,
    stream: `${VERCEL.functionId}:ai.streamText`,
    doStream: `${VERCEL.functionId}:ai.streamText.doStream`,
};

// Spans the app sends: generateText (outer, two doGenerate, one toolCall)
// and streamText (outer, one doStream with two span events).
const SPANS = 6;
// Observations: one per span, plus an EVENT per span event of doStream.
const OBSERVATIONS = SPANS + 2;

const runVercelApp = (opts) => runExportApp('vercel_ai.mjs', opts);

function checkApp(run) {
    assert.equal(run.code, 0, appFailure(run));
    assert.equal(run.result.text, VERCEL.answer);
    assert.equal(run.result.streamed, VERCEL.streamChunks.join(''));
}

function messageList(input) {
    if (Array.isArray(input)) return input;
    if (input && Array.isArray(input.messages)) return input.messages;
    return null;
}

/** Usage as exclusive buckets: input without cache reads, output without reasoning. */
function expectedUsage(u) {
    const out = { input: u.input - u.cacheRead, output: u.output - u.reasoning, total: u.input + u.output };
    if (u.cacheRead) out.input_cached_tokens = u.cacheRead;
    if (u.reasoning) out.output_reasoning_tokens = u.reasoning;
    return out;
}

/** usageDetails without zero-valued breakdown buckets (sending 0 is harmless). */
function withoutZeroDetails(usage) {
    return Object.fromEntries(Object.entries(usage ?? {}).filter(([k, v]) => ['input', 'output', 'total'].includes(k) || v !== 0));
}

function checkCommonObservation(o, traceId) {
    const b = o.body;
    assert.equal(b.traceId, traceId);
    assert.match(b.startTime, ISO);
    assert.equal(o.id, `${traceId}-${b.id}`);
    assert.equal(b.environment, 'test', `${b.name} environment`);
    for (const [k, v] of Object.entries(b)) assert.notEqual(v, null, `${b.name}.${k} is null`);
}

function checkTraceFacts(t, name) {
    assert.equal(t.name, name, 'trace name');
    assert.equal(t.userId, VERCEL.userId, 'trace userId from ai.telemetry.metadata.userId');
    assert.equal(t.sessionId, VERCEL.sessionId, 'trace sessionId from ai.telemetry.metadata.sessionId');
    assert.deepEqual(t.tags, [...VERCEL.tags].sort(), 'trace tags from ai.telemetry.metadata.tags');
    assert.equal(t.environment, 'test');
    assert.match(t.timestamp, ISO);
}

/**
 * The generateText trace: outer SPAN, two GENERATIONs (tool call, answer)
 * and one TOOL, all under the outer span.
 */
function checkGenerateTrace(traceId, events) {
    const obs = observations(events);
    assert.equal(traceCreates(events).length, 1, 'one trace-create');
    const t = trace(events, traceId).body;
    checkTraceFacts(t, NAMES.generate);
    assert.ok(JSON.stringify(t.input).includes(VERCEL.question), `trace input: ${JSON.stringify(t.input)}`);
    assert.ok(JSON.stringify(t.output).includes(VERCEL.answer), `trace output: ${JSON.stringify(t.output)}`);

    assert.equal(obs.length, 4, `observations: ${obs.map((o) => o.body.name).join(', ')}`);
    for (const o of obs) checkCommonObservation(o, traceId);

    const outer = obs.filter((o) => !o.body.parentObservationId);
    assert.equal(outer.length, 1, 'one root');
    const root = outer[0];
    assert.equal(root.body.name, NAMES.generate, 'outer name, prefixed with the functionId');
    assert.equal(observationType(root), 'SPAN', 'outer ai.generateText is a SPAN');
    assert.equal(root.body.usageDetails, undefined, 'the outer span keeps no aggregate usage');
    assert.equal(root.body.model, undefined, 'the outer span has no model');
    assert.match(root.body.endTime, ISO);
    assert.equal(root.body.metadata?.app, 'weather', 'telemetry metadata on the outer span');
    for (const k of ['userId', 'sessionId', 'tags']) assert.equal(root.body.metadata?.[k], undefined, `metadata.${k} is a trace fact, not metadata`);

    // In call order: the second call sees the longer conversation (start
    // times may tie at millisecond precision).
    const gens = observationsByType(events, 'GENERATION').sort((a, b) => (messageList(a.body.input)?.length ?? 0) - (messageList(b.body.input)?.length ?? 0));
    assert.equal(gens.length, 2, 'two doGenerate generations');
    const usages = [VERCEL.usage.toolStep, VERCEL.usage.answerStep];
    gens.forEach((g, i) => {
        const b = g.body;
        assert.equal(b.name, NAMES.doGenerate, `generation ${i} name`);
        assert.equal(b.parentObservationId, root.body.id, `generation ${i} under the outer span`);
        assert.equal(b.model, VERCEL.modelId, `generation ${i} model`);
        assert.match(b.endTime, ISO);
        const msgs = messageList(b.input);
        assert.ok(msgs && msgs.length > 0, `generation ${i} input is a message list: ${JSON.stringify(b.input)}`);
        assert.equal(msgs[0].role, 'user');
        assert.ok(JSON.stringify(msgs[0].content).includes(VERCEL.question), 'first message is the question');
        assert.deepEqual(msgs.map((m) => m.role), i === 0 ? ['user'] : ['user', 'assistant', 'tool'], `generation ${i} conversation`);
        assert.ok(JSON.stringify(b.input.tools ?? []).includes(VERCEL.toolName), `generation ${i} input carries the tool definitions`);
        assert.deepEqual(withoutZeroDetails(b.usageDetails), expectedUsage(usages[i]), `generation ${i} usage (exclusive buckets)`);
        assert.equal(b.modelParameters?.temperature, 0, `generation ${i} temperature`);
    });
    assert.ok(JSON.stringify(gens[0].body.output).includes(VERCEL.toolCallId), `first output holds the tool call: ${JSON.stringify(gens[0].body.output)}`);
    assert.ok(JSON.stringify(gens[1].body.output).includes(VERCEL.answer), 'second output is the answer');

    const tools = observationsByType(events, 'TOOL');
    assert.equal(tools.length, 1, 'one ai.toolCall TOOL');
    const tool = tools[0].body;
    assert.equal(tool.name, VERCEL.toolName, 'tool named after the tool');
    assert.equal(tool.parentObservationId, root.body.id);
    assert.deepEqual(tool.input, { city: 'Paris' }, 'tool arguments');
    assert.ok(JSON.stringify(tool.output).includes('Sunny, 21 degrees in Paris'), `tool result: ${JSON.stringify(tool.output)}`);
    assert.match(tool.endTime, ISO);
}

/**
 * The streamText trace: outer SPAN, one doStream GENERATION with a
 * completion start, and an EVENT for each of its span events.
 * completionStart: the GENERATION's completion start time (ISO), read
 * from wherever the output puts it.
 */
function checkStreamTrace(traceId, events, completionStart) {
    const obs = observations(events);
    assert.equal(traceCreates(events).length, 1, 'one trace-create');
    const t = trace(events, traceId).body;
    checkTraceFacts(t, NAMES.stream);
    assert.ok(JSON.stringify(t.output).includes(VERCEL.streamChunks.join('')), `trace output: ${JSON.stringify(t.output)}`);

    assert.equal(obs.length, 4, `observations: ${obs.map((o) => o.body.name).join(', ')}`);
    for (const o of obs) checkCommonObservation(o, traceId);

    const roots = obs.filter((o) => !o.body.parentObservationId);
    assert.equal(roots.length, 1);
    const root = roots[0];
    assert.equal(root.body.name, NAMES.stream);
    assert.equal(observationType(root), 'SPAN');
    assert.equal(root.body.usageDetails, undefined, 'the outer span keeps no aggregate usage');

    const gens = observationsByType(events, 'GENERATION');
    assert.equal(gens.length, 1, 'one doStream generation');
    const g = gens[0].body;
    assert.equal(g.name, NAMES.doStream);
    assert.equal(g.parentObservationId, root.body.id);
    assert.equal(g.model, VERCEL.modelId);
    const msgs = messageList(g.input);
    assert.ok(msgs && msgs.length === 1 && msgs[0].role === 'user', `input is the message list: ${JSON.stringify(g.input)}`);
    assert.ok(JSON.stringify(msgs[0].content).includes(VERCEL.streamPrompt));
    assert.equal(g.output, VERCEL.streamChunks.join(''), 'output is the streamed text');
    assert.deepEqual(withoutZeroDetails(g.usageDetails), expectedUsage(VERCEL.usage.stream), 'stream usage');
    assert.equal(g.modelParameters?.temperature, 0.5);
    assert.match(completionStart ?? '', ISO, 'completionStartTime of a stream');
    assert.ok(Date.parse(completionStart) >= Date.parse(g.startTime), 'completion starts after the call starts');

    const evs = byStart(observationsByType(events, 'EVENT'));
    assert.deepEqual(evs.map((e) => e.body.name).sort(), ['ai.stream.finish', 'ai.stream.firstChunk'], 'span events become EVENTs');
    for (const e of evs) {
        assert.equal(e.body.parentObservationId, gens[0].body.id, `${e.body.name} under doStream`);
        assert.equal(e.body.endTime, undefined, 'an EVENT has no end time');
    }
    for (const o of obs) {
        if (o.body.parentObservationId) assert.ok(observationById(events, o.body.parentObservationId), `parent of ${o.body.name} present`);
    }
}

/** Split delivered events into the generateText and streamText traces. */
function splitTraces(all) {
    const creates = traceCreates(all);
    const byName = (name) => creates.filter((c) => c.body.name === name).map((c) => c.body.id);
    const gen = byName(NAMES.generate);
    const str = byName(NAMES.stream);
    assert.equal(gen.length, 1, `one generateText trace: ${creates.map((c) => c.body.name).join(', ')}`);
    assert.equal(str.length, 1, `one streamText trace: ${creates.map((c) => c.body.name).join(', ')}`);
    assert.equal(creates.length, 2, 'exactly two traces');
    return { generate: gen[0], stream: str[0] };
}

const haveDaemon = Boolean(process.env.O2L_BIN);

describe('the Vercel AI SDK app exports sane spans (capture server, no daemon)', () => {
    test('http/json', { timeout: 90000 }, async () => {
        const cap = await startCapture();
        try {
            const run = await runVercelApp({ url: cap.url });
            checkApp(run);
            const spans = cap.spans();
            assert.equal(spans.length, SPANS, spans.map((s) => s.span.name).join(','));
            for (const s of spans) assert.equal(s.scope.name, 'ai');
            assert.equal(new Set(spans.map((s) => s.span.traceId)).size, 2, 'generateText and streamText are separate traces');
            assert.deepEqual(
                spans.map((s) => s.span.name).sort(),
                ['ai.generateText', 'ai.generateText.doGenerate', 'ai.generateText.doGenerate', 'ai.streamText', 'ai.streamText.doStream', 'ai.toolCall'],
            );
            for (const s of spans) {
                const a = attrs(s.span);
                assert.equal(a['ai.telemetry.functionId'], VERCEL.functionId);
                assert.equal(a['ai.telemetry.metadata.userId'], VERCEL.userId);
            }
            const doStream = spans.find((s) => s.span.name === 'ai.streamText.doStream');
            assert.ok(attrs(doStream.span)['ai.response.msToFirstChunk'] !== undefined, 'stream reports time to first chunk');
        } finally {
            await cap.close();
        }
    });
});

describe('Vercel AI SDK into Langfuse v3 (ingestion)', { skip: haveDaemon ? false : 'O2L_BIN is not set' }, () => {
    let fake;
    let daemon;

    before(async () => {
        fake = await startFakeLangfuse();
        daemon = await startDaemon({ langfuseUrl: fake.url, name: 'vercel-ai' });
    });
    after(stopAll(() => daemon, () => fake));

    for (const c of [
        { protocol: 'http/protobuf', gzip: false },
        { protocol: 'http/json', gzip: true },
    ]) {
        test(`${c.protocol} ${c.gzip ? 'gzip' : 'plain'}`, { timeout: 120000 }, async () => {
            fake.reset();
            try {
                const run = await runVercelApp({ url: daemon.url, ...c });
                checkApp(run);
                await waitFor(() => traceCreates(fake.events()).length >= 2 && observations(fake.events()).length >= OBSERVATIONS, {
                    timeoutMs: 20000,
                    what: `two traces with ${OBSERVATIONS} observations`,
                    describe: () => summarize(fake.events()),
                });
                await new Promise((r) => setTimeout(r, 1000));
                const all = fake.events();
                assert.deepEqual(fake.rejections(), [], 'the fake Langfuse rejected events');
                assert.equal(observations(all).length, OBSERVATIONS, 'one observation per span and span event');
                assert.equal(new Set(all.map((e) => e.id)).size, all.length, 'no duplicate envelope ids');
                const ids = splitTraces(all);
                checkGenerateTrace(ids.generate, forTrace(all, ids.generate));
                const streamEvents = forTrace(all, ids.stream);
                const gen = observationsByType(streamEvents, 'GENERATION')[0];
                checkStreamTrace(ids.stream, streamEvents, gen?.body.completionStartTime);
            } catch (err) {
                err.message += `\n--- events ---\n${summarize(fake.events())}\n--- daemon log (tail) ---\n${daemon.logTail(60)}`;
                throw err;
            }
        });
    }
});

describe('Vercel AI SDK into Langfuse v4 (OTLP)', { skip: haveDaemon ? false : 'O2L_BIN is not set' }, () => {
    let fake;
    let daemon;

    before(async () => {
        fake = await startFakeLangfuse({ version: '4.0.0' });
        daemon = await startDaemon({ langfuseUrl: fake.url, name: 'vercel-ai-v4' });
    });
    after(stopAll(() => daemon, () => fake));

    test('http/protobuf gzip', { timeout: 120000 }, async () => {
        fake.reset();
        try {
            const run = await runVercelApp({ url: daemon.url, protocol: 'http/protobuf', gzip: true });
            checkApp(run);
            // Span events that become EVENTs travel as extra child spans.
            const spans = await waitForOtlpSpans(fake, daemon, OBSERVATIONS, 'each span delivered once, plus one per span event');
            for (const tid of new Set(spans.map((s) => s.traceId))) {
                const mine = spans.filter((s) => s.traceId === tid);
                assert.equal(missingTraceFacts(mine), null, 'every span carries user, session and trace name');
                for (const s of mine) assert.deepEqual(s.attributes['langfuse.trace.tags'], [...VERCEL.tags].sort(), `${s.name} carries the tags`);
            }
            const all = eventsFromSpans(spans);
            const ids = splitTraces(all);
            checkGenerateTrace(ids.generate, forTrace(all, ids.generate));
            const doStream = spans.find((s) => s.traceId === ids.stream && s.name === NAMES.doStream);
            assert.ok(doStream, 'the doStream span');
            checkStreamTrace(ids.stream, forTrace(all, ids.stream), doStream.attributes['langfuse.observation.completion_start_time']);
        } catch (err) {
            err.message += `\n--- spans ---\n${spanSummary(fake)}\n--- daemon log (tail) ---\n${daemon.logTail(60)}`;
            throw err;
        }
    });
});
