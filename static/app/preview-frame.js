// The preview frame: a fake host page plus the widget, mounted with a DRAFT public config.
// The parent (configurator) posts {type: "switchboard:preview", config, options, draft} on every change;
// `draft` is the editor's unsaved connection ({config, secrets}, as Test connection sends it), which
// the preview chat uses, so the preview chats with what you typed before you save.
//
// mountPreview() is the ONE adapter between the preview and the widget renderer: when the real
// bundle (static/widget/, branch `embed`) is on the page as window.SwitchboardWidget it is used;
// until then a faithful built-in renderer of the same public config stands in.

const boot = JSON.parse(document.getElementById("preview-boot").textContent);
const root = document.getElementById("sb-preview-root");
const state = { config: boot.config, mode: boot.config.embed.mode, host: "light", open: true, dirty: false };
let mounted = null;

export function mountPreview(el, config, options) {
  // The real ChatKit page is updated in place (re-creating its iframe would reload it).
  if (mounted && typeof mounted.update === "function" && mounted.update(config, options)) return mounted;
  if (mounted && typeof mounted.destroy === "function") mounted.destroy();
  el.replaceChildren();
  const bundle = window.SwitchboardWidget;
  if (config.provider === "n8n" && bundle && typeof bundle.mount === "function") {
    mounted = mountBundle(bundle, el, config, options);
  } else {
    mounted = config.provider === "chatkit" ? renderChatKit(el, config, options) : renderN8n(el, config, options);
  }
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
    if (what === "config") return json({ config: shimmed.config, type: "n8n", widget: boot.widgetId });
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

function mountBundle(bundle, el, config, options) {
  installFetchShim().config = config;
  const mode = options.mode;
  let target = null;
  if (mode === "inline") {
    target = h("div", { id: "sb-inline-target", class: "sb-inline-target",
      style: { maxHeight: `${config.embed.height}px`, maxWidth: `min(${config.embed.width}px, calc(100% - 56px))` } });
    el.append(target);
  }
  const widget = bundle.mount({
    base: location.origin, key: boot.licenseKey, widget: boot.widgetId, type: "n8n", config, mode,
    position: config.embed.position, target: target ? "#sb-inline-target" : undefined,
  });
  const remount = mountCount++ > 0;
  let frames = 0;
  (function whenReady() {
    if (!widget.panel) {
      if (frames++ < 120) requestAnimationFrame(whenReady);
      return;
    }
    // Re-mounts happen as you type: skip the widget's entrance animations so the preview stays calm.
    if (remount && widget.root) {
      const calm = document.createElement("style");
      calm.textContent = ".r *, .r { animation: none !important; transition: none !important; }";
      widget.root.appendChild(calm);
    }
    // Popup: keep the window open across re-mounts, without moving focus out of the configurator.
    if (mode !== "popup" || !state.open || !widget.launcher) return;
    const ta = widget.input;
    if (ta) ta.focus = () => {};
    widget.toggle(true);
    if (ta) delete ta.focus;
    widget.launcher.addEventListener("click", () => { state.open = !widget.panel.hidden; });
  })();
  root.dataset.renderer = "bundle";
  return {
    widget,
    destroy() {
      if (widget.voice) widget.hangUp();
      widget.host?.remove();
      window.SwitchboardWidgets = (window.SwitchboardWidgets || []).filter((w) => w !== widget);
    },
  };
}

function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "style" && typeof v === "object") {
      for (const [prop, value] of Object.entries(v)) {
        if (prop.startsWith("--")) node.style.setProperty(prop, value); else node.style[prop] = value;
      }
    }
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== false && v !== null && v !== undefined) node.setAttribute(k, v === true ? "" : v);
  }
  for (const child of children.flat()) if (child !== null && child !== undefined && child !== false)
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

const ICONS = { chat: "💬", message: "✉️", sparkle: "✨", headset: "🎧" };

function dark(scheme) {
  return scheme === "dark" || (scheme === "auto" && matchMedia("(prefers-color-scheme: dark)").matches);
}

function placement(shell, config, mode) {
  const e = config.embed;
  shell.dataset.mode = mode;
  if (mode === "popup") {
    shell.style.width = `min(${e.width}px, calc(100vw - ${2 * e.offset_x}px))`;
    shell.style.height = `min(${e.height}px, calc(100vh - ${e.offset_y * 2 + 72}px))`;
    shell.style.bottom = `${e.offset_y + 68}px`;
    shell.style[e.position === "bottom-left" ? "left" : "right"] = `${e.offset_x}px`;
  } else if (mode === "inline") {
    shell.style.width = `min(${e.width}px, 100%)`;
    shell.style.height = `${e.height}px`;
  }
}

