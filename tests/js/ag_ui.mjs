// @ag-ui/client's HttpAgent, unmodified, against /ag-ui/agents/{agent}: text, Atelier's own
// tool, a frontend tool's round trip, an approval as an interrupt resumed, an error, and
// an abort that stops the run. Usage: node ag_ui.mjs BASE_URL API_KEY
import assert from "node:assert/strict";
import { HttpAgent } from "@ag-ui/client";

const [url, key] = process.argv.slice(2);
const headers = { Authorization: `Bearer ${key}`, "X-User-ID": "agui-user" };
const weather = {
  name: "get_weather",
  description: "The weather in a city.",
  parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
};
const seen = [];
let finished = null;
const subscriber = {
  onEvent: ({ event }) => { seen.push(event.type); },
  onRunFinishedEvent: ({ event }) => { finished = event; },
};
const user = (content) => ({ id: crypto.randomUUID(), role: "user", content });
const last = (agent, role) => agent.messages.filter((m) => m.role === role).at(-1);

// Text: a run's events in order, the assistant's message in the agent's messages.
const agent = new HttpAgent({ url: `${url}/ag-ui/agents/default`, headers, threadId: crypto.randomUUID() });
agent.addMessage(user("hello there"));
await agent.runAgent({}, subscriber);
assert.equal(seen[0], "RUN_STARTED");
assert.equal(seen.at(-1), "RUN_FINISHED");
for (const type of ["TEXT_MESSAGE_START", "TEXT_MESSAGE_CONTENT", "TEXT_MESSAGE_END", "MESSAGES_SNAPSHOT"]) {
  assert.ok(seen.includes(type), `${type} in ${seen}`);
}
assert.match(last(agent, "assistant").content, /You said: hello there/);
assert.equal(finished.outcome.type, "success");

// Atelier's own tool: a call and its result, then the text after it.
seen.length = 0;
agent.addMessage(user("list files"));
await agent.runAgent({}, subscriber);
assert.ok(seen.includes("TOOL_CALL_START") && seen.includes("TOOL_CALL_RESULT"), seen.join());
assert.ok(agent.messages.some((m) => m.role === "tool"));
assert.match(last(agent, "assistant").content, /Done/);

// A frontend tool: the run finishes naming the call; the tool message takes it on.
agent.addMessage(user('call get_weather {"city": "Paris"}'));
await agent.runAgent({ tools: [weather] }, subscriber);
assert.equal(finished.outcome.type, "success");
const [pending] = finished.outcome.pendingToolCallIds;
const call = agent.messages.flatMap((m) => m.toolCalls ?? []).find((c) => c.id === pending);
assert.equal(call.function.name, "get_weather");
assert.deepEqual(JSON.parse(call.function.arguments), { city: "Paris" });
agent.addMessage({ id: crypto.randomUUID(), role: "tool", toolCallId: pending, content: "sunny, 21 C" });
await agent.runAgent({ tools: [weather] }, subscriber);
assert.match(last(agent, "assistant").content, /sunny, 21 C/);

// An approval: the run finishes with an interrupt; resume answers it.
const made = await fetch(`${url}/v1/agents`, {
  method: "POST",
  headers: { ...headers, "Content-Type": "application/json" },
  body: JSON.stringify({ name: `careful-${Date.now()}`, approval: { require: ["write_*"] } }),
});
const careful = (await made.json()).name;
const guarded = new HttpAgent({ url: `${url}/ag-ui/agents/${careful}`, headers, threadId: crypto.randomUUID() });
guarded.addMessage(user("write notes.txt: approved content"));
await guarded.runAgent({}, subscriber);
assert.equal(finished.outcome.type, "interrupt", JSON.stringify(finished));
const [interrupt] = finished.outcome.interrupts;
assert.equal(interrupt.reason, "tool_approval");
seen.length = 0;
await guarded.runAgent(
  { resume: [{ interruptId: interrupt.id, status: "resolved", payload: { approved: true } }] },
  subscriber,
);
assert.equal(finished.outcome.type, "success");
assert.ok(seen.includes("TOOL_CALL_RESULT"), seen.join());
const file = await fetch(`${url}/v1/conversations/${guarded.threadId}/files/notes.txt`, { headers });
assert.equal(await file.text(), "approved content");

// An error: an agent that does not exist fails the run on the client.
const nowhere = new HttpAgent({ url: `${url}/ag-ui/agents/no-such-agent`, headers, threadId: crypto.randomUUID() });
nowhere.addMessage(user("hi"));
await assert.rejects(nowhere.runAgent({}, {}));

// Abort: the client stops the run.
const slow = new HttpAgent({ url: `${url}/ag-ui/agents/default`, headers, threadId: crypto.randomUUID() });
slow.addMessage(user(Array.from({ length: 400 }, (_, i) => `w${i}`).join(" ")));
const running = slow.runAgent({}, {
  onTextMessageContentEvent: () => { slow.abortRun(); },
}).catch(() => null);
await running;
let status;
for (let i = 0; i < 100; i++) {
  const runs = await (await fetch(`${url}/v1/conversations/${slow.threadId}/runs`, { headers })).json();
  status = runs.data[0]?.status;
  if (status === "cancelled") break;
  await new Promise((r) => setTimeout(r, 100));
}
assert.equal(status, "cancelled");
console.log(JSON.stringify({ ok: true }));
