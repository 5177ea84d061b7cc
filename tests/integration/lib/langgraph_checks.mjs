// What one run of the LangGraph app (app/graph.mjs) must look like in
// Langfuse once otel2langfuse has mapped it: the assertions shared by the
// end-to-end tests.

import assert from 'node:assert/strict';

import { FINAL_ANSWER, GRAPH_NAME, MODEL_NAME, QUESTION, THREAD_ID, TOOL_NAME, USAGE, USER_ID } from '../app/script.mjs';
import {
    byStart,
    childrenOf,
    observationById,
    observations,
    observationsByName,
    observationsByType,
    observationType,
    trace,
    traceCreates,
} from './harness.mjs';

// One graph run: support_graph, __start__, agent x2 (each with a model call
// and a routing lambda), tools (with one tool call).
export const SPANS_PER_RUN = 10;

// Observation types per instrumentation: OpenInference marks chains CHAIN;
// Langfuse's LangChain handler marks chains as plain spans.
export const EXPECT = {
    openinference: { nodeType: 'CHAIN', rootType: 'CHAIN' },
    langfuse: { nodeType: 'SPAN', rootType: 'SPAN' },
};

function isMessage(m) {
    return m && typeof m === 'object' && !Array.isArray(m) && typeof m.role === 'string';
}

function messageList(input) {
    if (Array.isArray(input)) return input;
    if (input && Array.isArray(input.messages)) return input.messages;
    return null;
}

/** Assert the events of one trace are one correctly mapped graph run. */
export function checkGraphTrace(inst, traceId, events) {
    const exp = EXPECT[inst];
    const iso = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{3}|\.\d{6})?Z$/;

    // Every envelope and body id is unique: no duplicates of one span.
    assert.equal(new Set(events.map((e) => e.id)).size, events.length, 'duplicate envelope ids');

    // Trace.
    assert.equal(traceCreates(events).length, 1, 'exactly one trace-create');
    const t = trace(events, traceId).body;
    assert.match(traceId, /^[0-9a-f]{32}$/);
    assert.equal(t.name, GRAPH_NAME);
    assert.equal(t.userId, USER_ID);
    assert.equal(t.sessionId, THREAD_ID);
    assert.equal(t.environment, 'test');
    assert.match(t.timestamp, iso);
    assert.ok(t.input !== undefined && t.input !== null, 'trace input');
    assert.ok(t.output !== undefined && t.output !== null, 'trace output');

    const obs = observations(events);
    assert.equal(obs.length, SPANS_PER_RUN, 'one observation per span');
    assert.equal(new Set(obs.map((o) => o.body.id)).size, obs.length, 'observation ids unique');
    for (const o of obs) {
        assert.equal(o.body.traceId, traceId);
        assert.match(o.body.id, /^[0-9a-f]{16}$/);
        assert.match(o.body.startTime, iso);
        assert.equal(o.id, `${traceId}-${o.body.id}`);
        for (const [k, v] of Object.entries(o.body)) assert.notEqual(v, null, `${o.body.name}.${k} is null`);
    }

    // Graph root.
    const roots = observationsByName(events, GRAPH_NAME);
    assert.equal(roots.length, 1);
    const root = roots[0];
    assert.equal(root.body.parentObservationId, undefined, 'root has no parent');
    assert.equal(observationType(root), exp.rootType);

    // Nodes: children of the root, named after the node.
    const agents = byStart(observationsByName(events, 'agent'));
    const tools = observationsByName(events, 'tools');
    assert.equal(agents.length, 2, 'two agent steps');
    assert.equal(tools.length, 1, 'one tools step');
    for (const n of [...agents, ...tools]) {
        assert.equal(n.body.parentObservationId, root.body.id, `${n.body.name} hangs under the graph`);
        assert.equal(observationType(n), exp.nodeType, `${n.body.name} type`);
        assert.ok(n.body.metadata, `${n.body.name} metadata`);
        assert.equal(n.body.metadata.langgraph_node, n.body.name, `${n.body.name} metadata.langgraph_node`);
        assert.ok(n.body.metadata.langgraph_step !== undefined, `${n.body.name} metadata.langgraph_step`);
    }

    // Model calls: one generation under each agent step, in script order.
    const gens = byStart(observationsByType(events, 'GENERATION'));
    assert.equal(gens.length, 2, 'two generations');
    gens.forEach((g, i) => {
        const b = g.body;
        assert.equal(b.parentObservationId, agents[i].body.id, `generation ${i} under agent ${i}`);
        assert.equal(b.model, MODEL_NAME);
        const msgs = messageList(b.input);
        assert.ok(msgs && msgs.length > 0 && msgs.every(isMessage), `generation ${i} input is a message list: ${JSON.stringify(b.input)}`);
        assert.equal(msgs[0].role, 'user');
        assert.equal(typeof msgs[0].content === 'string' ? msgs[0].content : JSON.stringify(msgs[0].content), QUESTION);
        assert.equal(msgs.length, i === 0 ? 1 : 3, `generation ${i} sees the conversation so far`);
        assert.ok(b.output !== undefined, `generation ${i} output`);
        assert.ok(b.usageDetails, `generation ${i} usageDetails`);
        assert.deepEqual(
            { input: b.usageDetails.input, output: b.usageDetails.output, total: b.usageDetails.total },
            USAGE[i],
            `generation ${i} usage`,
        );
        for (const v of Object.values(b.usageDetails)) assert.ok(Number.isInteger(v) && v >= 0, 'usage values are integers');
        assert.match(b.endTime, iso);
    });
    assert.equal(JSON.stringify(gens[1].body.output).includes(FINAL_ANSWER), true, 'final answer in the last generation output');

    // Tool call under the tools node.
    const toolObs = observationsByName(events, TOOL_NAME);
    assert.equal(toolObs.length, 1);
    assert.equal(observationType(toolObs[0]), 'TOOL');
    assert.equal(toolObs[0].body.parentObservationId, tools[0].body.id);
    assert.ok(JSON.stringify(toolObs[0].body.input).includes('Paris'), 'tool input');
    assert.ok(JSON.stringify(toolObs[0].body.output).includes('Sunny'), 'tool output');

    // Every parent is in the trace.
    for (const o of obs) {
        if (o.body.parentObservationId) assert.ok(observationById(events, o.body.parentObservationId), `parent of ${o.body.name} present`);
    }
    assert.equal(childrenOf(events, root.body.id).length, 4, '__start__, agent, tools, agent under the graph');
}

