// The configurator: read the form into a config, validate as you type against the server's JSON
// Schema, feed the preview frame the DRAFT (unsaved) config, save/publish through /api/v1/.
import { csrfToken, toast } from "./app.js";
import { itemMessage, schemaAt, validateValue } from "./validate.js";

const editor = document.getElementById("editor");
const form = document.getElementById("config-form");
const frame = document.getElementById("preview-frame");
const device = document.getElementById("device");
const stage = document.getElementById("stage");
const readout = document.getElementById("readout");
const saveState = document.getElementById("save-state");
const canEdit = editor.dataset.canEdit === "1";
let revision = Number(editor.dataset.revision);
let draft = JSON.parse(document.getElementById("draft-config").textContent);
let schema = null;
let dirty = false;
const errors = new Map(); // path -> message (client-side)
const preview = { mode: draft.embed.mode, host: "light", device: "desktop" };

// --- reading the form ---------------------------------------------------------------------------

function setPath(obj, path, value) {
  const parts = path.split(".");
  let node = obj;
  for (const part of parts.slice(0, -1)) node = node[part] ??= {};
  node[parts.at(-1)] = value;
}

function controlValue(el) {
  if (el.type === "checkbox") return el.checked;
  if (el.dataset.kind === "number") return el.value.trim() === "" ? "" : Number(el.value);
  if (el.dataset.kind === "lines") return el.value.split("\n").map((s) => s.trim()).filter(Boolean);
  return el.value;
}

function controls() {
  return [...form.querySelectorAll("[data-path]")].filter((el) => el.type !== "radio" || el.checked);
}

/** The config as the form shows it (only the keys the form has; the server merges). */
export function formConfig() {
  const config = {};
  for (const el of controls()) setPath(config, el.dataset.path, controlValue(el));
  return config;
}

function deepMerge(base, over) {
  const out = structuredClone(base);
  for (const [k, v] of Object.entries(over)) {
    out[k] = v && typeof v === "object" && !Array.isArray(v) && out[k] && typeof out[k] === "object" ? deepMerge(out[k], v) : v;
  }
  return out;
}

function fullConfig() { return deepMerge(draft, formConfig()); }

function secretChanges() {
  const out = {};
  form.querySelectorAll("[data-secret]").forEach((el) => { if (el.value) out[el.dataset.secret] = el.value; });
  form.querySelectorAll("[data-secret-clear]").forEach((el) => { if (el.checked) out[el.dataset.secretClear] = ""; });
  return out;
}

// --- errors next to fields ----------------------------------------------------------------------

function errorSlot(path) { return form.closest(".panels").querySelector(`[data-error-for="${CSS.escape(path)}"]`); }

function showError(path, message) {
  const slot = errorSlot(path);
  if (!slot) return false;
  slot.textContent = message || "";
  const field = slot.closest(".field");
  field?.querySelectorAll("input:not([type=color]):not([type=radio]), select, textarea").forEach((el) => {
    if (message) el.setAttribute("aria-invalid", "true"); else el.removeAttribute("aria-invalid");
  });
  if (message) errors.set(path, message); else errors.delete(path);
  markSections();
  return true;
}

function markSections() {
  document.querySelectorAll(".section-tabs button").forEach((tab) => {
    const panel = document.getElementById(tab.getAttribute("aria-controls"));
    const bad = [...panel.querySelectorAll(".field-error")].some((el) => el.textContent.trim());
    tab.classList.toggle("has-error", bad);
  });
}

function clearServerErrors() {
  form.querySelectorAll(".field-error").forEach((el) => {
    if (!errors.has(el.dataset.errorFor)) el.textContent = "";
  });
}

// Controls changed before the schema arrived (a fast typist, a slow network): validated as soon as it does.
const changedEarly = new Set();

function validateControl(el) {
  if (!el.dataset.path) return true;
  if (!schema) {
    changedEarly.add(el);
    return true;
  }
  const message = validateValue(schemaAt(schema, el.dataset.path), controlValue(el));
  showError(el.dataset.path, message);
  return !message;
}

