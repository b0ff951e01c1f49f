// One run: its summary, its child runs, and its timeline following the event stream live.
import { ApiError, api, capabilities, followEvents } from "../api.js";
import { append, clear, h, longText, status, usd, when } from "../dom.js";
import { isTerminal, timelineRow } from "./timeline.js";

const SETTLED = new Set(["completed", "failed", "cancelled", "halted"]);

function treeList(node) {
  const item = h("li", {}, h("a", { href: `#/runs/${node.id}` }, node.id), " ", status(node.status), " ", h("span", { class: "muted" }, node.task));
  if (node.children && node.children.length) item.append(h("ul", {}, node.children.map(treeList)));
  return item;
}

export async function renderRun(view, runId, { onLeave }) {
  let run;
  try {
    run = await api(`/v1/runs/${encodeURIComponent(runId)}`);
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) {
      view.append(h("div", { class: "card", id: "not-found" }, h("h2", {}, "Run not found"),
        h("p", {}, "No run with this id is visible to this key."), h("a", { href: "#/runs" }, "Back to the runs")));
      return;
    }
    throw error;
  }
  const summary = h("div", { class: "card", id: "run-summary" });
  const tree = h("div", { class: "card tree", id: "run-tree", hidden: true });
  const state = h("span", { class: "stream-state", id: "stream-state" }, "connecting");
  const message = h("span", { class: "error", id: "run-error", role: "alert" });
  const timeline = h("ol", { class: "timeline", id: "timeline" });
  const cancel = h("button", { type: "button", class: "danger", id: "cancel" }, "Cancel");
  const resume = h("button", { type: "button", id: "resume" }, "Resume");
  view.append(summary, tree, h("div", { class: "toolbar" }, cancel, resume, state, message), timeline);

  function showSummary() {
    append(clear(summary), [
      h("h2", { class: "mono" }, run.id), status(run.status), " ",
      h("span", { class: "muted" }, `model ${run.model} · ${run.steps}/${run.max_steps} steps · ${usd(run.cost_usd)} · started ${when(run.created_at_ms)}`),
      run.parent_run_id ? h("p", {}, "child of ", h("a", { href: `#/runs/${run.parent_run_id}` }, run.parent_run_id)) : null,
      h("h3", {}, "Task"), longText(run.task),
      run.final_answer ? [h("h3", {}, "Answer"), longText(run.final_answer)] : null,
      run.reason ? h("p", { class: "muted" }, run.reason) : null,
    ]);
    cancel.hidden = SETTLED.has(run.status);
    resume.hidden = !(run.status === "halted" && run.resumable);
  }

  async function refresh() {
    run = await api(`/v1/runs/${encodeURIComponent(runId)}`);
    showSummary();
    if (run.children_count > 0) {
      const found = await api(`/v1/runs/${encodeURIComponent(runId)}/tree`);
      clear(tree).append(h("h3", {}, `Subagents (${found.runs - 1} shown)`), h("ul", {}, (found.root.children || []).map(treeList)));
      tree.hidden = false;
    }
    return run;
  }

  async function act(path, body) {
    message.textContent = "";
    try {
      await api(path, { method: "POST", body });
      await refresh();
      stream.restart();
    } catch (error) {
      message.textContent = error.message;
    }
  }
  cancel.addEventListener("click", () => act(`/v1/runs/${encodeURIComponent(runId)}/cancel`, { reason: "cancelled from the console" }));
  resume.addEventListener("click", () => act(`/v1/runs/${encodeURIComponent(runId)}/resume`, { add_steps: 5, reason: "resumed from the console" }));
  showSummary();
  await refresh();

  // Where the API can cut long fields, the stream carries at most this much of each (the rest on demand).
  const truncate = (await capabilities()).events.has("truncate") ? 4000 : 0;
  let pending = null; // refresh the summary at most once per burst of events
  const stream = followEvents(runId, {
    truncate,
    onEvent(e) {
      timeline.append(timelineRow(e));
      if (isTerminal(e.type) || e.type === "ToolCallCompleted" || e.type === "ApprovalRequested") {
        clearTimeout(pending);
        pending = setTimeout(() => refresh().catch(() => {}), 150);
      }
    },
    onState(value, reconnects, error) {
      state.textContent = value === "reconnecting" ? `reconnecting (${reconnects})…` : value === "error" ? `stream refused: ${error.message}` : value;
      state.className = `stream-state ${value}`;
      state.dataset.reconnects = String(reconnects);
    },
    async isSettled() {
      try {
        return SETTLED.has((await refresh()).status);
      } catch {
        return false;
      }
    },
  });
  onLeave(() => {
    stream.stop();
    clearTimeout(pending);
  });
}
