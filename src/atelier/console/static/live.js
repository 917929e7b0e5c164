// One run as it streams: its replies growing, its tool calls (with a person's decision
// and their results), its end; drawn by the same code as a stored run, so a reload shows
// what was streamed. What it showed is saved (with the id of the last event shown) so
// that a reload picks the stream up after that event: nothing shown twice, nothing
// missed. A stream that breaks is opened again for as long as the page is open; between
// tries the run's own status is asked, so a run that ended while the server was away
// (a crash: worker_lost) shows how it ended, not "Running…" for ever.
import { api, stream } from "./api.js";
import { clear, guarded, h } from "./dom.js";
import { renderFooter, renderItem } from "./render.js";

const TERMINAL = new Set(["run.completed", "run.failed", "run.cancelled", "run.timed_out"]);
const SAVE_EVERY_MS = 100;
const REDRAW_EVERY_MS = 120; // a streaming reply's Markdown, redrawn at most this often
const RETRY_MS = [500, 1000, 2000, 5000];

export class LiveRun {
  constructor(area, base, state, hooks) {
    this.area = area;
    this.base = base;
    this.hooks = hooks;
    this.state = state || { run: null, lastId: 0, items: [], ended: null, error: null, usage: { input: 0, output: 0, cost: 0 } };
    this.state.usage ||= { input: 0, output: 0, cost: 0 };
    this.abort = new AbortController();
    this.elements = [];
    this.reconnecting = false;
    this.footer = h("div");
    clear(area, this.footer);
    this.state.items.forEach((item, index) => this.render(index));
    this.showStatus();
    this.saveTimer = null;
    this.redrawTimer = null;
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
          // Refused before the run began (a busy conversation, a spent budget): said once.
          if (this.abort.signal.aborted || !this.state.run) throw error;
          failures += 1;
        }
        if (this.state.ended || this.abort.signal.aborted) return;
        this.reconnecting = failures > 0;
        this.showStatus();
        await new Promise((resolve) => setTimeout(resolve, RETRY_MS[Math.min(failures, RETRY_MS.length - 1)]));
        if (this.abort.signal.aborted) return;
        if (await this.endedMeanwhile()) return;
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

  // Asks the run how it is; true when it ended (then shown as it ended).
  async endedMeanwhile() {
    let run;
    try {
      run = await api(`${this.base}/runs/${this.state.run}`, { signal: this.abort.signal });
    } catch {
      return false; // the server is still away: try the stream again later
    }
    if (["queued", "running", "awaiting_approval", "awaiting_tool_result"].includes(run.status)) return false;
    this.finish(run);
    return true;
  }

  // The run's end as stored: its status, error and figures (the same footer as history).
  finish(run) {
    this.state.usage = { input: run.input_tokens, output: run.output_tokens, cost: Number(run.cost) };
    this.end(run.status, run.error);
    this.showStatus();
  }

