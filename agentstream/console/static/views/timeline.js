// One row of a run's timeline per journal event: what happened, in words, with the model's and the
// tools' own text shown as text (dom.js). Events the console has no words for still get a row, so
// the timeline is the whole journal of the run, in order, each event once.
import { api } from "../api.js";
import { clock, h, longText, prettyJson, usd } from "../dom.js";

const TERMINAL = new Set(["RunCompleted", "RunFailed", "RunCancelled"]);

export function isTerminal(type) {
  return TERMINAL.has(type);
}

function tokens(e) {
  const cached = e.cached_input_tokens ? ` (${e.cached_input_tokens} cached)` : "";
  return `${e.input_tokens ?? 0} in${cached} / ${e.output_tokens ?? 0} out tokens`;
}

function toolCalls(raw) {
  try {
    const calls = JSON.parse(raw || "[]");
    return calls.map((c) => {
      const args = c.arguments ?? c.arguments_json ?? {};
      return `${c.name}(${typeof args === "string" ? args : JSON.stringify(args)})`;
    }).join("\n");
  } catch {
    return String(raw ?? "");
  }
}

// A field the stream cut (`truncated`: field -> its full length) or a result kept in the blob store:
// the text as sent, and a button that fetches the event whole.
function field(e, name) {
  const full = e.truncated && e.truncated[name];
  const one = `/v1/runs/${encodeURIComponent(e.run_id)}/events/${e.offset}`;
  if (name === "content" && e.result_blob) {
    return longText(e.content, e.content.length, async () => (await api(`${one}?blob=true`)).blob_text);
  }
  if (full) return longText(e[name], e[name].length, async () => (await api(one))[name], full);
  return longText(e[name]);
}

// type -> [css class, label, summary(e), details(e)]
const RENDER = {
  RunRequested: ["start", "run requested", (e) => `model ${e.model}, up to ${e.max_steps} steps`, (e) => longText(e.task)],
  RunStarted: ["start", "run started", (e) => `model ${e.model}; orchestrator ${e.orchestrator_version || ""}`],
  LlmCallRequested: ["model", "model call", (e) => `${e.model || "model"} ${e.purpose ? `(${e.purpose})` : ""}`],
  LlmCallRouted: ["model", "routed", (e) => `${e.provider}/${e.model}: ${e.reason}`],
  LlmCallDispatched: ["model", "dispatched", (e) => `replica ${e.replica} (${e.policy})`],
  LlmCallCompleted: [
    "model", "model answered",
    (e) => `${e.model}: ${tokens(e)}, ${Math.round(e.latency_ms)} ms`,
    (e) => [e.text ? field(e, "text") : null, e.tool_calls_json && e.tool_calls_json !== "[]" ? longText(toolCalls(e.tool_calls_json)) : null],
  ],
  LlmCallFailed: ["bad", "model call failed", (e) => `${e.error_type}: ${e.message}${e.final ? " (final)" : ""}`],
  ToolCallRequested: ["tool", "tool call", (e) => e.tool, (e) => (e.truncated?.arguments_json ? field(e, "arguments_json") : longText(prettyJson(e.arguments_json)))],
  PolicyDecided: ["policy", "policy", (e) => `${e.decision}: ${e.tool} (${e.tier}) by ${e.rule}`, (e) => (e.reason ? longText(e.reason) : null)],
  ApprovalRequested: [
    "approval", "approval requested", (e) => `${e.tool} (${e.tier}) until ${clock(e.expires_ms)}`,
    (e) => [e.reason ? longText(e.reason) : null, longText(prettyJson(e.arguments_json))],
  ],
  ApprovalDecided: ["approval", "approval decided", (e) => `${e.approved ? "approved" : "denied"} by ${e.decided_by}`, (e) => (e.reason ? longText(e.reason) : null)],
  ToolCallAuthorized: ["tool", "authorized", (e) => `${e.tool} by ${e.authorized_by} (${e.rule})`],
  ToolCallCompleted: [
    "tool", "tool result",
    (e) => `${e.tool}${e.is_error ? " (error)" : ""}, ${Math.round(e.duration_ms)} ms${e.result_blob ? " (kept in the blob store)" : ""}`,
    (e) => field(e, "content"),
  ],
  BudgetReserved: ["budget", "budget reserved", (e) => `${[e.kind, e.tool].filter(Boolean).join(" ")}: ${usd(e.reserved_usd)} reserved, ${usd(e.committed_usd)} committed`],
  BudgetSettled: ["budget", "cost", (e) => `${[e.kind, e.tool || e.model].filter(Boolean).join(" ")}: ${usd(e.cost_usd)}`],
  BudgetExceeded: ["bad", "budget exceeded", (e) => `${e.kind} over ${e.limit}${e.resumable ? " (resumable)" : ""}`, (e) => longText(e.reason)],
  ContextCompacted: ["budget", "compacted", (e) => `${e.kind}: ${e.tokens_before} → ${e.tokens_after} tokens`, (e) => (e.summary ? longText(e.summary) : null)],
  LoopDetected: ["bad", "loop detected", (e) => `${e.kind} x${e.count}: ${e.action}`],
  RunFlagged: ["bad", "flagged", (e) => `${e.kind}: ${e.reason}`],
  EvalVerdict: ["policy", "check", (e) => `${e.check_name} (${e.severity})`, (e) => longText(e.reason)],
  CancelRequested: ["bad", "cancel requested", (e) => `by ${e.requested_by}`, (e) => (e.reason ? longText(e.reason) : null)],
  ResumeRequested: ["start", "resume requested", (e) => `+${e.add_steps} steps by ${e.requested_by}`],
  RunHalted: ["bad", "halted", (e) => `${e.halt} at ${e.limit}${e.resumable ? " (resumable)" : ""}`, (e) => longText(e.reason)],
  RunCompleted: ["end", "completed", (e) => `after ${e.steps} steps`, (e) => field(e, "final_answer")],
  RunFailed: ["bad", "failed", (e) => `${e.error_type} after ${e.steps} steps`, (e) => longText(e.reason)],
  RunCancelled: ["bad", "cancelled", (e) => `after ${e.steps} steps`, (e) => (e.reason ? longText(e.reason) : null)],
};

export function timelineRow(e) {
  const [css, label, summary, details] = RENDER[e.type] || ["other", e.type, () => ""];
  return h(
    "li",
    { class: css, "data-offset": e.offset, "data-type": e.type },
    h("span", { class: "mono muted" }, clock(e.timestamp_ms)),
    h("span", { class: "muted" }, e.step !== undefined ? `#${e.step}` : ""),
    h("span", { class: "kind" }, label),
    h("div", {}, h("span", {}, summary(e)), details ? details(e) : null),
  );
}
