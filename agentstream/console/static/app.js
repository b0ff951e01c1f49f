// The console's shell: the key prompt, the navigation and a router over location.hash
// (#/runs, #/runs/<id>, #/approvals, #/costs, #/tools): one page, served as is.
import { api, forgetKey, key, setKey } from "./api.js";
import { clear, h } from "./dom.js";
import { renderApprovals } from "./views/approvals.js";
import { renderCosts, renderTools } from "./views/costs.js";
import { renderRun } from "./views/run.js";
import { renderRuns } from "./views/runs.js";

const $ = (id) => document.getElementById(id);
let leaving = [];
let generation = 0;

function leave() {
  for (const f of leaving) f();
  leaving = [];
}

async function route() {
  leave();
  const mine = ++generation;
  const view = clear($("view"));
  delete view.dataset.ready; // set again once this route has rendered (the tests wait on it)
  if (!key()) {
    $("login").hidden = false;
    $("nav").hidden = $("sign-out").hidden = true;
    $("key").focus();
    return;
  }
  $("login").hidden = true;
  $("nav").hidden = $("sign-out").hidden = false;
  const [path, search] = (location.hash.replace(/^#/, "") || "/runs").split("?");
  const params = new URLSearchParams(search || "");
  const parts = path.split("/").filter(Boolean);
  for (const link of document.querySelectorAll("#nav a")) link.classList.toggle("active", link.dataset.view === parts[0]);
  const onLeave = (f) => (mine === generation ? leaving.push(f) : f());
  try {
    if (parts[0] === "runs" && parts[1]) await renderRun(view, decodeURIComponent(parts[1]), { onLeave });
    else if (parts[0] === "approvals") await renderApprovals(view, { onLeave });
    else if (parts[0] === "costs") await renderCosts(view);
    else if (parts[0] === "tools") await renderTools(view);
    else await renderRuns(view, params);
  } catch (error) {
    if (mine === generation) view.append(h("p", { class: "error", role: "alert" }, error.message));
  }
  view.dataset.ready = path;
}

async function pendingBadge() {
  if (!key()) return;
  try {
    const found = await api("/v1/approvals?status=pending");
    const badge = $("pending-count");
    badge.textContent = String(found.data.length);
    badge.hidden = found.data.length === 0;
  } catch {
    // the badge is a hint; the inbox itself shows any refusal
  }
}

window.addEventListener("DOMContentLoaded", () => {
  $("login").addEventListener("submit", async (event) => {
    event.preventDefault();
    setKey($("key").value);
    $("login-error").textContent = "";
    try {
      await api("/v1/approvals?status=pending"); // any read proves the key
      $("key").value = "";
      route();
    } catch (error) {
      forgetKey();
      $("login-error").textContent = error.message;
    }
  });
  $("sign-out").addEventListener("click", () => {
    forgetKey();
    route();
  });
  window.addEventListener("console:unauthenticated", () => {
    forgetKey();
    $("login-error").textContent = "The key was refused (revoked or unknown): paste a valid one.";
    route();
  });
  window.addEventListener("hashchange", route);
  setInterval(pendingBadge, 3000);
  pendingBadge();
  route();
});