  end(status, error) {
    this.state.ended = status;
    this.state.error = error || null;
    this.reconnecting = false;
    for (const item of this.state.items) {
      if (item.kind === "call") item.ended = true;
      // Text the run never stored (it stopped before it could: a crash) is said to be so.
      if (item.kind === "text" && !item.done) item.unsaved = !item.messageId;
    }
    this.state.items.forEach((_, index) => this.render(index));
    this.hooks.ended?.();
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
    const follow = this.hooks.atBottom?.();
    this.reconnecting = false;
    const items = this.state.items;
    const last = items[items.length - 1];
    if (event === "run.started") {
      this.state.run = data.run_id;
      this.hooks.started?.(data.run_id);
    } else if (event === "message.delta") {
      if (last && last.kind === "text" && !last.done) {
        last.text += data.text;
        this.redrawSoon(items.length - 1);
      } else {
        this.add({ kind: "text", text: data.text, done: false });
      }
    } else if (event === "message.completed" && data.role === "assistant") {
      if (last && last.kind === "text" && !last.done) {
        Object.assign(last, { done: true, messageId: data.message_id, text: data.content, incomplete: data.incomplete });
        this.render(items.length - 1);
        this.hooks.said?.(data.content);
      } else if (data.content) {
        this.add({ kind: "text", text: data.content, done: true, messageId: data.message_id, incomplete: data.incomplete });
        this.hooks.said?.(data.content);
      }
    } else if (event === "approval.requested") {
      this.upsertCall(data, { decision: "pending" });
    } else if (event === "approval.resolved") {
      this.upsertCall(data, { decision: data.decision });
      this.hooks.decided?.(data.call_id);
    } else if (event === "tool.started") {
      this.upsertCall(data, {});
    } else if (event === "tool.completed") {
      this.upsertCall(data, { output: data.output, isError: data.is_error });
    } else if (event === "tools.unavailable") {
      this.add({ kind: "notice", text: `The tools of ${data.server} are unavailable: ${data.reason}` });
    } else if (event === "file.changed") {
      this.hooks.fileChanged(data);
    } else if (event === "title.updated") {
      this.hooks.titled(data.title);
    } else if (event === "usage") {
      this.state.usage.input += data.input_tokens || 0;
      this.state.usage.output += data.output_tokens || 0;
      this.state.usage.cost += Number(data.cost || 0);
    } else if (TERMINAL.has(event)) {
      this.end(event.slice(4), data.error);
    }
    this.hooks.progress?.(event);
    this.showStatus();
    this.scheduleSave();
    if (follow) this.hooks.toBottom?.();
  }

  // A call's box, made by the first of its events and brought up to date by the others.
  upsertCall(data, changes) {
    const index = this.state.items.findIndex((item) => item.kind === "call" && item.call === data.call_id);
    if (index < 0) {
      this.add({ kind: "call", call: data.call_id, name: data.name, input: data.input, ...changes });
    } else {
      const item = this.state.items[index];
      Object.assign(item, changes, data.input !== undefined ? { input: data.input } : {});
      this.render(index);
    }
  }

  add(item) {
    this.state.items.push(item);
    this.render(this.state.items.length - 1);
  }

  redrawSoon(index) {
    if (this.redrawTimer !== null) return;
    this.redrawTimer = setTimeout(() => {
      this.redrawTimer = null;
      const follow = this.hooks.atBottom?.();
      this.render(index);
      if (follow) this.hooks.toBottom?.();
    }, REDRAW_EVERY_MS);
  }

  render(index) {
    if (index === this.state.items.length - 1 && this.redrawTimer !== null) {
      clearTimeout(this.redrawTimer);
      this.redrawTimer = null;
    }
    const item = this.state.items[index];
    const element = renderItem(item, (decision) =>
      guarded(async () => {
        await api(`${this.base}/runs/${this.state.run}/approvals/${encodeURIComponent(item.call)}`, {
          method: "POST",
          json: { decision },
        });
      }),
    );
    const old = this.elements[index];
    if (old) {
      const focused = old.contains(document.activeElement);
      old.replaceWith(element);
      if (focused) element.focus({ preventScroll: true }); // redrawn, the focus stays on it
    } else this.footer.before(element);
    this.elements[index] = element;
  }

  showStatus() {
    const { ended, error, usage } = this.state;
    const shown = JSON.stringify([this.state.run, ended, error, usage, this.reconnecting]);
    if (shown === this.shown) return; // unchanged: the footer (and a focus in it) stays
    this.shown = shown;
    const footer = renderFooter(
      {
        id: this.state.run,
        status: ended || "running",
        reconnecting: this.reconnecting,
        error,
        input_tokens: usage.input,
        output_tokens: usage.output,
        cost: usage.cost,
      },
      { id: "run-status", inspect: this.hooks.inspect },
    );
    this.footer.replaceWith(footer);
    this.footer = footer;
  }

  scheduleSave() {
    if (this.saveTimer === null) this.saveTimer = setTimeout(() => this.saveNow(), SAVE_EVERY_MS);
  }

  saveNow() {
    clearTimeout(this.saveTimer);
    this.saveTimer = null;
    if (this.state.run) this.hooks.save(this.state);
  }
}