function launcher(config, color, onClick, open) {
  const e = config.embed;
  return h("button", {
    class: "sb-launcher", type: "button", "aria-label": open ? "Close chat" : "Open chat", onclick: onClick,
    style: { background: color, bottom: `${e.offset_y}px`, [e.position === "bottom-left" ? "left" : "right"]: `${e.offset_x}px` },
  }, open ? "✕" : ICONS[config.appearance.launcher_icon] || "💬");
}

// --- n8n widget (built-in stand-in for static/widget/) ----------------------------------------------

function renderN8n(el, config, options) {
  root.dataset.renderer = "builtin";
  const a = config.appearance;
  const b = config.behaviour;
  const isDark = dark(a.color_scheme);
  const vars = {
    "--sb-primary": a.primary_color, "--sb-bg": isDark ? "#0f172a" : a.background_color,
    "--sb-text": isDark ? "#e2e8f0" : a.text_color, "--sb-user": a.bubble_user_color,
    "--sb-bot": isDark ? "#1e293b" : a.bubble_bot_color, "--sb-radius": `${a.radius}px`,
    "--sb-font": a.font_family || "system-ui, -apple-system, 'Segoe UI', sans-serif", "--sb-size": `${a.font_size}px`,
  };
  const log = h("div", { class: "sb-log", role: "log", "aria-live": "polite" });
  const bubble = (role, text) => log.append(h("div", { class: `sb-msg sb-${role}` }, text));
  if (b.greeting) bubble("bot", b.greeting);
  (b.initial_messages || []).forEach((m) => bubble("bot", m));
  const input = h("input", { class: "sb-input", type: "text", placeholder: b.placeholder || "", "aria-label": "Message" });
  const sessionId = `preview-${Math.random().toString(36).slice(2, 10)}`;
  async function send(text) {
    if (!text.trim()) return;
    bubble("user", text);
    input.value = "";
    const typing = h("div", { class: "sb-msg sb-bot sb-typing" }, "…");
    log.append(typing);
    log.scrollTop = log.scrollHeight;
    let reply;
    try {
      const response = await fetch(options.chatUrl, {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRFToken": (document.cookie.match(/csrftoken=([^;]+)/) || [])[1] || "" },
        body: JSON.stringify({ action: "sendMessage", sessionId, chatInput: text }),
      });
      const data = await response.json().catch(() => ({}));
      reply = response.ok ? (data.output ?? data.text ?? JSON.stringify(data)) : `⚠ ${data?.error?.message || `HTTP ${response.status}`}`;
    } catch {
      reply = "⚠ Could not reach the preview chat.";
    }
    typing.remove();
    bubble("bot", reply);
    log.scrollTop = log.scrollHeight;
  }
  const prompts = (b.starter_prompts || []).length
    ? h("div", { class: "sb-prompts" }, b.starter_prompts.map((p) => h("button", { type: "button", class: "sb-chip", onclick: () => send(p) }, p)))
    : null;
  const panel = h("section", { class: `sb-panel ${isDark ? "sb-dark" : ""}`, "data-sb-provider": "n8n",
    "data-sb-primary": a.primary_color, "aria-label": a.title || "Chat", style: vars },
    h("header", { class: "sb-head" },
      a.avatar_url ? h("img", { class: "sb-avatar", src: a.avatar_url, alt: "" }) : h("span", { class: "sb-avatar" }, (a.title || "C")[0]),
      h("div", {}, h("div", { class: "sb-title" }, a.title), a.subtitle ? h("div", { class: "sb-sub" }, a.subtitle) : null),
      config.voice.enabled ? h("button", { class: "sb-mic", type: "button", "aria-label": "Start voice call", title: "Voice (preview)" }, "🎙") : null),
    log, prompts,
    h("form", { class: "sb-composer", onsubmit: (ev) => { ev.preventDefault(); send(input.value); } },
      input, h("button", { class: "sb-send", type: "submit", "aria-label": "Send" }, "➤")),
    b.disclaimer ? h("p", { class: "sb-disclaimer" }, b.disclaimer) : null,
  );
  return frameWidget(el, config, options, panel, a.primary_color);
}

function frameWidget(el, config, options, panel, color) {
  const shell = h("div", { class: "sb-shell" }, panel);
  placement(shell, config, options.mode);
  el.append(shell);
  if (options.mode === "popup") {
    shell.hidden = !state.open;
    el.append(launcher(config, color, () => { state.open = !state.open; render(); }, state.open));
  }
  return { destroy() {} };
}

// --- ChatKit: the real preview page once connected, else a theme stand-in ------------------------------

// The public config back in the schema's shape, only the parts ChatKit's options come from: the
// server merges it over the saved draft, validates and maps it (no mapping in JS).
function postChatKitDraft(iframe, config) {
  const draft = { appearance: { chatkit: config.appearance }, behaviour: config.behaviour };
  iframe.contentWindow?.postMessage({ type: "switchboard:chatkit-draft", config: draft }, location.origin);
}

