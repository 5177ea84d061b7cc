// A small LangGraph application used by the integration tests: an "agent"
// node that asks a scripted chat model what to do, and a "tools" node that
// runs the requested tool. The model never touches the network.
//
// runGraph() wires one OpenTelemetry tracer provider with one OTLP exporter,
// instruments LangChain with the chosen instrumentation, runs the graph once
// and flushes. Instrumentations patch module state, so call it once per
// process (app/run.mjs is the command-line entry point).

import { BaseChatModel } from '@langchain/core/language_models/chat_models';
import { AIMessage, HumanMessage, ToolMessage } from '@langchain/core/messages';
import { tool } from '@langchain/core/tools';
import { END, MessagesAnnotation, START, StateGraph } from '@langchain/langgraph';
import { ToolNode } from '@langchain/langgraph/prebuilt';
import { z } from 'zod';

import { FINAL_ANSWER, GRAPH_NAME, MODEL_NAME, QUESTION, THREAD_ID, TOOL_CALL_ID, TOOL_NAME, USAGE, USER_ID } from './script.mjs';

export * from './script.mjs';
import { makeExporter } from './otel.mjs';

// Keep LangChain offline whatever the caller's environment says (LangChain
// reads these when a run starts, so setting them after the imports is enough).
process.env.LANGCHAIN_TRACING_V2 = 'false';
process.env.LANGCHAIN_TRACING = 'false';
process.env.LANGSMITH_TRACING = 'false';
process.env.LANGSMITH_TRACING_V2 = 'false';
process.env.LANGCHAIN_CALLBACKS_BACKGROUND = 'false';

// A chat model that answers from a script: with a tool call while no tool
// result is in the conversation, with the final answer afterwards. Deciding
// from the messages (not a counter) makes every graph run identical.
export class ScriptedChatModel extends BaseChatModel {
    static lc_name() {
        return 'ScriptedChatModel';
    }

    constructor(fields = {}) {
        super(fields);
        this.model = fields.model ?? MODEL_NAME;
        this.temperature = fields.temperature ?? 0;
    }

    _llmType() {
        return 'scripted';
    }

    get _identifyingParams() {
        return { model_name: this.model, model: this.model };
    }

    invocationParams() {
        return { model: this.model, model_name: this.model, temperature: this.temperature };
    }

    getLsParams(options) {
        return {
            ...super.getLsParams(options),
            ls_provider: 'scripted',
            ls_model_name: this.model,
            ls_temperature: this.temperature,
        };
    }

    async _generate(messages) {
        const sawToolResult = messages.some((m) => ToolMessage.isInstance(m));
        const step = sawToolResult ? 1 : 0;
        const usage = USAGE[step];
        const usageMetadata = {
            input_tokens: usage.input,
            output_tokens: usage.output,
            total_tokens: usage.total,
        };
        const responseMetadata = { model_name: this.model, model: this.model, finish_reason: step === 0 ? 'tool_calls' : 'stop' };
        const message =
            step === 0
                ? new AIMessage({
                      content: '',
                      tool_calls: [{ id: TOOL_CALL_ID, name: TOOL_NAME, args: { city: 'Paris' }, type: 'tool_call' }],
                      // The provider's raw form, as OpenAI chat models keep it;
                      // OpenInference reads tool calls only from here.
                      additional_kwargs: {
                          tool_calls: [{ id: TOOL_CALL_ID, type: 'function', function: { name: TOOL_NAME, arguments: '{"city":"Paris"}' } }],
                      },
                      usage_metadata: usageMetadata,
                      response_metadata: responseMetadata,
                  })
                : new AIMessage({
                      content: FINAL_ANSWER,
                      usage_metadata: usageMetadata,
                      response_metadata: responseMetadata,
                  });
        return {
            generations: [{ text: typeof message.content === 'string' ? message.content : '', message }],
            llmOutput: {
                tokenUsage: {
                    promptTokens: usage.input,
                    completionTokens: usage.output,
                    totalTokens: usage.total,
                },
                model_name: this.model,
            },
        };
    }
}

export const getWeather = tool(async ({ city }) => `Sunny, 21 degrees in ${city}`, {
    name: TOOL_NAME,
    description: 'Return the current weather for a city.',
    schema: z.object({ city: z.string().describe('the city name') }),
});

export function buildGraph() {
    const model = new ScriptedChatModel();
    const agent = async (state) => {
        const reply = await model.invoke(state.messages);
        return { messages: [reply] };
    };
    const route = (state) => {
        const last = state.messages[state.messages.length - 1];
        return last.tool_calls && last.tool_calls.length > 0 ? 'tools' : END;
    };
    return new StateGraph(MessagesAnnotation)
        .addNode('agent', agent)
        .addNode('tools', new ToolNode([getWeather]))
        .addEdge(START, 'agent')
        .addConditionalEdges('agent', route, ['tools', END])
        .addEdge('tools', 'agent')
        .compile({ name: GRAPH_NAME });
}

