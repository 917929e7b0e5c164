// One run as it streams: its replies growing, its tool calls and their results, the
// approvals it waits for, its end. What it showed is saved (with the id of the last event
// shown) so that a reload picks the stream up after that event: nothing shown twice,
// nothing missed.
import { api, stream } from "./api.js";
import { clear, guarded, h } from "./dom.js";

const TERMINAL = new Set(["run.completed", "run.failed", "run.cancelled", "run.timed_out"]);
const SAVE_EVERY_MS = 100;

export class LiveRun {
  constructor(area, base, state, hooks) {
    this.area = area;
    this.base = base;
    this.hooks = hooks;
    this.state = state || { run: null, lastId: 0, items: [], ended: null, error: null, tokens: 0 };
    this.abort = new AbortController();
    this.elements = [];
    this.status = h("div", { class: "run-status", id: "run-status", role: "status" });
    clear(area, this.status);
    this.state.items.forEach((item, index) => this.render(index));
    this.showStatus();
    this.saveTimer = null;
    this.onUnload = () => this.saveNow();
    window.addEventListener("pagehide", this.onUnload);
  }

  get lastId() {
    return this.state.lastId;
  }

  // Follows the run to its end: ``connect`` opens the first stream; a stream cut before
  // the run's end is opened again after the last event shown.
  async run(connect) {
    let failures = 0;
    let opener = connect;
    try {
      for (;;) {
        try {
          await opener(this);
          failures = 0;
        } catch (error) {
          if (this.abort.signal.aborted || !this.state.run || ++failures > 5) throw error;
        }
        if (this.state.ended || this.abort.signal.aborted) return;
        await new Promise((resolve) => setTimeout(resolve, 500 * Math.max(failures, 1)));
        opener = () =>
          stream(`${this.base}/runs/${this.state.run}/events`, {
            lastEventId: this.state.lastId,
            signal: this.abort.signal,
            onEvent: (e) => this.apply(e),
          });
      }
    } finally {
      window.removeEventListener("pagehide", this.onUnload);
      this.saveNow();
    }
  }

  stop() {
    this.saveNow();
    this.abort.abort();
  }

  async cancel() {
    if (this.state.run) await api(`${this.base}/runs/${this.state.run}/cancel`, { method: "POST" });
  }

  apply({ id, event, data }) {
    if (id !== undefined && /^\d+$/.test(id)) this.state.lastId = Number(id);
    const items = this.state.items;
    const last = items[items.length - 1];
    if (event === "run.started") {
      this.state.run = data.run_id;
    } else if (event === "message.delta") {
      if (last && last.kind === "text" && !last.done) {
        last.text += data.text;
        this.elements[items.length - 1].querySelector(".text").append(data.text);
      } else {
        this.add({ kind: "text", text: data.text, done: false });
      }
    } else if (event === "message.completed" && data.role === "assistant") {
      if (last && last.kind === "text" && !last.done) {
        last.done = true;
        last.messageId = data.message_id;
        this.render(items.length - 1);
      } else if (data.content) {
        this.add({ kind: "text", text: data.content, done: true, messageId: data.message_id });
      }
    } else if (event === "tool.started") {
      this.add({ kind: "tool", call: data.call_id, name: data.name, input: data.input });
    } else if (event === "tool.completed") {
      this.update((item) => item.kind === "tool" && item.call === data.call_id, { output: data.output, isError: data.is_error });
    } else if (event === "approval.requested") {
      this.add({ kind: "approval", call: data.call_id, name: data.name, input: data.input, decision: null });
    } else if (event === "approval.resolved") {
      this.update((item) => item.kind === "approval" && item.call === data.call_id, { decision: data.decision });
    } else if (event === "tools.unavailable") {
      this.add({ kind: "notice", text: `The tools of ${data.server} are unavailable: ${data.reason}` });
    } else if (event === "file.changed") {
      this.hooks.filesChanged();
    } else if (event === "title.updated") {
      this.hooks.titled(data.title);
    } else if (event === "usage") {
      this.state.tokens += (data.input_tokens || 0) + (data.output_tokens || 0);
    } else if (TERMINAL.has(event)) {
      this.state.ended = event.slice(4);
      this.state.error = data.error ? data.error.message : null;
    } else if (event === "error") {
      this.state.error = data.message; // this stream broke; the run goes on: resumed
    }
    this.showStatus();
    this.scheduleSave();
  }

  add(item) {
    this.state.items.push(item);
    this.render(this.state.items.length - 1);
  }

  update(matches, changes) {
    const index = this.state.items.findIndex(matches);
    if (index < 0) return;
    Object.assign(this.state.items[index], changes);
    this.render(index);
  }

  render(index) {
    const element = this.renderItem(this.state.items[index]);
    const old = this.elements[index];
    if (old) old.replaceWith(element);
    else this.status.before(element);
    this.elements[index] = element;
  }

  renderItem(item) {
    if (item.kind === "text") {
      return h(
        "div",
        { class: `msg assistant${item.done ? "" : " streaming"}`, dataset: item.messageId ? { messageId: item.messageId } : {} },
        h("div", { class: "text" }, item.text),
      );
    }
    if (item.kind === "notice") {
      return h("p", { class: "muted notice", role: "note" }, item.text);
    }
    if (item.kind === "tool") {
      const running = item.output === undefined;
      return h(
        "details",
        { class: `call${item.isError ? " error" : ""}`, open: running },
        h("summary", {}, `Tool call: ${item.name}${running ? " (running…)" : ""}`),
        h("pre", {}, JSON.stringify(item.input, null, 2)),
        running ? null : h("details", { class: "result" }, h("summary", {}, item.isError ? "Error" : "Result"), h("pre", {}, item.output)),
      );
    }
    const decide = (decision) =>
      guarded(async () => {
        await api(`${this.base}/runs/${this.state.run}/approvals/${encodeURIComponent(item.call)}`, {
          method: "POST",
          json: { decision },
        });
      });
    return h(
      "div",
      { class: "approval", role: "group", "aria-label": `Approval for ${item.name}` },
      h("p", {}, `The agent asks to call ${item.name}:`),
      h("pre", {}, JSON.stringify(item.input, null, 2)),
      item.decision
        ? h("p", { class: "muted" }, item.decision === "approve" ? "Approved" : "Denied")
        : h(
            "div",
            { class: "row" },
            h("button", { type: "button", class: "approve", onclick: decide("approve") }, "Approve"),
            h("button", { type: "button", class: "danger deny", onclick: decide("deny") }, "Deny"),
          ),
    );
  }

  showStatus() {
    const { ended, error, tokens } = this.state;
    const words = ended ? `Run ${ended}` : "Running…";
    this.status.textContent = `${words}${tokens ? ` · ${tokens} tokens` : ""}${error ? ` · ${error}` : ""}`;
    this.status.dataset.state = ended || "running";
  }

  scheduleSave() {
    if (this.saveTimer === null) this.saveTimer = setTimeout(() => this.saveNow(), SAVE_EVERY_MS);
  }

  saveNow() {
    clearTimeout(this.saveTimer);
    this.saveTimer = null;
    if (this.state.run && !this.state.ended) this.hooks.save(this.state);
  }
}
