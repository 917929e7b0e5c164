// The run inspector: a run's timeline from what the server stored -- each model call
// (model, tokens in/out/cached, cost, time to first token, duration), each tool call
// (arguments, result, duration, error), each approval (the decision, by whom, when), the
// files it changed and how it ended. Drawn again as a live run goes on.
import { api } from "./api.js";
import { clear, guarded, h } from "./dom.js";
import { markdown } from "./markdown.js";
import { when } from "./render.js";

const REFRESH_MS = 400;

function ms(value) {
  if (value === null || value === undefined) return null;
  return value < 1000 ? `${value} ms` : `${(value / 1000).toFixed(2)} s`;
}

function offset(start, iso) {
  if (!start || !iso) return "";
  return `+${((new Date(iso) - new Date(start)) / 1000).toFixed(2)} s`;
}

function facts(...parts) {
  return parts.filter((part) => part !== null && part !== undefined && part !== "").join(" · ");
}

export class Inspector {
  constructor(base) {
    this.base = base;
    this.run = null;
    this.timer = null;
    this.body = h("div", { class: "inspector-body" });
    this.closeButton = h("button", { type: "button", class: "small close", id: "close-inspector", onclick: () => this.close() }, "Close");
    this.panel = h(
      "aside",
      { class: "inspector", id: "inspector", hidden: true, "aria-labelledby": "inspector-title", tabindex: -1 },
      h("div", { class: "inspector-head" }, h("h2", { id: "inspector-title" }, "Run inspector"), this.closeButton),
      this.body,
    );
    this.panel.addEventListener("keydown", (event) => {
      if (event.key === "Escape") this.close();
    });
  }

  async open(runId) {
    this.opener = document.activeElement;
    this.run = runId;
    if (!this.panel.isConnected) document.body.append(this.panel);
    this.panel.hidden = false;
    await guarded(() => this.draw())();
    this.closeButton.focus();
  }

  close() {
    clearTimeout(this.timer);
    this.timer = null;
    this.run = null;
    this.panel.hidden = true;
    if (this.opener?.isConnected) this.opener.focus();
    this.panel.remove();
  }

  // An event of a live run: the open timeline is drawn again (at most every REFRESH_MS).
  changed(runId, final = false) {
    if (!runId || runId !== this.run) return;
    if (this.timer !== null && !final) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(guarded(() => this.draw().finally(() => (this.timer = null))), final ? 0 : REFRESH_MS);
  }

  async draw() {
    const runId = this.run;
    const timeline = await api(`${this.base}/runs/${runId}/timeline`);
    if (runId !== this.run) return;
    const { run, steps, files } = timeline;
    const start = run.started_at || run.created_at;
    clear(
      this.body,
      h(
        "dl",
        { class: "run-facts" },
        h("dt", {}, "Run"),
        h("dd", { class: "mono" }, run.id),
        h("dt", {}, "Status"),
        h("dd", { dataset: { state: run.status }, id: "inspected-status" }, run.status.replace("_", " ")),
        h("dt", {}, "Model"),
        h("dd", {}, run.model_id + (run.agent_version ? ` · agent version ${run.agent_version}` : "")),
        h("dt", {}, "Used"),
        h("dd", {}, facts(`${run.input_tokens} in / ${run.output_tokens} out tokens`, `cost ${run.cost}`)),
        h("dt", {}, "Time"),
        h("dd", {}, facts(when(run.created_at), run.ended_at ? `took ${ms(new Date(run.ended_at) - new Date(start))}` : "still going")),
        run.error ? h("dt", {}, "Error") : null,
        run.error ? h("dd", { class: "error-text" }, `${run.error.code}: ${run.error.message}`) : null,
      ),
      h("h3", {}, "Timeline"),
      h("ol", { class: "timeline", id: "timeline" }, steps.map((step) => this.step(step, start))),
      h("h3", {}, "Files changed"),
      files.length
        ? h("ul", { class: "changed-files" }, files.map((f) => h("li", {}, h("span", { class: "mono" }, f.path), ` (${f.change})`)))
        : h("p", { class: "muted" }, "None."),
    );
  }

  step(step, start) {
    const at = h("span", { class: "at muted" }, offset(start, step.started_at || step.ended_at));
    if (step.type === "model_call") {
      const cached = step.cache_read_tokens ? ` (${step.cache_read_tokens} cached)` : "";
      return h(
        "li",
        { class: "step model-call", dataset: { type: step.type } },
        at,
        h("strong", {}, "Model call"),
        h(
          "span",
          { class: "figures" },
          facts(
            step.model_id,
            step.input_tokens !== null ? `${step.input_tokens} in${cached} / ${step.output_tokens} out tokens${step.estimated ? " (estimated)" : ""}` : null,
            step.cost !== null ? `cost ${step.cost}` : null,
            step.time_to_first_token_ms !== null ? `first token ${ms(step.time_to_first_token_ms)}` : null,
            step.duration_ms !== null ? `took ${ms(step.duration_ms)}` : null,
            step.stop_reason ? `stopped: ${step.stop_reason}` : null,
          ),
        ),
        step.text ? h("details", {}, h("summary", {}, "Reply"), h("div", { class: "markdown" }, markdown(step.text))) : null,
      );
    }
    if (step.type === "tool_call") {
      return h(
        "li",
        { class: `step tool-call${step.is_error ? " error" : ""}`, dataset: { type: step.type } },
        at,
        h("strong", {}, `Tool call: ${step.name}`),
        h("span", { class: "figures" }, facts(step.decision, step.is_error ? "error" : "ok", step.duration_ms !== null ? `took ${ms(step.duration_ms)}` : null)),
        h("details", {}, h("summary", {}, "Arguments"), h("pre", {}, JSON.stringify(step.arguments, null, 2))),
        h("details", { open: step.is_error }, h("summary", {}, step.is_error ? "Error" : "Result"), h("pre", {}, step.output)),
      );
    }
    const what = step.type === "approval" ? "Approval" : "Client tool";
    return h(
      "li",
      { class: `step ${step.type}`, dataset: { type: step.type, decision: step.decision } },
      at,
      h("strong", {}, `${what}: ${step.name}`),
      h(
        "span",
        { class: "figures" },
        step.decision === "pending"
          ? "waiting for a decision"
          : facts(`${step.decision} by ${step.decided_by}`, when(step.decided_at), step.duration_ms !== null ? `after ${ms(step.duration_ms)}` : null, step.reason),
      ),
      h("details", {}, h("summary", {}, "Arguments"), h("pre", {}, JSON.stringify(step.arguments, null, 2))),
    );
  }
}