function showServerErrors(fields) {
  let first = null;
  for (const [key, messages] of Object.entries(fields || {})) {
    let path = key.startsWith("config.") ? key.slice(7) : key;
    let message = messages[0];
    // One line of a one-per-line field (behaviour.proactive.show_on[1]): the field, naming that line.
    const item = path.match(/^(.*)\[(\d+)\]$/);
    if (item) {
      path = item[1];
      const el = form.querySelector(`[data-path="${CSS.escape(path)}"]`);
      const value = el ? controlValue(el)[Number(item[2])] : undefined;
      message = value === undefined ? message : itemMessage(value, message);
    }
    if (showError(path, message) && !first) first = path;
  }
  if (first) {
    const slot = errorSlot(first);
    const panel = slot.closest("[role=tabpanel]");
    selectSection(panel.id.replace("panel-", ""));
    slot.closest(".field").querySelector("input, select, textarea")?.focus();
  }
}

// --- visibility by provider / show-if --------------------------------------------------------------

function refreshVisibility() {
  const config = fullConfig();
  const provider = config.connection.provider;
  document.querySelectorAll("[data-provider]").forEach((el) => { el.hidden = el.dataset.provider !== provider; });
  document.querySelectorAll("[data-show-if]").forEach((el) => {
    const [path, expected] = el.dataset.showIf.split("=");
    const actual = path.split(".").reduce((node, key) => (node ? node[key] : undefined), config);
    el.hidden = String(actual) !== expected;
  });
}

// --- preview --------------------------------------------------------------------------------------

// The frame gets what a visitor's browser would get of the draft: the server's public projection
// (config_public), asked for after each edit settles. Replies to older edits are dropped.
let previewSeq = 0;
let previewTimer = null;
let projected = null; // the public config last posted into the frame
let replays = 0; // "Replay in the preview" presses (the frame replays on each new count)

function sendPreview() {
  if (errors.size) return; // keep showing the last valid config while a field is invalid
  clearTimeout(previewTimer);
  previewTimer = setTimeout(projectPreview, 120);
}

async function projectPreview() {
  const seq = ++previewSeq;
  const config = formConfig();
  const result = await api(editor.dataset.previewConfigUrl, "POST", { config }).catch(() => null);
  if (seq !== previewSeq || !result?.ok) return; // a newer edit is on its way, or this one is invalid
  projected = result.data.config;
  showRuleVerdict();
  frame.contentWindow?.postMessage(
    { type: "switchboard:preview", config: result.data.config,
      options: { mode: preview.mode, host: preview.host, dirty, pageUrl: testPageUrl(), replay: replays },
      // The preview chat uses the unsaved connection exactly as Test connection does.
      draft: { config, secrets: secretChanges() } },
    location.origin,
  );
}

window.addEventListener("message", (event) => {
  if (event.origin === location.origin && event.data?.type === "switchboard:preview-ready") sendPreview();
});
frame.addEventListener("load", sendPreview);

// --- proactive rules: a test URL and a replay, decided by the bundle in the frame ---------------------

const ruleUrl = document.getElementById("proactive-test-url");
const ruleVerdict = document.getElementById("proactive-verdict");

/** The tested page as the bundle takes it: a full URL, or a path ("pricing" means "/pricing"); "" for none. */
function testPageUrl() {
  const value = ruleUrl?.value.trim() || "";
  return !value || /^[a-z][a-z0-9+.-]*:\/\//i.test(value) || value.startsWith("/") ? value : `/${value}`;
}

// The frame's bundle (static/widget/widget.js) answers, with the same function a customer's page runs.
function showRuleVerdict() {
  if (!ruleVerdict) return;
  const rules = projected?.behaviour?.proactive;
  const pageRule = frame.contentWindow?.SwitchboardWidget?.pageRule;
  const url = testPageUrl();
  let text = "";
  let verdict = "";
  if (rules && !rules.enabled) text = "Proactive rules are off: the launcher shows on every page.";
  else if (rules && !url) text = "Type a page URL or path to see whether the launcher shows there.";
  else if (rules && pageRule) {
    const rule = pageRule(rules, url);
    verdict = rule.shown ? "shown" : "hidden";
    if (rule.list === "hide_on") text = `Hidden on ${rule.path}: it matches “${rule.pattern}” (Never show on pages).`;
    else if (rule.list === "show_on" && rule.shown) text = `Shown on ${rule.path}: it matches “${rule.pattern}” (Show only on pages).`;
    else if (rule.list === "show_on") text = `Hidden on ${rule.path}: it matches none of the “Show only on pages” patterns.`;
    else text = `Shown on ${rule.path}: no rule hides it.`;
  }
  ruleVerdict.textContent = text;
  ruleVerdict.dataset.verdict = verdict;
}

