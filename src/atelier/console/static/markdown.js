// Text as Markdown: parsed by marked, then sanitised by DOMPurify (both served from this
// package, copied byte for byte from their npm releases: no CDN), so that a reply can hold
// code, lists and tables but never a script, a handler or a javascript: link. Code blocks
// get a copy button.
import { Marked } from "./marked.esm.js";
import DOMPurify from "./purify.es.mjs";
import { h } from "./dom.js";

const parser = new Marked({ gfm: true, breaks: true, async: false });

const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };

// HTML in a reply is shown as the text it is, never parsed: no element of it ever exists,
// not even in the sanitiser's document (where an <img onerror> would already fire).
parser.use({ renderer: { html: ({ text }) => text.replace(/[&<>"']/g, (c) => ESCAPES[c]) } });

// Links leave the console in a new tab, and give it no handle on this one.
DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A") {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer");
  }
});

export function markdown(text) {
  const fragment = DOMPurify.sanitize(parser.parse(text || ""), {
    RETURN_DOM_FRAGMENT: true,
    FORBID_TAGS: ["style", "form", "input", "button", "textarea", "select", "img"],
  });
  for (const block of fragment.querySelectorAll("pre")) {
    const code = block.querySelector("code") || block;
    block.classList.add("code");
    block.prepend(
      h(
        "button",
        {
          type: "button",
          class: "small copy",
          "aria-label": "Copy code",
          onclick: async (event) => {
            await navigator.clipboard.writeText(code.textContent);
            event.target.textContent = "Copied";
          },
        },
        "Copy",
      ),
    );
  }
  return fragment;
}
