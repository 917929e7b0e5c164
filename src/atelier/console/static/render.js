// How a run looks, one way whether it streams now or was stored long ago: the question,
// the replies (Markdown), each tool call as one box (its arguments, a person's decision
// on it, its result), notes, and a footer that says how the run ended, what it used and
// when, with the way into its inspector.
import { h } from "./dom.js";
import { markdown } from "./markdown.js";

export function when(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  const today = new Date().toDateString() === date.toDateString();
  return today ? date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }) : date.toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
}

function stamp(iso) {
  return iso ? h("time", { class: "stamp", datetime: iso, title: new Date(iso).toLocaleString() }, when(iso)) : null;
}

export function renderUser(message, actions = []) {
  return h(
    "div",
    { class: `msg user${message.superseded ? " superseded" : ""}`, dataset: message.id ? { messageId: message.id, seq: message.seq } : {} },
    h("div", { class: "text" }, message.content),
    h("div", { class: "meta" }, stamp(message.created_at), ...actions),
  );
}

// A reply's text: Markdown once it is whole; while it streams, Markdown too (the caller
// redraws it at most a few times a second).
export function renderText(item) {
  const text = h("div", { class: "text markdown" }, markdown(item.text));
  return h(
    "div",
    {
      class: `msg assistant${item.done ? "" : " streaming"}${item.superseded ? " superseded" : ""}`,
      dataset: item.messageId ? { messageId: item.messageId } : {},
    },
    text,
    item.incomplete ? h("div", { class: "muted" }, "(incomplete)") : null,
    item.unsaved ? h("div", { class: "muted" }, "(streamed before the run stopped; not saved)") : null,
  );
}

const DECIDED = { approved: "approved", denied: "denied", approve: "approved", deny: "denied" };

// One tool call: what it was asked with, whether a person let it run, what it gave back.
// ``decide(decision)``: the buttons of a call that waits for a person.
function renderCall(item, decide) {
  const running = item.output === undefined || item.output === null;
  const decision = DECIDED[item.decision] || item.decision || null;
  const waiting = decision === "pending";
  const badges = [
    decision && !waiting ? h("span", { class: `badge ${decision}` }, decision) : null,
    waiting ? h("span", { class: "badge pending" }, "waiting for approval") : null,
    !waiting && running && !item.ended ? h("span", { class: "badge" }, "running…") : null,
    item.isError ? h("span", { class: "badge error" }, "error") : null,
    item.durationMs !== undefined && item.durationMs !== null ? h("span", { class: "muted" }, ` ${item.durationMs} ms`) : null,
  ];
  return h(
    "details",
    {
      class: `call${item.isError ? " error" : ""}${waiting ? " approval" : ""}`,
      open: waiting || running,
      dataset: { callId: item.call },
      tabindex: -1,
      role: waiting ? "group" : null,
      "aria-label": waiting ? `Approval for ${item.name}` : null,
    },
    h("summary", {}, `Tool call: ${item.name}`, ...badges),
    h("div", { class: "label muted" }, "Arguments"),
    h("pre", { class: "arguments" }, JSON.stringify(item.input ?? {}, null, 2)),
    waiting && decide
      ? h(
          "div",
          { class: "row" },
          h("p", {}, `The agent asks to call ${item.name}.`),
          h("button", { type: "button", class: "approve", onclick: decide("approve") }, "Approve"),
          h("button", { type: "button", class: "danger deny", onclick: decide("deny") }, "Deny"),
        )
      : null,
    running ? null : h("div", { class: "label muted" }, item.isError ? "Error" : "Result"),
    running ? null : h("pre", { class: "result" }, item.output),
  );
}

function renderNotice(item) {
  return h("p", { class: "muted notice-line", role: "note" }, item.text);
}

export function renderItem(item, decide) {
  if (item.kind === "text") return renderText(item);
  if (item.kind === "call") return renderCall(item, decide);
  return renderNotice(item);
}

const ENDED = { completed: "completed", failed: "failed", cancelled: "cancelled", timed_out: "timed out" };

// The run's footer: its state, what it used, when; ``inspect()`` opens its timeline.
export function renderFooter(run, { id, inspect, more = [] } = {}) {
  const state = run.status in ENDED ? run.status : run.reconnecting ? "reconnecting" : "running";
  const words = [
    state === "running" ? "Running…" : state === "reconnecting" ? "Reconnecting…" : `Run ${ENDED[state]}`,
    run.error ? `${run.error.code ? `${run.error.code}: ` : ""}${run.error.message}` : null,
    run.input_tokens || run.output_tokens ? `${run.input_tokens || 0} in / ${run.output_tokens || 0} out tokens` : null,
    Number(run.cost) ? `${Number(run.cost).toFixed(4)} ${run.currency || "USD"}` : null,
  ].filter(Boolean);
  return h(
    "div",
    { class: `run-footer${run.error ? " failed" : ""}`, id, role: id ? "status" : null, dataset: { state, runId: run.id || "" } },
    h("span", { class: "words" }, words.join(" · ")),
    stamp(run.ended_at || run.created_at),
    run.id && inspect ? h("button", { type: "button", class: "small inspect", onclick: () => inspect(run.id) }, "Inspect") : null,
    ...more,
  );
}

// A run's stored messages as the items a live run shows: its replies, and its tool calls
// each with its result (and the person's decision, kept with the result).
export function storedItems(messages) {
  const items = [];
  const calls = new Map();
  for (const message of messages) {
    if (message.role === "assistant") {
      if (message.content) {
        items.push({ kind: "text", text: message.content, done: true, messageId: message.id, incomplete: message.incomplete, superseded: message.superseded });
      }
      for (const part of (message.parts || []).filter((p) => p.type === "tool_call")) {
        const item = { kind: "call", call: part.id, name: part.name, input: part.arguments, ended: true };
        calls.set(part.id, item);
        items.push(item);
      }
    } else if (message.role === "tool") {
      for (const part of (message.parts || []).filter((p) => p.type === "tool_result")) {
        const item = calls.get(part.call_id);
        if (!item) continue;
        Object.assign(item, { output: part.content, isError: part.is_error, durationMs: part.duration_ms, decision: part.decision || item.decision });
      }
    }
  }
  return items;
}
