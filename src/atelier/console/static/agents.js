// Agents: the tenant's agents, and a form that saves a new version of one.
import { api } from "./api.js";
import { clear, guarded, h, notify } from "./dom.js";

function csv(text) {
  return text
    .split(",")
    .map((part) => part.trim())
    .filter(Boolean);
}

export async function agentsView(main, id) {
  const agents = (await api("/v1/agents")).data;
  const list = h(
    "ul",
    { class: "list", id: "agent-list" },
    agents.map((a) => h("li", { class: a.id === id ? "current" : null }, h("a", { href: `#/agents/${a.id}` }, `${a.name} (v${a.version})`))),
  );
  const name = h("input", { id: "new-agent-name", "aria-label": "New agent's name", placeholder: "new agent name" });
  const create = h(
    "form",
    {
      class: "row",
      onsubmit: guarded(async (event) => {
        event.preventDefault();
        const made = await api("/v1/agents", { method: "POST", json: { name: name.value.trim() } });
        location.hash = `#/agents/${made.id}`;
      }),
    },
    name,
    h("button", { type: "submit" }, "Create"),
  );
  const detail = h("section", { class: "detail", id: "agent" });
  clear(main, h("div", { class: "columns" }, h("aside", { class: "sidebar" }, create, list), detail));
  const agent = agents.find((a) => a.id === id);
  if (!agent) {
    clear(detail, h("p", { class: "muted" }, "Choose an agent to see and edit it."));
    return () => {};
  }
  const field = (label, input) => h("label", {}, h("span", {}, label), input);
  const instructions = h("textarea", { id: "instructions", rows: 8 }, agent.instructions || "");
  const model = h("input", { id: "agent-model", value: agent.model_id || "", placeholder: "the conversation's or the default" });
  const tools = h("input", { id: "agent-tools", value: agent.tools ? agent.tools.join(", ") : "", placeholder: "all built-in tools" });
  const approval = h("input", { id: "agent-approval", value: (agent.approval?.require || []).join(", "), placeholder: "e.g. write_*, delete_file" });
  const form = h(
    "form",
    {
      class: "card agent-form",
      onsubmit: guarded(async (event) => {
        event.preventDefault();
        const saved = await api(`/v1/agents/${agent.id}`, {
          method: "PATCH",
          json: {
            instructions: instructions.value || null,
            model_id: model.value.trim() || null,
            tools: tools.value.trim() ? csv(tools.value) : null,
            approval: { ...agent.approval, require: csv(approval.value) },
          },
        });
        notify(`Saved version ${saved.version}`);
        location.hash = `#/agents/${saved.id}`;
        window.dispatchEvent(new HashChangeEvent("hashchange"));
      }),
    },
    h("h2", {}, `${agent.name} · version ${agent.version}`),
    field("Instructions", instructions),
    field("Model", model),
    field("Tools (comma-separated)", tools),
    field("Calls that need approval", approval),
    h("p", { class: "muted" }, `MCP servers: ${agent.mcp_servers.map((s) => s.name).join(", ") || "none"}`),
    h("button", { type: "submit" }, "Save a new version"),
  );
  clear(detail, form);
  return () => {};
}
