// Agents: the tenant's agents; a form that saves a new version of one (instructions,
// model, tools, the calls that need a person's approval, its MCP servers); its versions,
// each compared with the one before.
import { api } from "./api.js";
import { clear, guarded, h, notify } from "./dom.js";

// What a version is, as lines to compare (its id and dates left out).
function definitionLines(version) {
  const { agent_id: _a, version: _v, created_at: _c, ...definition } = version;
  return JSON.stringify(definition, null, 2).split("\n");
}

// A line diff (longest common subsequence): enough for definitions of a few hundred lines.
function diffLines(before, after) {
  const n = before.length;
  const m = after.length;
  const common = Array.from({ length: n + 1 }, () => new Uint16Array(m + 1));
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) {
      common[i][j] = before[i] === after[j] ? common[i + 1][j + 1] + 1 : Math.max(common[i + 1][j], common[i][j + 1]);
    }
  }
  const lines = [];
  let i = 0;
  let j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && before[i] === after[j]) {
      lines.push([" ", before[i]]);
      i++;
      j++;
    } else if (j < m && (i === n || common[i][j + 1] >= common[i + 1][j])) lines.push(["+", after[j++]]);
    else lines.push(["-", before[i++]]);
  }
  return lines;
}

// Each MCP server of the agent, tested as a run would connect: its tools, or why none.
function mcpCard(agent) {
  const result = h("div", { id: "mcp-test", "aria-live": "polite" });
  const test = (server) =>
    guarded(async () => {
      clear(result, h("p", { class: "muted" }, `Connecting to ${server.name}…`));
      const probe = await api(`/v1/agents/${agent.id}/mcp-servers/${encodeURIComponent(server.name)}/test`, { method: "POST" });
      clear(
        result,
        h("h3", {}, `${server.name}: ${probe.available ? `${probe.tools.length} tools` : "unavailable"}`),
        probe.available
          ? h(
              "ul",
              { class: "list mcp-tools" },
              probe.tools.map((tool) =>
                h("li", { class: tool.offered ? null : "muted" }, h("strong", {}, tool.name), ` ${tool.description}`, tool.offered ? "" : " (not offered: outside allowed_tools)"),
              ),
            )
          : h("p", { class: "error-text" }, probe.reason),
      );
    });
  return h(
    "section",
    { class: "card", id: "agent-mcp-servers" },
    h("h2", {}, "MCP servers"),
    agent.mcp_servers.length
      ? h(
          "ul",
          { class: "list" },
          agent.mcp_servers.map((server) =>
            h(
              "li",
              {},
              h("span", { class: "mono" }, `${server.name} · ${server.url}`),
              " ",
              h("button", { type: "button", class: "small", "aria-label": `Test ${server.name}`, onclick: test(server) }, "Test the connection"),
            ),
          ),
        )
      : h("p", { class: "muted" }, "None: add one above (name and URL), then save a new version."),
    result,
  );
}

async function versionsCard(agent) {
  const versions = (await api(`/v1/agents/${agent.id}/versions?limit=100`)).data.sort((a, b) => b.version - a.version);
  const shown = h("div", { id: "version-diff" });
  const compare = (index) => {
    const [newer, older] = [versions[index], versions[index + 1]];
    const lines = older ? diffLines(definitionLines(older), definitionLines(newer)) : definitionLines(newer).map((l) => ["+", l]);
    clear(
      shown,
      h("h3", {}, older ? `Version ${older.version} → ${newer.version}` : `Version ${newer.version}`),
      h(
        "pre",
        { class: "version-diff" },
        lines
          .filter(([mark]) => mark !== " " || lines.length < 60)
          .map(([mark, line]) => h("div", { class: mark === "+" ? "added" : mark === "-" ? "removed" : null }, `${mark} ${line}`)),
      ),
    );
  };
  return h(
    "section",
    { class: "card", id: "agent-versions" },
    h("h2", {}, "Versions"),
    h(
      "ol",
      { class: "list", reversed: true },
      versions.map((v, index) =>
        h(
          "li",
          {},
          `Version ${v.version} · ${new Date(v.created_at).toLocaleString()} `,
          h("button", { type: "button", class: "small", onclick: () => compare(index) }, index + 1 < versions.length ? "Changes" : "Definition"),
        ),
      ),
    ),
    shown,
  );
}

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
  clear(main, h("div", { class: "columns" }, h("aside", { class: "sidebar" }, h("h1", { class: "view-title" }, "Agents"), create, list), detail));
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
  // MCP servers: one per line, "name url"; a server's headers are kept as they are.
  const servers = h(
    "textarea",
    { id: "agent-mcp", rows: 3, placeholder: "crm https://mcp.example.com/mcp" },
    agent.mcp_servers.map((server) => `${server.name} ${server.url}`).join("\n"),
  );
  const kept = new Map(agent.mcp_servers.map((server) => [server.name, server]));
  const parseServers = () =>
    servers.value
      .split("\n")
      .map((line) => line.trim())
      .filter(Boolean)
      .map((line) => {
        const [serverName, url] = line.split(/\s+/, 2);
        const before = kept.get(serverName);
        const server = { name: serverName, url: url || "" };
        if (before?.allowed_tools) server.allowed_tools = before.allowed_tools;
        return server;
      });
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
            mcp_servers: parseServers(),
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
    field("MCP servers (one per line: name url)", servers),
    h("button", { type: "submit" }, "Save a new version"),
  );
  clear(detail, form, mcpCard(agent), await versionsCard(agent));
  return () => {};
}
