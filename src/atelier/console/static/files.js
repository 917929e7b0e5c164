// A conversation's files: uploads (picked or dropped) checked against the server's limit
// before they are sent, sent one by one and reported file by file, the rest going on after
// one fails; the list kept up to date change by change (a file the agent wrote is one row
// drawn, not the whole workspace listed again); downloads; deletes that ask first.
import { api, download, upload } from "./api.js";
import { bytes, clear, guarded, h, notify } from "./dom.js";

let limits = null; // GET /v1/limits, once per page

async function serverLimits() {
  limits ||= api("/v1/limits");
  return limits;
}

function encodePath(path) {
  return path.split("/").map(encodeURIComponent).join("/");
}

export class FilesPane {
  constructor(base) {
    this.base = base;
    this.list = h("ul", { class: "files", id: "files" });
    this.rows = new Map(); // path -> its row
    this.progress = h("progress", { id: "upload-progress", max: 1, value: 0, hidden: true, "aria-label": "Upload progress" });
    this.report = h("ul", { class: "upload-report", id: "upload-report", "aria-live": "polite" });
    const picker = h("input", {
      type: "file",
      id: "file-input",
      multiple: true,
      onchange: guarded(async (event) => {
        await this.uploadAll([...event.target.files]);
        event.target.value = "";
      }),
    });
    const drop = h(
      "div",
      {
        class: "drop",
        id: "drop-zone",
        ondragover: (event) => {
          event.preventDefault();
          drop.classList.add("over");
        },
        ondragleave: () => drop.classList.remove("over"),
        ondrop: guarded(async (event) => {
          event.preventDefault();
          drop.classList.remove("over");
          await this.uploadAll([...event.dataTransfer.files]);
        }),
      },
      "Drop files here, or ",
      h("label", { for: "file-input", class: "link" }, "choose them"),
      picker,
    );
    const zip = h(
      "button",
      { type: "button", id: "download-zip", onclick: guarded(() => download(`${this.base}/workspace.zip`, "workspace.zip")) },
      "Download all (zip)",
    );
    this.element = h(
      "details",
      { class: "files-pane", open: window.matchMedia("(min-width: 901px)").matches },
      h("summary", {}, h("h2", {}, "Files")),
      drop,
      this.progress,
      this.report,
      this.list,
      zip,
    );
  }

  // Each file in turn; one refused (too large, or by the server) is said, and the others
  // are still sent.
  async uploadAll(files) {
    const { max_file_bytes: limit } = await serverLimits();
    clear(this.report);
    let sent = 0;
    for (const file of files) {
      const line = h("li", { dataset: { name: file.name } }, `${file.name}: `);
      this.report.append(line);
      if (file.size > limit) {
        const size = bytes(file.size) === bytes(limit) ? `${file.size} bytes` : bytes(file.size);
        line.append(h("span", { class: "refused" }, `not sent: ${size} is over the ${bytes(limit)} limit`));
        continue;
      }
      this.progress.hidden = false;
      this.progress.value = 0;
      try {
        const stored = await upload(this.base, file, (done) => {
          this.progress.value = done;
        });
        this.show(stored);
        line.append(h("span", { class: "sent" }, "uploaded"));
        sent += 1;
      } catch (error) {
        line.append(h("span", { class: "refused" }, `not sent: ${error.message}`));
      } finally {
        this.progress.hidden = true;
      }
    }
    const refused = files.length - sent;
    notify(refused ? `Uploaded ${sent} of ${files.length} files; see the list for why not the others` : `Uploaded ${sent === 1 ? files[0].name : `${sent} files`}`, { failure: refused > 0 });
  }

  async refresh() {
    const listed = await api(`${this.base}/files`);
    this.rows = new Map(listed.data.map((file) => [file.path, this.row(file)]));
    clear(this.list, ...this.rows.values()); // listed in path order
  }

  // A file.changed event: that row only.
  changed({ path, size, change }) {
    if (change === "deleted") {
      this.rows.get(path)?.remove();
      this.rows.delete(path);
    } else {
      this.show({ path, size, source: "agent" });
    }
  }

  show(file) {
    const row = this.row(file);
    const old = this.rows.get(file.path);
    if (old) old.replaceWith(row);
    else {
      // In path order, as the server lists them.
      const next = [...this.rows.keys()].sort().find((other) => other > file.path);
      if (next) this.rows.get(next).before(row);
      else this.list.append(row);
    }
    this.rows.set(file.path, row);
  }

  row(file) {
    return h(
      "li",
      { dataset: { path: file.path } },
      h("span", { class: "path" }, file.path),
      h("span", { class: "muted" }, ` ${bytes(file.size)} · ${file.source}`),
      h(
        "button",
        {
          type: "button",
          class: "small",
          "aria-label": `Download ${file.path}`,
          onclick: guarded(() => download(`${this.base}/files/${encodePath(file.path)}`, file.path.split("/").pop())),
        },
        "Download",
      ),
      h(
        "button",
        {
          type: "button",
          class: "small danger",
          "aria-label": `Delete ${file.path}`,
          onclick: guarded(async () => {
            if (!confirm(`Delete ${file.path}?`)) return;
            await api(`${this.base}/files/${encodePath(file.path)}`, { method: "DELETE" });
            this.changed({ path: file.path, change: "deleted" });
          }),
        },
        "Delete",
      ),
    );
  }
}
