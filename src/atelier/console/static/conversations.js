// Conversations: the list; one conversation's messages, files and composer; its run,
// streamed live and picked up again after a reload from the last event shown.
import { api, download, stream, upload } from "./api.js";
import { bytes, clear, guarded, h, listBesideDetail, notify } from "./dom.js";
import { forgetLiveState, liveState, saveLiveState } from "./session.js";
import { LiveRun } from "./live.js";

const PAGE = 100;
const NEWEST = 2 ** 53; // before_seq: the newest page

export async function conversationsView(main, id) {
  const { list, detail } = listBesideDetail(main, {
    name: "conversation",
    label: "New conversation",
    create: async () => {
      const made = await api("/v1/conversations", { method: "POST", json: {} });
      location.hash = `#/conversations/${made.id}`;
    },
  });
  const page = await api("/v1/conversations?limit=100");
  clear(
    list,
    page.data.map((c) =>
      h(
        "li",
        { class: c.id === id ? "current" : null },
        h("a", { href: `#/conversations/${c.id}` }, c.title || "Untitled"),
        c.active_run_id ? h("span", { class: "badge" }, "running") : null,
      ),
    ),
  );
  if (!id) {
    clear(detail, h("p", { class: "muted" }, "Choose a conversation, or start a new one."));
    return () => {};
  }
  const open = new OpenConversation(detail, id);
  await open.show();
  return () => open.close();
}

class OpenConversation {
  constructor(root, id) {
    this.root = root;
    this.id = id;
    this.base = `/v1/conversations/${id}`;
    this.live = null;
  }

  // A page of stored messages above those shown (a long conversation opens at its newest
  // page): the button above them loads the page before, while there is one.
  showPage(page) {
    const active = this.conversation.active_run_id;
    const shown = page
      // The active run's output is shown by its stream (its question stays here).
      .filter((m) => !(active && m.run_id === active && m.role !== "user"))
      .map(renderMessage);
    this.first = page.length ? page[0].seq : this.first;
    this.older.remove();
    this.messages.prepend(...(page.length === PAGE ? [this.older] : []), ...shown);
  }

  async loadOlder() {
    const page = document.scrollingElement;
    const fromBottom = page.scrollHeight - page.scrollTop;
    const older = await api(`${this.base}/messages?limit=${PAGE}&before_seq=${this.first}`);
    this.showPage(older.data);
    page.scrollTop = page.scrollHeight - fromBottom; // the reader stays where they were
  }

  async show() {
    const [conversation, messages, agents, models] = await Promise.all([
      api(this.base),
      api(`${this.base}/messages?limit=${PAGE}&before_seq=${NEWEST}`),
      api("/v1/agents"),
      api("/v1/models"),
    ]);
    this.conversation = conversation;
    this.messages = h("div", { class: "messages", id: "messages", "aria-live": "polite" });
    this.older = h(
      "button",
      { type: "button", id: "load-older", class: "secondary", onclick: guarded(() => this.loadOlder()) },
      "Load older messages",
    );
    this.showPage(messages.data);
    this.liveArea = h("div", { class: "live", id: "live" });
    this.files = h("ul", { class: "files", id: "files" });
    this.progress = h("progress", { id: "upload-progress", max: 1, value: 0, hidden: true });
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
    const title = (this.title = h("input", {
      id: "title",
      "aria-label": "Title",
      value: conversation.title || "",
      placeholder: "Untitled",
      onchange: guarded(async (event) => {
        await api(this.base, { method: "PATCH", json: { title: event.target.value || null } });
        retitle(this.id, event.target.value);
        notify("Renamed");
      }),
    }));
    const remove = h(
      "button",
      {
        type: "button",
        id: "delete-conversation",
        class: "danger",
        onclick: guarded(async () => {
          if (!confirm("Delete this conversation and its files?")) return;
          await api(this.base, { method: "DELETE" });
          forgetLiveState(this.id);
          location.hash = "#/conversations";
        }),
      },
      "Delete",
    );
    clear(
      this.root,
      h("div", { class: "conversation-head" }, title, remove),
      h(
        "div",
        { class: "workbench" },
        h("div", { class: "thread" }, this.messages, this.liveArea, this.form),
        this.filesPane(),
      ),
    );
    // A conversation opens at its newest message, the composer in view.
    this.form.scrollIntoView({ block: "end" });
    await this.refreshFiles().catch((error) => notify(error.message));
    if (conversation.active_run_id) this.follow(conversation.active_run_id);
  }