// ---- OpenLLMetry JS (@traceloop/instrumentation-langchain) ----
//
// Its callback handler never makes a span active, so every LangChain run
// hangs directly under the app's active request span (a flat tree), and no
// LangGraph metadata is recorded. Chains are `workflow <name>` spans
// (traceloop.span.kind workflow), tools `execute_tool <Class>` (kind task),
// chat models `chat <model>` with gen_ai.input/output.messages in the
// {role, parts} form.

/** The request span app/openllmetry.mjs runs the graph in: the true root. */
export const OPENLLMETRY_REQUEST_SPAN = 'handle_request';

// One run: the request span plus the ten LangChain runs of SPANS_PER_RUN.
export const OPENLLMETRY_SPANS_PER_RUN = SPANS_PER_RUN + 1;

// The names the spans of instrumentation 0.27.0 allow. Its handleChainStart
// takes LangChain's run type from the slot where @langchain/core 1.x passes
// the run name, so every chain falls back to its class name; its tool spans
// carry the tool's class, never the tool's name.
export const OPENLLMETRY_SENT_NAMES = {
    graph: 'CompiledStateGraph',
    nodes: ['RunnableSequence', 'RunnableSequence', 'RunnableSequence', 'RunnableSequence'],
    routes: ['RunnableLambda', 'RunnableLambda'],
    tool: 'DynamicStructuredTool',
};

/** The text of a message: its string content, or its text parts joined. */
export function messageText(m) {
    if (typeof m.content === 'string') return m.content;
    if (Array.isArray(m.parts)) return m.parts.filter((p) => p && p.type === 'text').map((p) => p.content ?? p.text ?? '').join('');
    if (Array.isArray(m.content)) return m.content.filter((p) => p && p.type === 'text').map((p) => p.text ?? p.content ?? '').join('');
    return JSON.stringify(m.content);
}

/**
 * Assert the events of one trace are one correctly mapped OpenLLMetry JS
 * graph run. names: the graph, node, route and tool names the spans carry.
 * opts.toolCallsInOutput: the first generation's output names the tool.
 */