// The per-run config: LangGraph's thread id and the user id travel as
// configurable values (LangChain copies them into run metadata); the
// instrumentation-specific keys are added by the caller.
export function runConfig(extra = {}) {
    return {
        configurable: { thread_id: THREAD_ID, user_id: USER_ID },
        metadata: { ...(extra.metadata ?? {}) },
        callbacks: extra.callbacks,
        tags: extra.tags,
    };
}


// A span processor that copies the attributes the Langfuse SDK keeps in the
// OpenTelemetry context (user, session, tags, ...) onto each starting span.
// Langfuse's own span processor does this; a plain OpenTelemetry pipeline
// does not, so without it the handler's userId/sessionId never reach a span.
class PropagatedAttributesProcessor {
    constructor(read) {
        this.read = read;
    }
    onStart(span, parentContext) {
        span.setAttributes(this.read(parentContext));
    }
    onEnd() {}
    forceFlush() {
        return Promise.resolve();
    }
    shutdown() {
        return Promise.resolve();
    }
}

/**
 * Run the graph once with the chosen instrumentation and exporter.
 * options: instrumentation 'openinference' | 'langfuse'; protocol
 * 'http/json' | 'http/protobuf' | 'grpc'; url (base URL of the receiver,
 * e.g. http://127.0.0.1:4318); gzip (boolean); runs (how many graph runs,
 * default 1); batch ({maxExportBatchSize, maxQueueSize}) to shape exports;
 * propagate (langfuse only: copy context-held trace attributes onto spans).
 */
export async function runGraph(options) {
    const { instrumentation, protocol = 'http/json', url, gzip = false, runs = 1, batch = {}, propagate = false } = options;
    if (!url) throw new Error('runGraph: url is required');

    const { BasicTracerProvider, BatchSpanProcessor } = await import('@opentelemetry/sdk-trace-base');
    const { resourceFromAttributes } = await import('@opentelemetry/resources');
    const { trace } = await import('@opentelemetry/api');
    const { AsyncLocalStorageContextManager } = await import('@opentelemetry/context-async-hooks');
    const { context } = await import('@opentelemetry/api');

    const exporter = await makeExporter(protocol, url, gzip);
    const processors = [];
    if (instrumentation === 'langfuse' && propagate) {
        const { getPropagatedAttributesFromContext } = await import('@langfuse/core');
        processors.push(new PropagatedAttributesProcessor(getPropagatedAttributesFromContext));
    }
    processors.push(
        new BatchSpanProcessor(exporter, {
            maxExportBatchSize: batch.maxExportBatchSize ?? 512,
            maxQueueSize: batch.maxQueueSize ?? 4096,
            scheduledDelayMillis: batch.scheduledDelayMillis ?? 60000,
            exportTimeoutMillis: 10000,
        }),
    );
    const provider = new BasicTracerProvider({
        resource: resourceFromAttributes({
            'service.name': 'langgraph-support-app',
            'service.version': '1.0.0',
            'deployment.environment.name': 'test',
        }),
        spanProcessors: processors,
    });
    context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());

    const graph = buildGraph();
    const input = { messages: [new HumanMessage(QUESTION)] };
    const results = [];

    if (instrumentation === 'openinference') {
        const { LangChainInstrumentation } = await import('@arizeai/openinference-instrumentation-langchain');
        const callbackManagerModule = await import('@langchain/core/callbacks/manager');
        const inst = new LangChainInstrumentation({ tracerProvider: provider });
        inst.manuallyInstrument(callbackManagerModule);
        for (let i = 0; i < runs; i++) {
            results.push(await graph.invoke(input, runConfig({ metadata: { langfuse_user_id: USER_ID } })));
        }
    } else if (instrumentation === 'langfuse') {
        const { setLangfuseTracerProvider } = await import('@langfuse/tracing');
        const { CallbackHandler } = await import('@langfuse/langchain');
        setLangfuseTracerProvider(provider);
        for (let i = 0; i < runs; i++) {
            const handler = new CallbackHandler({ sessionId: THREAD_ID, userId: USER_ID, tags: ['integration'] });
            results.push(
                await graph.invoke(
                    input,
                    runConfig({
                        callbacks: [handler],
                        // langfuseUserId/langfuseSessionId are read by the handler
                        // (and removed from the metadata it records); user_id
                        // is kept as ordinary run metadata.
                        metadata: { langfuseUserId: USER_ID, langfuseSessionId: THREAD_ID, user_id: USER_ID },
                    }),
                ),
            );
        }
    } else {
        throw new Error(`unknown instrumentation ${instrumentation}`);
    }

    await provider.forceFlush();
    await provider.shutdown();
    trace.disable();
    return results;
}
