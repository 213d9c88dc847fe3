// The preview frame: a fake host page plus the REAL widget bundle (static/widget/widget.js), mounted
// with a DRAFT public config. The parent (configurator) posts {type: "switchboard:preview", config,
// options, draft} after each edit: `config` is the server's public projection of the draft
// (config_public, exactly what a visitor's browser gets); `draft` is the editor's unsaved connection
// ({config, secrets}, as Test connection sends it), which the preview chat uses, so the preview chats
// with what you typed before you save. There is no second renderer: what you see is the bundle.
//
// A ChatKit widget's bundle frames the ChatKit page; here that is the preview page (the draft, a
// preview session, never counted), and theme edits are posted into it without reloading it.
//
// Proactive rules (behaviour.proactive): the bundle decides them here as on a customer's page, with two
// differences it is told about (`preview` mount option): the page rules test `pageUrl` (the configurator's
// test URL; none: every rule is skipped) and nothing is remembered, so the greeting bubble shows at once;
// `replay` (the configurator's "Replay" button) mounts the popup closed and runs the rules' timeline
// (bubble delay, auto-open timer, exit intent) as a first visit would.

const boot = JSON.parse(document.getElementById("preview-boot").textContent);
const root = document.getElementById("sb-preview-root");
const state = {
  config: boot.config, mode: boot.config.embed.mode, host: "light", open: true, dirty: false,
  pageUrl: "", replay: 0, replayPending: false,
};
let mounted = null;

export function mountPreview(el, config, options) {
  if (mounted && mounted.update(config, options)) return mounted;
  mounted?.destroy();
  el.replaceChildren();
  mounted = mountBundle(window.SwitchboardWidget, el, config, options);
  return mounted;
}

// The real widget bundle (static/widget/widget.js) fetches its config and chats with
// /api/widget/<key>/...; inside this frame those calls are answered with the DRAFT config and routed
// to the preview chat (draft webhook, not counted as usage). Nothing else in the bundle changes.
let shimmed = null;
let mountCount = 0;
function installFetchShim() {
  if (shimmed) return shimmed;
  const realFetch = window.fetch.bind(window);
  const base = `/api/widget/${encodeURIComponent(boot.licenseKey)}/`;
  const json = (body, status = 200) => Promise.resolve(new Response(JSON.stringify(body),
    { status, headers: { "Content-Type": "application/json" } }));
  shimmed = { config: null, draft: null };
  window.fetch = (input, init = {}) => {
    const path = new URL(typeof input === "string" ? input : input.url, location.href).pathname;
    if (!path.startsWith(base)) return realFetch(input, init);
    const what = path.slice(base.length);
    if (what === "config") return json({ config: shimmed.config, type: shimmed.config.provider, widget: boot.widgetId });
    if (what === "leads") return json({ id: 0, status: "preview" }, 201);
    if (what === "chat") {
      let body = {};
      try { body = JSON.parse(init.body || "{}"); } catch { body = {}; }
      // History stays in this browser while you edit (the preview re-mounts on every change).
      if (body.action === "loadPreviousSession") return json({ sessionId: body.sessionId, messages: [] });
      const headers = new Headers(init.headers || {});
      headers.set("Content-Type", "application/json");
      headers.set("X-CSRFToken", (document.cookie.match(/csrftoken=([^;]+)/) || [])[1] || "");
      // The editor's unsaved connection rides along (share links have none: the saved draft is used).
      const draft = shimmed.draft ? { config: shimmed.draft.config, secrets: shimmed.draft.secrets } : {};
      return realFetch(boot.chatUrl, { ...init, body: JSON.stringify({ ...body, ...draft }), headers,
        credentials: "same-origin" });
    }
    return json({ error: { code: "not_found", message: "Not available in the preview." } }, 404);
  };
  return shimmed;
}


// Voice in the preview: a test call on the UNSAVED draft (realtime/preview.py). The mic button asks our
// server for a one-use ticket with the editor's current draft (validated there like preview-config; the
// license, key and limits are the server's), and voice.js opens WS /ws/realtime/preview/<ticket>/ with it.
// Never counted against the client's minutes; the widget marks the call "Test call". WebRTC and LiveKit
// drafts are tried over the relay (they need real credentials in the browser), and the mark says so.
const RELAYED = { webrtc: "WebRTC", livekit: "LiveKit" };
function voicePreview(config) {
  if (!boot.voicePreviewUrl) return undefined;  // a share link's frame makes no test calls
  const transport = RELAYED[config.voice?.transport];
  return {
    label: transport ? "Test call · relay" : "Test call",
    note: (transport ? `The preview tries ${transport} drafts over the relay, with the same session and tools. ` : "")
      + "A test call on this draft: not counted against the client's minutes.",
    ticket: async () => {
      const headers = { "Content-Type": "application/json",
        "X-CSRFToken": (document.cookie.match(/csrftoken=([^;]+)/) || [])[1] || "" };
      const body = JSON.stringify({ config: installFetchShim().draft?.config ?? {} });
      const response = await fetch(boot.voicePreviewUrl, { method: "POST", headers, body, credentials: "same-origin" });
      const data = await response.json().catch(() => ({}));
      if (!response.ok) throw new Error(data.error?.message || "The test call could not start.");
      return data;
    },
  };
}

// What the ChatKit page maps into ChatKit's options: the public config back in the schema's shape, only
// the parts ChatKit's options come from. The server merges it over the saved draft, validates and maps
// it (chatkit_options; no mapping in JS).
function postChatKitDraft(frame, config) {
  const draft = { appearance: { chatkit: config.appearance }, behaviour: config.behaviour };
  frame?.contentWindow?.postMessage({ type: "switchboard:chatkit-draft", config: draft }, location.origin);
}

