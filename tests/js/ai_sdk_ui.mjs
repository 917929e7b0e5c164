// The AI SDK's UI layer, unmodified, against /ai-sdk/chat: DefaultChatTransport (what
// useChat sends with) and readUIMessageStream (how useChat reads), for text, Atelier's own
// tools, a history, a new chat seeded from one, an approval, a client tool answered the way
// onToolCall + addToolOutput + sendAutomaticallyWhen do it, regenerate, and resume.
// Usage: node ai_sdk_ui.mjs BASE_URL API_KEY
import assert from "node:assert/strict";
import {
  DefaultChatTransport,
  readUIMessageStream,
  lastAssistantMessageIsCompleteWithApprovalResponses,
  lastAssistantMessageIsCompleteWithToolCalls,
} from "ai";

const [url, key] = process.argv.slice(2);
const headers = { Authorization: `Bearer ${key}`, "X-User-ID": "ui-user" };
const weather = {
  name: "get_weather",
  description: "The weather in a city.",
  parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
};
const transport = new DefaultChatTransport({
  api: `${url}/ai-sdk/chat`,
  headers,
  body: { client_tools: [weather] },
});
const user = (text) => ({ id: crypto.randomUUID(), role: "user", parts: [{ type: "text", text }] });
const textOf = (message) => message.parts.filter((p) => p.type === "text").map((p) => p.text).join("");

async function read(stream, last) {
  let message;
  const errors = [];
  for await (const m of readUIMessageStream({
    stream,
    message: last?.role === "assistant" ? structuredClone(last) : undefined,
    onError: (e) => errors.push(e),
  })) {
    message = m;
    // At every moment, Atelier's tools (dynamic parts) are Atelier's to run: a part
    // without providerExecuted would be a call useChat hands to the page's onToolCall.
    for (const part of m.parts.filter((p) => p.type === "dynamic-tool")) {
      assert.equal(part.providerExecuted, true, JSON.stringify(part));
    }
  }
  assert.deepEqual(errors, []);
  return message;
}

async function send(chatId, messages, extra = {}) {
  const stream = await transport.sendMessages({
    chatId,
    messages,
    trigger: "submit-message",
    messageId: undefined,
    abortSignal: undefined,
    ...extra,
  });
  return read(stream, messages.at(-1));
}

async function stored(chatId) {
  const answer = await fetch(`${url}/ai-sdk/chat/${chatId}/messages`, { headers });
  assert.equal(answer.status, 200);
  return answer.json();
}

// Text: one assistant message, its id the one the stored history gives it.
const chat = `chat-${Date.now()}`;
const first = user("hello there");
const reply = await send(chat, [first]);
assert.equal(reply.role, "assistant");
assert.match(textOf(reply), /You said: hello there/);
let history = await stored(chat);
assert.deepEqual(history.map((m) => m.role), ["user", "assistant"]);
assert.equal(history[1].id, reply.id);

// Atelier's own tools: done tool parts (input and output), then the text after them.
const second = user("list files");
const listed = await send(chat, [first, reply, second]);
const tools = listed.parts.filter((p) => p.type === "dynamic-tool");
assert.equal(tools.length, 1);
assert.equal(tools[0].toolName, "list_files");
assert.equal(tools[0].state, "output-available");
assert.equal(tools[0].providerExecuted, true); // Atelier ran it: never a call for the page
assert.ok(listed.parts.some((p) => p.type === "step-start"));
assert.match(textOf(listed), /Done/);

// A history that is not the chat's is refused with the problem's text.
await assert.rejects(
  send(chat, [user("I never said this"), reply, user("again")]),
  /history_mismatch/,
);

// A new id with a history: the chat starts from it.
const seeded = `seeded-${Date.now()}`;
const earlier = [user("my name is Ada"), { id: "a0", role: "assistant", parts: [{ type: "text", text: "Hello Ada" }] }];
const question = user("what is my name?");
const named = await send(seeded, [...earlier, question]);
history = await stored(seeded);
assert.deepEqual(history.map((m) => textOf(m).slice(0, 14)), ["my name is Ada", "Hello Ada", "what is my nam", "You said: what"]);

