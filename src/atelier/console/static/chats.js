// Chats: plain model conversations, no tools; a reply streams as it is written (Markdown,
// as in conversations). Chats are searched, paged, renamed and deleted; a turn the API
// refuses (a spent budget) gives its text back.
import { api, stream } from "./api.js";
import { clear, guarded, h, listBesideDetail, titledHead } from "./dom.js";
import { renderText, renderUser } from "./render.js";

export async function chatsView(main, id) {
  const { detail, load } = listBesideDetail(main, {
    name: "chat",
    title: "Chats",
    label: "New chat",
    create: async () => {
      const made = await api("/v1/chats", { method: "POST", json: {} });
      location.hash = `#/chats/${made.id}`;
    },
    page: (params) => api(`/v1/chats?${params}`),
    item: (c) =>
      h(
        "li",
        { class: c.id === id ? "current" : null },
        h("a", { href: `#/chats/${c.id}`, "aria-current": c.id === id ? "page" : null }, c.title || "Untitled"),
      ),
  });
  await load();
  main.querySelector(".columns").classList.toggle("has-detail", Boolean(id));
  if (!id) {
    clear(detail, h("p", { class: "muted" }, "Choose a chat, or start a new one."));
    return () => {};
  }
  const abort = new AbortController();
  const base = `/v1/chats/${id}`;
  const [chat, messages, models] = await Promise.all([api(base), api(`${base}/messages?limit=500`), api("/v1/models")]);
  const said = (m) => (m.role === "user" ? renderUser(m) : renderText({ text: m.content, done: true, messageId: m.id }));
  const thread = h("div", { class: "messages", id: "messages" }, messages.data.map(said));
  const announcer = h("div", { class: "visually-hidden", "aria-live": "polite" });
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
        const question = renderUser({ role: "user", content, created_at: new Date().toISOString() });
        const item = { text: "", done: false };
        let reply = renderText(item);
        thread.append(question, reply);
        let soon = null;
        const redraw = () => {
          clearTimeout(soon);
          soon = null;
          const next = renderText(item);
          reply.replaceWith(next);
          reply = next;
        };
        // A streaming reply's Markdown, drawn again a few times a second, not per token.
        const redrawSoon = () => (soon ??= setTimeout(redraw, 100));
        const body = { content };
        if (model.value) body.model_id = model.value;
        let started = false;
        try {
          await stream(`${base}/messages`, {
            method: "POST",
            json: body,
            signal: abort.signal,
            onEvent: ({ event, data }) => {
              started = true;
              if (event === "message.delta") {
                item.text += data.text;
                redrawSoon();
              } else if (event === "message.completed") {
                Object.assign(item, { text: data.content, done: true, messageId: data.message_id });
                redraw();
                announcer.textContent = `The model replied: ${data.content.slice(0, 500)}`;
              } else if (event === "title.updated") {
                title.value = data.title;
                relabel(data.title);
              } else if (event === "error") {
                reply.append(h("div", { class: "muted" }, data.message));
              }
            },
          });
        } catch (error) {
          if (!started) {
            // Refused before anything was written (a spent budget): the text is back.
            question.remove();
            reply.remove();
            input.value = content;
            input.focus();
          }
          throw error;
        } finally {
          item.done = true;
          if (reply.isConnected) redraw();
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
  const { head, input: title, relabel } = titledHead({
    name: "chat",
    base,
    id,
    title: chat.title,
    question: "Delete this chat?",
  });
  clear(detail, head, h("div", { class: "thread" }, thread, form, announcer));
  document.scrollingElement.scrollTop = document.scrollingElement.scrollHeight;
  return () => abort.abort();
}
