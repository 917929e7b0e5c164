// Building the page from data: text always goes in as text (never as HTML).
import { api } from "./api.js";

export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(element.dataset, value);
    else if (value === true) element.setAttribute(name, "");
    else element.setAttribute(name, String(value));
  }
  element.append(...children.flat().filter((child) => child !== null && child !== undefined && child !== false));
  return element;
}

export function clear(element, ...children) {
  element.replaceChildren(...children.flat());
  return element;
}

export function bytes(size) {
  const units = ["B", "KiB", "MiB", "GiB"];
  let value = size;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${unit ? value.toFixed(1).replace(/\.0$/, "") : value} ${units[unit]}`;
}

let noticeTimer;
// A notice at the corner: news fades after a few seconds; a failure stays until it is
// closed (or the next notice), so that nobody misses why something did not happen.
export function notify(message, { failure = false } = {}) {
  const notice = document.getElementById("notice");
  clear(
    notice,
    h("span", {}, message),
    h("button", { type: "button", class: "small close", "aria-label": "Close the notice", onclick: () => (notice.hidden = true) }, "×"),
  );
  notice.dataset.kind = failure ? "failure" : "news";
  notice.hidden = false;
  clearTimeout(noticeTimer);
  if (!failure) noticeTimer = setTimeout(() => (notice.hidden = true), 6000);
}

// Runs an action from a button, reporting its failure instead of throwing it away.
export function guarded(action) {
  return async (event) => {
    try {
      await action(event);
    } catch (error) {
      notify(error.message, { failure: true });
    }
  };
}

// A list beside a detail: its heading, a search box, the list (a page at a time, "More"
// for the next), and above it a button that makes a new item -- the layout of the
// conversations and the chats views. `name` names the elements' ids; `page(cursor, q)`
// gives {data, next_cursor}; `item(row)` draws one row.
export function listBesideDetail(main, { name, title, label, create, page, item }) {
  const list = h("ul", { class: "list", id: `${name}-list` });
  const detail = h("section", { class: "detail", id: name });
  const button = h("button", { type: "button", id: `new-${name}`, onclick: guarded(create) }, label);
  const more = h("button", { type: "button", class: "secondary", id: `more-${name}`, hidden: true }, "More");
  const search = h("input", { type: "search", id: `${name}-search`, "aria-label": `Search ${title.toLowerCase()} by title`, placeholder: "Search by title" });
  let cursor = null;
  let asked = 0; // a later search wins over an earlier one that answers late
  const load = async (fresh) => {
    const ask = ++asked;
    const q = search.value.trim();
    const params = new URLSearchParams({ limit: "50" });
    if (q) params.set("q", q);
    if (!fresh && cursor) params.set("cursor", cursor);
    const got = await page(params);
    if (ask !== asked) return;
    if (fresh) clear(list);
    list.append(...got.data.map(item));
    cursor = got.next_cursor;
    more.hidden = !cursor;
  };
  more.addEventListener("click", guarded(() => load(false)));
  let typing;
  search.addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(guarded(() => load(true)), 250);
  });
  clear(
    main,
    h(
      "div",
      { class: "columns" },
      h("aside", { class: "sidebar" }, h("h1", { class: "view-title" }, title), button, search, list, more),
      detail,
    ),
  );
  return { list, detail, load: () => load(true) };
}

// The head of an open conversation or chat (`name`): its title, renamed in the list beside
// it too, and Delete, asked first (`question`); `deleted()` runs once it is gone.
export function titledHead({ name, base, id, title, question, deleted = () => {} }) {
  const relabel = (text) => {
    const link = document.querySelector(`#${name}-list a[href="#/${name}s/${id}"]`);
    if (link) link.textContent = text || "Untitled";
  };
  const input = h("input", {
    id: "title",
    "aria-label": "Title",
    value: title || "",
    placeholder: "Untitled",
    onchange: guarded(async (event) => {
      await api(base, { method: "PATCH", json: { title: event.target.value || null } });
      relabel(event.target.value);
      notify("Renamed");
    }),
  });
  const remove = h(
    "button",
    {
      type: "button",
      id: `delete-${name}`,
      class: "danger",
      onclick: guarded(async () => {
        if (!confirm(question)) return;
        await api(base, { method: "DELETE" });
        deleted();
        location.hash = `#/${name}s`;
      }),
    },
    "Delete",
  );
  return { head: h("div", { class: "conversation-head" }, input, remove), input, relabel };
}