// A client tool: the stream stops at its call; the page's output takes the run on.
const asking = user('call get_weather {"city": "Paris"}');
const called = await send(chat, [first, reply, second, listed, asking]);
const call = called.parts.find((p) => p.type === "tool-get_weather");
assert.ok(call, JSON.stringify(called.parts));
assert.equal(call.state, "input-available");
assert.deepEqual(call.input, { city: "Paris" });
// What addToolOutput does to the message, and the check sendAutomaticallyWhen makes.
call.state = "output-available";
call.output = "sunny, 21 C";
const messages = [first, reply, second, listed, asking, called];
assert.ok(lastAssistantMessageIsCompleteWithToolCalls({ messages }));
const answered = await send(chat, messages, { messageId: called.id });
assert.equal(answered.id, called.id); // the same message goes on
assert.match(textOf(answered), /sunny, 21 C/);

// An approval: the SDK's tool-approval-request, answered with addToolApprovalResponse.
const agent = await fetch(`${url}/v1/agents`, {
  method: "POST",
  headers: { ...headers, "Content-Type": "application/json" },
  body: JSON.stringify({ name: `careful-${Date.now()}`, approval: { require: ["write_*"] } }),
});
const careful = (await agent.json()).name;
const guarded = new DefaultChatTransport({ api: `${url}/ai-sdk/chat`, headers, body: { agent: careful } });
const approvalChat = `approve-${Date.now()}`;
const write = user("write notes.txt: approved content");
let asked = await read(
  await guarded.sendMessages({ chatId: approvalChat, messages: [write], trigger: "submit-message" }),
);
const pending = asked.parts.find((p) => p.type === "dynamic-tool");
assert.equal(pending.state, "approval-requested", JSON.stringify(asked.parts));
pending.state = "approval-responded";
pending.approval = { id: pending.approval.id, approved: true };
assert.ok(lastAssistantMessageIsCompleteWithApprovalResponses({ messages: [write, asked] }));
asked = await read(
  await guarded.sendMessages({ chatId: approvalChat, messages: [write, asked], trigger: "submit-message", messageId: asked.id }),
  asked,
);
const done = asked.parts.find((p) => p.type === "dynamic-tool");
assert.equal(done.state, "output-available", JSON.stringify(asked.parts));
const written = asked.parts.find((p) => p.type === "data-workspace-file" && p.data.path === "notes.txt");
assert.ok(written, JSON.stringify(asked.parts));
const file = await fetch(`${url}${written.data.url}`, { headers });
assert.equal(await file.text(), "approved content");

// Regenerate: the last answer again, as a new message; the stored history shows it alone.
const again = await read(
  await transport.sendMessages({ chatId: seeded, messages: [...earlier, question], trigger: "regenerate-message", messageId: named.id }),
);
assert.notEqual(again.id, named.id);
assert.match(textOf(again), /You said: what is my name/);
history = await stored(seeded);
assert.equal(history.length, 4);
assert.equal(history.at(-1).id, again.id);
await assert.rejects(
  transport.sendMessages({ chatId: seeded, messages: [...earlier, question], trigger: "regenerate-message", messageId: named.id }),
  /not_the_last_answer/,
);

// Resume: a stream dropped mid-run is picked up where the SDK reconnects (GET .../stream);
// once the run has ended there is nothing to reconnect to.
const long = user(Array.from({ length: 2000 }, (_, i) => `w${i}`).join(" ")); // 2 s at least
const slow = `slow-${Date.now()}`;
const controller = new AbortController();
const dropped = await transport.sendMessages({ chatId: slow, messages: [long], trigger: "submit-message", abortSignal: controller.signal });
const reader = dropped.getReader();
for (let i = 0; i < 5; i++) await reader.read();
controller.abort();
const resumed = await transport.reconnectToStream({ chatId: slow });
assert.ok(resumed, "an open stream to reconnect to");
const whole = await read(resumed);
assert.match(textOf(whole), /w1999/);
assert.equal(await transport.reconnectToStream({ chatId: slow }), null);

console.log(JSON.stringify({ ok: true }));