export function checkOpenLLMetryGraphTrace(traceId, events, names = OPENLLMETRY_SENT_NAMES, opts = {}) {
    const iso = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{3}|\.\d{6})?Z$/;
    assert.equal(new Set(events.map((e) => e.id)).size, events.length, 'duplicate envelope ids');

    // Trace: named after the true root (the request span); user and thread
    // from the association properties.
    assert.equal(traceCreates(events).length, 1, 'exactly one trace-create');
    const t = trace(events, traceId).body;
    assert.match(traceId, /^[0-9a-f]{32}$/);
    assert.equal(t.name, OPENLLMETRY_REQUEST_SPAN, 'trace name');
    assert.equal(t.userId, USER_ID, 'trace userId');
    assert.equal(t.sessionId, THREAD_ID, 'trace sessionId');
    assert.equal(t.environment, 'test');
    assert.match(t.timestamp, iso);

    const obs = observations(events);
    assert.equal(obs.length, OPENLLMETRY_SPANS_PER_RUN, 'one observation per span');
    assert.equal(new Set(obs.map((o) => o.body.id)).size, obs.length, 'observation ids unique');
    for (const o of obs) {
        assert.equal(o.body.traceId, traceId);
        assert.match(o.body.id, /^[0-9a-f]{16}$/);
        assert.match(o.body.startTime, iso);
        assert.equal(o.id, `${traceId}-${o.body.id}`);
        for (const [k, v] of Object.entries(o.body)) assert.notEqual(v, null, `${o.body.name}.${k} is null`);
        if (o.body.parentObservationId) assert.ok(observationById(events, o.body.parentObservationId), `parent of ${o.body.name} present`);
    }

    // The request span: the true root, a plain span.
    const reqs = observationsByName(events, OPENLLMETRY_REQUEST_SPAN);
    assert.equal(reqs.length, 1, 'one request span');
    const root = reqs[0];
    assert.equal(root.body.parentObservationId, undefined, 'the request span is the root');
    assert.equal(observationType(root), 'SPAN');
    // Under the root, or under the graph where an instrumentation nests.
    const underGraph = (o, graphId) => [root.body.id, graphId].includes(o.body.parentObservationId);

    // The graph: a CHAIN with the graph input and the final state.
    const graphs = observationsByName(events, names.graph);
    assert.equal(graphs.length, 1, `one observation named ${names.graph}: ${obs.map((o) => o.body.name).join(', ')}`);
    const graph = graphs[0];
    assert.equal(observationType(graph), 'CHAIN', 'graph type');
    assert.equal(graph.body.parentObservationId, root.body.id, 'graph under the request span');
    assert.ok(JSON.stringify(graph.body.input).includes(QUESTION), 'graph input');
    assert.ok(JSON.stringify(graph.body.output).includes(FINAL_ANSWER), 'graph output is the final state');

    // Nodes: CHAINs in start order.
    const chains = byStart(observationsByType(events, 'CHAIN')).filter((o) => o !== graph);
    const nodes = chains.filter((o) => !names.routes.includes(o.body.name) || names.nodes.includes(o.body.name));
    assert.deepEqual(
        nodes.map((o) => o.body.name),
        names.nodes,
        `node observations in start order: ${chains.map((o) => o.body.name).join(', ')}`,
    );
    for (const n of nodes) assert.ok(underGraph(n, graph.body.id), `${n.body.name} under the request span or the graph`);
    const routes = chains.filter((o) => !nodes.includes(o));
    assert.deepEqual(routes.map((o) => o.body.name), names.routes, 'routing functions');

    // Model calls, in call order: the second sees the longer conversation
    // (start times may tie at millisecond precision).
    const gens = observationsByType(events, 'GENERATION').sort((a, b) => (messageList(a.body.input)?.length ?? 0) - (messageList(b.body.input)?.length ?? 0));
    assert.equal(gens.length, 2, 'two generations');
    gens.forEach((g, i) => {
        const b = g.body;
        assert.ok(underGraph(g, graph.body.id), `generation ${i} parent`);
        assert.equal(b.model, MODEL_NAME, `generation ${i} model`);
        const msgs = messageList(b.input);
        assert.ok(msgs && msgs.length > 0 && msgs.every(isMessage), `generation ${i} input is a message list: ${JSON.stringify(b.input)}`);
        assert.equal(msgs[0].role, 'user');
        assert.equal(messageText(msgs[0]), QUESTION);
        assert.equal(msgs.length, i === 0 ? 1 : 3, `generation ${i} sees the conversation so far`);
        assert.deepEqual(b.usageDetails, USAGE[i], `generation ${i} usage (exclusive buckets)`);
        assert.match(b.endTime, iso);
        assert.ok(b.output !== undefined, `generation ${i} output`);
    });
    const out1 = messageList(gens[1].body.output) ?? [gens[1].body.output];
    assert.ok(out1.some((m) => m && typeof m === 'object' && m.role === 'assistant' && messageText(m) === FINAL_ANSWER), `final answer as an assistant message: ${JSON.stringify(gens[1].body.output)}`);
    if (opts.toolCallsInOutput) {
        assert.ok(JSON.stringify(gens[0].body.output).includes(TOOL_NAME), `first generation output carries the tool call: ${JSON.stringify(gens[0].body.output)}`);
    }

    // The tool call.
    const tools = observationsByType(events, 'TOOL');
    assert.equal(tools.length, 1, 'one tool observation');
    assert.equal(tools[0].body.name, names.tool, 'tool name');
    assert.ok(underGraph(tools[0], graph.body.id), 'tool parent');
    assert.ok(JSON.stringify(tools[0].body.input).includes('Paris'), `tool input: ${JSON.stringify(tools[0].body.input)}`);
    assert.ok(JSON.stringify(tools[0].body.output).includes('Sunny'), 'tool output');

    assert.equal(obs.length, 1 + 1 + nodes.length + routes.length + gens.length + tools.length, 'no other observations');
}
