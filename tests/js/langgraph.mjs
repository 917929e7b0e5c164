// @langchain/langgraph-sdk (what useStream is built on), unmodified, against Atelier's
// /langgraph: a streamed run with values, messages-tuple and tools, a join with
// Last-Event-ID -1 (useStream's reconnect), the state at a checkpoint, an interrupt
// resumed with a command. Usage: node langgraph.mjs BASE_URL API_KEY
import assert from "node:assert/strict";
import { Client } from "@langchain/langgraph-sdk";

const [url, key] = process.argv.slice(2);
const client = new Client({
  apiUrl: `${url}/langgraph`,
  apiKey: key,
  defaultHeaders: { "X-User-ID": "js-user" },
});
const ask = (text) => ({ messages: [{ role: "user", content: text }] });

const thread = await client.threads.create();
const seen = [];
for await (const part of client.runs.stream(thread.thread_id, "default", {
  input: ask("write a.txt: hello"),
  streamMode: ["values", "messages-tuple", "tools"],
})) {
  seen.push(part);
}
const events = seen.map((p) => p.event);
assert.equal(events[0], "metadata");
assert.ok(events.includes("messages"), events.join());
const tools = seen.filter((p) => p.event === "tools").map((p) => p.data.event);
assert.deepEqual(tools, ["on_tool_start", "on_tool_end"]);
const last = seen.filter((p) => p.event === "values").at(-1).data;
assert.deepEqual(last.messages.map((m) => m.type), ["human", "ai", "tool", "ai"]);

// useStream's reconnect: joinStream with lastEventId "-1" replays from the start.
const [run] = await client.runs.list(thread.thread_id);
const joined = [];
for await (const part of client.runs.joinStream(thread.thread_id, run.run_id, {
  lastEventId: "-1",
})) {
  joined.push(part.event);
}
assert.ok(joined.includes("values"), joined.join());

const state = await client.threads.getState(thread.thread_id);
const again = await client.threads.getState(thread.thread_id, state.checkpoint);
assert.deepEqual(again.values, state.values);

// An interrupt (a call that needs a person's approval), resumed with a command.
const waiting = await client.threads.create();
const stopped = await client.runs.wait(waiting.thread_id, "careful", {
  input: ask("write b.txt: hi"),
});
assert.equal(stopped.__interrupt__.length, 1);
const done = await client.runs.wait(waiting.thread_id, "careful", {
  command: { resume: { decisions: [{ type: "approve" }] } },
});
assert.equal(done.__interrupt__, undefined);
assert.equal(done.messages.at(-1).type, "ai");
console.log(JSON.stringify({ ok: true, events: events.length }));
