// Building the page from data: text always goes in as text (never as HTML).

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
  return `${unit ? value.toFixed(1) : value} ${units[unit]}`;
}

let noticeTimer;
export function notify(message) {
  const notice = document.getElementById("notice");
  notice.textContent = message;
  notice.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => {
    notice.hidden = true;
  }, 6000);
}

// Runs an action from a button, reporting its failure instead of throwing it away.
export function guarded(action) {
  return async (event) => {
    try {
      await action(event);
    } catch (error) {
      notify(error.message);
    }
  };
}

// A list beside a detail, above the list a button that makes a new item: the layout of
// the conversations and the chats views. `name` names the elements' ids.
export function listBesideDetail(main, { name, label, create }) {
  const list = h("ul", { class: "list", id: `${name}-list` });
  const detail = h("section", { class: "detail", id: name });
  const button = h("button", { type: "button", id: `new-${name}`, onclick: guarded(create) }, label);
  clear(main, h("div", { class: "columns" }, h("aside", { class: "sidebar" }, button, list), detail));
  return { list, detail };
}
