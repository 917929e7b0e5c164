// Conversations: the list (searched, paged); one conversation's history, newest page
// first, each run drawn with its replies, tool calls and how it ended; its files and
// composer; its run streamed live and picked up again after a reload from the last event
// shown; regenerate, fork and edit-and-resend; and the run inspector.
import { api, stream } from "./api.js";
import { clear, guarded, h, listBesideDetail, notify, titledHead } from "./dom.js";
import { forgetLiveState, liveState, saveLiveState } from "./session.js";
import { LiveRun } from "./live.js";
import { renderFooter, renderItem, renderUser, storedItems } from "./render.js";
import { FilesPane } from "./files.js";
import { Inspector } from "./inspector.js";

const PAGE = 100;
const NEWEST = 2 ** 53; // before_seq: the newest page
const DRAFT = "atelier.draft"; // the text an edit-and-resend carries to its fork

export async function conversationsView(main, id) {
  const { detail, load } = listBesideDetail(main, {
    name: "conversation",
    title: "Conversations",
    label: "New conversation",
    create: async () => {
      const made = await api("/v1/conversations", { method: "POST", json: {} });
      location.hash = `#/conversations/${made.id}`;
    },
    page: (params) => api(`/v1/conversations?${params}`),
    item: (c) =>
      h(
        "li",
        { class: c.id === id ? "current" : null },
        h("a", { href: `#/conversations/${c.id}`, "aria-current": c.id === id ? "page" : null }, c.title || "Untitled"),
        c.active_run_id ? h("span", { class: "badge" }, "running") : null,
      ),
  });
  await load();
  main.querySelector(".columns").classList.toggle("has-detail", Boolean(id));
  if (!id) {
    clear(detail, h("p", { class: "muted" }, "Choose a conversation, or start a new one."));
    return () => {};
  }
  const open = new OpenConversation(detail, id);
  await open.show();
  return () => open.close();
}

// Is the page scrolled to its end (so that a reply that grows should keep it there)?
function atBottom() {
  const page = document.scrollingElement;
  return page.scrollHeight - page.scrollTop - page.clientHeight < 120;
}

function toBottom() {
  const page = document.scrollingElement;
  page.scrollTop = page.scrollHeight;
}

class OpenConversation {
  constructor(root, id) {
    this.root = root;
    this.id = id;
    this.base = `/v1/conversations/${id}`;
    this.live = null;
    this.inspector = new Inspector(this.base);
  }

  async show() {
    const [conversation, messages, agents, models] = await Promise.all([
      api(this.base),
      api(`${this.base}/messages?limit=${PAGE}&before_seq=${NEWEST}`),
      api("/v1/agents"),
      api("/v1/models"),
    ]);
    this.conversation = conversation;
    this.messages = h("div", { class: "messages", id: "messages" });
    this.older = h(
      "button",
      { type: "button", id: "load-older", class: "secondary", onclick: guarded(() => this.loadOlder()) },
      "Load older messages",
    );
    this.liveArea = h("div", { class: "live", id: "live" });
    // What a screen reader hears of a run: each reply once it is whole (not every token).
    this.announcer = h("div", { class: "visually-hidden", id: "announcer", "aria-live": "polite" });
    this.files = new FilesPane(this.base);
    this.composer(agents, models, conversation);
    clear(
      this.root,
      this.head(conversation),
      h(
        "div",
        { class: "workbench" },
        h("div", { class: "thread" }, this.messages, this.liveArea, this.form, this.announcer),
        this.files.element,
      ),
    );
    await this.showPage(messages.data);
    toBottom(); // a conversation opens at its newest message, the composer in view
    this.files.refresh().catch((error) => notify(error.message, { failure: true }));
    if (conversation.active_run_id) this.follow(conversation.active_run_id);
    const draft = sessionStorage.getItem(DRAFT);
    if (draft) {
      sessionStorage.removeItem(DRAFT);
      const { conversation: to, text } = JSON.parse(draft);
      if (to === this.id) {
        this.input.value = text;
        this.form.requestSubmit();
      }
    }
  }

  head(conversation) {
    const { head, input, relabel } = titledHead({
      name: "conversation",
      base: this.base,
      id: this.id,
      title: conversation.title,
      question: "Delete this conversation and its files?",
      deleted: () => forgetLiveState(this.id),
    });
    this.title = input;
    this.relabel = relabel;
    return head;
  }

