// A page built on useChat, as products write it: the default transport pointed at
// Atelier with an end user's token, resume after a reload, a tool the page runs itself
// (onToolCall + addToolOutput), approvals (addToolApprovalResponse), and the automatic
// re-send of sendAutomaticallyWhen. Bundled by esbuild in the test (build.mjs).
import React, { useEffect, useState } from "react";
import { createRoot } from "react-dom/client";
import { useChat } from "@ai-sdk/react";
import {
  DefaultChatTransport,
  lastAssistantMessageIsCompleteWithApprovalResponses,
  lastAssistantMessageIsCompleteWithToolCalls,
} from "ai";

const { api, token, chatId, agent } = window.ATELIER;
const headers = { Authorization: `Bearer ${token}` };
const weather = {
  name: "get_weather",
  description: "The weather in a city.",
  parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
};

function Chat({ initial }) {
  const { messages, sendMessage, status, error, addToolOutput, addToolApprovalResponse } = useChat({
    id: chatId,
    messages: initial,
    resume: true,
    transport: new DefaultChatTransport({
      api: `${api}/ai-sdk/chat`,
      headers,
      body: { client_tools: [weather], ...(agent ? { agent } : {}) },
    }),
    sendAutomaticallyWhen: ({ messages }) =>
      lastAssistantMessageIsCompleteWithToolCalls({ messages }) ||
      lastAssistantMessageIsCompleteWithApprovalResponses({ messages }),
    async onToolCall({ toolCall }) {
      if (toolCall.toolName === "get_weather") {
        addToolOutput({ tool: "get_weather", toolCallId: toolCall.toolCallId, output: `sunny in ${toolCall.input.city}` });
      }
    },
  });
  const [text, setText] = useState("");
  return (
    <main>
      <p id="status">{status}</p>
      {error && <p id="error">{error.message}</p>}
      {messages.map((m) => (
        <div key={m.id} className={`msg ${m.role}`} data-id={m.id}>
          {m.parts.map((p, i) => {
            if (p.type === "text") return <span key={i}>{p.text}</span>;
            if (p.type === "dynamic-tool" || p.type.startsWith("tool-")) {
              const name = p.toolName ?? p.type.slice(5);
              return (
                <button
                  key={i}
                  className={`tool ${p.state}`}
                  disabled={p.state !== "approval-requested"}
                  onClick={() => addToolApprovalResponse({ id: p.approval.id, approved: true })}
                >
                  {name}: {p.state}
                </button>
              );
            }
            return null;
          })}
        </div>
      ))}
      <form
        onSubmit={(e) => {
          e.preventDefault();
          sendMessage({ text });
          setText("");
        }}
      >
        <input id="input" value={text} onChange={(e) => setText(e.target.value)} />
        <button id="send" type="submit" disabled={status !== "ready"}>Send</button>
      </form>
    </main>
  );
}

function Page() {
  const [initial, setInitial] = useState(null);
  useEffect(() => {
    // What the product's page starts from after a reload: the chat's stored messages.
    fetch(`${api}/ai-sdk/chat/${chatId}/messages`, { headers }).then(async (r) =>
      setInitial(r.status === 200 ? await r.json() : []),
    );
  }, []);
  return initial === null ? <p id="loading">loading</p> : <Chat initial={initial} />;
}

createRoot(document.getElementById("root")).render(<Page />);