ruleUrl?.addEventListener("input", (event) => {
  event.stopPropagation(); // a test, not an edit of the draft
  showRuleVerdict();
  sendPreview();
});
document.getElementById("proactive-replay")?.addEventListener("click", () => {
  replays += 1;
  sendPreview();
});

const DEVICES = { desktop: null, tablet: [768, 1024], mobile: [390, 780] };

function setDevice(name) {
  preview.device = name;
  device.dataset.device = name;
  const border = name === "desktop" ? 2 : 20;
  if (!DEVICES[name]) {
    device.style.width = `${Math.max(320, stage.clientWidth - 48)}px`;
    device.style.height = `${Math.max(400, stage.clientHeight - 48)}px`;
  } else {
    const [w, h] = DEVICES[name];
    device.style.width = `${w + border}px`;
    device.style.height = `${Math.min(h, Math.max(480, stage.clientHeight - 48)) + border}px`;
  }
}

new ResizeObserver(() => {
  readout.textContent = `${Math.round(frame.clientWidth)} × ${Math.round(frame.clientHeight)}`;
}).observe(frame);

function pressOnly(group, attr, value) {
  group.querySelectorAll("button").forEach((b) => b.setAttribute("aria-pressed", String(b.dataset[attr] === value)));
}

document.querySelectorAll(".canvas-bar .seg").forEach((group) => {
  group.addEventListener("click", (event) => {
    const button = event.target.closest("button");
    if (!button) return;
    if (button.dataset.mode) { preview.mode = button.dataset.mode; pressOnly(group, "mode", preview.mode); }
    if (button.dataset.device) { setDevice(button.dataset.device); pressOnly(group, "device", preview.device); }
    if (button.dataset.host) { preview.host = button.dataset.host; pressOnly(group, "host", preview.host); }
    sendPreview();
  });
});
pressOnly(document.querySelector(".seg[aria-label='Embed mode']"), "mode", preview.mode);
setDevice("desktop");

// --- section tabs (arrow keys move between them) --------------------------------------------------

function selectSection(key) {
  document.querySelectorAll(".section-tabs [role=tab]").forEach((tab) => {
    const on = tab.dataset.section === key;
    tab.setAttribute("aria-selected", String(on));
    tab.tabIndex = on ? 0 : -1;
    document.getElementById(tab.getAttribute("aria-controls")).hidden = !on;
  });
}
const tabs = [...document.querySelectorAll(".section-tabs [role=tab]")];
tabs.forEach((tab, index) => {
  tab.addEventListener("click", () => selectSection(tab.dataset.section));
  tab.addEventListener("keydown", (event) => {
    const step = { ArrowDown: 1, ArrowUp: -1 }[event.key];
    if (!step) return;
    event.preventDefault();
    const next = tabs[(index + step + tabs.length) % tabs.length];
    selectSection(next.dataset.section);
    next.focus();
  });
});

// --- editing ----------------------------------------------------------------------------------------

function setDirty(value) {
  dirty = value;
  if (!canEdit) return;
  saveState.textContent = value ? "Unsaved changes" : "All changes saved";
  saveState.classList.toggle("dirty", value);
}

