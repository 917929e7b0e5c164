// The tenant's administration: its budgets (spent and remaining this period), its webhooks
// (their recent deliveries, a failed one sent again) and its API keys (issued with the
// secret shown once, revoked). An end user's token never sees this view.
import { api } from "./api.js";
import { clear, guarded, h, notify } from "./dom.js";

const field = (label, input) => h("label", {}, h("span", {}, label), input);

// A secret the API shows once: in the page until it is dismissed, never stored.
function shownOnce(what, secret) {
  const box = h(
    "div",
    { class: "card secret", role: "alert" },
    h("p", {}, `The ${what}: copy it now, it is not shown again.`),
    h("code", { class: "mono" }, secret),
    h("div", { class: "row" }, h("button", { type: "button", class: "small", onclick: () => navigator.clipboard.writeText(secret) }, "Copy"), h("button", { type: "button", class: "small", onclick: () => box.remove() }, "Done")),
  );
  return box;
}

async function budgetsCard(redraw) {
  const page = await api("/v1/budgets?limit=100");
  const budgets = page.data;
  const scope = h(
    "select",
    { id: "budget-scope" },
    ["tenant", "user", "api_key", "agent"].map((s) => h("option", { value: s }, s.replace("_", " "))),
  );
  const subject = h("input", { id: "budget-subject", placeholder: "user id, key id or agent id" });
  const period = h("select", { id: "budget-period" }, ["day", "month", "total"].map((p) => h("option", { value: p }, p)));
  const limit = h("input", { id: "budget-limit", inputmode: "decimal", required: true, placeholder: "12.50" });
  const form = h(
    "form",
    {
      class: "row admin-form",
      onsubmit: guarded(async (event) => {
        event.preventDefault();
        const body = { scope: scope.value, period: period.value, limit: limit.value.trim() };
        if (scope.value !== "tenant") body.subject = subject.value.trim();
        await api("/v1/budgets", { method: "POST", json: body });
        notify("Budget added");
        await redraw();
      }),
    },
    field("Scope", scope),
    field("Subject", subject),
    field("Period", period),
    field("Limit", limit),
    h("button", { type: "submit" }, "Add budget"),
  );
  return h(
    "section",
    { class: "card", id: "budgets" },
    h("h2", {}, "Budgets"),
    budgets.length
      ? h(
          "div",
          { class: "scroll" },
          h(
            "table",
            {},
            h("thead", {}, h("tr", {}, ["Scope", "Subject", "Period", "Spent", "Limit", "Remaining", ""].map((t) => h("th", {}, t)))),
            h(
              "tbody",
              {},
              budgets.map((b) =>
                h(
                  "tr",
                  { dataset: { budgetId: b.id } },
                  h("td", {}, b.scope.replace("_", " ")),
                  h("td", { class: "mono" }, b.subject || "—"),
                  h("td", {}, b.period),
                  h("td", {}, `${b.spent} ${b.currency}`),
                  h("td", {}, `${b.limit} ${b.currency}`),
                  h("td", {}, `${b.remaining} ${b.currency}`),
                  h(
                    "td",
                    {},
                    h(
                      "button",
                      {
                        type: "button",
                        class: "small danger",
                        "aria-label": `Delete the ${b.scope} budget`,
                        onclick: guarded(async () => {
                          if (!confirm("Delete this budget?")) return;
                          await api(`/v1/budgets/${b.id}`, { method: "DELETE" });
                          await redraw();
                        }),
                      },
                      "Delete",
                    ),
                  ),
                ),
              ),
            ),
          ),
        )
      : h("p", { class: "muted" }, "No budget: nothing caps what runs cost."),
    page.next_cursor ? h("p", { class: "muted" }, "The first 100 budgets; GET /v1/budgets pages through the rest.") : null,
    form,
  );
}