// JSON with object keys sorted, so two equal configs give the same string whatever their key order.
function canonical(value) {
  return JSON.stringify(value, (key, v) => (v && typeof v === "object" && !Array.isArray(v)
    ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, v[k]])) : v));
}

function mountBundle(bundle, el, config, options) {
  installFetchShim().config = config;
  const mode = options.mode;
  const chatkit = config.provider === "chatkit";
  let target = null;
  if (mode === "inline") {
    target = document.createElement("div");
    target.id = "sb-inline-target";
    target.className = "sb-inline-target";
    target.style.maxHeight = `${config.embed.height}px`;
    target.style.maxWidth = `min(${config.embed.width}px, calc(100% - 56px))`;
    el.append(target);
  }
  const replay = options.replay > 0 && state.replayPending;
  state.replayPending = false;
  const widget = bundle.mount({
    base: location.origin, key: boot.licenseKey, widget: boot.widgetId, type: config.provider, config, mode,
    position: config.embed.position, target: target ? "#sb-inline-target" : undefined,
    frame: chatkit ? boot.chatkitUrl : undefined,
    preview: { pageUrl: options.pageUrl || "", replay },
    voicePreview: chatkit ? undefined : voicePreview(config),
  });
  let current = config;
  if (chatkit && widget.frame) widget.frame.addEventListener("load", () => postChatKitDraft(widget.frame, current));
  const remount = mountCount++ > 0;
  let frames = 0;
  (function whenReady() {
    if (!widget.panel) {
      if (frames++ < 120) requestAnimationFrame(whenReady);
      return;
    }
    showRuleNote(mode === "popup" ? widget.rule : null);
    // Re-mounts happen as you type: skip the widget's entrance animations so the preview stays calm.
    if (remount && widget.root) {
      const calm = document.createElement("style");
      calm.textContent = ".r *, .r { animation: none !important; transition: none !important; }";
      widget.root.appendChild(calm);
    }
    if (mode !== "popup") return;
    // The popup stays as you left it across re-mounts, however it opened or closed (launcher, greeting
    // bubble, proactive timer), without moving focus out of the configurator.
    const toggle = widget.toggle;
    widget.toggle = function (...args) {
      toggle.apply(widget, args);
      state.open = !widget.panel.hidden;
    };
    if (!state.open || !widget.launcher || !widget.rule.shown) return;
    const input = widget.input;
    if (input) input.focus = () => {};
    widget.toggle(true);
    if (input) delete input.focus;
  })();
  root.dataset.renderer = "bundle";
  root.dataset.provider = config.provider;
  // A ChatKit page keeps its conversation while you edit its theme: only what the bundle itself draws
  // (placement, size, colour scheme of the frame) re-mounts it.
  // Compared by value: the saved config comes back from PostgreSQL's jsonb with its keys reordered.
  // The proactive rules are drawn by the bundle too (bubble, badge, hidden launcher): a change re-mounts.
  const frameKey = (c, o) => canonical([c.provider, c.embed, c.appearance.color_scheme, c.behaviour.proactive,
    o.pageUrl || "", o.replay || 0]);
  const mountedKey = frameKey(config, options);
  return {
    widget,
    update(next, nextOptions) {
      if (!chatkit || nextOptions.mode !== mode || frameKey(next, nextOptions) !== mountedKey) return false;
      current = next;
      installFetchShim().config = next;
      postChatKitDraft(widget.frame, next);
      return true;
    },
    destroy() {
      if (widget.voice) widget.hangUp();
      widget.stopProactive?.();
      widget.host?.remove();
      window.SwitchboardWidgets = (window.SwitchboardWidgets || []).filter((w) => w !== widget);
    },
  };
}

// A popup the page rules hide has no launcher at all: say so, or the preview just looks empty.
function showRuleNote(rule) {
  let note = document.getElementById("sb-preview-note");
  root.dataset.proactive = rule && !rule.shown ? "hidden" : "shown";
  if (!rule || rule.shown) { note?.remove(); return; }
  if (!note) {
    note = document.createElement("p");
    note.id = "sb-preview-note";
    note.setAttribute("role", "status");
    document.body.append(note);
  }
  note.textContent = `Not shown on ${rule.path}: the page rules hide the widget there.`;
}

// --- wiring ------------------------------------------------------------------------------------------

function render() {
  document.body.dataset.host = state.host;
  document.body.dataset.mode = state.mode;
  mountPreview(root, state.config,
    { mode: state.mode, chatUrl: boot.chatUrl, pageUrl: state.pageUrl, replay: state.replay });
}

window.addEventListener("message", (event) => {
  if (event.origin !== location.origin || event.data?.type !== "switchboard:preview") return;
  state.config = event.data.config || state.config;
  if (event.data.draft) installFetchShim().draft = event.data.draft;
  const options = event.data.options || {};
  if (options.mode && options.mode !== state.mode) { state.mode = options.mode; state.open = true; }
  if (options.host) state.host = options.host;
  if (options.dirty !== undefined) state.dirty = options.dirty;
  if (typeof options.pageUrl === "string") state.pageUrl = options.pageUrl;
  // "Replay": the popup starts closed and the rules' timeline runs once, in the next mount.
  if (options.replay > state.replay) {
    state.replay = options.replay;
    state.replayPending = true;
    state.open = false;
  }
  clearTimeout(render._t);
  render._t = setTimeout(render, 120);
});

window.switchboardPreview = { state, render };
render();
if (window.parent !== window) window.parent.postMessage({ type: "switchboard:preview-ready" }, location.origin);
