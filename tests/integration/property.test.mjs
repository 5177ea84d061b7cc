// SPDX-License-Identifier: Apache-2.0
//
// Property test of the whole path: a seeded generator sends random spans
// (known mapping keys and random ones, values of every OTLP type, invalid
// UTF-8 as raw bytes, huge and empty values, span events, random parent
// links) as OTLP/JSON to the daemon, which delivers to the strict fake
// Langfuse (v3, ingestion). The fake must see no schema violation, the
// daemon must keep answering, and `convert` must accept the same bodies.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

import { adminGet, startDaemon, startFakeLangfuse, waitFor, workDir } from './lib/harness.mjs';

const skip = !process.env.O2L_BIN && 'O2L_BIN is not set';

const SEED = Number(process.env.O2L_PROPERTY_SEED ?? 20240611);
const REQUESTS = 40;
const SPANS_PER_REQUEST = 10;

/** mulberry32: small, deterministic. */
function rng(seed) {
    let a = seed >>> 0;
    const next = () => {
        a = (a + 0x6d2b79f5) >>> 0;
        let t = a;
        t = Math.imul(t ^ (t >>> 15), t | 1);
        t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
        return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
    return {
        next,
        int: (n) => Math.floor(next() * n),
        chance: (p) => next() < p,
        pick: (arr) => arr[Math.floor(next() * arr.length)],
    };
}

const KNOWN_KEYS = [
    'langfuse.observation.type', 'langfuse.observation.level', 'langfuse.observation.status_message',
    'langfuse.observation.input', 'langfuse.observation.output', 'langfuse.observation.metadata',
    'langfuse.observation.metadata.k', 'langfuse.observation.model.name', 'langfuse.observation.model.parameters',
    'langfuse.observation.usage_details', 'langfuse.observation.cost_details', 'langfuse.observation.completion_start_time',
    'langfuse.observation.prompt.name', 'langfuse.observation.prompt.version', 'langfuse.prompt.name', 'langfuse.prompt.version',
    'langfuse.version', 'langfuse.environment', 'langfuse.release', 'langfuse.trace.name', 'langfuse.trace.input',
    'langfuse.trace.output', 'langfuse.trace.tags', 'langfuse.trace.metadata', 'langfuse.trace.metadata.k',
    'langfuse.trace.public', 'langfuse.public', 'langfuse.tags', 'langfuse.user.id', 'langfuse.session.id',
    'langfuse.trace.id', 'langfuse.internal.as_root', 'langfuse.metadata.k', 'user.id', 'session.id', 'enduser.id',
    'tag.tags', 'metadata', 'openinference.span.kind', 'input.value', 'input.mime_type', 'output.value', 'output.mime_type',
    'llm.input_messages.0.message.role', 'llm.input_messages.0.message.content',
    'llm.output_messages.0.message.tool_calls.0.tool_call.function.name', 'llm.tools.0.tool.json_schema',
    'llm.invocation_parameters', 'llm.model_name', 'llm.token_count.prompt', 'llm.token_count.completion',
    'llm.token_count.total', 'llm.token_count.prompt_details.cache_read', 'llm.token_count.completion_details.reasoning',
    'llm.cost.total', 'llm.cost.prompt', 'retrieval.documents.0.document.content', 'gen_ai.operation.name',
    'gen_ai.system', 'gen_ai.request.model', 'gen_ai.response.model', 'gen_ai.request.temperature',
    'gen_ai.request.max_tokens', 'gen_ai.response.finish_reasons', 'gen_ai.usage.input_tokens',
    'gen_ai.usage.output_tokens', 'gen_ai.usage.prompt_tokens', 'gen_ai.usage.total_tokens',
    'gen_ai.usage.cache_read.input_tokens', 'gen_ai.usage.reasoning.output_tokens', 'gen_ai.usage.cost',
    'gen_ai.prompt', 'gen_ai.prompt.0.content', 'gen_ai.prompt.4000000000.role', 'gen_ai.completion.0.content',
    'gen_ai.input.messages', 'gen_ai.output.messages', 'gen_ai.system_instructions', 'gen_ai.tool.definitions',
    'gen_ai.tool.name', 'gen_ai.tool.call.id', 'gen_ai.tool.call.arguments', 'gen_ai.conversation.id',
    'gen_ai.response.time_to_first_chunk', 'traceloop.span.kind', 'traceloop.entity.name', 'traceloop.entity.input',
    'traceloop.entity.output', 'traceloop.workflow.name', 'traceloop.association.properties.thread_id',
    'llm.usage.total_tokens', 'langsmith.span.kind', 'langsmith.metadata.thread_id', 'mlflow.spanType',
    'mlflow.spanInputs', 'mlflow.spanOutputs', 'mlflow.llm.model', 'mlflow.chat.tokenUsage', 'mlflow.llm.cost',
    'ai.operationId', 'operation.name', 'ai.model.id', 'ai.prompt', 'ai.prompt.messages', 'ai.prompt.tools',
    'ai.response.text', 'ai.response.toolCalls', 'ai.toolCall.name', 'ai.toolCall.args', 'ai.usage.promptTokens',
    'ai.usage.inputTokens', 'ai.usage.cachedInputTokens', 'ai.response.providerMetadata', 'ai.response.msToFirstChunk',
    'ai.telemetry.functionId', 'ai.telemetry.metadata.userId', 'ai.telemetry.metadata.tags',
    'ai.telemetry.metadata.langfusePrompt', 'ai.settings.context.userId', 'ai.settings.maxSteps', 'genkit:name',
    'genkit:metadata:subtype', 'genkit:input', 'genkit:output', 'logfire.msg', 'pydantic_ai.all_messages',
    'final_result', 'tool_arguments', 'tool_response', 'events', 'gcp.vertex.agent.llm_request',
    'gcp.vertex.agent.llm_response', 'lk.input_text', 'flue.tool.name', 'flue.task.id', 'prompt', 'input', 'output',
    'model', 'model_config', 'error.type', 'deployment.environment.name', 'service.version',
];
const STRINGS = [
    '', ' ', 'LLM', 'CHAIN', 'AGENT', 'TOOL', 'RERANKER', 'chat', 'invoke_agent', 'agent_step', 'execute_tool',
    'embeddings', 'workflow', 'task', 'generation', 'event', 'agent', 'guardrail', 'ERROR', 'warn', 'bogus', 'true',
    '0', '7', '-3', '1e999', '"LLM"', 'null', 'application/json', 'gpt-4o', 'langfuse-Prod', 'langfuse', 'a, b ,,c',
    '["x", 1, null]', '{"a": 1, "b": [1, 2]}', '[{"role":"user","content":"hi"}]', '{"input_tokens": 5, "output_tokens": -1}',
    '{"name": "p", "version": "3"}', '[1, 2', '{"a": ', '{}', '[]', '2023-11-14T22:13:20.123Z', '"2023-11-14T22:13:20Z"',
    'GraphInterrupt(x)', 'Command: go', '0A1B2C3D-4E5F-4071-8293-A4B5C6D7E8F9', 'ok \u00e9 \u20ac', 'nul \u0000 char',
    'lone \ud800 surrogate',
];
const EVENT_NAMES = [
    'exception', 'gen_ai.client.inference.operation.details', 'gen_ai.system.message', 'gen_ai.user.message',
    'gen_ai.assistant.message', 'gen_ai.tool.message', 'gen_ai.choice', 'gen_ai.content.prompt',
    'gen_ai.content.completion', 'log', '',
];
const SCOPES = ['', 'ai', 'langfuse-sdk', 'genkit-tracer', 'pydantic-ai', 'gcp.vertex.agent', 'livekit-agents', 'openinference'];
// Byte sequences that are not UTF-8, written raw into the request body.
const BAD_BYTES = ['\xff\xfe', '\xc0\x80', '\xe2\x82', '\xed\xa0\x80', '\xf4\x90\x80\x80'];
const BAD_MARK = '@@BAD@@';

function randomString(r) {
    if (r.chance(0.02)) return (r.chance(0.5) ? '[' : 'x') + 'y'.repeat(150000 + r.int(1000));
    if (r.chance(0.1)) return `text ${BAD_MARK}${r.int(BAD_BYTES.length)} end`;
    if (r.chance(0.1)) return Array.from({ length: r.int(20) }, () => String.fromCharCode(32 + r.int(0x2fff))).join('');
    return r.pick(STRINGS);
}

function randomValue(r, depth = 0) {
    switch (r.int(depth > 2 ? 5 : 8)) {
        case 0:
        case 1:
            return { stringValue: randomString(r) };
        case 2:
            return { intValue: r.pick(['0', '-1', '42', '9223372036854775807', '-9223372036854775808', 7, '12']) };
        case 3:
            return { doubleValue: r.pick([0, -0, 1.5, 2, 1e308, 'NaN', 'Infinity', '-Infinity', 0.1]) };
        case 4:
            return { boolValue: r.chance(0.5) };
        case 5:
            return { arrayValue: { values: Array.from({ length: r.int(4) }, () => randomValue(r, depth + 1)) } };
        case 6:
            return {
                kvlistValue: {
                    values: Array.from({ length: r.int(4) }, () => ({ key: r.pick(['role', 'content', 'a', 'a', '', 'text']), value: randomValue(r, depth + 1) })),
                },
            };
        default:
            return r.chance(0.5) ? { bytesValue: r.pick(['', 'AAEC/w==', 'AAEC_w', 'aGVsbG8']) } : {};
    }
}

const attrs = (r, max) =>
    Array.from({ length: r.int(max + 1) }, () => ({ key: r.chance(0.1) ? randomString(r) : r.pick(KNOWN_KEYS), value: randomValue(r) }));

const hex = (n, w) => n.toString(16).padStart(w, '0');

function randomRequest(r, reqNo) {
    const traceId = `9e0c${hex(SEED & 0xffff, 4)}${hex(reqNo, 24)}`;
    const t0 = 1700000000000000000n + BigInt(reqNo) * 1000000000n;
    const sid = (i) => `b0${hex(reqNo, 6)}${hex(i + 1, 8)}`;
    const spans = [];
    for (let i = 0; i < SPANS_PER_REQUEST; i++) {
        const span = {
            traceId,
            spanId: sid(i),
            name: r.chance(0.1) ? randomString(r) : r.pick(['op', 'agent_turn', 'tts_node', 'LangGraph', 'agent.task', 'chat gpt-4o']),
            kind: r.int(6),
            startTimeUnixNano: String(t0 + BigInt(r.int(1000000000))),
            endTimeUnixNano: String(t0 + 1000000000n + BigInt(r.int(1000000000))),
            attributes: attrs(r, 12),
        };
        if (i > 0 && r.chance(0.85)) span.parentSpanId = sid(r.int(SPANS_PER_REQUEST));
        if (r.chance(0.05)) delete span.startTimeUnixNano;
        if (r.chance(0.35)) {
            span.events = Array.from({ length: r.int(4) }, () => {
                const name = r.pick(EVENT_NAMES);
                const ev = { name, timeUnixNano: String(t0 + BigInt(r.int(2000000000))) };
                ev.attributes =
                    name === 'exception'
                        ? [
                              { key: 'exception.type', value: { stringValue: r.pick(['GraphInterrupt', 'a.b.NodeInterrupt', 'ValueError', '']) } },
                              { key: 'exception.message', value: { stringValue: randomString(r) } },
                          ]
                        : attrs(r, 3);
                return ev;
            });
        }
        if (r.chance(0.3)) span.status = { code: r.pick([0, 1, 2, 'STATUS_CODE_ERROR']), message: randomString(r) };
        spans.push(span);
    }
    const doc = {
        resourceSpans: [
            {
                resource: { attributes: attrs(r, 3) },
                scopeSpans: [{ scope: { name: r.pick(SCOPES), version: r.pick(['', '3.3.0', '3.9.0']) }, spans }],
            },
        ],
    };
    // Raw invalid bytes replace their markers in the JSON text.
    const text = JSON.stringify(doc);
    const parts = text.split(/@@BAD@@(\d)/);
    const bufs = parts.map((p, i) => (i % 2 === 0 ? Buffer.from(p, 'utf8') : Buffer.from(BAD_BYTES[Number(p)], 'latin1')));
    return { traceId, body: Buffer.concat(bufs) };
}

describe('random spans through the daemon', { skip }, () => {
    test('the strict fake sees no schema violation and the daemon keeps answering', { timeout: 180000 }, async (t) => {
        const r = rng(SEED);
        const requests = Array.from({ length: REQUESTS }, (_, i) => randomRequest(r, i));
        const withBadBytes = requests.filter((q) => BAD_BYTES.some((b) => q.body.includes(Buffer.from(b, 'latin1')))).length;
        assert.ok(withBadBytes > 0, 'some requests carry invalid UTF-8');
        const fake = await startFakeLangfuse({ mode: 'v3' });
        const daemon = await startDaemon({
            langfuseUrl: fake.url,
            name: 'property',
            args: ['--output', 'ingestion', '--assemble-window-ms', '300', '--assemble-root-grace-ms', '100'],
            env: { O2L_RETRY_INITIAL_MS: '50', O2L_RETRY_MAX_MS: '300' },
        });
        try {
            const statuses = [];
            for (const q of requests) {
                const res = await fetch(`${daemon.url}/v1/traces`, {
                    method: 'POST',
                    headers: { 'content-type': 'application/json' },
                    body: q.body,
                    signal: AbortSignal.timeout(15000),
                });
                await res.arrayBuffer();
                statuses.push(res.status);
            }
            assert.deepEqual(statuses.filter((s) => s !== 200), [], `every request answered 200 (seed ${SEED})`);

            // Wait (bounded) until deliveries stop growing.
            let last = -1;
            let stableSince = Date.now();
            await waitFor(
                () => {
                    const n = fake.events().length;
                    if (n !== last) {
                        last = n;
                        stableSince = Date.now();
                        return false;
                    }
                    return n > 0 && Date.now() - stableSince > 1500;
                },
                { timeoutMs: 60000, intervalMs: 200, what: 'deliveries to settle', describe: () => daemon.logTail(20) },
            );
            const events = fake.events();
            t.diagnostic(`seed ${SEED}: ${REQUESTS} requests, ${events.length} events delivered`);
            const rejections = fake.rejections();
            assert.equal(
                rejections.length,
                0,
                `the fake refused ${rejections.length} events (seed ${SEED}):\n${rejections
                    .slice(0, 10)
                    .map((x) => `${x.id} ${x.type}: ${x.reason}\n  ${JSON.stringify(x.event).slice(0, 400)}`)
                    .join('\n')}`,
            );
            const traces = new Set(events.filter((e) => e.type === 'trace-create').map((e) => e.body.id));
            assert.ok(traces.size >= REQUESTS * 0.9, `trace-creates for most requests: ${traces.size} of ${REQUESTS}`);

            // The daemon still answers.
            assert.equal(daemon.exited(), null, 'the daemon is still running');
            const health = await adminGet(daemon, '/healthz');
            assert.equal(health.status, 200);
            const again = await fetch(`${daemon.url}/v1/traces`, {
                method: 'POST',
                headers: { 'content-type': 'application/json' },
                body: JSON.stringify({ resourceSpans: [] }),
                signal: AbortSignal.timeout(5000),
            });
            await again.arrayBuffer();
            assert.equal(again.status, 200);

            // convert takes a few of the same bodies.
            const dir = workDir('property-convert');
            for (const i of [0, 1, Math.floor(REQUESTS / 2), REQUESTS - 1]) {
                const file = path.join(dir, `req-${i}.json`);
                fs.writeFileSync(file, requests[i].body);
                const res = spawnSync(process.env.O2L_BIN, ['convert', file], { encoding: 'utf8', timeout: 30000, maxBuffer: 64 * 1024 * 1024 });
                assert.equal(res.status, 0, `convert ${file} exited ${res.status}: ${res.stderr}`);
                const batch = JSON.parse(res.stdout).batch;
                assert.ok(Array.isArray(batch) && batch.length > 0, `convert ${file} printed events`);
                for (const e of batch) assert.ok(e.id && e.body && e.body.id, `event with id and body.id: ${JSON.stringify(e).slice(0, 200)}`);
            }
        } finally {
            await daemon.stop();
            await fake.close();
        }
    });
});