async function webhooksCard(redraw, area) {
  const hooks = (await api("/v1/webhooks?limit=100")).data;
  const url = h("input", { id: "webhook-url", type: "url", required: true, placeholder: "https://example.com/hooks/atelier" });
  const form = h(
    "form",
    {
      class: "row admin-form",
      onsubmit: guarded(async (event) => {
        event.preventDefault();
        const made = await api("/v1/webhooks", {
          method: "POST",
          json: { url: url.value.trim(), events: ["run.completed", "run.failed", "run.cancelled", "run.timed_out", "approval.requested", "budget.threshold", "budget.exceeded"] },
        });
        await redraw();
        area.querySelector("h1").after(shownOnce("webhook's signing secret", made.secret));
      }),
    },
    field("URL", url),
    h("button", { type: "submit" }, "Add webhook"),
  );
  const deliveries = h("div", { id: "deliveries" });
  const show = async (hook) => {
    const listed = (await api(`/v1/webhooks/${hook.id}/deliveries?limit=20`)).data;
    clear(
      deliveries,
      h("h3", {}, `Recent deliveries to ${hook.url}`),
      listed.length
        ? h(
            "ul",
            { class: "list deliveries" },
            listed.map((d) =>
              h(
                "li",
                { dataset: { status: d.status, deliveryId: d.id } },
                `${new Date(d.created_at).toLocaleString()} · ${d.event_type} · ${d.status} · ${d.attempts} attempt(s)`,
                d.last_status_code ? ` · HTTP ${d.last_status_code}` : "",
                d.last_error ? ` · ${d.last_error}` : "",
                d.status === "pending"
                  ? null
                  : h(
                      "button",
                      {
                        type: "button",
                        class: "small redeliver",
                        onclick: guarded(async () => {
                          await api(`/v1/webhooks/${hook.id}/deliveries/${d.id}/redeliver`, { method: "POST" });
                          notify("Sent again");
                          await show(hook);
                        }),
                      },
                      "Send again",
                    ),
              ),
            ),
          )
        : h("p", { class: "muted" }, "Nothing sent yet."),
    );
  };
  return h(
    "section",
    { class: "card", id: "webhooks" },
    h("h2", {}, "Webhooks"),
    hooks.length
      ? h(
          "ul",
          { class: "list" },
          hooks.map((hook) =>
            h(
              "li",
              { dataset: { webhookId: hook.id } },
              h("span", { class: "mono" }, hook.url),
              " ",
              h("button", { type: "button", class: "small deliveries-button", onclick: guarded(() => show(hook)) }, "Deliveries"),
              h(
                "button",
                {
                  type: "button",
                  class: "small danger",
                  onclick: guarded(async () => {
                    if (!confirm(`Delete the webhook to ${hook.url}?`)) return;
                    await api(`/v1/webhooks/${hook.id}`, { method: "DELETE" });
                    await redraw();
                  }),
                },
                "Delete",
              ),
            ),
          ),
        )
      : h("p", { class: "muted" }, "No webhook."),
    deliveries,
    form,
  );
}

async function keysCard(redraw, area) {
  const keys = (await api("/v1/api-keys?limit=100")).data;
  const name = h("input", { id: "key-name", placeholder: "what it is for", maxlength: 100 });
  const form = h(
    "form",
    {
      class: "row admin-form",
      onsubmit: guarded(async (event) => {
        event.preventDefault();
        const made = await api("/v1/api-keys", { method: "POST", json: { name: name.value.trim() } });
        await redraw();
        area.querySelector("h1").after(shownOnce(`API key "${made.name || made.prefix}"`, made.secret));
      }),
    },
    field("Name", name),
    h("button", { type: "submit" }, "Issue a key"),
  );
  return h(
    "section",
    { class: "card", id: "api-keys" },
    h("h2", {}, "API keys"),
    h(
      "ul",
      { class: "list" },
      keys.map((k) =>
        h(
          "li",
          { dataset: { keyId: k.id }, class: k.revoked_at ? "revoked" : null },
          h("span", { class: "mono" }, `atl_${k.prefix}_…`),
          ` ${k.name || "(no name)"} · ${new Date(k.created_at).toLocaleDateString()}`,
          k.revoked_at
            ? ` · revoked ${new Date(k.revoked_at).toLocaleDateString()}`
            : h(
                "button",
                {
                  type: "button",
                  class: "small danger",
                  "aria-label": `Revoke ${k.name || k.prefix}`,
                  onclick: guarded(async () => {
                    if (!confirm(`Revoke ${k.name || k.prefix}? Whatever uses it stops at once.`)) return;
                    await api(`/v1/api-keys/${k.id}`, { method: "DELETE" });
                    await redraw();
                  }),
                },
                "Revoke",
              ),
        ),
      ),
    ),
    form,
  );
}

export async function adminView(main) {
  const area = h("div", { class: "admin" });
  const redraw = async () => {
    const cards = await Promise.all([budgetsCard(redraw, area), webhooksCard(redraw, area), keysCard(redraw, area)]);
    const kept = [...area.querySelectorAll(".secret")]; // a secret just shown stays until dismissed
    clear(area, h("h1", {}, "Administration"), ...kept, ...cards);
  };
  clear(main, area);
  await redraw();
  return () => {};
}
