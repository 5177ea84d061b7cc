#!/usr/bin/env node
// The LangGraph app of app/graph.mjs (same graph, same scripted chat model),
// instrumented with OpenLLMetry's LangChain instrumentation
// (@traceloop/instrumentation-langchain) on a plain OpenTelemetry JS SDK
// pipeline with an OTLP exporter.
//
//   node app/openllmetry.mjs --url http://127.0.0.1:PORT \
//       [--protocol http/json|http/protobuf] [--gzip]
//
// The instrumentation's callback handler starts every span from the active
// OpenTelemetry context and never makes its own spans active, so LangChain
// runs do not nest: without an active span each run would be a trace of its
// own. Applications run the graph inside one active span (what the Traceloop
// SDK's withWorkflow does); this app does the same with a plain span named
// after the request (REQUEST_SPAN below; the tests expect the same name).
//
// The user and the thread reach spans the way the Traceloop SDK puts them
// there: as association properties (traceloop.association.properties.<key>)
// copied onto every span started while they are set.
//
// Prints one JSON line {ok, answer, exportErrors}; exits non-zero on failure.

import { exportArgs, makeExporter, watchExportErrors } from './otel.mjs';

process.env.LANGCHAIN_TRACING_V2 = 'false';
process.env.LANGSMITH_TRACING = 'false';
process.env.LANGCHAIN_CALLBACKS_BACKGROUND = 'false';

const values = exportArgs('openllmetry.mjs');

// The name of the app's request span, the trace root.
const REQUEST_SPAN = 'handle_request';

const api = await import('@opentelemetry/api');
const { context, trace } = api;
const { BasicTracerProvider, BatchSpanProcessor } = await import('@opentelemetry/sdk-trace-base');
const { resourceFromAttributes } = await import('@opentelemetry/resources');
const { AsyncLocalStorageContextManager } = await import('@opentelemetry/context-async-hooks');

const exportErrors = await watchExportErrors();


// Association properties as the Traceloop SDK keeps them: in the context,
// copied onto each span when it starts.
const ASSOCIATION_KEY = api.createContextKey('association_properties');

class AssociationPropertiesProcessor {
    onStart(span, parentContext) {
        const props = parentContext.getValue(ASSOCIATION_KEY);
        if (!props) return;
        for (const [k, v] of Object.entries(props)) span.setAttribute(`traceloop.association.properties.${k}`, v);
    }
    onEnd() {}
    forceFlush() {
        return Promise.resolve();
    }
    shutdown() {
        return Promise.resolve();
    }
}

try {
    const exporter = await makeExporter(values.protocol, values.url, values.gzip);
    const provider = new BasicTracerProvider({
        resource: resourceFromAttributes({
            'service.name': 'langgraph-support-app',
            'service.version': '1.0.0',
            'deployment.environment.name': 'test',
        }),
        spanProcessors: [
            new AssociationPropertiesProcessor(),
            new BatchSpanProcessor(exporter, { maxExportBatchSize: 512, maxQueueSize: 4096, scheduledDelayMillis: 60000, exportTimeoutMillis: 10000 }),
        ],
    });
    context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());

    // Manual instrumentation for ESM: hand the instrumentation the very
    // module object LangChain uses.
    const { LangChainInstrumentation } = await import('@traceloop/instrumentation-langchain');
    const callbackManagerModule = await import('@langchain/core/callbacks/manager');
    const inst = new LangChainInstrumentation({ traceContent: true });
    inst.setTracerProvider(provider);
    inst.manuallyInstrument({ callbackManagerModule });

    const { HumanMessage } = await import('@langchain/core/messages');
    const { buildGraph, runConfig, QUESTION, THREAD_ID, USER_ID } = await import('./graph.mjs');
    const graph = buildGraph();
    const input = { messages: [new HumanMessage(QUESTION)] };
    const config = runConfig({ metadata: { user_id: USER_ID } });

    const withAssociation = context.active().setValue(ASSOCIATION_KEY, { user_id: USER_ID, thread_id: THREAD_ID });
    const tracer = provider.getTracer('langgraph-support-app', '1.0.0');
    const result = await context.with(withAssociation, () =>
        tracer.startActiveSpan(REQUEST_SPAN, async (span) => {
            try {
                return await graph.invoke(input, config);
            } finally {
                span.end();
            }
        }),
    );

    await provider.forceFlush();
    await provider.shutdown();
    trace.disable();
    const answer = result.messages[result.messages.length - 1].content;
    process.stdout.write(`${JSON.stringify({ ok: exportErrors.length === 0, answer, exportErrors })}\n`);
    process.exit(exportErrors.length === 0 ? 0 : 1);
} catch (err) {
    process.stderr.write(`openllmetry.mjs: ${err && err.stack ? err.stack : err}\n`);
    process.exit(1);
}
