// Costs (per run, tool, model and, where the API offers it, tenant; over time) and the tools with
// their tiers and kill switches.
import { api, capabilities, query } from "../api.js";
import { h, status, usd } from "../dom.js";
import { barChart, lineChart } from "./chart.js";

const DAY_MS = 24 * 3600 * 1000;

export async function renderCosts(view) {
  const offered = await capabilities();
  view.append(h("h2", {}, "Costs"));
  const charts = h("div", { class: "charts", id: "cost-charts" });
  view.append(charts);
  if (offered.costSeries) {
    for (const by of ["tool", "model", "tenant", "run"]) {
      const card = h("div", { class: "card", "data-chart": `series-${by}` }, h("h3", {}, `Spend per ${by}, last 24 h`));
      charts.append(card);
      try {
        const series = await api(`/v1/costs/series${query({ by, bucket: "1h", since_ms: Date.now() - DAY_MS })}`);
        card.append(h("p", { class: "muted" }, `total ${usd(series.total_usd)}`),
          series.series.length ? lineChart(series.series, series.since_ms, series.until_ms, series.bucket_ms) : h("p", { class: "muted" }, "No spend."));
      } catch (error) {
        card.append(h("p", { class: "error" }, error.message));
      }
    }
  }
  for (const group of ["run", "tool", "model"]) {
    const card = h("div", { class: "card", "data-chart": `by-${group}` }, h("h3", {}, `Spend per ${group}, all time`));
    charts.append(card);
    try {
      const report = await api(`/v1/costs${query({ group_by: group })}`);
      const rows = [...report.data].sort((a, b) => b.usd - a.usd);
      card.append(h("p", { class: "muted" }, `total ${usd(report.total_usd)}`), rows.length ? barChart(rows) : h("p", { class: "muted" }, "No spend."));
      if (group === "run") {
        card.append(h("ul", {}, rows.slice(0, 5).map((r) => h("li", {}, h("a", { href: `#/runs/${r.key}` }, r.key), ` ${usd(r.usd)}`))));
      }
    } catch (error) {
      card.append(h("p", { class: "error" }, error.message));
    }
  }
}

export async function renderTools(view) {
  const body = h("tbody", {});
  const note = h("p", { class: "error", role: "alert" });
  view.append(h("h2", {}, "Tools"), note,
    h("table", { id: "tools" }, h("thead", {}, h("tr", {}, h("th", {}, "Tool"), h("th", {}, "Version"), h("th", {}, "Tier"),
      h("th", {}, "Owner"), h("th", {}, "Kill switch"), h("th", {}, "Description"))), body));
  const found = await api("/v1/tools");
  for (const tool of found.data) {
    const state = status(tool.disabled ? "disabled" : "enabled");
    const flip = h("button", { type: "button", class: tool.disabled ? "" : "danger" }, tool.disabled ? "Enable" : "Disable");
    flip.addEventListener("click", async () => {
      note.textContent = "";
      const verb = tool.disabled ? "enable" : "disable";
      try {
        const changed = await api(`/v1/tools/${encodeURIComponent(tool.name)}/${verb}`, { method: "POST", body: { reason: `${verb}d from the console` } });
        tool.disabled = changed.disabled;
        state.className = `status ${tool.disabled ? "disabled" : "enabled"}`;
        state.textContent = tool.disabled ? "disabled" : "enabled";
        flip.textContent = tool.disabled ? "Enable" : "Disable";
        flip.className = tool.disabled ? "" : "danger";
      } catch (error) {
        note.textContent = `${tool.name}: ${error.message}`;
      }
    });
    body.append(h("tr", { "data-tool": tool.name },
      h("td", { class: "mono" }, tool.name), h("td", {}, tool.version), h("td", {}, tool.tier),
      h("td", {}, tool.owner || "platform"), h("td", {}, state, " ", flip), h("td", { class: "muted" }, tool.description)));
  }
}
