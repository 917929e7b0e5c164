// The openai npm package, unmodified, against Atelier's Responses API: text, a stream,
// errors in OpenAI's shape, and a function tool it runs itself.
// Usage: node openai.mjs BASE_URL API_KEY
import assert from "node:assert/strict";
import OpenAI from "openai";

const [url, key] = process.argv.slice(2);
const client = new OpenAI({
  baseURL: `${url}/openai/v1`,
  apiKey: key,
  defaultHeaders: { "X-User-ID": "js-user" },
  maxRetries: 0,
});

const reply = await client.responses.create({ model: "default", input: "hello" });
assert.equal(reply.status, "completed");
assert.ok(reply.output_text.length > 0);

const stream = await client.responses.create({ model: "default", input: "list files", stream: true });
const kinds = [];
for await (const event of stream) kinds.push(event.type);
assert.equal(kinds.at(-1), "response.completed");
assert.ok(!kinds.includes("response.function_call_arguments.delta"), "a server tool is no function call");

try {
  await client.responses.create({ model: "no-such-model", input: "hi" });
  assert.fail("refused");
} catch (error) {
  assert.equal(error.status, 400);
  assert.equal(error.code, "unknown_model"); // read from {"error": {...}}, not "(no body)"
}

const weather = {
  type: "function",
  name: "get_weather",
  description: "The weather in a city.",
  parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
};
const called = await client.responses.create({
  model: "default",
  input: 'call get_weather {"city": "Rome"}',
  tools: [weather],
});
const [call] = called.output;
assert.equal(call.type, "function_call");
const answered = await client.responses.create({
  model: "default",
  previous_response_id: called.id,
  input: [{ type: "function_call_output", call_id: call.call_id, output: "warm" }],
  tools: [weather],
});
assert.deepEqual(answered.output.map((i) => i.type), ["message"]);
console.log(JSON.stringify({ ok: true }));
