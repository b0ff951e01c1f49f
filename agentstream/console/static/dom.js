// Building the page from data without ever parsing data as markup: every string a run, a tool or a
// model produced becomes a text node (textContent), never parsed as HTML. Attributes are set one by one;
// an href is only ever a console-internal "#/..." route.

export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      node.addEventListener(name.slice(2), value);
    } else if (name === "href" && !String(value).startsWith("#/")) {
      throw new Error(`refusing a non-console link: ${value}`);
    } else {
      node.setAttribute(name, value === true ? "" : String(value));
    }
  }
  append(node, children);
  return node;
}

export function append(node, children) {
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
  return node;
}

export function status(value) {
  return h("span", { class: `status ${value}` }, value);
}

export function usd(value) {
  return `$${Number(value || 0).toFixed(value >= 1 ? 2 : 6)}`;
}

export function when(ms) {
  if (!ms) return "";
  return new Date(ms).toISOString().replace("T", " ").slice(0, 19);
}

export function clock(ms) {
  return ms ? new Date(ms).toISOString().slice(11, 23) : "";
}

// A long text (a tool result, a prompt) shown cut, with a button that shows the rest: a huge tool
// result must not freeze the page, but nothing is hidden for good. `load`, when given, fetches the
// whole text from the API (the stream sent a cut copy, or the result lives in the blob store).
export const CUT_CHARS = 2000;

export function longText(text, cut = CUT_CHARS, load = null, fullLength = null) {
  const value = String(text ?? "");
  const pre = h("pre", { class: "long" }, value.length > cut ? value.slice(0, cut) : value);
  if (value.length <= cut && !load) return pre;
  const label = fullLength ? `Load all ${fullLength.toLocaleString()} characters`
    : load ? "Load the whole result" : `Show all ${value.length.toLocaleString()} characters`;
  const more = h("button", { type: "button", class: "show-all" }, label);
  const note = h("span", { class: "muted" }, ` shown: ${Math.min(cut, value.length).toLocaleString()} characters `);
  more.addEventListener("click", async () => {
    more.disabled = true;
    try {
      pre.textContent = load ? await load() : value;
      more.remove();
      note.remove();
    } catch (error) {
      note.textContent = ` could not load the rest: ${error.message} `;
      more.disabled = false;
    }
  });
  return h("div", {}, pre, note, more);
}

// JSON a model or a tool wrote (arguments): pretty-printed when it parses, as sent when not.
export function prettyJson(raw) {
  try {
    return JSON.stringify(JSON.parse(raw), null, 2);
  } catch {
    return String(raw ?? "");
  }
}