  composer(agents, models, conversation) {
    this.agent = h(
      "select",
      { id: "agent", "aria-label": "Agent" },
      agents.data.map((a) =>
        h(
          "option",
          { value: a.id, selected: a.id === conversation.agent_id || (!conversation.agent_id && a.name === "default") },
          `agent: ${a.name}`,
        ),
      ),
    );
    this.model = h(
      "select",
      { id: "model", "aria-label": "Model" },
      h("option", { value: "" }, "the agent's model"),
      models.data.map((m) => h("option", { value: m.id, selected: m.id === conversation.model_id }, m.id)),
    );
    this.input = h("textarea", {
      id: "composer",
      rows: 3,
      "aria-label": "Message",
      placeholder: "Ask the agent (Enter sends, Shift+Enter for a new line)",
      onkeydown: (event) => {
        if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
          event.preventDefault();
          this.form.requestSubmit();
        }
      },
    });
    this.send = h("button", { type: "submit", id: "send" }, "Send");
    this.cancel = h(
      "button",
      { type: "button", id: "cancel", class: "danger", hidden: true, onclick: guarded(() => this.live?.cancel()) },
      "Cancel run",
    );
    this.form = h(
      "form",
      { class: "composer", onsubmit: guarded((event) => this.submit(event)) },
      this.input,
      h("div", { class: "row" }, this.agent, this.model, this.send, this.cancel),
    );
  }

  // A page of stored messages, above those shown: grouped by run, each run with its
  // footer (how it ended, what it used: asked for the page's runs at once).
  async showPage(page) {
    const active = this.conversation.active_run_id;
    const ids = [...new Set(page.map((m) => m.run_id).filter((r) => r && r !== active))];
    const runs = new Map();
    if (ids.length) {
      const query = ids.map((r) => `id=${r}`).join("&");
      for (const run of (await api(`${this.base}/runs?limit=200&${query}`)).data) runs.set(run.id, run);
    }
    const saved = liveState(this.id); // a run that stopped while streaming: its text
    const groups = [];
    for (const message of page) {
      // The active run's output is shown by its stream (its question stays here).
      if (active && message.run_id === active && message.role !== "user") continue;
      const group = groups[groups.length - 1];
      if (group && group.run === message.run_id && message.role !== "user") group.messages.push(message);
      else groups.push({ run: message.run_id, messages: [message] });
    }
    const shown = groups.flatMap((group) => this.renderGroup(group, runs.get(group.run), saved));
    this.first = page.length ? page[0].seq : this.first;
    this.older.remove();
    this.messages.prepend(...(page.length === PAGE ? [this.older] : []), ...shown);
  }

  renderGroup(group, run, saved) {
    const [head, ...rest] = group.messages;
    const elements = [];
    let said = group.messages;
    if (head.role === "user") {
      elements.push(renderUser(head, this.userActions(head)));
      said = rest;
    }
    const items = storedItems(said);
    if (run && saved && saved.run === run.id && run.status !== "completed") {
      // Streamed before the run stopped (a crash), never stored: shown as it was seen.
      const stored = new Set(items.filter((i) => i.kind === "text").map((i) => i.messageId));
      for (const item of saved.items) if (item.kind === "text" && !stored.has(item.messageId) && !item.messageId) items.push({ ...item, done: true, unsaved: true });
    }
    elements.push(...items.map((item) => renderItem({ ...item, ended: true })));
    if (run && ["completed", "failed", "cancelled", "timed_out"].includes(run.status)) {
      elements.push(renderFooter(run, { inspect: (r) => this.inspector.open(r), more: this.runActions(run, group) }));
    }
    return elements;
  }

  userActions(message) {
    return [
      h(
        "button",
        { type: "button", class: "small edit", "aria-label": "Edit and resend", onclick: guarded(() => this.editAndResend(message)) },
        "Edit",
      ),
    ];
  }

  runActions(run, group) {
    const last = group.messages[group.messages.length - 1];
    return [
      h("button", { type: "button", class: "small regenerate", onclick: guarded(() => this.regenerate(run.id)) }, "Regenerate"),
      h("button", { type: "button", class: "small fork", onclick: guarded(() => this.fork(last.seq)) }, "Fork from here"),
    ];
  }

  async loadOlder() {
    const page = document.scrollingElement;
    const fromBottom = page.scrollHeight - page.scrollTop;
    const older = await api(`${this.base}/messages?limit=${PAGE}&before_seq=${this.first}`);
    await this.showPage(older.data);
    page.scrollTop = page.scrollHeight - fromBottom; // the reader stays where they were
  }

  close() {
    this.live?.stop();
    this.inspector.close();
  }

  async submit(event) {
    event.preventDefault();
    const text = this.input.value.trim();
    if (!text || this.live) return;
    const agent = this.agent.value;
    if (agent && agent !== this.conversation.agent_id) {
      this.conversation = await api(this.base, { method: "PATCH", json: { agent_id: agent } });
    }
    this.input.value = "";
    const question = renderUser({ role: "user", content: text, created_at: new Date().toISOString() });
    this.liveArea.before(question);
    const body = { input: text };
    if (this.model.value) body.model_id = this.model.value;
    toBottom();
    this.startLive(
      null,
      (live) => stream(`${this.base}/runs`, { method: "POST", json: body, signal: live.abort.signal, onEvent: (e) => live.apply(e) }),
      () => {
        // Refused (a busy conversation, a spent budget): nothing was asked; the text is back.
        question.remove();
        this.input.value = text;
        this.input.focus();
      },
    );
  }

  async regenerate(runId) {
    if (this.live) return;
    this.startLive(null, (live) =>
      stream(`${this.base}/runs/${runId}/regenerate`, { method: "POST", json: {}, signal: live.abort.signal, onEvent: (e) => live.apply(e) }),
    );
  }

  async fork(atSeq) {
    const made = await api(`${this.base}/fork`, { method: "POST", json: { at_seq: atSeq } });
    notify("Forked: a copy up to this point, with the files");
    location.hash = `#/conversations/${made.id}`;
  }

  // Edit and resend: a fork up to the question before, asked again in the new words.
  async editAndResend(message) {
    const text = prompt("Edit the message; it is sent again in a fork of this conversation.", message.content);
    if (text === null || !text.trim()) return;
    const made = await api(`${this.base}/fork`, { method: "POST", json: { at_seq: message.seq - 1 } });
    sessionStorage.setItem(DRAFT, JSON.stringify({ conversation: made.id, text: text.trim() }));
    location.hash = `#/conversations/${made.id}`;
  }

  follow(runId) {
    const saved = liveState(this.id);
    const state = saved && saved.run === runId ? saved : null;
    this.startLive(state, (live) =>
      stream(`${this.base}/runs/${runId}/events`, {
        lastEventId: live.lastId,
        signal: live.abort.signal,
        onEvent: (e) => live.apply(e),
      }),
    );
  }

  startLive(state, connect, refused = () => {}) {
    this.cancel.hidden = false;
    this.send.disabled = true;
    markRunning(this.id, true);
    const live = new LiveRun(this.liveArea, this.base, state, {
      save: (s) => saveLiveState(this.id, s),
      fileChanged: (change) => this.files.changed(change),
      titled: (title) => {
        if (document.activeElement !== this.title) this.title.value = title;
        this.relabel(title);
      },
      said: (text) => {
        this.announcer.textContent = `The agent replied: ${text.slice(0, 500)}`;
      },
      decided: (call) => this.liveArea.querySelector(`details.call[data-call-id="${CSS.escape(call)}"]`)?.focus({ preventScroll: true }),
      inspect: (run) => this.inspector.open(run),
      progress: () => this.inspector.changed(live.state.run),
      ended: () => this.inspector.changed(live.state.run, true),
      atBottom,
      toBottom,
    });
    this.live = live;
    live
      .run(connect)
      .catch((error) => {
        if (!live.state.run) {
          clear(this.liveArea); // no run: nothing to show of it
          refused();
        }
        notify(error.message, { failure: true });
      })
      .finally(() => {
        markRunning(this.id, false);
        // Kept only when text streamed that the server never stored (it stopped first).
        const unsaved = live.state.items.some((item) => item.unsaved);
        if (live.state.ended && !unsaved) forgetLiveState(this.id);
        this.live = null;
        this.cancel.hidden = true;
        this.send.disabled = false;
      });
  }
}

// The conversation's "running" badge in the list, as its run starts and ends.
function markRunning(id, running) {
  const item = document.querySelector(`#conversation-list a[href="#/conversations/${id}"]`)?.parentElement;
  if (!item) return;
  item.querySelector(".badge")?.remove();
  if (running) item.append(h("span", { class: "badge" }, "running"));
}
