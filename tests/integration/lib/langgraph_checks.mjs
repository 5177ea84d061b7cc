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
