// The console's shell: sign-in, navigation (in the URL's fragment, which never holds
// the key), and the views.
import { credentials, signIn, signOut, takeTokenFromLink } from "./session.js";
import { api } from "./api.js";
import { h, clear, guarded, notify } from "./dom.js";
import { conversationsView } from "./conversations.js";
import { chatsView } from "./chats.js";
import { agentsView } from "./agents.js";
import { usageView } from "./usage.js";
import { adminView } from "./admin.js";

const main = document.getElementById("main");
let leaving = null; // the open view's clean-up (streams to stop)
const ADMINISTRATION = new Set(["#/agents", "#/usage", "#/admin"]);

function signInView() {
  const key = h("input", { id: "key", type: "password", autocomplete: "off", required: true });
  const user = h("input", { id: "user", autocomplete: "username", required: true, value: "me" });
  const form = h(
    "form",
    {
      class: "card sign-in",
      onsubmit: guarded(async (event) => {
        event.preventDefault();
        signIn(key.value.trim(), user.value.trim());
        try {
          await api("/v1/models");
        } catch (error) {
          signOut();
          throw error;
        }
        location.hash = "#/conversations";
        route();
      }),
    },
    h("h1", {}, "Sign in"),
    h("p", { class: "muted" }, "The key stays in this tab only. `make run` saved one in .atelier/dev-api-key."),
    h("label", { for: "key" }, "API key or user token"),
    key,
    h("label", { for: "user" }, "User id"),
    user,
    h("button", { type: "submit" }, "Sign in"),
  );
  clear(main, form);
  key.focus();
}

async function route() {
  if (leaving) {
    leaving();
    leaving = null;
  }
  const who = credentials();
  document.getElementById("nav").hidden = !who;
  document.getElementById("sign-out").hidden = !who;
  document.getElementById("who").textContent = who ? who.user : "";
  if (!who) {
    signInView();
    return;
  }
  const [, section = "conversations", id] = location.hash.split("/");
  for (const link of document.querySelectorAll("#nav a")) {
    link.classList.toggle("active", link.getAttribute("href") === `#/${section}`);
    // The tenant's agents and usage are its administration: not an end user's.
    link.hidden = who.token && ADMINISTRATION.has(link.getAttribute("href"));
  }
  const views = {
    conversations: conversationsView,
    chats: chatsView,
    agents: agentsView,
    usage: usageView,
    admin: adminView,
  };
  const view = (!(who.token && ADMINISTRATION.has(`#/${section}`)) && views[section]) || conversationsView;
  try {
    leaving = await view(main, id);
  } catch (error) {
    notify(error.message, { failure: true });
    return;
  }
  // The focus goes where the view begins (never back to <body>): the composer of a
  // conversation, else the view's heading.
  const start = main.querySelector("#composer") || main.querySelector("h1");
  if (start && !main.contains(document.activeElement)) {
    if (start.tagName === "H1") start.tabIndex = -1;
    start.focus({ preventScroll: true });
  }
}

document.getElementById("sign-out").addEventListener("click", () => {
  signOut();
  location.hash = "";
  route();
});
window.addEventListener("hashchange", route);
window.addEventListener("atelier:signed-out", () => {
  if (location.hash) history.replaceState(null, "", location.pathname);
  route();
});
takeTokenFromLink();
route();
