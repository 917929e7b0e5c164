// Chats: plain model conversations, no tools; a reply streams as it is written.
import { api, stream } from "./api.js";
import { clear, guarded, h, listBesideDetail } from "./dom.js";
import { renderMessage } from "./conversations.js";

export async function chatsView(main, id) {
  const { list, detail } = listBesideDetail(main, {
    name: "chat",
    label: "New chat",
    create: async () => {
      const made = await api("/v1/chats", { method: "POST", json: {} });
      location.hash = `#/chats/${made.id}`;
    },
  });
  const page = await api("/v1/chats?limit=100");
  clear(
    list,
    page.data.map((c) => h("li", { class: c.id === id ? "current" : null }, h("a", { href: `#/chats/${c.id}` }, c.title || "Untitled"))),
  );
  if (!id) {
    clear(detail, h("p", { class: "muted" }, "Choose a chat, or start a new one."));
    return () => {};
  }
  const abort = new AbortController();
  const base = `/v1/chats/${id}`;
  const [messages, models] = await Promise.all([api(`${base}/messages?limit=500`), api("/v1/models")]);
  const thread = h("div", { class: "messages", id: "messages", "aria-live": "polite" }, messages.data.map(renderMessage));
  const model = h(
    "select",
    { id: "model", "aria-label": "Model" },
    h("option", { value: "" }, "the default model"),
    models.data.map((m) => h("option", { value: m.id }, m.id)),
  );
  const input = h("textarea", { id: "composer", rows: 3, "aria-label": "Message", placeholder: "Say something" });
  const send = h("button", { type: "submit", id: "send" }, "Send");
  const form = h(
    "form",
    {
      class: "composer",
      onsubmit: guarded(async (event) => {
        event.preventDefault();
        const content = input.value.trim();
        if (!content) return;
        input.value = "";
        send.disabled = true;
        thread.append(renderMessage({ role: "user", content }));
        const reply = h("div", { class: "msg assistant streaming" }, h("div", { class: "text" }));
        thread.append(reply);
        const body = { content };
        if (model.value) body.model_id = model.value;
        try {
          await stream(`${base}/messages`, {
            method: "POST",
            json: body,
            signal: abort.signal,
            onEvent: ({ event, data }) => {
              if (event === "message.delta") reply.querySelector(".text").append(data.text);
              if (event === "message.completed") reply.dataset.messageId = data.message_id;
              if (event === "error") reply.append(h("div", { class: "muted" }, data.message));
            },
          });
        } finally {
          reply.classList.remove("streaming");
          send.disabled = false;
        }
      }),
    },
    input,
    h("div", { class: "row" }, model, send),
  );
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  clear(detail, h("div", { class: "thread" }, thread, form));
  return () => abort.abort();
}