  close() {
    this.live?.stop();
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
    const question = renderMessage({ role: "user", content: text });
    this.messages.append(question);
    const body = { input: text };
    if (this.model.value) body.model_id = this.model.value;
    this.startLive(
      null,
      (live) => stream(`${this.base}/runs`, { method: "POST", json: body, signal: live.abort.signal, onEvent: (e) => live.apply(e) }),
      () => {
        // Refused (a busy conversation, a spent budget): nothing was asked; the text is back.
        question.remove();
        this.input.value = text;
      },
    );
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
      filesChanged: () => this.refreshFiles(),
      titled: (title) => {
        if (document.activeElement !== this.title) this.title.value = title;
        retitle(this.id, title);
      },
    });
    this.live = live;
    live
      .run(connect)
      .catch((error) => {
        if (!live.state.run) {
          clear(this.liveArea); // no run: nothing to show of it
          refused();
        }
        notify(error.message);
      })
      .finally(() => {
        markRunning(this.id, false);
        if (live.state.ended) forgetLiveState(this.id);
        this.live = null;
        this.cancel.hidden = true;
        this.send.disabled = false;
        this.refreshFiles();
      });
  }

  filesPane() {
    const picker = h("input", {
      type: "file",
      id: "file-input",
      multiple: true,
      onchange: guarded(async (event) => {
        await this.uploadAll([...event.target.files]);
        event.target.value = "";
      }),
    });
    const drop = h(
      "div",
      {
        class: "drop",
        id: "drop-zone",
        ondragover: (event) => {
          event.preventDefault();
          drop.classList.add("over");
        },
        ondragleave: () => drop.classList.remove("over"),
        ondrop: guarded(async (event) => {
          event.preventDefault();
          drop.classList.remove("over");
          await this.uploadAll([...event.dataTransfer.files]);
        }),
      },
      "Drop files here, or ",
      h("label", { for: "file-input", class: "link" }, "choose them"),
      picker,
    );
    const zip = h(
      "button",
      { type: "button", id: "download-zip", onclick: guarded(() => download(`${this.base}/workspace.zip`, "workspace.zip")) },
      "Download all (zip)",
    );
    return h("aside", { class: "files-pane" }, h("h2", {}, "Files"), drop, this.progress, this.files, zip);
  }

  async uploadAll(files) {
    for (const file of files) {
      this.progress.hidden = false;
      this.progress.value = 0;
      try {
        await upload(this.id, file, (done) => {
          this.progress.value = done;
        });
        notify(`Uploaded ${file.name}`);
      } finally {
        this.progress.hidden = true;
      }
    }
    await this.refreshFiles();
  }

  async refreshFiles() {
    const listed = await api(`${this.base}/files`);
    clear(
      this.files,
      listed.data.map((file) =>
        h(
          "li",
          { dataset: { path: file.path } },
          h("span", { class: "path" }, file.path),
          h("span", { class: "muted" }, ` ${bytes(file.size)} · ${file.source}`),
          h(
            "button",
            {
              type: "button",
              class: "small",
              "aria-label": `Download ${file.path}`,
              onclick: guarded(() => download(`${this.base}/files/${encodePath(file.path)}`, file.path.split("/").pop())),
            },
            "Download",
          ),
          h(
            "button",
            {
              type: "button",
              class: "small danger",
              "aria-label": `Delete ${file.path}`,
              onclick: guarded(async () => {
                await api(`${this.base}/files/${encodePath(file.path)}`, { method: "DELETE" });
                await this.refreshFiles();
              }),
            },
            "Delete",
          ),
        ),
      ),
    );
  }
}

// The conversation's entry in the list, renamed where it is shown.
function retitle(id, title) {
  const link = document.querySelector(`#conversation-list a[href="#/conversations/${id}"]`);
  if (link) link.textContent = title || "Untitled";
}

// The conversation's "running" badge in the list, as its run starts and ends.
function markRunning(id, running) {
  const item = document.querySelector(`#conversation-list a[href="#/conversations/${id}"]`)?.parentElement;
  if (!item) return;
  item.querySelector(".badge")?.remove();
  if (running) item.append(h("span", { class: "badge" }, "running"));
}

function encodePath(path) {
  return path.split("/").map(encodeURIComponent).join("/");
}

export function renderMessage(message) {
  const parts = message.parts || [];
  const element = h(
    "div",
    {
      class: `msg ${message.role}${message.superseded ? " superseded" : ""}`,
      dataset: message.id ? { messageId: message.id } : {},
    },
  );
  if (message.role === "tool") {
    for (const part of parts.filter((p) => p.type === "tool_result")) {
      element.append(
        h(
          "details",
          { class: part.is_error ? "result error" : "result" },
          h("summary", {}, part.is_error ? "Tool error" : "Tool result"),
          h("pre", {}, part.content),
        ),
      );
    }
    return element;
  }
  if (message.content) element.append(h("div", { class: "text" }, message.content));
  for (const call of parts.filter((p) => p.type === "tool_call")) {
    element.append(
      h("details", { class: "call" }, h("summary", {}, `Tool call: ${call.name}`), h("pre", {}, JSON.stringify(call.arguments, null, 2))),
    );
  }
  if (message.incomplete) element.append(h("div", { class: "muted" }, "(incomplete)"));
  return element;
}
