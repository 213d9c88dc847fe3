/* Switchboard chat widget: plain JS, Shadow DOM, no build step.
 * Mounted by the loader (/api/widget/<key>/chat-widget.js) through window.SwitchboardQueue.
 * Talks only to the Switchboard server: GET /config (authorizes this page's origin first),
 * POST /chat (n8n proxy: JSON {output, ui} or NDJSON stream), POST /leads (forms).
 * UI events (widgets/ui_events.py): ui.product_cards, ui.trade_in_form, ui.demo_clip, ui.meeting_link.
 * Voice: lazy-loads /static/widget/voice.js and calls SwitchboardVoice.create(api) (see BRIEF contract). */
(function () {
  "use strict";
  if (window.SwitchboardWidget) return;

  const CSS = [
    ":host{all:initial!important;display:block!important;position:static!important}",
    ":host([data-mode=inline]){width:100%!important;height:100%!important}",
    ".r{all:initial;display:block;box-sizing:border-box;font-family:var(--f);font-size:var(--fs);line-height:1.45;",
    "color:var(--tx);text-align:left;-webkit-font-smoothing:antialiased;letter-spacing:normal;word-spacing:normal;",
    "text-transform:none;white-space:normal;visibility:visible;direction:ltr}",
    ".r *,.r *:before,.r *:after{box-sizing:border-box;font:inherit;color:inherit;margin:0;padding:0;border:0;",
    "background:none;letter-spacing:inherit;text-transform:none}",
    ".r button{cursor:pointer;display:inline-flex;align-items:center;justify-content:center}",
    ".r [hidden]{display:none!important}",
    ".r svg{width:20px;height:20px;fill:none;stroke:currentColor;stroke-width:2;stroke-linecap:round;",
    "stroke-linejoin:round;flex:none}",
    ".r :focus-visible{outline:2px solid var(--p);outline-offset:2px}",
    ".lau{position:fixed;z-index:2147483000;bottom:var(--oy);width:60px;height:60px;border-radius:50%;",
    "background:var(--p);color:var(--pt);box-shadow:0 6px 24px rgba(15,23,42,.25);transition:transform .2s}",
    ".lau:hover{transform:scale(1.06)}.lau svg{width:28px;height:28px}",
    ".right .lau,.popup.right .pn{right:var(--ox)}.left .lau,.popup.left .pn{left:var(--ox)}",
    ".pn{display:flex;flex-direction:column;overflow:hidden;background:var(--bg);color:var(--tx);",
    "border-radius:var(--rd);box-shadow:0 16px 56px rgba(15,23,42,.22),0 2px 8px rgba(15,23,42,.08)}",
    ".popup .pn{position:fixed;z-index:2147483001;bottom:calc(var(--oy) + 72px);width:var(--w);",
    "height:min(var(--h),calc(100vh - var(--oy) - 96px));animation:up .22s ease-out}",
    ".r.inline{width:100%;height:100%}.inline .pn{position:relative;width:100%;height:100%;",
    "box-shadow:0 1px 3px rgba(15,23,42,.12);border:1px solid var(--ln)}",
    ".fullpage .pn{position:fixed;inset:0;z-index:2147483001;border-radius:0}",
    "@keyframes up{from{opacity:0;transform:translateY(12px)}to{opacity:1;transform:none}}",
    ".hd{display:flex;align-items:center;gap:12px;padding:16px 16px 16px 18px;background:var(--p);color:var(--pt)}",
    ".av{width:40px;height:40px;border-radius:50%;background:rgba(255,255,255,.2);display:flex;",
    "align-items:center;justify-content:center;overflow:hidden;flex:none}.av img{width:100%;height:100%;object-fit:cover}",
    ".ti{flex:1;min-width:0}.ti b{display:block;font-weight:650;font-size:1.06em;white-space:nowrap;overflow:hidden;",
    "text-overflow:ellipsis}.ti span{display:block;font-size:.82em;opacity:.85}",
    ".ib{width:34px;height:34px;border-radius:10px;color:inherit;opacity:.9}.ib:hover{background:rgba(255,255,255,.16)}",
    ".lg{flex:1;overflow-y:auto;padding:18px 16px 8px;display:flex;flex-direction:column;gap:4px;",
    "overscroll-behavior:contain}",
    ".m{display:flex;flex-direction:column;max-width:84%;margin-top:8px}",
    ".m.u{align-self:flex-end;align-items:flex-end}.m.a{align-self:flex-start}",
    ".b{padding:10px 14px;border-radius:calc(var(--rd) * .9);overflow-wrap:anywhere;",
    "animation:fi .18s ease-out}",
    ".u .b{background:var(--ub);color:var(--ut);border-bottom-right-radius:4px}",
    ".a .b{background:var(--bb);color:var(--bt);border-bottom-left-radius:4px}",
    "@keyframes fi{from{opacity:0;transform:translateY(4px)}to{opacity:1;transform:none}}",
    ".b p+p,.b ul,.b ol,.b pre{margin-top:.5em}.b ul,.b ol{padding-left:1.3em}.b li{margin:.15em 0}",
    ".b ul{list-style:disc}.b ol{list-style:decimal}.b strong{font-weight:650}.b em{font-style:italic}",
    ".b a{text-decoration:underline;text-underline-offset:2px}",
    ".b code{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:.88em;",
    "background:rgba(127,127,127,.16);padding:.1em .35em;border-radius:5px}",
    ".b pre{background:rgba(15,23,42,.9);color:#e2e8f0;padding:10px 12px;border-radius:8px;overflow-x:auto}",
    ".b pre code{background:none;padding:0;color:inherit;white-space:pre}",
    ".tm{font-size:.72em;opacity:.55;margin:4px 4px 0}.m.q .b{opacity:.6}",
    ".er{font-size:.78em;color:#dc2626;margin:4px 4px 0;display:flex;gap:6px;align-items:center}",
    ".er button{text-decoration:underline;font-weight:600}",
    ".pt{opacity:.65;font-style:italic}",
    ".ty{display:inline-flex;gap:4px;padding:14px 16px}.ty i{width:7px;height:7px;border-radius:50%;",
    "background:currentColor;opacity:.45;animation:bl 1.2s infinite}.ty i:nth-child(2){animation-delay:.15s}",
    ".ty i:nth-child(3){animation-delay:.3s}@keyframes bl{0%,80%,100%{opacity:.25;transform:none}",
    "40%{opacity:.8;transform:translateY(-3px)}}",
    ".st{display:flex;flex-wrap:wrap;gap:8px;padding:4px 16px 12px;justify-content:flex-end}",
    ".st button{padding:8px 14px;border-radius:999px;border:1px solid var(--p);color:var(--pc);font-size:.9em;",
    "background:var(--bg)}.st button:hover{background:var(--p);color:var(--pt)}",
    ".cs{display:flex;gap:10px;overflow-x:auto;padding:6px 2px 8px;max-width:100%;scroll-snap-type:x mandatory}",
    ".ui{align-self:stretch;max-width:100%;margin-top:8px}",
    ".cd{flex:0 0 190px;scroll-snap-align:start;border:1px solid var(--ln);border-radius:12px;overflow:hidden;",
    "background:var(--bg);display:flex;flex-direction:column}",
    ".cd img,.cd .ph{width:100%;height:120px;object-fit:cover;background:var(--bb);display:block}",
    ".cd .ph{height:84px;display:flex;align-items:center;justify-content:center;font-size:2em;font-weight:700;",
    "color:var(--pc);background:linear-gradient(135deg,color-mix(in srgb,var(--p) 22%,var(--bg)),var(--bb))}",
    ".cd .ci{padding:10px 12px;display:flex;flex-direction:column;gap:3px;flex:1}",
    ".cd b{font-weight:650;font-size:.95em}.cd .ds{font-size:.8em;opacity:.7;display:-webkit-box;",
    "-webkit-line-clamp:2;-webkit-box-orient:vertical;overflow:hidden}.cd .pr{font-weight:700;color:var(--pc)}",
    ".cd .os{font-size:.75em;color:#b45309}",
    ".bt{display:inline-flex;margin-top:auto;padding:8px 12px;border-radius:9px;background:var(--p);",
    "color:var(--pt)!important;text-decoration:none!important;font-weight:600;font-size:.86em;justify-content:center}",
    ".cdw{border:1px solid var(--ln);border-radius:12px;padding:14px;background:var(--bg);display:flex;",
    "flex-direction:column;gap:10px}.cdw h4{font-weight:650}",
    ".cdw video{width:100%;border-radius:8px;background:#000}",
    ".fm label{display:flex;flex-direction:column;gap:4px;font-size:.85em;font-weight:550}",
    ".fm input,.fm select{font-weight:400;font-size:var(--fs);padding:8px 10px;border:1px solid var(--ln);border-radius:8px;",
    "background:var(--bg);color:var(--tx);width:100%}.fm .fe{color:#dc2626;font-size:.8em}",
    ".cp{display:flex;align-items:flex-end;gap:8px;padding:10px 12px;border-top:1px solid var(--ln)}",
    ".cp textarea{flex:1;resize:none;max-height:120px;min-height:42px;padding:10px 14px;border-radius:21px;",
    "background:var(--bb);color:var(--tx);line-height:1.4;outline:none}",
    ".cp textarea:focus,.cp textarea:focus-visible{outline:none;box-shadow:0 0 0 2px var(--p)}",
    ".sd,.mc{width:42px;height:42px;border-radius:50%;flex:none}",
    ".sd{background:var(--p);color:var(--pt)}.sd:disabled{opacity:.4;cursor:default}",
    ".mc{color:var(--pc);background:var(--bb)}.mc[aria-pressed=true]{background:#dc2626;color:#fff}",
    ".vb{display:flex;flex-wrap:wrap;align-items:center;gap:10px;padding:10px 14px;border-top:1px solid var(--ln);",
    "font-size:.88em;font-weight:550}.vb .dt{width:10px;height:10px;border-radius:50%;background:#9ca3af}",
    ".vb[data-s=listening] .dt{background:#16a34a;animation:pu 1.4s infinite}",
    ".vb[data-s=speaking] .dt{background:var(--p);animation:pu 1s infinite}",
    ".vb[data-s=thinking] .dt,.vb[data-s=connecting] .dt{background:#f59e0b;animation:pu 1.4s infinite}",
    ".vb[data-s=error] .dt{background:#dc2626}.vb .vl{flex:1}",
    ".vb .tw{flex:0 0 100%}.vb .tc{padding:2px 8px;border-radius:999px;background:#fef3c7;color:#92400e;font-size:.9em}",
    ".vb button{padding:7px 12px;border-radius:999px;border:1px solid var(--ln);gap:6px;font-size:.9em}",
    ".vb .hu{background:#dc2626;color:#fff;border-color:#dc2626}.vb svg{width:16px;height:16px}",
    "@keyframes pu{0%,100%{opacity:1}50%{opacity:.35}}",
    ".dc{font-size:.72em;opacity:.6;text-align:center;padding:0 14px 10px}",
    ".sr{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0)}",
    ".fr{flex:1;border:0;width:100%;display:block;background:var(--bg)}",
    ".pb{position:fixed;z-index:2147483000;bottom:calc(var(--oy) + 6px);display:flex;align-items:flex-start;gap:2px;",
    "max-width:min(280px,calc(100vw - var(--ox) - 92px));padding:10px 6px 10px 14px;background:var(--bg);",
    "color:var(--tx);border-radius:14px;box-shadow:0 8px 28px rgba(15,23,42,.22);animation:fi .2s ease-out}",
    ".right .pb{right:calc(var(--ox) + 72px)}.left .pb{left:calc(var(--ox) + 72px)}",
    ".pb .pbt{flex:1;display:block;text-align:left;overflow-wrap:anywhere}",
    ".pb .pbx{width:26px;height:26px;border-radius:8px;opacity:.65}.pb .pbx svg{width:14px;height:14px}",
    ".bd{position:absolute;top:-3px;right:-3px;min-width:20px;height:20px;padding:0 5px;border-radius:10px;",
    "background:#dc2626;color:#fff;font:700 12px/16px system-ui,sans-serif;text-align:center;border:2px solid #fff}",
    "@media (max-width:480px){.popup .pn{inset:0;width:100%;height:100%;border-radius:0;bottom:0}",
    ".popup.open .lau{display:none}}",
    "@media (prefers-reduced-motion:reduce){.r *{animation:none!important;transition:none!important;",
    "scroll-behavior:auto!important}}"
  ].join("");

  const ICONS = {
    chat: '<path d="M21 12a8 8 0 0 1-11.6 7.1L4 20l1-4.4A8 8 0 1 1 21 12z"/>',
    message: '<path d="M4 5h16v11H8l-4 4z"/>',
    sparkle: '<path d="M12 3l2 6 6 2-6 2-2 6-2-6-6-2 6-2z"/>',
    headset: '<path d="M4 14v-2a8 8 0 0 1 16 0v2"/><rect x="3" y="14" width="4" height="6" rx="1.5"/>' +
      '<rect x="17" y="14" width="4" height="6" rx="1.5"/>',
    close: '<path d="M6 6l12 12M18 6L6 18"/>',
    down: '<path d="M6 9l6 6 6-6"/>',
    send: '<path d="M5 12h14M13 6l6 6-6 6"/>',
    mic: '<rect x="9" y="3" width="6" height="11" rx="3"/><path d="M5 11a7 7 0 0 0 14 0M12 18v3"/>',
    micoff: '<path d="M3 3l18 18M9 9v2a3 3 0 0 0 5 2.2M15 9.3V6a3 3 0 0 0-5.7-1.3M5 11a7 7 0 0 0 11.5 5.4' +
      'M19 11a7 7 0 0 1-.6 2.8M12 18v3"/>',
    hang: '<path d="M3 15c5-4.5 13-4.5 18 0l-2 3-3.5-1.5v-2.5a11 11 0 0 0-7 0v2.5L5 18z"/>',
    reset: '<path d="M3 12a9 9 0 1 0 3-6.7L3 8M3 3v5h5"/>'
  };
  function svg(name) {
    return '<svg viewBox="0 0 24 24" aria-hidden="true" focusable="false">' + ICONS[name] + "</svg>";
  }

  const HTML_ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
  function escapeHtml(value) {
    return String(value ?? "").replace(/[&<>"']/g, (char) => HTML_ESCAPES[char]);
  }
  function safeUrl(url, allowMailto) {
    const text = String(url ?? "").trim();
    return (allowMailto ? /^(https?:\/\/|mailto:)/i : /^https?:\/\//i).test(text) ? text : "";
  }
  function element(tag, className, html) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (html != null) node.innerHTML = html;
    return node;
  }
  function externalLink(href, text, className) {
    const anchor = element("a", className);
    anchor.href = href;
    anchor.target = "_blank";
    anchor.rel = "noopener noreferrer";
    anchor.textContent = text;
    return anchor;
  }
  function button(className, html, label) {
    const node = element("button", className, html);
    node.type = "button";
    if (label) node.setAttribute("aria-label", label);
    return node;
  }

  /* Markdown subset on escaped text: **bold**, *italic* or _italic_, `code`, ``` blocks, [t](url), lists, links.
     Every piece of HTML it makes (code, links) is set aside behind a placeholder at once, so no later rule
     (autolinks, emphasis) ever runs over generated markup or inside an attribute. */
  function emphasis(text) {
    return text.replace(/\*\*([^*\n]+)\*\*/g, "<strong>$1</strong>")
      .replace(/(^|[^*\w])\*([^*\n]+)\*(?!\w)/g, "$1<em>$2</em>")
      .replace(/(^|[^_\w])_([^_\n]+)_(?!\w)/g, "$1<em>$2</em>");
  }
  function inlineMarkdown(source) {
    const kept = [];
    const keep = (html) => { kept.push(html); return "\u0000" + (kept.length - 1) + "\u0000"; };
    let text = escapeHtml(String(source ?? "").replace(/\u0000/g, ""));
    text = text.replace(/`([^`\n]+)`/g, (_, code) => keep("<code>" + code + "</code>"));
    text = text.replace(/\[([^\]\n]+)\]\(([^)\s]+)\)/g, (match, label, url) => {
      const href = safeUrl(url.replace(/&amp;/g, "&").replace(/\u0000\d+\u0000/g, ""), true);
      return href
        ? keep('<a href="' + escapeHtml(href) + '" target="_blank" rel="noopener noreferrer">' + emphasis(label) + "</a>")
        : label;
    });
    text = text.replace(/(^|[\s(])(https?:\/\/[^\s<)"\u0000]+[^\s<)".,;:!?'\u0000])/g, (match, before, url) =>
      before + keep('<a href="' + url + '" target="_blank" rel="noopener noreferrer">' + url + "</a>"));
    text = emphasis(text);
    for (let pass = 0; pass < 3 && text.indexOf("\u0000") >= 0; pass++) {
      text = text.replace(/\u0000(\d+)\u0000/g, (_, index) => kept[+index]);
    }
    return text;
  }
  function markdown(source) {
    const out = [];
    String(source ?? "").split(/```[^\n]*\n?/).forEach((part, index) => {
      if (index % 2) { out.push("<pre><code>" + escapeHtml(part.replace(/\n$/, "")) + "</code></pre>"); return; }
      let list = null;
      let paragraph = [];
      const flush = () => {
        if (paragraph.length) out.push("<p>" + paragraph.map(inlineMarkdown).join("<br>") + "</p>");
        paragraph = [];
        if (list) { out.push("<" + list.tag + ">" + list.items.join("") + "</" + list.tag + ">"); list = null; }
      };
      part.split("\n").forEach((line) => {
        const item = line.match(/^\s*([-*\u2022]|\d+[.)])\s+(.*)$/);
        if (item) {
          const tag = /\d/.test(item[1]) ? "ol" : "ul";
          if (paragraph.length || (list && list.tag !== tag)) flush();
          list = list ?? { tag, items: [] };
          list.items.push("<li>" + inlineMarkdown(item[2]) + "</li>");
        } else if (!line.trim()) flush();
        else {
          if (list) flush();
          paragraph.push(line.replace(/^#{1,6}\s+(.*)$/, "**$1**"));
        }
      });
      flush();
    });
    return out.join("");
  }

  function luminance(hex) {
    const value = parseInt(hex.slice(1), 16);
    const [red, green, blue] = [(value >> 16) & 255, (value >> 8) & 255, value & 255].map((channel) => {
      const c = channel / 255;
      return c <= 0.03928 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4);
    });
    return 0.2126 * red + 0.7152 * green + 0.0722 * blue;
  }
  function textColorOn(hex) { return luminance(hex) > 0.45 ? "#111827" : "#ffffff"; }

  /* localStorage as JSON; a blocked storage (private mode, sandbox) reads as empty. */
  const storage = {
    get(key) {
      try { return JSON.parse(localStorage.getItem(key) ?? "null"); } catch (e) { return null; }
    },
    set(key, value) {
      try { localStorage.setItem(key, JSON.stringify(value)); } catch (e) { /* not stored */ }
    },
    remove(key) {
      try { localStorage.removeItem(key); } catch (e) { /* not stored */ }
    }
  };
  /* Proactive rules (behaviour.proactive, widgets/config_schema.py). A page pattern is a glob over the page's
     path: `*` matches any characters (slashes too), the rest literally; the whole path, case-insensitively, a
     trailing slash making no difference. Matched without RegExp in at most len(pattern) x len(path) steps, so
     no pattern can hang a page. */
  function globMatches(pattern, text) {
    let p = 0, t = 0, star = -1, mark = 0;
    while (t < text.length) {
      if (pattern[p] === "*") { star = p++; mark = t; }
      else if (p < pattern.length && pattern[p] === text[t]) { p++; t++; }
      else if (star < 0) return false;
      else { p = star + 1; t = ++mark; }
    }
    while (pattern[p] === "*") p++;
    return p === pattern.length;
  }
  /* {shown, list: "hide_on"|"show_on"|"", pattern: the one that decided (or null), path}: hide_on wins; a
     non-empty show_on shows the widget only on the paths it matches. */
  function pageRule(proactive, url) {
    let path = "/";
    try { path = new URL(url, "https://site.invalid/").pathname; } catch (e) { /* not a URL: the root */ }
    const result = { shown: true, list: "", pattern: null, path };
    if (!proactive || !proactive.enabled) return result;
    const paths = [path];
    try { paths.push(decodeURI(path)); } catch (e) { /* a malformed escape: the raw path only */ }
    const variants = paths.flatMap((raw) => {
      const bare = raw.toLowerCase().replace(/\/+$/, "");
      return [bare || "/", bare + "/"];
    });
    const find = (list) => (list ?? []).find((pattern) =>
      variants.some((candidate) => globMatches(String(pattern).toLowerCase(), candidate)));
    const hidden = find(proactive.hide_on);
    if (hidden != null) return { ...result, shown: false, list: "hide_on", pattern: hidden };
    if (!(proactive.show_on ?? []).length) return result;
    const shown = find(proactive.show_on);
    return { ...result, shown: shown != null, list: "show_on", pattern: shown ?? null };
  }
  /* Where a widget remembers it greeted this visitor: localStorage ("days") or sessionStorage ("session": the
     tab's session) under sb:<widget id>:proactive; "page_view" remembers nothing. null: storage is blocked. */
  const FORGETFUL = { read: () => null, write() {} };
  function proactiveMemory(widgetId, proactive) {
    if (proactive.frequency === "page_view") return FORGETFUL;
    const key = "sb:" + widgetId + ":proactive";
    let area;
    try {
      area = proactive.frequency === "days" ? localStorage : sessionStorage;
      area.setItem(key + "~", "1");
      area.removeItem(key + "~");
    } catch (e) { return null; }
    return {
      read() {
        let state = null;
        try { state = JSON.parse(area.getItem(key) ?? "null"); } catch (e) { return null; }
        if (!state || typeof state.at !== "number") return null;
        const days = proactive.frequency === "days" ? proactive.frequency_days : 0;
        return days && Date.now() - state.at >= days * 86400000 ? null : state;
      },
      write(state) { try { area.setItem(key, JSON.stringify(state)); } catch (e) { /* full: not kept */ } }
    };
  }
  function validLocale(code) { return typeof code === "string" && /^[a-z]{2}(-[A-Z]{2})?$/.test(code); }
  function originOf(url) {
    try { return new URL(url, location.href).origin; } catch (e) { return ""; }
  }
  function randomId(prefix) {
    const random = window.crypto && crypto.randomUUID
      ? crypto.randomUUID() : Math.random().toString(36).slice(2) + Date.now().toString(36);
    return prefix + random.replace(/-/g, "");
  }
  /* Times and prices in the widget's locale (behaviour.locale), else the visitor's browser's. */
  function formatClock(timestamp, locale) {
    try {
      return new Date(timestamp).toLocaleTimeString(locale || [], { hour: "2-digit", minute: "2-digit" });
    } catch (e) { return ""; }
  }
  function formatMoney(price, currency, locale) {
    if (price == null || price === "") return "";
    try {
      return new Intl.NumberFormat(locale || undefined, { style: "currency", currency: currency || "USD" }).format(+price);
    } catch (e) { return price + " " + (currency ?? ""); }
  }

  const SYSTEM_FONT = "system-ui,-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif";
  const MODES = ["popup", "inline", "fullpage"];
  const LAUNCHER_STACK_STEP = 72;
  /* A ChatKit widget's public appearance styles ChatKit itself (inside the iframe); the frame around it
     (launcher, header) has no settings of its own and uses these. */
  const CHATKIT_FRAME_LOOK = {
    primary_color: "#4f46e5", background_color: "#ffffff", text_color: "#111827",
    bubble_user_color: "#4f46e5", bubble_bot_color: "#f3f4f6", title: "Chat", subtitle: "",
    launcher_icon: "chat", radius: 16, font_family: "", font_size: 15, avatar_url: ""
  };
  const VOICE_STATE_LABELS = { error: "voice_unavailable" };

  class Widget {
    constructor(options) {
      this.options = options;
      this.base = options.base;
      this.apiBase = options.base + "/api/widget/" + encodeURIComponent(options.key);
      this.query = options.widget ? "?widget=" + encodeURIComponent(options.widget) : "";
      this.busy = false;
      this.queue = [];
      this.voice = null;
      this.commands = [];  // API calls made before the widget rendered (run by ready())
    }

    /* UI texts come with the public config (widgets/widget_strings.py: behaviour.locale + overrides). */
    t(key) { return this.config.strings[key] ?? key; }

    fail(message, code) {
      if (this.failed) return;
      this.failed = true;
      this.commands = [];
      console.error("Switchboard: " + message);
      this.emit("error", { code: code || "unavailable", message });
    }

    /* The page's JavaScript API (window.Switchboard): events out, commands in. */
    emit(type, detail) { api.emit(this, type, detail); }

    command(method, args) {
      if (this.failed) { this.emit("error", { code: "unavailable", message: "This widget did not load." }); return; }
      if (!this.ready) { this.commands.push([method, args]); return; }
      if (this.type === "chatkit" && /^(send|reset|setLocale)$/.test(method)) {
        this.chatkitCommand(method, args[0]);
        return;
      }
      if (method === "open" || method === "close" || method === "toggle") {
        this.toggle(method === "toggle" ? null : method === "open", true);
      } else if (method === "send") {
        const text = typeof args[0] === "string" ? args[0].trim() : "";
        if (!text || text.length > 4000) {
          this.emit("error", { code: "invalid_argument", message: "send(text) needs 1 to 4000 characters of text." });
          return;
        }
        this.load();
        if (this.voice && this.voice.sendText) this.voice.sendText(text);
        else this.send(text);
      } else if (method === "reset") {
        this.reset(true);
      } else if (method === "setLocale") {
        this.setLocale(args[0]);
      } else if (method === "identify") {
        this.identify(args[0], args[1]);
      }
    }

    /* ChatKit widgets: send, reset and setLocale run inside our ChatKit page (templates/chatkit/page.html)
       with ChatKit's own API (sendUserMessage, setThreadId(null), the `locale` option). The frame loads if
       it has not yet (a closed popup); commands wait until it says it is ready, and a reloaded frame (a new
       identity) gets the locale again. Its `message` and `lead` events come back from the frame. */
    chatkitCommand(method, value) {
      let command;
      if (method === "send") {
        const text = typeof value === "string" ? value.trim() : "";
        if (!text || text.length > 4000) {
          this.emit("error", { code: "invalid_argument", message: "send(text) needs 1 to 4000 characters of text." });
          return;
        }
        command = { method, text };
      } else if (method === "setLocale") {
        if (!validLocale(value)) {
          this.emit("error", { code: "invalid_argument", message: "setLocale(code) needs a code such as \"de\" or \"fr-CA\"." });
          return;
        }
        this.chatkitLocale = this.locale = value;
        command = { method, locale: value };
      } else command = { method };
      if (!this.frame.src) this.frame.src = this.frame.dataset.src;
      this.frameCommands.push({ type: "switchboard:command", ...command });
      this.flushFrameCommands();
    }

    flushFrameCommands() {
      if (!this.frameReady || !this.frame || !this.frame.contentWindow) return;
      this.frameCommands.splice(0).forEach((command) => this.frame.contentWindow.postMessage(command, this.base));
    }

    /* What our ChatKit page tells the page's API: this visitor's messages (text only), a stored lead (its
       source), and that it is ready for commands. Only from our frame, at our origin. */
    onFrameMessage(event, tokenKey) {
      const data = event.data;
      if (!this.frame || event.source !== this.frame.contentWindow || !data || event.origin !== originOf(this.base)) return;
      if (data.type === "switchboard:chatkit-visitor" && typeof data.token === "string" && data.token.length < 300) {
        storage.set(tokenKey, data.token);
      } else if (data.type === "switchboard:chatkit-ready") {
        this.frameReady = true;
        if (this.chatkitLocale) this.frameCommands.unshift({ type: "switchboard:command", method: "setLocale", locale: this.chatkitLocale });
        this.flushFrameCommands();
      } else if (data.type === "switchboard:message" && (data.role === "visitor" || data.role === "assistant") &&
                 typeof data.text === "string" && data.text && data.text.length <= 20000) {
        this.emit("message", { role: data.role, text: data.text });
      } else if (data.type === "switchboard:lead" && typeof data.source === "string") {
        this.emit("lead", { source: data.source.slice(0, 32) });
      }
    }

    /* Switchboard('identify', {user_id, email, name, attributes}, {user_hash}): the server checks the hash
       (licenses/identity.py) and answers a signed token that goes with every chat turn. Turns wait for the
       answer. Another user than the one this browser last chatted as gets a new conversation: one user's
       history is never shown to, or continued by, another. */
    identify(data, options) {
      if (!data || typeof data !== "object" || Array.isArray(data)) {
        this.emit("error", { code: "invalid_argument", message: "identify({user_id, ...}, {user_hash}) takes an object." });
        return;
      }
      const body = {
        user_id: data.user_id, email: data.email, name: data.name, attributes: data.attributes,
        user_hash: options && typeof options === "object" ? options.user_hash : undefined
      };
      const identityKey = "sb:" + this.options.widget + ":identity";
      const done = this.identifying = fetch(this.apiBase + "/identify" + this.query, {
        method: "POST",
        credentials: "omit",
        headers: { "Content-Type": "application/json", "X-Switchboard-Visitor": this.visitorId ?? "" },
        body: JSON.stringify(body)
      }).then((response) => response.json().catch(() => ({})).then((answer) => {
        if (!response.ok || typeof answer.token !== "string") {
          const error = answer.error ?? {};
          this.identityToken = null;
          // Refused, but the page says the visitor is not the user this browser chatted as: that
          // user's conversation is not shown to (or continued by) this visitor.
          const previous = storage.get(identityKey);
          if (previous != null && previous !== String(data.user_id)) {
            storage.remove(identityKey);
            this.restartForIdentity();
          }
          console.error("Switchboard: identify was refused: " + (error.message ?? "HTTP " + response.status) +
            " (" + (error.code ?? "identity_invalid") + ")");
          this.emit("error", { code: error.code ?? "identity_invalid", message: error.message ?? "" });
          return;
        }
        const previous = storage.get(identityKey);
        this.identityToken = answer.token;
        storage.set(identityKey, answer.user_id);
        if (previous != null && previous !== answer.user_id) this.restartForIdentity();
        else this.sendFrameIdentity();
      }), () => {
        this.identityToken = null;
        this.emit("error", { code: "network_error", message: "identify could not reach the server." });
      }).finally(() => { if (this.identifying === done) this.identifying = null; });
    }

    markReady() {
      this.ready = true;
      this.emit("ready", {});
      const commands = this.commands;
      this.commands = [];
      commands.forEach(([method, args]) => this.command(method, args));
    }

    boot() {
      return fetch(this.apiBase + "/config" + this.query, { credentials: "omit" }).then((response) =>
        response.json().catch(() => ({})).then((body) => {
          if (!response.ok) {
            const error = body?.error ?? {};
            const refused = /^(domain_not_allowed|origin_missing)$/.test(error.code ?? "");
            // Name the host that was refused: that is what the site owner has to add to the license.
            this.fail((refused ? "this page's host \"" + location.host + "\" was refused: " : "") +
              (error.message ?? "the widget is not available here") + " (" + (error.code ?? response.status) + ")",
            error.code);
            return;
          }
          this.config = body.config;
          this.type = body.type;
          this.options.widget = body.widget;
          this.query = "?widget=" + encodeURIComponent(this.options.widget);
          this.render();
        }), () => {
        // A refused origin gets no CORS headers, so the browser hides the 403 body from us.
        this.fail("this page's host \"" + location.host + "\" is not on the license's allowed domains, " +
          "or the server is unreachable.", "unreachable");
      });
    }

    /* The page's data-mode / data-position override the config's embed settings. */
    render() {
      const embed = this.config.embed;
      // data-mode is optional page input: empty means the config's mode; an unknown one means popup.
      const requested = this.options.mode || embed.mode;
      const mode = MODES.includes(requested) ? requested : "popup";
      let target = null;
      if (mode === "inline") {
        target = this.options.target ? document.querySelector(this.options.target) : null;
        if (!target) {
          this.fail("inline mode needs data-target pointing at an element on the page.", "no_target");
          return;
        }
      }
      this.mode = mode;
      // Proactive page rules decide whether a popup's launcher is on this page at all (the preview tests a URL).
      const page = this.options.preview ? this.options.preview.pageUrl : location.href;
      this.rule = mode === "popup" && page ? pageRule(this.config.behaviour.proactive, page) : { shown: true };
      this.position = this.options.position || embed.position;
      this.locale = this.config.behaviour.locale;
      this.look = this.type === "chatkit"
        ? { ...CHATKIT_FRAME_LOOK, color_scheme: this.config.appearance.color_scheme }
        : this.config.appearance;
      this.startSession();
      this.renderRoot(target);
      this.renderLauncher();
      this.renderPanel();
      (mode === "inline" ? target : document.body).appendChild(this.host);
      if (this.type === "chatkit") {
        this.renderChatKitFrame();
      } else {
        this.renderConversation();
      }
      this.rootBox.appendChild(this.panel);
      this.listenForEscape();
      if (this.type !== "chatkit" && mode !== "popup") this.load();
      this.startProactive();
      this.drawProactive();
      if (!this.ready) this.markReady();
    }

    startSession() {
      this.visitorId = storage.get("sb:visitor") ?? randomId("v_");
      storage.set("sb:visitor", this.visitorId);
      this.storageKey = "sb:" + this.options.widget + ":";
      const saved = storage.get(this.storageKey + "session");
      this.resumed = !!saved;  // only a returning visitor has history worth asking n8n for
      this.sessionId = saved ?? randomId("s_");
      storage.set(this.storageKey + "session", this.sessionId);
    }

    themeVariables(dark) {
      const look = this.look;
      const embed = this.config.embed;
      const primary = look.primary_color;
      // Several popups in one corner (one per widget) stack their launchers instead of hiding each other.
      let offsetY = embed.offset_y;
      (window.SwitchboardWidgets ?? []).forEach((other) => {
        if (other !== this && other.rootBox && other.mode === "popup" && other.position === this.position &&
            other.rule.shown) {
          offsetY += LAUNCHER_STACK_STEP;
        }
      });
      return {
        "--p": primary, "--pt": textColorOn(primary), "--pc": dark && luminance(primary) < 0.2 ? "#a5b4fc" : primary,
        "--bg": dark ? "#0f172a" : look.background_color, "--tx": dark ? "#e5e7eb" : look.text_color,
        "--ub": look.bubble_user_color, "--ut": textColorOn(look.bubble_user_color),
        "--bb": dark ? "#1e293b" : look.bubble_bot_color, "--bt": dark ? "#e5e7eb" : textColorOn(look.bubble_bot_color),
        "--ln": dark ? "#334155" : "#e5e7eb", "--rd": look.radius + "px",
        // An empty font_family means the visitor's system font.
        "--f": look.font_family || SYSTEM_FONT,
        "--fs": look.font_size + "px", "--w": embed.width + "px", "--h": embed.height + "px",
        "--ox": embed.offset_x + "px", "--oy": offsetY + "px"
      };
    }

    /* The host element, its shadow root, the themed box everything sits in. */
    renderRoot(target) {
      const host = this.host = document.createElement("switchboard-widget");
      host.setAttribute("data-widget", this.options.widget);
      host.setAttribute("data-mode", this.mode);
      const shadow = this.root = host.attachShadow({ mode: "open" });
      const scheme = this.look.color_scheme;
      const dark = scheme === "dark" || (scheme === "auto" && window.matchMedia &&
        matchMedia("(prefers-color-scheme: dark)").matches);
      const side = this.position === "bottom-left" ? "left" : "right";
      const box = this.rootBox = element("div", "r " + this.mode + " " + side + (dark ? " dark" : ""));
      if (this.locale) box.lang = this.locale;  // screen readers pronounce the texts in their language
      const variables = this.themeVariables(dark);
      Object.keys(variables).forEach((name) => box.style.setProperty(name, variables[name]));
      // Inline fills its target; a target with no height of its own (an empty <div>) gets the config's height.
      if (target && !target.clientHeight) box.style.height = "var(--h)";
      // A constructed stylesheet is not an inline <style>, so a strict style-src CSP on the page allows it.
      try {
        const sheet = new CSSStyleSheet();
        sheet.replaceSync(CSS);
        shadow.adoptedStyleSheets = [sheet];
      } catch (e) { shadow.appendChild(element("style")).textContent = CSS; }
      shadow.appendChild(box);
    }

    renderLauncher() {
      if (this.mode !== "popup") return;
      this.icon = this.look.launcher_icon;
      const launcher = this.launcher = button("lau", svg(this.icon));
      this.labelLauncher(false);
      launcher.setAttribute("aria-expanded", "false");
      launcher.setAttribute("aria-controls", "sb-panel");
      launcher.onclick = () => this.toggle();
      // Hidden by the page rules: no launcher at all; the page's Switchboard.open() still opens the chat.
      launcher.hidden = !this.rule.shown;
      this.rootBox.appendChild(launcher);
      // The greeting bubble goes into a polite live region that is already there, so it is announced.
      this.greetingBox = this.rootBox.appendChild(element("div", "pl"));
      this.greetingBox.setAttribute("aria-live", "polite");
    }

    labelLauncher(open) {
      const greeted = this.proactive && this.proactive.greeted;
      this.launcher.setAttribute("aria-label", this.t(open ? "close_chat" : "open_chat") + ": " + this.look.title +
        (greeted && greeted.unread && !open ? " (" + this.t("unread_message") + ")" : ""));
    }

    /* Proactive rules (popups whose page rules show them), started once per page view whatever redraws
       (setLocale) follow: the greeting bubble after its delay, auto-open after N seconds or on exit intent
       (a desktop mouse leaving through the top; never on touch screens), each at most once per period. */
    startProactive() {
      const proactive = this.config.behaviour.proactive;
      if (this.proactive || !proactive || !proactive.enabled || this.mode !== "popup" || !this.rule.shown) return;
      const preview = this.options.preview;
      // Storage blocked: the widget could not remember it greeted, so it stays quiet rather than nag on every page.
      const memory = preview ? FORGETFUL : proactiveMemory(this.options.widget, proactive);
      const state = this.proactive = { memory: memory ?? FORGETFUL, timers: [], greeted: null, bubble: false };
      const earlier = memory && memory.read();
      if (!memory || earlier) {
        if (earlier && earlier.unread && proactive.message) state.greeted = earlier;  // the badge stays until read
        return;
      }
      // The preview shows the bubble at once; its "Replay" runs the timeline as a first visit would.
      if (preview && !preview.replay) { if (proactive.message) this.proactiveFire("greeting"); return; }
      const later = (seconds, action) => state.timers.push(setTimeout(() => this.proactiveFire(action), seconds * 1000));
      if (proactive.message) later(proactive.message_delay_seconds, "greeting");
      if (proactive.open_after_seconds > 0) later(proactive.open_after_seconds, "open");
      if (proactive.open_on_exit_intent && window.matchMedia && matchMedia("(hover: hover) and (pointer: fine)").matches) {
        state.exit = (event) => { if (!event.relatedTarget && event.clientY <= 0) this.proactiveFire("open"); };
        document.addEventListener("mouseout", state.exit);
      }
    }

    proactiveFire(action) {
      const state = this.proactive;
      if (!this.panel.hidden) return;
      state.greeted = state.greeted ?? { at: Date.now(), unread: false };
      if (action === "greeting") {
        state.greeted.unread = state.bubble = true;
        state.memory.write(state.greeted);
        this.drawProactive();
        return;
      }
      state.memory.write(state.greeted);
      this.toggle(true, "quiet", { proactive: true });  // focus stays where the visitor is
    }

    stopProactive() {
      const state = this.proactive;
      if (!state) return;
      state.timers.forEach(clearTimeout);
      state.timers = [];
      if (state.exit) document.removeEventListener("mouseout", state.exit);
      state.exit = null;
    }

    /* The chat opened, however: the greeting is read and nothing proactive happens any more on this page. */
    proactiveRead() {
      const state = this.proactive;
      if (!state) return;
      this.stopProactive();
      state.bubble = false;
      state.greeted = { at: state.greeted ? state.greeted.at : Date.now(), unread: false };
      state.memory.write(state.greeted);
      this.drawProactive();
    }

    /* The bubble and the launcher's unread badge, drawn from the proactive state (again after a redraw). */
    drawProactive() {
      const state = this.proactive;
      if (!state || !this.launcher) return;
      const open = !this.panel.hidden;
      const unread = !!(state.greeted && state.greeted.unread) && !open;
      const badge = this.launcher.querySelector(".bd");
      if (badge && !unread) badge.remove();
      if (unread && !badge) this.launcher.appendChild(element("span", "bd", "1")).setAttribute("aria-hidden", "true");
      this.labelLauncher(open);
      const box = this.greetingBox;
      if (!state.bubble || open) { box.innerHTML = ""; return; }
      if (box.firstChild) return;
      const bubble = box.appendChild(element("div", "pb"));
      const text = bubble.appendChild(button("pbt", null));
      text.textContent = this.config.behaviour.proactive.message;
      text.onclick = () => this.toggle(true);
      const dismiss = bubble.appendChild(button("pbx", svg("close"), this.t("dismiss_message")));
      // Dismissed, the bubble goes; the badge stays until the chat is opened.
      dismiss.onclick = () => {
        const focused = bubble.contains(this.root.activeElement);
        state.bubble = false;
        this.drawProactive();
        if (focused) this.launcher.focus();
      };
      bubble.onkeydown = (event) => { if (event.key === "Escape") dismiss.onclick(); };
    }

    renderPanel() {
      const panel = this.panel = element("section", "pn");
      panel.setAttribute("role", this.mode === "popup" ? "dialog" : "region");
      panel.setAttribute("aria-label", this.look.title);
      panel.id = "sb-panel";
      if (this.mode === "popup") panel.hidden = true;
      panel.appendChild(this.renderHeader());
    }

    renderHeader() {
      const look = this.look;
      const header = this.header = element("header", "hd");
      const avatar = element("div", "av", svg(look.launcher_icon));
      const avatarUrl = safeUrl(look.avatar_url);
      if (avatarUrl) {
        avatar.innerHTML = "";
        const image = element("img");
        image.src = avatarUrl;
        image.alt = "";
        avatar.appendChild(image);
      }
      const titles = element("div", "ti");
      titles.appendChild(element("b")).textContent = look.title;
      if (look.subtitle) titles.appendChild(element("span")).textContent = look.subtitle;
      header.appendChild(avatar);
      header.appendChild(titles);
      return header;
    }

    addHeaderClose() {
      const close = button("ib", svg(this.mode === "popup" ? "down" : "close"), this.t("close_chat"));
      close.onclick = () => this.toggle(false);
      this.header.appendChild(close);
    }

    addHeaderReset() {
      const reset = button("ib", svg("reset"), this.t("new_conversation"));
      reset.title = this.t("new_conversation");
      reset.onclick = () => this.reset();
      this.header.appendChild(reset);
    }

    /* ChatKit: the panel holds the ChatKit page in an iframe (loaded when a popup first opens). */
    renderChatKitFrame() {
      if (this.mode === "popup") this.addHeaderClose();
      const frame = element("iframe", "fr");
      frame.title = this.look.title;
      frame.setAttribute("allow", "microphone; clipboard-write");
      // The ChatKit page only serves the site that frames it, proven by the Referer's origin.
      frame.referrerPolicy = "origin";
      // The ChatKit page's signed visitor, kept here (first-party storage) for the next visit.
      const tokenKey = "sb:ck:" + this.options.key + ":vt";
      const token = storage.get(tokenKey);
      const page = this.options.frame ?? "/widget/chatkit/" + encodeURIComponent(this.options.key);
      frame.dataset.src = this.base + page + "?widget=" + encodeURIComponent(this.options.widget) +
        (token ? "&vt=" + encodeURIComponent(token) : "");
      this.frameReady = false;
      this.frameCommands = [];
      window.addEventListener("message", (event) => this.onFrameMessage(event, tokenKey));
      if (this.mode !== "popup") frame.src = frame.dataset.src;
      frame.addEventListener("load", () => { this.sendFrameContext(); this.sendFrameIdentity(); });
      this.frame = frame;
      this.panel.appendChild(frame);
    }

    /* n8n: message log, starter prompts, voice bar, composer, disclaimer. */
    renderConversation() {
      if (this.options.widget) this.addHeaderReset();
      if (this.mode === "popup") this.addHeaderClose();
      this.panel.appendChild(this.renderMessages());
      this.starterBox = this.panel.appendChild(element("div", "st"));
      this.panel.appendChild(this.renderVoiceBar());
      this.panel.appendChild(this.renderComposer());
      const disclaimer = this.config.behaviour.disclaimer;
      if (disclaimer) this.panel.appendChild(element("div", "dc")).textContent = disclaimer;
    }

    renderMessages() {
      const log = this.messageLog = element("div", "lg");
      log.setAttribute("role", "log");
      log.setAttribute("aria-live", "polite");
      log.setAttribute("aria-relevant", "additions");
      log.setAttribute("aria-label", this.t("conversation"));
      return log;
    }

    renderVoiceBar() {
      const bar = this.voiceBar = element("div", "vb");
      bar.hidden = true;
      bar.setAttribute("role", "status");
      bar.innerHTML = '<span class="dt"></span><span class="vl"></span>';
      // The configurator preview's calls are test calls on the draft (never counted): marked as such.
      const test = this.options.voicePreview;
      if (test) {
        const row = element("div", "tw");
        const tag = row.appendChild(element("span", "tc"));
        tag.textContent = test.label;
        if (test.note) tag.title = test.note;
        bar.insertBefore(row, bar.firstChild);
      }
      const mute = this.muteButton = button("", svg("micoff") + "<span></span>");
      mute.lastChild.textContent = this.t("mute");
      mute.setAttribute("aria-pressed", "false");
      mute.onclick = () => this.setMuted(mute.getAttribute("aria-pressed") !== "true");
      const hangUp = button("hu", svg("hang") + "<span></span>");
      hangUp.lastChild.textContent = this.t("end_call");
      hangUp.onclick = () => this.hangUp();
      bar.appendChild(mute);
      bar.appendChild(hangUp);
      return bar;
    }

    renderComposer() {
      const composer = element("form", "cp");
      const input = this.input = element("textarea");
      input.rows = 1;
      input.maxLength = 4000;
      input.placeholder = this.t("placeholder");
      input.setAttribute("aria-label", this.t("message"));
      const send = this.sendButton = element("button", "sd", svg("send"));
      send.type = "submit";
      send.disabled = true;
      send.setAttribute("aria-label", this.t("send"));
      input.oninput = () => {
        send.disabled = !input.value.trim();
        input.style.height = "auto";
        input.style.height = Math.min(input.scrollHeight, 120) + "px";
      };
      input.onkeydown = (event) => {
        if (event.key === "Enter" && !event.shiftKey && !event.isComposing) { event.preventDefault(); this.submit(); }
      };
      composer.onsubmit = (event) => { event.preventDefault(); this.submit(); };
      composer.appendChild(input);
      if (this.config.voice.enabled) {
        const mic = this.micButton = button("mc", svg("mic"), this.t("voice_start"));
        mic.setAttribute("aria-pressed", "false");
        mic.onclick = () => (this.voice || this.voiceState === "connecting" ? this.hangUp() : this.startVoice());
        composer.appendChild(mic);
      }
      composer.appendChild(send);
      return composer;
    }

    listenForEscape() {
      this.panel.addEventListener("keydown", (event) => {
        if (event.key === "Escape" && this.mode === "popup") { event.stopPropagation(); this.toggle(false); }
      });
    }

    /* Popups only (inline and full page are always open). `fromApi`: a call of the page's script, which
       moves focus into an opened chat but never out to the launcher; proactive opens pass "quiet". */
    toggle(open, fromApi, detail) {
      if (this.mode !== "popup") return;
      const opening = open == null ? this.panel.hidden : open;
      if (opening === !this.panel.hidden) return;
      this.panel.hidden = !opening;
      this.rootBox.classList.toggle("open", opening);
      this.launcher.setAttribute("aria-expanded", String(opening));
      this.launcher.innerHTML = svg(opening ? "down" : this.icon);
      this.labelLauncher(opening);
      if (opening) {
        this.proactiveRead();
        if (this.frame && !this.frame.src) this.frame.src = this.frame.dataset.src;
        this.load();
        if (this.input && fromApi !== "quiet") this.input.focus();
      } else if (!fromApi) this.launcher.focus();
      this.emit(opening ? "open" : "close", detail ?? {});
    }

    /* Conversation history: n8n's loadPreviousSession when configured, else this browser's copy. */
    load() {
      if (this.loaded || !this.messageLog) return;
      this.loaded = true;
      const behaviour = this.config.behaviour;
      const saved = storage.get(this.storageKey + "log") ?? [];
      const replayAll = () => saved.forEach((entry) => this.replay(entry));
      this.showIntro(saved);
      if (behaviour.load_previous_session && this.resumed) {
        this.post({ action: "loadPreviousSession", sessionId: this.sessionId })
          .then((response) => (response.ok ? response.json() : null))
          .then((data) => {
            const messages = data?.messages ?? [];
            if (messages.length) messages.forEach((message) => this.bubble(message.role, message.text, -1, true));
            else replayAll();
            this.showStarters();
          }, () => { replayAll(); this.showStarters(); });
      } else {
        if (behaviour.history) replayAll();
        this.showStarters();
      }
    }

    replay(entry) {
      if (entry.text) this.bubble(entry.role, entry.text, entry.ts, true);
      (entry.ui ?? []).forEach((event) => this.renderEvent(event, true));
    }

    /* The greeting is as old as the conversation: the time it was first shown, kept with the session,
       never later than the first message under it. */
    showIntro(saved) {
      const behaviour = this.config.behaviour;
      const first = saved[0] && saved[0].ts;
      let startedAt = storage.get(this.storageKey + "started");
      if (!startedAt || (first && first < startedAt)) {
        startedAt = first || Date.now();
        storage.set(this.storageKey + "started", startedAt);
      }
      if (behaviour.greeting) this.bubble("assistant", behaviour.greeting, startedAt, true);
      behaviour.initial_messages.forEach((text) => this.bubble("assistant", text, startedAt, true));
    }

    showStarters() {
      this.starterBox.innerHTML = "";
      if (this.messageLog.querySelector(".m.u")) return;
      this.config.behaviour.starter_prompts.forEach((prompt) => {
        const starter = button("", null);
        starter.textContent = prompt;
        starter.onclick = () => this.send(prompt);
        this.starterBox.appendChild(starter);
      });
    }

    persist(role, text, ui, timestamp) {
      const saved = storage.get(this.storageKey + "log") ?? [];
      saved.push({ role, text, ui: ui ?? [], ts: timestamp || Date.now() });
      storage.set(this.storageKey + "log", saved.slice(-60));
    }

    reset(fromApi) {
      if (this.voice) this.hangUp();
      storage.remove(this.storageKey + "log");
      storage.remove(this.storageKey + "started");
      this.queue = [];
      this.sessionId = randomId("s_");
      this.resumed = false;
      storage.set(this.storageKey + "session", this.sessionId);
      this.messageLog.innerHTML = "";
      this.loaded = false;
      this.load();
      if (!fromApi) this.input.focus();
    }

    /* The texts of another locale (GET /config?locale=), then the widget drawn again around the same
       conversation log; while a reply is on its way the switch waits for it. */
    setLocale(code) {
      if (!validLocale(code)) {
        this.emit("error", { code: "invalid_argument", message: "setLocale(code) needs a code such as \"de\" or \"fr-CA\"." });
        return;
      }
      fetch(this.apiBase + "/config" + this.query + "&locale=" + code, { credentials: "omit" })
        .then((response) => (response.ok ? response.json() : Promise.reject(new Error("HTTP " + response.status))))
        .then((body) => {
          this.config.strings = body.config.strings;
          this.config.behaviour.locale = body.config.behaviour.locale;
          this.redraw();
        })
        .catch((err) => this.emit("error", { code: "locale_unavailable", message: err.message }));
    }

    redraw() {
      if (this.busy) { this.redrawWhenIdle = true; return; }
      const wasOpen = this.mode === "popup" && !this.panel.hidden;
      const log = this.messageLog;
      const voiceState = this.voiceState;
      this.host.remove();
      this.render();
      if (log) {
        this.messageLog.replaceWith(log);
        this.messageLog = log;
        if (this.loaded) this.showStarters();
      }
      if (voiceState && voiceState !== "idle") this.setVoiceState(voiceState);
      if (wasOpen) this.toggle(true, "quiet");
    }

    bubble(role, text, timestamp, quiet) {
      const message = element("div", "m " + (role === "user" ? "u" : "a"));
      const html = role === "user" ? escapeHtml(text).replace(/\n/g, "<br>") : markdown(text);
      message.appendChild(element("div", "b", html));
      const when = message.ts = timestamp || Date.now();
      if (when > 0) {  // -1: a message from n8n's memory, whose time we do not know
        const time = message.appendChild(element("time", "tm"));
        time.dateTime = new Date(when).toISOString();
        time.textContent = formatClock(when, this.locale);
      }
      this.showPartial(null);
      this.messageLog.appendChild(message);
      if (!quiet) this.scroll();
      else this.messageLog.scrollTop = this.messageLog.scrollHeight;
      return message;
    }

    scroll() {
      const log = this.messageLog;
      setTimeout(() => { log.scrollTop = log.scrollHeight; }, 0);
    }

    showTyping(on) {
      if (this.typingBubble) { this.typingBubble.remove(); this.typingBubble = null; }
      if (!on) return;
      const typing = this.typingBubble = element("div", "m a", '<div class="b ty"><i></i><i></i><i></i></div>');
      typing.firstChild.setAttribute("aria-label", this.t("typing"));
      this.messageLog.appendChild(typing);
      this.scroll();
    }

    showPartial(role, text) {
      if (this.partialBubble) { this.partialBubble.remove(); this.partialBubble = null; }
      if (!text) return;
      const partial = this.partialBubble = element("div", "m pt " + (role === "user" ? "u" : "a"));
      partial.setAttribute("aria-hidden", "true");
      partial.appendChild(element("div", "b")).textContent = text;
      this.messageLog.appendChild(partial);
      this.scroll();
    }

    /* What this page tells the assistant (behaviour.page_context; the server checks it again). */
    pageContext() {
      const context = { page: location.href.slice(0, 2000) };
      if (!this.config.behaviour.page_context) return context;
      context.title = document.title.slice(0, 300);
      context.referrer = /^https?:/.test(document.referrer) ? document.referrer.slice(0, 2000) : "";
      const custom = api.context(this);
      if (custom) context.context = custom;
      return context;
    }

    /* ChatKit: the frame (our page) sends the identity token with each request to our ChatKit server. */
    sendFrameIdentity() {
      if (!this.frame || !this.frame.contentWindow || !this.identityToken) return;
      this.frame.contentWindow.postMessage({ type: "switchboard:identity", token: this.identityToken }, this.base);
    }

    /* A new user: a new conversation (n8n: a new session and an empty log; ChatKit: the frame reloads,
       and the server keys threads by the identity). */
    restartForIdentity() {
      if (this.type === "chatkit") {
        if (this.frame && this.frame.src) { this.frameReady = false; this.frame.src = this.frame.dataset.src; }
      } else {
        this.reset(true);
      }
    }

    /* ChatKit: the frame (our page) sends the context with each request to our ChatKit server. */
    sendFrameContext() {
      if (!this.frame || !this.frame.contentWindow || !this.config.behaviour.page_context) return;
      this.frame.contentWindow.postMessage({ type: "switchboard:page-context", context: this.pageContext() }, this.base);
    }

    post(body, path) {
      body.metadata = body.metadata ?? { visitorId: this.visitorId, ...this.pageContext() };
      body.widget = this.options.widget;
      // A turn made while identify() is on its way waits for it, then carries the identity token.
      return Promise.resolve(this.identifying).then(() => {
        const headers = { "Content-Type": "application/json", "X-Switchboard-Visitor": this.visitorId };
        if (this.identityToken) headers["X-Switchboard-Identity"] = this.identityToken;
        return fetch(this.apiBase + (path ?? "/chat") + this.query, {
          method: "POST", credentials: "omit", headers, body: JSON.stringify(body)
        });
      });
    }

    submit() {
      const text = this.input.value.trim();
      if (!text) return;
      this.input.value = "";
      this.input.oninput();
      if (this.voice && this.voice.sendText) {
        this.starterBox.innerHTML = "";
        try { this.voice.sendText(text); } catch (e) { this.setVoiceState("error", this.t("not_delivered")); }
        return;
      }
      this.send(text);
    }

    /* One message at a time goes to the assistant (n8n keeps one memory per session). A message typed
       while it answers is never dropped: it shows at once, marked queued, and is sent right after the
       current reply, then moved below that reply so the log reads in the order the assistant saw it. */
    send(text, userMessage) {
      const oldError = userMessage && userMessage.querySelector(".er");
      if (oldError) oldError.remove();
      this.starterBox.innerHTML = "";
      if (!userMessage) this.emit("message", { role: "visitor", text });
      if (this.busy) {
        const queued = userMessage ?? this.bubble("user", text);
        queued.classList.add("q");
        if (!queued.querySelector(".qn")) queued.appendChild(element("div", "tm qn")).textContent = this.t("queued");
        this.queue.push({ text, message: queued });
        return;
      }
      this.busy = true;
      let message = userMessage;
      if (message) {
        message.classList.remove("q");
        const note = message.querySelector(".qn");
        if (note) { note.remove(); this.messageLog.appendChild(message); }
      } else message = this.bubble("user", text);
      this.showTyping(true);
      let finished = false;
      const done = () => {
        if (finished) return;
        finished = true;
        this.busy = false;
        this.showTyping(false);
        if (this.redrawWhenIdle) { this.redrawWhenIdle = false; this.redraw(); }
        setTimeout(() => { const next = this.queue.shift(); if (next) this.send(next.text, next.message); }, 0);
      };
      this.post({ action: "sendMessage", sessionId: this.sessionId, chatInput: text }).then((response) => {
        const contentType = response.headers.get("content-type") ?? "";
        if (!response.ok) {
          return response.json().catch(() => ({})).then((body) => {
            const error = body?.error ?? {};
            if (response.status === 403 || response.status === 404) {
              this.fail((error.message ?? "chat refused") + " (" + (error.code ?? response.status) + ")", error.code);
            }
            throw Object.assign(new Error(error.message ?? this.t("error")), { code: error.code ?? "http_" + response.status });
          });
        }
        this.persist("user", text, null, message.ts);
        if (contentType.indexOf("ndjson") >= 0 && response.body && response.body.getReader) {
          return this.stream(response, done);
        }
        return response.json().then((body) => { done(); this.reply(body.output ?? "", body.ui ?? []); });
      }).catch((err) => {
        done();
        this.showSendError(message, err, () => this.send(text, message));
        if (!this.failed) this.emit("error", { code: err.code ?? "network_error", message: err.message ?? "" });
      });
    }

    showSendError(message, err, retry) {
      const error = element("div", "er");
      error.setAttribute("role", "alert");
      error.appendChild(element("span")).textContent =
        err && err.message && !/fetch/i.test(err.message) ? err.message : this.t("not_delivered");
      const retryButton = button("", null);
      retryButton.textContent = this.t("retry");
      retryButton.onclick = retry;
      error.appendChild(retryButton);
      message.appendChild(error);
      this.scroll();
    }

    reply(text, ui) {
      const message = text && this.bubble("assistant", text);
      if (text) this.emit("message", { role: "assistant", text });
      ui.forEach((event) => this.renderEvent(event));
      this.persist("assistant", text, ui, message && message.ts);
    }

    /* NDJSON relay: {"type":"item","content"} … {"type":"end","output","ui"} | {"type":"error","code","message"}. */
    stream(response, done) {
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      let text = "";
      let message = null;
      let bubbleBody = null;
      const handle = (line) => {
        if (!line.trim()) return;
        let event;
        try { event = JSON.parse(line); } catch (e) { return; }
        if (event.type === "item" && event.content) {
          if (!message) {
            this.showTyping(false);
            message = this.bubble("assistant", "");
            bubbleBody = message.querySelector(".b");
          }
          text += event.content;
          bubbleBody.innerHTML = markdown(text);
          this.messageLog.scrollTop = this.messageLog.scrollHeight;
        } else if (event.type === "end") {
          const ui = event.ui ?? [];
          ui.forEach((item) => this.renderEvent(item));
          this.persist("assistant", event.output || text, ui, message && message.ts);
          if (event.output || text) this.emit("message", { role: "assistant", text: event.output || text });
        } else if (event.type === "error") {
          throw Object.assign(new Error(event.message ?? this.t("interrupted")), { code: event.code ?? "interrupted" });
        }
      };
      const pump = () => reader.read().then((chunk) => {
        if (chunk.done) { handle(buffer); done(); return; }
        buffer += decoder.decode(chunk.value, { stream: true });
        const lines = buffer.split("\n");
        buffer = lines.pop();
        lines.forEach(handle);
        return pump();
      });
      return pump();
    }

    /* UI events: the same renderer for text chat and voice. */
    renderEvent(event, quiet) {
      if (!event || !event.type) return;
      const box = element("div", "ui");
      if (event.type === "ui.product_cards") {
        box.appendChild(this.renderProductCards(event));
      } else if (event.type === "ui.trade_in_form") {
        box.appendChild(this.renderTradeInForm(event));
      } else if (event.type === "ui.demo_clip" || event.type === "ui.meeting_link") {
        const card = this.renderLinkCard(event);
        if (!card) return;
        box.appendChild(card);
      } else return;
      this.messageLog.appendChild(box);
      if (!quiet) this.scroll();
    }

    renderProductCards(event) {
      const row = element("div", "cs");
      row.setAttribute("role", "list");
      row.setAttribute("aria-label", this.t("products"));
      (event.products ?? []).slice(0, 10).forEach((product) => row.appendChild(this.renderProductCard(product)));
      return row;
    }

    renderProductCard(product) {
      const card = element("div", "cd");
      card.setAttribute("role", "listitem");
      const imageUrl = safeUrl(product.image_url);
      const placeholder = element("div", "ph");
      placeholder.textContent = (product.title || "?").charAt(0).toUpperCase();
      if (imageUrl) {
        const image = element("img");
        image.src = imageUrl;
        image.alt = product.title ?? "";
        image.loading = "lazy";
        // No broken image: the placeholder takes its place.
        image.onerror = () => { if (image.parentNode) image.parentNode.replaceChild(placeholder, image); };
        card.appendChild(image);
      } else card.appendChild(placeholder);
      const info = element("div", "ci");
      info.appendChild(element("b")).textContent = product.title ?? "";
      if (product.description) info.appendChild(element("span", "ds")).textContent = product.description;
      const price = formatMoney(product.price, product.currency, this.locale);
      if (price) info.appendChild(element("span", "pr")).textContent = price;
      if (product.in_stock === false) info.appendChild(element("span", "os")).textContent = this.t("out_of_stock");
      const url = safeUrl(product.url);
      if (url) info.appendChild(externalLink(url, this.t("view_product"), "bt"));
      card.appendChild(info);
      return card;
    }

    renderLinkCard(event) {
      const url = safeUrl(event.url);
      if (!url) return null;
      const isClip = event.type === "ui.demo_clip";
      const card = element("div", "cdw");
      card.appendChild(element("h4")).textContent = event.title || (isClip ? event.topic : this.t("book_meeting"));
      if (isClip && /\.(mp4|webm|ogg)(\?|$)/i.test(url)) {
        const video = element("video");
        video.src = url;
        video.controls = true;
        video.preload = "metadata";
        card.appendChild(video);
      }
      card.appendChild(externalLink(url, this.t(isClip ? "watch_demo" : "pick_time"), "bt"));
      return card;
    }

    renderTradeInForm(event) {
      const form = element("form", "cdw fm");
      form.noValidate = true;
      form.appendChild(element("h4")).textContent = this.t("trade_in_title");
      (event.fields ?? []).forEach((field) => form.appendChild(this.renderFormField(field, event)));
      const fieldError = element("div", "fe");
      fieldError.setAttribute("role", "alert");
      form.appendChild(fieldError);
      const submit = element("button", "bt");
      submit.textContent = this.t("get_quote");
      submit.type = "submit";
      form.appendChild(submit);
      form.onsubmit = (submitEvent) => {
        submitEvent.preventDefault();
        const values = {};
        let missing = null;
        Array.prototype.forEach.call(form.elements, (input) => {
          if (!input.name) return;
          values[input.name] = input.value.trim();
          if (input.required && !values[input.name] && !missing) missing = input;
        });
        if (missing) {
          const label = missing.parentNode.firstChild.textContent.replace(" *", "");
          fieldError.textContent = this.t("fill_in").replace("{field}", label);
          missing.focus();
          return;
        }
        submit.disabled = true;
        fieldError.textContent = "";
        const lead = {
          source: "trade_in_form", name: values.name, email: values.email, phone: values.phone, interest: values.device,
          data: { device: values.device, condition: values.condition }, sessionId: this.sessionId
        };
        this.post(lead, "/leads").then((response) => response.json().then((body) => {
          if (!response.ok) throw new Error(body.error?.message ?? this.t("form_error"));
          form.innerHTML = "";
          form.appendChild(element("h4")).textContent = this.t("form_thanks");
          this.emit("lead", { source: lead.source });
        })).catch((err) => { submit.disabled = false; fieldError.textContent = err.message; });
      };
      return form;
    }

    renderFormField(field, event) {
      const label = element("label");
      let input;
      label.appendChild(element("span")).textContent = field.label + (field.required ? " *" : "");
      if (field.type === "select") {
        input = element("select");
        [""].concat(field.options ?? []).forEach((choice) => {
          const option = element("option");
          option.value = choice;
          option.textContent = choice || this.t("choose");
          input.appendChild(option);
        });
      } else {
        input = element("input");
        input.type = { email: "email", tel: "tel" }[field.type] ?? "text";
        if (field.name === "device") {
          input.value = event.device ?? "";
          if ((event.devices ?? []).length) {
            const suggestions = element("datalist");
            suggestions.id = "sb-dev-" + Date.now();
            input.setAttribute("list", suggestions.id);
            event.devices.forEach((device) => {
              const option = element("option");
              option.value = device;
              suggestions.appendChild(option);
            });
            label.appendChild(suggestions);
          }
        }
        if (field.type === "email") input.autocomplete = "email";
        if (field.name === "name") input.autocomplete = "name";
      }
      input.name = field.name;
      input.required = !!field.required;
      label.appendChild(input);
      return label;
    }

    /* Voice: the widget side of the contract with static/widget/voice.js. */
    voiceApi() {
      return {
        baseUrl: this.base, licenseKey: this.options.key, widgetId: this.options.widget, visitorId: this.visitorId,
        config: this.config,
        root: this.root,
        preview: this.options.voicePreview,  // the configurator's test call (voice.js: relay, one-use tickets)
        // voice.js asks before a call when voice.consent_required: the same inline consent, remembered once.
        confirm: (text) => (storage.get(this.storageKey + "consent")
          ? Promise.resolve(true) : new Promise((done) => this.askConsent(text, done))),
        addMessage: (message) => {
          this.bubble(message.role, message.text);
          this.emit("message", { role: message.role === "user" ? "visitor" : "assistant", text: message.text });
          this.persist(message.role, message.text);
          this.starterBox.innerHTML = "";
        },
        setPartial: (role, text) => this.showPartial(role, text),
        renderEvent: (event) => { this.renderEvent(event); this.persist("assistant", "", [event]); },
        // Who calls from which page, as for a chat turn: identify's token (once an identify on its way has
        // answered) and the page context (the server uses it only when the widget sends page context).
        callContext: () => Promise.resolve(this.identifying).then(() => ({
          identity: this.identityToken ?? "", page_context: this.pageContext()
        })),
        // A voice tool stored the visitor's details (log_lead): the page's lead event, its source only.
        lead: (source) => this.emit("lead", { source }),
        setVoiceState: (state, detail) => this.setVoiceState(state, detail)
      };
    }

    loadVoice() {
      // The loader passes voice.js's hashed URL; a mount without the loader (the configurator preview) uses the plain one.
      const src = this.base + (this.options.voice ?? "/static/widget/voice.js");
      if (window.SwitchboardVoice) return Promise.resolve(window.SwitchboardVoice);
      if (!window.__sbVoice) {
        window.__sbVoice = new Promise((resolve, reject) => {
          const script = document.createElement("script");
          script.src = src;
          script.async = true;
          script.onload = () => (window.SwitchboardVoice ? resolve(window.SwitchboardVoice) : reject(new Error("")));
          script.onerror = () => { window.__sbVoice = null; reject(new Error("")); };
          (document.head || document.documentElement).appendChild(script);
        });
      }
      return window.__sbVoice;
    }

    startVoice() {
      const voice = this.config.voice;
      if (voice.consent_required && !storage.get(this.storageKey + "consent")) {
        this.askConsent(voice.consent_text, (ok) => { if (ok) this.startVoice(); });
        return;
      }
      this.setVoiceState("connecting");
      this.loadVoice().then((SwitchboardVoice) => {
        if (this.voiceState !== "connecting" || this.voice) return;  // hung up while voice.js was loading
        const session = this.voice = SwitchboardVoice.create(this.voiceApi());
        return session.start();
      }).catch((err) => {
        this.voice = null;
        this.setVoiceState("error", err?.message || this.t("voice_unavailable"));
      });
    }

    /* Voice consent, inline in the conversation (asked once per browser). */
    askConsent(text, done) {
      const box = element("div", "ui cdw");
      if (this.consentBox) this.consentBox.remove();
      this.consentBox = box;
      box.setAttribute("role", "group");
      box.setAttribute("aria-label", this.t("consent"));
      box.appendChild(element("p")).textContent = text || this.t("consent_text");
      const accept = button("bt", null);
      const decline = button("", null);
      accept.textContent = this.t("start_call");
      decline.textContent = this.t("not_now");
      accept.onclick = () => {
        storage.set(this.storageKey + "consent", 1);
        box.remove();
        this.consentBox = null;
        done(true);
      };
      decline.onclick = () => { box.remove(); this.consentBox = null; this.micButton.focus(); done(false); };
      box.appendChild(accept);
      box.appendChild(decline);
      this.messageLog.appendChild(box);
      this.scroll();
      accept.focus();
    }

    setMuted(on) {
      this.muteButton.setAttribute("aria-pressed", String(on));
      this.muteButton.lastChild.textContent = this.t(on ? "unmute" : "mute");
      if (this.voice) this.voice.setMuted(on);
    }

    hangUp() {
      const session = this.voice;
      this.voice = null;
      if (session) { try { session.stop("user"); } catch (e) { /* already closed */ } }
      this.setVoiceState("idle");
    }

    setVoiceState(state, detail) {
      if (!this.voiceBar) return;
      this.voiceState = state;
      const active = state !== "idle";
      const inCall = active && state !== "error";
      this.voiceBar.hidden = !active;
      this.voiceBar.setAttribute("data-s", state);
      this.voiceBar.querySelector(".vl").textContent = detail || this.t(VOICE_STATE_LABELS[state] ?? state);
      this.muteButton.hidden = state === "error";
      if (this.micButton) {
        this.micButton.setAttribute("aria-pressed", String(inCall));
        this.micButton.setAttribute("aria-label", this.t(active ? "voice_end" : "voice_start"));
        this.micButton.innerHTML = svg(inCall ? "hang" : "mic");
      }
      const connected = inCall && state !== "connecting";
      if (connected && !this.inCall) this.emit("voice:start", {});
      if (!inCall && this.inCall) this.emit("voice:end", { reason: state === "error" ? "error" : "ended" });
      if (state === "error") this.emit("error", { code: "voice_unavailable", message: detail || "" });
      this.inCall = connected || (this.inCall && inCall);
      if (!inCall) this.voice = null;  // the call is over: the composer goes back to chat
      if (!active) this.setMuted(false);
    }
  }

  /* window.Switchboard: the page's API. `Switchboard(method, ...args)` or `Switchboard.method(...)` act on
     every widget of the page, `Switchboard.widget(id)` on one. The snippet's stub (widgets/loader.py
     API_STUB) queues calls made before this script ran; they are replayed here, in order. Events carry the
     widget's id and what this visitor saw on this page (message text, no UI payloads, ids or keys). */
  const API_METHODS = ["open", "close", "toggle", "send", "reset", "setLocale", "setContext", "identify", "on", "off"];
  const API_EVENTS = ["ready", "open", "close", "message", "lead", "voice:start", "voice:end", "error"];
  const CONTEXT_MAX_BYTES = 2048;
  const api = {
    handlers: [],   // {scope: "" | widget id, type, fn}
    waiting: [],    // [scope, method, args] for a widget id not on the page yet
    early: [],      // page-wide calls queued before this script ran: also for widgets mounted later
    contexts: {},   // setContext: "" (every widget) or a widget id -> the object

    widgets(scope) {
      return (window.SwitchboardWidgets ?? []).filter((w) => !scope || w.options.widget === scope);
    },

    emit(widget, type, detail) {
      const event = Object.freeze({ ...detail, type, widget: widget.options.widget });
      this.handlers.slice().forEach((handler) => {
        if (handler.type !== type || (handler.scope && handler.scope !== event.widget)) return;
        try { handler.fn(event); } catch (err) { console.error("Switchboard: an on(\"" + type + "\") handler threw", err); }
      });
    },

    pageError(code, message) {
      console.error("Switchboard: " + message + " (" + code + ")");
      const event = Object.freeze({ type: "error", widget: null, code, message });
      this.handlers.forEach((handler) => {
        if (handler.type === "error" && !handler.scope) { try { handler.fn(event); } catch (e) { /* the page's own */ } }
      });
    },

    call(scope, args, early) {
      const method = args[0];
      const rest = Array.prototype.slice.call(args, 1);
      if (!API_METHODS.includes(method)) {
        this.pageError("unknown_method", "Switchboard(\"" + String(method) + "\") is not a method; use one of " +
          API_METHODS.join(", ") + ".");
        return;
      }
      if (method === "on" || method === "off") { this.listen(scope, method, rest[0], rest[1]); return; }
      if (method === "setContext") { this.setContext(scope, rest[0]); return; }
      const targets = this.widgets(scope);
      // Page-wide calls made before any widget was on the page reach every widget mounted later too.
      if (!scope && (early || !targets.length)) this.early.push([method, rest]);
      else if (!targets.length) this.waiting.push([scope, method, rest]);
      targets.forEach((widget) => widget.command(method, rest));
    },

    listen(scope, method, type, fn) {
      if (!API_EVENTS.includes(type) || typeof fn !== "function") {
        this.pageError("invalid_argument", method + "(event, fn) takes one of " + API_EVENTS.join(", ") + " and a function.");
        return;
      }
      if (method === "off") {
        this.handlers = this.handlers.filter((h) => !(h.scope === scope && h.type === type && h.fn === fn));
        return;
      }
      this.handlers.push({ scope, type, fn });
      // A late on("ready") still hears about the widgets that are already up.
      if (type === "ready") {
        this.widgets(scope).filter((w) => w.ready).forEach((w) => {
          const event = Object.freeze({ type, widget: w.options.widget });
          Promise.resolve().then(() => { try { fn(event); } catch (err) { console.error(err); } });
        });
      }
    },

    setContext(scope, value) {
      let size = Infinity;
      try { size = new TextEncoder().encode(JSON.stringify(value)).length; } catch (e) { /* not JSON */ }
      if (value !== null && (typeof value !== "object" || Array.isArray(value) || size === Infinity)) {
        this.pageError("invalid_context", "setContext(object) takes a plain JSON object (or null to clear it).");
      } else if (size > CONTEXT_MAX_BYTES) {
        this.pageError("context_too_large", "setContext: the context is " + size + " bytes as JSON; at most " +
          CONTEXT_MAX_BYTES + " are sent.");
      } else {
        if (value === null) delete this.contexts[scope];
        else this.contexts[scope] = JSON.parse(JSON.stringify(value));
        this.widgets(scope).forEach((widget) => widget.sendFrameContext());
      }
    },

    context(widget) { return this.contexts[widget.options.widget] ?? this.contexts[""] ?? null; },

    attach(widget) {
      const id = widget.options.widget;
      this.early.forEach(([method, args]) => widget.command(method, args));
      this.waiting = this.waiting.filter(([scope, method, args]) => {
        if (scope !== id) return true;
        widget.command(method, args);
        return false;
      });
    },

    handle(scope) {
      const handle = function () { api.call(scope, arguments); };
      API_METHODS.forEach((method) => {
        handle[method] = function () { api.call(scope, [method].concat(Array.prototype.slice.call(arguments))); };
      });
      return handle;
    }
  };

  function mount(options) {
    const widget = new Widget(options);
    (window.SwitchboardWidgets = window.SwitchboardWidgets ?? []).push(widget);
    api.attach(widget);
    widget.boot();
    return widget;
  }
  window.SwitchboardWidget = { mount, markdown, pageRule, version: 1 };
  const queued = window.SwitchboardQueue ?? [];
  window.SwitchboardQueue = { push: mount };
  queued.forEach(mount);

  const stub = window.Switchboard;
  const Switchboard = window.Switchboard = api.handle("");
  Switchboard.widget = (id) => api.handle(String(id ?? ""));
  Switchboard.version = 1;
  const early = stub && Array.isArray(stub.q) ? stub.q : [];
  // Handles the page took from the stub (Switchboard.widget(id) before load) keep working.
  if (stub && Array.isArray(stub.q)) stub.q.push = (entry) => { api.call(entry[0], entry[1]); return 0; };
  early.splice(0).forEach((entry) => api.call(entry[0], entry[1], true));
})();
