#!/usr/bin/env node
// A small Vercel AI SDK app: generateText with a weather tool (two steps: a
// tool call, then the answer) and streamText, both on the SDK's mock
// language model, with the SDK's own OpenTelemetry telemetry turned on and
// exported over OTLP through the OpenTelemetry JS SDK. Nothing touches the
// network except the exporter.
//
//   node app/vercel_ai.mjs --url http://127.0.0.1:PORT \
//       [--protocol http/json|http/protobuf] [--gzip]
//
// Prints one JSON line {ok, text, streamed, exportErrors}; exits non-zero on
// failure. The fixed names, ids and token counts are in VERCEL below so the
// test can import them without loading the SDK.

import { exportArgs, makeExporter, watchExportErrors } from './otel.mjs';

export const VERCEL = {
    functionId: 'weather-agent',
    userId: 'user-vercel-3',
    sessionId: 'session-vercel-9',
    tags: ['integration', 'vercel'],
    provider: 'mock-provider',
    modelId: 'mock-weather-model',
    toolName: 'get_weather',
    toolCallId: 'call_vercel_1',
    question: 'What is the weather in Paris?',
    answer: 'It is sunny and 21 degrees in Paris.',
    streamPrompt: 'Write a haiku about rain.',
    streamChunks: ['Soft rain ', 'on the roof, ', 'a quiet song.'],
    // Per model call: what the mock reports (total input includes cache
    // reads, total output includes reasoning), in call order.
    usage: {
        toolStep: { input: 12, cacheRead: 0, output: 8, reasoning: 0 },
        answerStep: { input: 30, cacheRead: 10, output: 14, reasoning: 4 },
        stream: { input: 9, cacheRead: 0, output: 11, reasoning: 0 },
    },
};

function v3Usage(u) {
    return {
        inputTokens: { total: u.input, noCache: u.input - u.cacheRead, cacheRead: u.cacheRead, cacheWrite: undefined },
        outputTokens: { total: u.output, text: u.output - u.reasoning, reasoning: u.reasoning },
    };
}

async function main() {
    // The mock model's warnings are not the test's business.
    globalThis.AI_SDK_LOG_WARNINGS = false;

    const values = exportArgs('vercel_ai.mjs');

    const { context, trace } = await import('@opentelemetry/api');
    const { BasicTracerProvider, BatchSpanProcessor } = await import('@opentelemetry/sdk-trace-base');
    const { resourceFromAttributes } = await import('@opentelemetry/resources');
    const { AsyncLocalStorageContextManager } = await import('@opentelemetry/context-async-hooks');

    const exportErrors = await watchExportErrors();

    const exporter = await makeExporter(values.protocol, values.url, values.gzip);

    const provider = new BasicTracerProvider({
        resource: resourceFromAttributes({
            'service.name': 'vercel-weather-app',
            'service.version': '2.0.0',
            'deployment.environment.name': 'test',
        }),
        spanProcessors: [new BatchSpanProcessor(exporter, { maxExportBatchSize: 512, maxQueueSize: 4096, scheduledDelayMillis: 60000, exportTimeoutMillis: 10000 })],
    });
    // The AI SDK takes its tracer from the global provider (scope "ai").
    context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
    trace.setGlobalTracerProvider(provider);

    const { generateText, streamText, stepCountIs, tool, simulateReadableStream } = await import('ai');
    const { MockLanguageModelV3 } = await import('ai/test');
    const { z } = await import('zod');

    const telemetry = {
        isEnabled: true,
        functionId: VERCEL.functionId,
        metadata: { userId: VERCEL.userId, sessionId: VERCEL.sessionId, tags: VERCEL.tags, app: 'weather' },
    };

    // The model asks for the tool until a tool result is in the prompt,
    // then answers.
    const model = new MockLanguageModelV3({
        provider: VERCEL.provider,
        modelId: VERCEL.modelId,
        doGenerate: async ({ prompt }) => {
            const sawToolResult = prompt.some((m) => m.role === 'tool');
            const response = { id: sawToolResult ? 'resp-2' : 'resp-1', modelId: VERCEL.modelId, timestamp: new Date() };
            if (!sawToolResult) {
                return {
                    content: [{ type: 'tool-call', toolCallId: VERCEL.toolCallId, toolName: VERCEL.toolName, input: JSON.stringify({ city: 'Paris' }) }],
                    finishReason: { unified: 'tool-calls', raw: 'tool_calls' },
                    usage: v3Usage(VERCEL.usage.toolStep),
                    warnings: [],
                    response,
                };
            }
            return {
                content: [{ type: 'text', text: VERCEL.answer }],
                finishReason: { unified: 'stop', raw: 'stop' },
                usage: v3Usage(VERCEL.usage.answerStep),
                warnings: [],
                response,
            };
        },
        doStream: async () => ({
            stream: simulateReadableStream({
                initialDelayInMs: 5,
                chunkDelayInMs: 5,
                chunks: [
                    { type: 'stream-start', warnings: [] },
                    { type: 'response-metadata', id: 'resp-s', modelId: VERCEL.modelId, timestamp: new Date() },
                    { type: 'text-start', id: 't1' },
                    ...VERCEL.streamChunks.map((delta) => ({ type: 'text-delta', id: 't1', delta })),
                    { type: 'text-end', id: 't1' },
                    { type: 'finish', finishReason: { unified: 'stop', raw: 'stop' }, usage: v3Usage(VERCEL.usage.stream) },
                ],
            }),
        }),
    });

    const getWeather = tool({
        description: 'Return the current weather for a city.',
        inputSchema: z.object({ city: z.string() }),
        execute: async ({ city }) => `Sunny, 21 degrees in ${city}`,
    });

    const generated = await generateText({
        model,
        tools: { [VERCEL.toolName]: getWeather },
        stopWhen: stepCountIs(3),
        temperature: 0,
        prompt: VERCEL.question,
        experimental_telemetry: telemetry,
    });

    const streamed = streamText({
        model,
        prompt: VERCEL.streamPrompt,
        temperature: 0.5,
        experimental_telemetry: telemetry,
    });
    let streamedText = '';
    for await (const part of streamed.textStream) streamedText += part;

    await provider.forceFlush();
    await provider.shutdown();
    trace.disable();
    process.stdout.write(`${JSON.stringify({ ok: exportErrors.length === 0, text: generated.text, streamed: streamedText, exportErrors })}\n`);
    return exportErrors.length === 0 ? 0 : 1;
}

// Run only as a script, so the test can import VERCEL.
if (process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href) {
    main().then(
        (code) => process.exit(code),
        (err) => {
            process.stderr.write(`vercel_ai.mjs: ${err && err.stack ? err.stack : err}\n`);
            process.exit(1);
        },
    );
}