form.addEventListener("input", (event) => {
  const el = event.target;
  if (el.dataset.colorFor) {
    const text = document.getElementById(el.dataset.colorFor);
    text.value = el.value;
    validateControl(text);
  } else if (el.dataset.path) {
    validateControl(el);
    if (el.dataset.path.endsWith("_color") || el.closest(".color-row")) {
      const picker = el.closest(".color-row")?.querySelector("[type=color]");
      if (picker && /^#[0-9a-fA-F]{6}$/.test(el.value)) picker.value = el.value;
    }
    const out = document.querySelector(`[data-output-for="${el.id}"]`);
    if (out) out.textContent = el.value;
  }
  setDirty(true);
  refreshVisibility();
  sendPreview();
});
form.addEventListener("change", (event) => { if (event.target.type === "radio") form.dispatchEvent(new Event("input")); });

// The greyed text of each empty "Widget texts" field is the current locale's own wording.
const catalog = JSON.parse(document.getElementById("widget-strings")?.textContent || "null");
function localePlaceholders() {
  if (!catalog) return;
  const locale = form.querySelector('[data-path="behaviour.locale"]')?.value || "";
  const language = locale.split("-")[0].toLowerCase();
  const texts = catalog.strings[language in catalog.strings ? language : "en"];
  form.querySelectorAll('[data-path^="behaviour.strings."]').forEach((el) => {
    el.placeholder = texts[el.dataset.path.slice("behaviour.strings.".length)] || "";
  });
}
form.querySelector('[data-path="behaviour.locale"]')?.addEventListener("input", localePlaceholders);
localePlaceholders();

window.addEventListener("beforeunload", (event) => {
  if (dirty) { event.preventDefault(); event.returnValue = ""; }
});

async function api(url, method, body) {
  const response = await fetch(url, {
    method, credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken(), Accept: "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  try { data = await response.json(); } catch { data = null; }
  return { status: response.status, ok: response.ok, data };
}

function statusBadge(widget) {
  const slot = document.getElementById("status-badge");
  if (!widget.published_version) slot.innerHTML = '<span class="badge" data-status="never">Never published</span>';
  else if (widget.has_unpublished_changes) slot.innerHTML = '<span class="badge warn" data-status="draft">Draft changes</span>';
  else slot.innerHTML = `<span class="badge ok" data-status="published">Published v${widget.published_version}</span>`;
  const type = document.getElementById("type-badge");
  type.textContent = widget.widget_type === "chatkit" ? "OpenAI ChatKit" : "n8n chat";
  type.classList.toggle("accent", widget.widget_type === "chatkit");
}

function conflict(message) {
  document.getElementById("conflict-text").textContent = message;
  document.getElementById("conflict-banner").classList.add("show");
}

export async function save() {
  for (const el of controls()) validateControl(el);
  const nameInput = form.querySelector("[data-name]");
  if (nameInput) showError("name", nameInput.value.trim() ? "" : "Give the widget a name.");
  if (errors.size) {
    saveState.textContent = "Fix the highlighted fields";
    showServerErrors(Object.fromEntries([...errors].map(([p, m]) => [p, [m]])));
    return false;
  }
  clearServerErrors();
  saveState.textContent = "Saving…";
  const body = { config: formConfig(), secrets: secretChanges(), revision };
  if (nameInput) body.name = nameInput.value;
  const { status, ok, data } = await api(editor.dataset.api, "PATCH", body);
  if (ok) {
    revision = data.revision;
    draft = data.config;
    document.getElementById("widget-title").textContent = data.name;
    showError("name", "");
    setDirty(false);
    statusBadge(data);
    updateSecretHints(data.secrets);
    toast("Draft saved");
    // The connection state (is the ChatKit page usable?) is read when the frame loads: refresh it.
    if (data.widget_type === "chatkit") frame.contentWindow?.location.reload();
    return true;
  }
  const error = data?.error || { message: `Saving failed (HTTP ${status}).` };
  if (status === 409) conflict(error.message);
  else if (error.fields) showServerErrors(error.fields);
  saveState.textContent = status === 409 ? "Not saved: conflict" : "Not saved";
  toast(error.message);
  return false;
}

function updateSecretHints(status) {
  for (const [name, info] of Object.entries(status || {})) {
    const hint = form.querySelector(`[data-secret-hint="${name}"]`);
    if (!hint) continue;
    hint.textContent = info.set ? `Set${info.last4 ? `, ends …${info.last4}` : ""} · write-only` : "Not set · write-only";
    hint.classList.toggle("unset", !info.set);
    const input = form.querySelector(`[data-secret="${name}"]`);
    input.value = "";
    input.placeholder = info.set ? "Leave empty to keep" : "Not set";
    const clear = form.querySelector(`[data-secret-clear="${name}"]`);
    if (clear) clear.checked = false;
  }
}

document.getElementById("save-btn")?.addEventListener("click", save);

// Publishing changes what visitors of the client's sites see at once: ask first.
function confirmPublish() {
  const dialog = document.getElementById("publish-dialog");
  return new Promise((resolve) => {
    dialog.returnValue = "";
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "publish"), { once: true });
    dialog.showModal();
    document.getElementById("publish-confirm").focus();
  });
}

document.getElementById("publish-btn")?.addEventListener("click", async () => {
  if (!(await confirmPublish())) return;
  if (dirty && !(await save())) return;
  const { status, ok, data } = await api(editor.dataset.publishUrl, "POST", { revision });
  if (ok) {
    toast(`Published v${data.number}: live on customer sites now`);
    statusBadge({ published_version: data.number, has_unpublished_changes: false, widget_type: data.widget_type });
    return;
  }
  const error = data?.error || { message: `Publishing failed (HTTP ${status}).` };
  if (status === 409) conflict(error.message);
  else if (error.fields) showServerErrors(error.fields);
  toast(error.message);
});

// --- test connection + voice session -------------------------------------------------------------

const testBtn = document.getElementById("test-btn");
testBtn?.addEventListener("click", async () => {
  const out = document.getElementById("test-result");
  testBtn.disabled = true;
  const waiting = document.createElement("p");
  waiting.className = "callout";
  waiting.textContent = fullConfig().connection.provider === "n8n"
    ? `Sending a test message… (waiting up to ${testBtn.dataset.timeout} s, as long as a visitor would)` : "Testing…";
  out.replaceChildren(waiting);
  const message = document.getElementById("test-message")?.value.trim() || "";
  const { ok, data, status } = await api(editor.dataset.testUrl, "POST",
    { config: formConfig(), secrets: secretChanges(), message });
  testBtn.disabled = false;
  const p = document.createElement("p");
  if (ok) {
    p.className = `callout ${data.ok ? "" : "danger"}`;
    p.dataset.code = data.code;
    p.textContent = data.message;
  } else {
    p.className = "callout danger";
    p.textContent = data?.error?.message || `The test failed (HTTP ${status}).`;
    if (data?.error?.fields) showServerErrors(data.error.fields);
  }
  if (ok && data.ok) p.style.cssText = "background:var(--ok-soft);color:#065f46;border-color:#a7f3d0";
  out.replaceChildren(p);
});

document.getElementById("session-btn")?.addEventListener("click", async () => {
  const out = document.getElementById("session-out");
  out.innerHTML = '<p class="muted small">Loading…</p>';
  let response;
  try { response = await fetch(editor.dataset.realtimeUrl, { credentials: "same-origin" }); } catch { response = null; }
  const note = document.createElement("p");
  note.className = "callout";
  if (!response || response.status === 404) {
    note.textContent = "The voice session endpoint is not available on this server yet (or this widget is not published). Publish the widget and try again.";
    out.replaceChildren(note);
    return;
  }
  let data = null;
  try { data = await response.json(); } catch { data = null; }
  if (!response.ok) {
    note.className = "callout warn";
    note.textContent = data?.error?.message || `The relay answered HTTP ${response.status}.`;
    out.replaceChildren(note);
    return;
  }
  const pre = document.createElement("pre");
  pre.className = "session";
  pre.textContent = JSON.stringify(data, null, 2);
  out.replaceChildren(pre);
});

// --- boot --------------------------------------------------------------------------------------------

refreshVisibility();
// The frame may have loaded (and said it is ready) before this module ran: project the draft once anyway.
sendPreview();
fetch(editor.dataset.schemaUrl, { credentials: "same-origin" })
  .then((r) => r.json())
  .then((data) => {
    schema = data.schema;
    for (const el of changedEarly) validateControl(el);
    changedEarly.clear();
  });
window.switchboardConfigurator = { formConfig, save, get dirty() { return dirty; } };
