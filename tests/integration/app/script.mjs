// The fixed script of the LangGraph app: names, ids, the scripted model's
// answers and token usage. Kept free of dependencies so tests can import it
// without loading LangChain.

export const GRAPH_NAME = 'support_graph';
export const MODEL_NAME = 'fake-gpt-4o-mini';
export const TOOL_NAME = 'get_weather';
export const THREAD_ID = 'thread-42';
export const USER_ID = 'user-7';
export const QUESTION = 'What is the weather in Paris?';
export const TOOL_CALL_ID = 'call_weather_1';
export const FINAL_ANSWER = 'It is sunny and 21 degrees in Paris.';

// Token usage the scripted model reports for its two calls, in order.
export const USAGE = [
    { input: 12, output: 8, total: 20 },
    { input: 30, output: 14, total: 44 },
];
