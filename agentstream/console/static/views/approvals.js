// The approvals inbox: what waits for a person, with the run's context, decided here with a reason.
// Whether this key may decide is the API's call (the approvals:decide scope): a refusal is shown as is.
import { api, readUntil } from "../api.js";
import { h, longText, prettyJson, status, when } from "../dom.js";

function left(ms) {
  const s = Math.max(0, Math.round((ms - Date.now()) / 1000));
  const hours = Math.floor(s / 3600);
  const minutes = Math.floor((s % 3600) / 60);
  const seconds = String(s % 60).padStart(2, "0");
  return s === 0 ? "expired: denied at the deadline" : `${hours ? `${hours}h ` : ""}${minutes}m ${seconds}s left`;
}

// The model's words in the answer that asked for the call (read from the run's journal up to the
// approval request); null when it said nothing or the journal cannot be read.
async function modelWords(approval) {
  try {
    const seen = await readUntil(approval.run_id, (r) => r.type === "ApprovalRequested" && r.approval_id === approval.id);
    const answer = seen.filter((r) => r.type === "LlmCallCompleted").pop();
    return answer && answer.text ? answer.text : null;
  } catch {
    return null;
  }
}

async function card(approval, onDecided) {
  let run = null;
  try {
    run = await api(`/v1/runs/${encodeURIComponent(approval.run_id)}`);
  } catch {
    run = null; // the run may have left the gateway's memory: the approval still says what is asked
  }
  const words = await modelWords(approval);
  const countdown = h("span", { class: "countdown", "data-expires": approval.expires_at_ms }, left(approval.expires_at_ms));
  const reason = h("input", { name: "reason", placeholder: "reason (recorded with the decision)", maxlength: 1000 });
  const result = h("p", { class: "error decision-error", role: "alert" });
  const approve = h("button", { type: "button", class: "primary approve" }, "Approve");
  const deny = h("button", { type: "button", class: "danger deny" }, "Deny");
  const node = h("div", { class: "card approval", "data-approval": approval.id, "data-run": approval.run_id },
    h("h3", {}, `${approval.tool} `, h("span", { class: "muted" }, `(${approval.tier})`), " ", countdown),
    h("p", {}, "Run ", h("a", { href: `#/runs/${approval.run_id}` }, approval.run_id),
      run ? [" ", status(run.status), ` · step ${run.steps} · model ${run.model}`] : null,
      h("span", { class: "muted" }, ` · asked ${when(approval.requested_at_ms)}`)),
    run ? [h("h4", {}, "Task"), longText(run.task, 600)] : null,
    h("h4", {}, "Why it waits for a person"), h("p", { class: "gate-reason" }, approval.reason || `${approval.tier} tool`),
    words ? [h("h4", {}, "What the model said"), h("div", { class: "model-words" }, longText(words, 600))] : null,
    h("h4", {}, "What the model asked: the call's arguments"), longText(prettyJson(approval.arguments_json)),
    h("div", { class: "approval-actions" }, reason, approve, deny), result);
  async function decide(decision) {
    result.textContent = "";
    approve.disabled = deny.disabled = true;
    try {
      await api(`/v1/approvals/${encodeURIComponent(approval.id)}`, { method: "POST", body: { decision, reason: reason.value } });
      node.classList.add("decided");
      result.className = "muted decision-done";
      result.textContent = `${decision === "approve" ? "Approved" : "Denied"}.`;
      onDecided();
    } catch (error) {
      result.textContent = `Refused (${error.status}): ${error.message}`;
      approve.disabled = deny.disabled = false;
    }
  }
  approve.addEventListener("click", () => decide("approve"));
  deny.addEventListener("click", () => decide("deny"));
  return node;
}

export async function renderApprovals(view, { onLeave }) {
  const list = h("div", { id: "approvals" });
  view.append(h("h2", {}, "Approvals waiting"), list);
  const shown = new Map();
  async function poll() {
    const found = await api("/v1/approvals?status=pending");
    const pending = new Set(found.data.map((a) => a.id));
    for (const [id, node] of shown) {
      if (!pending.has(id) && !node.classList.contains("decided")) {
        node.remove();
        shown.delete(id);
      }
    }
    for (const approval of found.data.sort((a, b) => a.expires_at_ms - b.expires_at_ms)) {
      if (!shown.has(approval.id)) {
        const node = await card(approval, () => {});
        shown.set(approval.id, node);
        list.append(node);
      }
    }
    if (!list.firstChild) list.append(h("p", { class: "muted empty" }, "Nothing waits for a decision."));
    else list.querySelector(".empty")?.remove();
  }
  await poll();
  const timers = [
    setInterval(() => poll().catch(() => {}), 2000),
    setInterval(() => {
      for (const node of list.querySelectorAll(".countdown")) node.textContent = left(Number(node.dataset.expires));
    }, 1000),
  ];
  onLeave(() => timers.forEach(clearInterval));
}
