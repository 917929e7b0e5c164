// Usage over time: tokens per day, stacked by model and by user, drawn as SVG.
import { api } from "./api.js";
import { clear, h } from "./dom.js";

const SVG = "http://www.w3.org/2000/svg";
const COLORS = ["#3b5bdb", "#e8590c", "#2f9e44", "#ae3ec9", "#f08c00", "#1098ad", "#c2255c", "#5c940d"];
const DAYS = 30;

function svg(tag, attributes = {}, ...children) {
  const element = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, String(value));
  element.append(...children);
  return element;
}

export async function usageView(main) {
  const since = new Date(Date.now() - (DAYS - 1) * 86_400_000);
  since.setUTCHours(0, 0, 0, 0);
  const from = encodeURIComponent(since.toISOString());
  const [byModel, byUser] = await Promise.all([
    api(`/v1/usage?group_by=day&split_by=model&from=${from}`),
    api(`/v1/usage?group_by=day&split_by=user&from=${from}`),
  ]);
  const days = [];
  for (let i = 0; i < DAYS; i++) days.push(new Date(since.getTime() + i * 86_400_000).toISOString().slice(0, 10));
  clear(
    main,
    h(
      "div",
      { class: "usage" },
      h("h1", {}, `Usage, last ${DAYS} days (tokens per day)`),
      chart("By model", "usage-by-model", days, byModel.data),
      chart("By user", "usage-by-user", days, byUser.data),
      totals(byModel),
    ),
  );
  return () => {};
}

function chart(title, id, days, rows) {
  const series = [...new Set(rows.map((r) => r.split))].sort();
  const perDay = new Map(days.map((d) => [d, new Map()]));
  for (const row of rows) perDay.get(row.key)?.set(row.split, row.input_tokens + row.output_tokens);
  const highest = Math.max(1, ...[...perDay.values()].map((m) => [...m.values()].reduce((a, b) => a + b, 0)));
  // Drawn at the width it is shown at (one unit a pixel): its labels stay readable on a phone.
  const width = Math.max(280, Math.min(960, document.getElementById("main").clientWidth - 48));
  const height = 200;
  const bar = width / days.length;
  const drawing = svg("svg", { viewBox: `0 0 ${width} ${height + 20}`, role: "img", "aria-label": title, id, class: "chart" });
  days.forEach((day, i) => {
    let y = height;
    series.forEach((name, s) => {
      const value = perDay.get(day).get(name) || 0;
      if (!value) return;
      const tall = (value / highest) * (height - 10);
      y -= tall;
      const rect = svg("rect", { x: i * bar + 2, y, width: bar - 4, height: tall, fill: COLORS[s % COLORS.length] });
      rect.append(svg("title", {}, `${day} · ${name}: ${value} tokens`));
      drawing.append(rect);
    });
    if (i % (width < 500 ? 7 : 5) === 0) drawing.append(svg("text", { x: i * bar + 2, y: height + 15, class: "axis" }, day.slice(5)));
  });
  const legend = h(
    "ul",
    { class: "legend" },
    series.map((name, s) => h("li", {}, h("span", { class: `swatch c${s % COLORS.length}` }), name)),
  );
  return h("section", { class: "card" }, h("h2", {}, title), series.length ? drawing : h("p", { class: "muted" }, "No usage yet."), legend);
}

function totals(report) {
  const sums = new Map();
  for (const row of report.data) {
    const sum = sums.get(row.split) || { tokens: 0, cost: 0, requests: 0 };
    sum.tokens += row.input_tokens + row.output_tokens;
    sum.cost += Number(row.cost || 0);
    sum.requests += row.requests;
    sums.set(row.split, sum);
  }
  return h(
    "section",
    { class: "card" },
    h("h2", {}, "Totals by model"),
    h(
      "table",
      { id: "usage-totals" },
      h("thead", {}, h("tr", {}, h("th", {}, "Model"), h("th", {}, "Requests"), h("th", {}, "Tokens"), h("th", {}, `Cost (${report.currency})`))),
      h(
        "tbody",
        {},
        [...sums].map(([model, sum]) =>
          h("tr", {}, h("td", {}, model), h("td", {}, String(sum.requests)), h("td", {}, String(sum.tokens)), h("td", {}, sum.cost.toFixed(6))),
        ),
      ),
    ),
  );
}