const RADIUS = { pill: "999px", round: "16px", soft: "10px", sharp: "3px" };
const DENSITY = { compact: "8px", normal: "12px", spacious: "16px" };

function renderChatKit(el, config, options) {
  const a = config.appearance;
  const b = config.behaviour;
  const isDark = dark(a.color_scheme);
  const light = isDark ? 12 + a.grayscale_shade : 98 + a.grayscale_shade / 2;
  const surface = `hsl(${a.grayscale_hue} ${a.grayscale_tint * 4}% ${light}%)`;
  const vars = {
    "--ck-accent": a.accent_color, "--ck-surface": surface, "--ck-radius": RADIUS[a.radius] || "16px",
    "--ck-gap": DENSITY[a.density] || "12px", "--ck-size": `${a.base_font_size}px`,
    "--ck-text": isDark ? "#f1f5f9" : "#0f172a", "--ck-level": String(a.accent_level),
    "--ck-border": isDark ? "rgba(255,255,255,.12)" : `hsl(${a.grayscale_hue} ${a.grayscale_tint * 3}% 88%)`,
  };
  const ready = boot.ready && boot.ready.chatkit;
  if (boot.chatkitUrl && ready) {
    // The real ChatKit page in preview mode (chatkit app), with the preview session endpoint (never
    // counted as usage). It follows the UNSAVED draft: each change is posted to it, and the page
    // asks the server for the mapped options (chatkit_options) and hands them to ChatKit.
    let current = config;
    const iframe = h("iframe", { class: "ck-frame", title: "ChatKit preview", src: boot.chatkitUrl,
      allow: "clipboard-write", onload: () => postChatKitDraft(iframe, current) });
    const panel = h("section", { class: "ck-panel ck-real", "data-sb-provider": "chatkit", "data-sb-accent": a.accent_color,
      "aria-label": "ChatKit", style: vars }, iframe);
    frameWidget(el, config, options, panel, a.accent_color);
    const mode = options.mode;
    const open = state.open;
    const embed = JSON.stringify(config.embed);
    root.dataset.renderer = "chatkit-page";
    return {
      destroy() {},
      update(next, nextOptions) {
        if (next.provider !== "chatkit" || nextOptions.mode !== mode || state.open !== open
          || JSON.stringify(next.embed) !== embed) return false;
        current = next;
        panel.dataset.sbAccent = next.appearance.accent_color;
        const button = el.querySelector(".sb-launcher");
        if (button) button.style.background = next.appearance.accent_color;
        postChatKitDraft(iframe, next);
        return true;
      },
    };
  }
  const note = boot.shared
    ? "This shared preview shows the ChatKit widget's look; chatting is available on the live site."
    : "Connection not set up: add an OpenAI API key (and a workflow id in hosted mode) in Connection, then save, to chat here. The look below follows your edits live.";
  const panel = h("section", { class: `ck-panel ${isDark ? "ck-dark" : ""}`, "data-sb-provider": "chatkit",
    "data-sb-accent": a.accent_color, "data-accent-level": a.accent_level, "aria-label": "ChatKit", style: vars },
    h("div", { class: "ck-note", role: "note" }, note),
    h("div", { class: "ck-start" },
      h("h2", { class: "ck-greeting" }, b.greeting || "What can I help with today?"),
      h("div", { class: "ck-prompts" }, (b.starter_prompts || []).map((p) => h("button", { type: "button", class: "ck-prompt" }, p)))),
    h("form", { class: "ck-composer", onsubmit: (ev) => ev.preventDefault() },
      h("input", { type: "text", placeholder: b.placeholder || "Message", "aria-label": "Message", disabled: true }),
      h("button", { type: "submit", class: "ck-send", "aria-label": "Send", disabled: true }, "↑")),
    b.disclaimer ? h("p", { class: "ck-disclaimer" }, b.disclaimer) : null,
  );
  root.dataset.renderer = "chatkit-theme";
  return frameWidget(el, config, options, panel, a.accent_color);
}

// --- wiring ------------------------------------------------------------------------------------------

function render() {
  document.body.dataset.host = state.host;
  document.body.dataset.mode = state.mode;
  mountPreview(root, state.config, { mode: state.mode, chatUrl: boot.chatUrl });
}

window.addEventListener("message", (event) => {
  if (event.origin !== location.origin || event.data?.type !== "switchboard:preview") return;
  state.config = event.data.config || state.config;
  if (event.data.draft) installFetchShim().draft = event.data.draft;
  const options = event.data.options || {};
  if (options.mode && options.mode !== state.mode) { state.mode = options.mode; state.open = true; }
  if (options.host) state.host = options.host;
  if (options.dirty !== undefined) state.dirty = options.dirty;
  clearTimeout(render._t);
  render._t = setTimeout(render, 120);
});

window.switchboardPreview = { state, render };
render();
if (window.parent !== window) window.parent.postMessage({ type: "switchboard:preview-ready" }, location.origin);
