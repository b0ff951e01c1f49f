// The runs list: filters, search by id, newest first, a page at a time (the API's cursor).
import { api, capabilities, query } from "../api.js";
import { clear, h, status, usd, when } from "../dom.js";

const STATUSES = ["", "queued", "running", "awaiting_approval", "halted", "completed", "failed", "cancelled"];
// filter name -> [label, input]
const FILTERS = {
  q: ["Run id", () => h("input", { name: "q", placeholder: "run_…", size: 18 })],
  status: ["Status", () => h("select", { name: "status" }, STATUSES.map((s) => h("option", { value: s }, s || "any")))],
  tenant: ["Tenant", () => h("input", { name: "tenant", size: 10 })],
  tool: ["Tool", () => h("input", { name: "tool", size: 12 })],
  flagged: ["Flagged", () => h("select", { name: "flagged" }, h("option", { value: "" }, "any"), h("option", { value: "true" }, "flagged"), h("option", { value: "false" }, "not flagged"))],
  min_cost_usd: ["Cost from $", () => h("input", { name: "min_cost_usd", type: "number", step: "any", min: "0", size: 6 })],
  max_cost_usd: ["to $", () => h("input", { name: "max_cost_usd", type: "number", step: "any", min: "0", size: 6 })],
};

export async function renderRuns(view, params) {
  const offered = (await capabilities()).listRuns;
  const form = h("form", { class: "filters", id: "run-filters" });
  for (const [name, [label, input]] of Object.entries(FILTERS)) {
    if (!offered.has(name) && name !== "q") continue;
    const field = input();
    if (params.get(name)) field.value = params.get(name);
    form.append(h("label", {}, label, field));
  }
  form.append(h("button", { type: "submit", class: "primary" }, "Filter"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const chosen = new URLSearchParams();
    for (const [name, value] of new FormData(form)) if (value) chosen.set(name, String(value));
    // Without a search on the server, an id is opened directly.
    if (chosen.get("q") && !offered.has("q")) {
      location.hash = `#/runs/${encodeURIComponent(chosen.get("q").trim())}`;
      return;
    }
    location.hash = `#/runs?${chosen}`;
  });
  const body = h("tbody", {});
  const more = h("button", { type: "button", id: "more-runs", hidden: true }, "More");
  const note = h("p", { class: "error", role: "alert" });
  view.append(
    h("h2", {}, "Runs"), form, note,
    h("table", { id: "runs" },
      h("thead", {}, h("tr", {}, h("th", {}, "Run"), h("th", {}, "Status"), h("th", {}, "Task"), h("th", {}, "Model"),
        h("th", { class: "num" }, "Steps"), h("th", { class: "num" }, "Cost"), h("th", {}, "Flags"), h("th", {}, "Created"))),
      body),
    more,
  );

  const filters = {};
  for (const name of Object.keys(FILTERS)) if (offered.has(name) && params.get(name)) filters[name] = params.get(name);
  if (offered.has("order")) filters.order = "newest";
  let cursor = null;
  async function page() {
    note.textContent = "";
    try {
      const found = await api(`/v1/runs${query({ ...filters, cursor, limit: 50 })}`);
      for (const run of found.data) {
        body.append(h("tr", { "data-run": run.id },
          h("td", { class: "mono" }, h("a", { href: `#/runs/${run.id}` }, run.id)),
          h("td", {}, status(run.status)),
          h("td", { class: "task", title: run.task }, run.task),
          h("td", {}, run.model),
          h("td", { class: "num" }, `${run.steps}/${run.max_steps}`),
          h("td", { class: "num" }, usd(run.cost_usd)),
          h("td", {}, (run.flags || []).map((f) => f.kind).join(", ")),
          h("td", { class: "mono" }, when(run.created_at_ms))));
      }
      if (!found.data.length && !body.firstChild) body.append(h("tr", {}, h("td", { colspan: 8, class: "muted" }, "No runs.")));
      cursor = found.next_cursor;
      more.hidden = !cursor;
    } catch (error) {
      note.textContent = error.message;
    }
  }
  more.addEventListener("click", page);
  clear(body);
  await page();
}
