// The example of docs/api.md "Calling Atelier from a browser": an end user's token, minted
// by the product's server, in the LangGraph JS SDK and the openai npm package -- no secret
// key and no X-User-ID on this side. Usage: node user_token.mjs BASE_URL USER_TOKEN
import assert from "node:assert/strict";
import { Client } from "@langchain/langgraph-sdk";
import OpenAI from "openai";

const [url, token] = process.argv.slice(2);

// The LangGraph SDK sends apiKey as X-Api-Key: the token is the user.
const langgraph = new Client({ apiUrl: `${url}/langgraph`, apiKey: token });
const thread = await langgraph.threads.create();
const parts = [];
for await (const part of langgraph.runs.stream(thread.thread_id, "default", {
  input: { messages: [{ role: "user", content: "hello" }] },
  streamMode: ["values"],
})) {
  parts.push(part);
}
const last = parts.filter((p) => p.event === "values").at(-1).data;
assert.deepEqual(last.messages.map((m) => m.type), ["human", "ai"]);
const mine = await langgraph.threads.search();
assert.ok(mine.some((t) => t.thread_id === thread.thread_id));

// The openai package sends apiKey as Authorization: Bearer. In a browser it also wants
// dangerouslyAllowBrowser: true -- which is what an end-user token is for.
const openai = new OpenAI({
  baseURL: `${url}/openai/v1`,
  apiKey: token,
  dangerouslyAllowBrowser: true,
  maxRetries: 0,
});
const reply = await openai.responses.create({ model: "default", input: "hello" });
assert.equal(reply.status, "completed");
const streamed = await openai.responses.create({ model: "default", input: "hi", stream: true });
const kinds = [];
for await (const event of streamed) kinds.push(event.type);
assert.equal(kinds.at(-1), "response.completed");
try {
  await openai.responses.create({ model: "default", input: "hi", user: "someone-else" });
  assert.fail("refused");
} catch (error) {
  assert.equal(error.status, 403);
  assert.equal(error.code, "user_mismatch");
}
console.log(JSON.stringify({ ok: true }));
