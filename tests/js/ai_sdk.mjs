// The AI SDK (ai + @ai-sdk/openai, which calls the Responses API), unmodified:
// generateText and streamText with Atelier's own tools, with client tools over several
// steps, and with a multi-turn messages history. Usage: node ai_sdk.mjs BASE_URL API_KEY
import assert from "node:assert/strict";
import { createOpenAI } from "@ai-sdk/openai";
import { generateText, stepCountIs, streamText, tool } from "ai";
import { z } from "zod";

const [url, key] = process.argv.slice(2);
const provider = createOpenAI({
  baseURL: `${url}/openai/v1`,
  apiKey: key,
  headers: { "X-User-ID": "js-user" },
});
const model = provider.responses("default");

// A call Atelier ran is not one the SDK must make ("unavailable tool", schema errors).
const served = await generateText({ model, prompt: "write notes.md: hello" });
assert.ok(served.text.length > 0);
const streamed = streamText({ model, prompt: "list files" });
let text = "";
for await (const piece of streamed.textStream) text += piece;
assert.ok(text.length > 0);

// Client tools over several steps: the SDK runs getWeather, sends its result back
// (the whole history, no previousResponseId), and gets the answer.
const asked = [];
const steps = await generateText({
  model,
  prompt: 'call getWeather {"city": "Kyoto"}',
  tools: {
    getWeather: tool({
      description: "The weather in a city.",
      inputSchema: z.object({ city: z.string() }),
      execute: async ({ city }) => {
        asked.push(city);
        return { city, sky: "clear" };
      },
    }),
  },
  stopWhen: stepCountIs(3),
});
assert.deepEqual(asked, ["Kyoto"]);
assert.equal(steps.steps.length, 2);
assert.ok(steps.text.length > 0);

// A multi-turn history, as useChat keeps it.
const history = await generateText({
  model,
  messages: [
    { role: "user", content: "my name is Ann" },
    { role: "assistant", content: "hello Ann" },
    { role: "user", content: "what is my name?" },
  ],
});
assert.ok(history.text.length > 0);
console.log(JSON.stringify({ ok: true }));
