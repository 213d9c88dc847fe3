/* Switchboard chat widget: plain JS, Shadow DOM, no build step.
 * Mounted by the loader (/api/widget/<key>/chat-widget.js) through window.SwitchboardQueue.
 * Talks only to the Switchboard server: GET /config (authorizes this page's origin first),
 * POST /chat (n8n proxy: JSON {output, ui} or NDJSON stream), POST /leads (forms).
 * UI events (widgets/ui_events.py): ui.product_cards, ui.trade_in_form, ui.demo_clip, ui.meeting_link.
 * Voice: lazy-loads /static/widget/voice.js and calls SwitchboardVoice.create(api) (see BRIEF contract). */
(function () {
  "use strict";
  var W = window, D = document;
  if (W.SwitchboardWidget) return;

  var CSS = [
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
    ".vb{display:flex;align-items:center;gap:10px;padding:10px 14px;border-top:1px solid var(--ln);",
    "font-size:.88em;font-weight:550}.vb .dt{width:10px;height:10px;border-radius:50%;background:#9ca3af}",
    ".vb[data-s=listening] .dt{background:#16a34a;animation:pu 1.4s infinite}",
    ".vb[data-s=speaking] .dt{background:var(--p);animation:pu 1s infinite}",
    ".vb[data-s=thinking] .dt,.vb[data-s=connecting] .dt{background:#f59e0b;animation:pu 1.4s infinite}",
    ".vb[data-s=error] .dt{background:#dc2626}.vb .vl{flex:1}",
    ".vb button{padding:7px 12px;border-radius:999px;border:1px solid var(--ln);gap:6px;font-size:.9em}",
    ".vb .hu{background:#dc2626;color:#fff;border-color:#dc2626}.vb svg{width:16px;height:16px}",
    "@keyframes pu{0%,100%{opacity:1}50%{opacity:.35}}",
    ".dc{font-size:.72em;opacity:.6;text-align:center;padding:0 14px 10px}",
    ".sr{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0)}",
    ".fr{flex:1;border:0;width:100%;display:block;background:var(--bg)}",
    "@media (max-width:480px){.popup .pn{inset:0;width:100%;height:100%;border-radius:0;bottom:0}",
    ".popup.open .lau{display:none}}",
    "@media (prefers-reduced-motion:reduce){.r *{animation:none!important;transition:none!important;",
    "scroll-behavior:auto!important}}"
  ].join("");

  var ICONS = {
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

  function esc(s) {
    return String(s == null ? "" : s).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }
  function safeUrl(u, mail) {
    u = String(u || "").trim();
    return (mail ? /^(https?:\/\/|mailto:)/i : /^https?:\/\//i).test(u) ? u : "";
  }
  function el(tag, cls, html) {
    var e = D.createElement(tag);
    if (cls) e.className = cls;
    if (html != null) e.innerHTML = html;
    return e;
  }
  function link(href, text, cls) {
    var a = el("a", cls || "");
    a.href = href; a.target = "_blank"; a.rel = "noopener noreferrer"; a.textContent = text;
    return a;
  }

  /* Markdown subset on escaped text: **bold**, *italic* or _italic_, `code`, ``` blocks, [t](url), lists, links.
     Every piece of HTML it makes (code, links) is set aside behind a placeholder at once, so no later rule
     (autolinks, emphasis) ever runs over generated markup or inside an attribute. */
  function emph(t) {
    return t.replace(/\*\*([^*\n]+)\*\*/g, "<strong>$1</strong>")
      .replace(/(^|[^*\w])\*([^*\n]+)\*(?!\w)/g, "$1<em>$2</em>")
      .replace(/(^|[^_\w])_([^_\n]+)_(?!\w)/g, "$1<em>$2</em>");
  }
  function inline(t) {
    var kept = [];
    function keep(html) { kept.push(html); return "\u0000" + (kept.length - 1) + "\u0000"; }
    t = esc(String(t == null ? "" : t).replace(/\u0000/g, ""));
    t = t.replace(/`([^`\n]+)`/g, function (_, c) { return keep("<code>" + c + "</code>"); });
    t = t.replace(/\[([^\]\n]+)\]\(([^)\s]+)\)/g, function (m, label, url) {
      var u = safeUrl(url.replace(/&amp;/g, "&").replace(/\u0000\d+\u0000/g, ""), true);
      return u ? keep('<a href="' + esc(u) + '" target="_blank" rel="noopener noreferrer">' + emph(label) + "</a>") : label;
    });
    t = t.replace(/(^|[\s(])(https?:\/\/[^\s<)"\u0000]+[^\s<)".,;:!?'\u0000])/g, function (m, pre, url) {
      return pre + keep('<a href="' + url + '" target="_blank" rel="noopener noreferrer">' + url + "</a>");
    });
    t = emph(t);
    for (var i = 0; i < 3 && t.indexOf("\u0000") >= 0; i++) {
      t = t.replace(/\u0000(\d+)\u0000/g, function (_, n) { return kept[+n]; });
    }
    return t;
  }
  function md(text) {
    var out = [], parts = String(text || "").split(/```[^\n]*\n?/);
    parts.forEach(function (part, i) {
      if (i % 2) { out.push("<pre><code>" + esc(part.replace(/\n$/, "")) + "</code></pre>"); return; }
      var list = null, para = [];
      function flush() {
        if (para.length) out.push("<p>" + para.map(inline).join("<br>") + "</p>");
        para = [];
        if (list) { out.push("<" + list.t + ">" + list.items.join("") + "</" + list.t + ">"); list = null; }
      }
      part.split("\n").forEach(function (line) {
        var m = line.match(/^\s*([-*\u2022]|\d+[.)])\s+(.*)$/);
        if (m) {
          var t = /\d/.test(m[1]) ? "ol" : "ul";
          if (para.length || (list && list.t !== t)) flush();
          list = list || { t: t, items: [] };
          list.items.push("<li>" + inline(m[2]) + "</li>");
        } else if (!line.trim()) flush();
        else {
          if (list) flush();
          para.push(line.replace(/^#{1,6}\s+(.*)$/, "**$1**"));
        }
      });
      flush();
    });
    return out.join("");
  }

  function lum(hex) {
    var n = parseInt(String(hex || "#000000").slice(1), 16), c = [(n >> 16) & 255, (n >> 8) & 255, n & 255].map(function (v) {
      v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
    });
    return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2];
  }
  function onColor(hex) { return lum(hex) > 0.45 ? "#111827" : "#ffffff"; }

  function store(k, v) {
    try {
      if (v === undefined) return JSON.parse(localStorage.getItem(k) || "null");
      if (v === null) localStorage.removeItem(k); else localStorage.setItem(k, JSON.stringify(v));
    } catch (e) { return null; }
  }
  function uid(p) {
    var r = W.crypto && crypto.randomUUID ? crypto.randomUUID() : Math.random().toString(36).slice(2) + Date.now().toString(36);
    return p + r.replace(/-/g, "");
  }
  /* Times and prices in the widget's locale (behaviour.locale), else the visitor's browser's. */
  function clock(ts, loc) {
    try { return new Date(ts).toLocaleTimeString(loc || [], { hour: "2-digit", minute: "2-digit" }); } catch (e) { return ""; }
  }
  function money(price, cur, loc) {
    if (price == null || price === "") return "";
    try { return new Intl.NumberFormat(loc || undefined, { style: "currency", currency: cur || "USD" }).format(+price); }
    catch (e) { return price + " " + (cur || ""); }
  }

  function Widget(o) {
    this.o = o;
    this.base = o.base;
    this.api = o.base + "/api/widget/" + encodeURIComponent(o.key);
    this.q = o.widget ? "?widget=" + encodeURIComponent(o.widget) : "";
    this.busy = false;
    this.queue = [];
    this.voice = null;
  }
  var P = Widget.prototype;

  /* UI texts come with the public config (widgets/widget_strings.py: behaviour.locale + overrides). */
  P.t = function (key) { var s = this.cfg && this.cfg.strings; return (s && s[key]) || key; };

  P.fail = function (msg) {
    if (this.failed) return;
    this.failed = true;
    console.error("Switchboard: " + msg);
  };

  P.boot = function () {
    var self = this;
    return fetch(this.api + "/config" + this.q, { credentials: "omit" }).then(function (res) {
      return res.json().catch(function () { return {}; }).then(function (body) {
        if (!res.ok) {
          var e = (body && body.error) || {}, refused = /^(domain_not_allowed|origin_missing)$/.test(e.code || "");
          // Name the host that was refused: that is what the site owner has to add to the license.
          self.fail((refused ? "this page's host \"" + location.host + "\" was refused: " : "") +
            (e.message || "the widget is not available here") + " (" + (e.code || res.status) + ")");
          return;
        }
        self.cfg = body.config || self.o.config;
        self.type = body.type || self.o.type;
        self.o.widget = body.widget || self.o.widget;
        self.q = "?widget=" + encodeURIComponent(self.o.widget);
        self.render();
      });
    }, function () {
      // A refused origin gets no CORS headers, so the browser hides the 403 body from us.
      self.fail("this page's host \"" + location.host + "\" is not on the license's allowed domains, " +
        "or the server is unreachable.");
    });
  };

  P.render = function () {
    var self = this, c = this.cfg, ap = c.appearance || {}, em = c.embed || {}, bh = c.behaviour || {};
    var mode = this.o.mode || em.mode || "popup";
    if (["popup", "inline", "fullpage"].indexOf(mode) < 0) mode = "popup";
    var pos = this.o.position || em.position || "bottom-right";
    var target = null;
    if (mode === "inline") {
      target = this.o.target ? D.querySelector(this.o.target) : null;
      if (!target) { this.fail("inline mode needs data-target pointing at an element on the page."); return; }
    }
    this.mode = mode; this.pos = pos; this.loc = bh.locale || "";
    // Several popups in one corner (one per widget) stack their launchers instead of hiding each other.
    var oy = em.offset_y == null ? 20 : em.offset_y;
    (W.SwitchboardWidgets || []).forEach(function (w) { if (w !== self && w.r && w.mode === "popup" && w.pos === pos) oy += 72; });
    this.vid = store("sb:visitor") || uid("v_");
    store("sb:visitor", this.vid);
    this.skey = "sb:" + this.o.widget + ":";
    this.sid = store(this.skey + "session");
    this.resumed = !!this.sid;  // only a returning visitor has history worth asking n8n for
    this.sid = this.sid || uid("s_");
    store(this.skey + "session", this.sid);

    var host = this.host = D.createElement("switchboard-widget");
    host.setAttribute("data-widget", this.o.widget);
    host.setAttribute("data-mode", mode);
    var root = this.root = host.attachShadow({ mode: "open" });
    var dark = ap.color_scheme === "dark" || (ap.color_scheme === "auto" && W.matchMedia &&
      matchMedia("(prefers-color-scheme: dark)").matches);
    var pc = ap.primary_color || "#4f46e5", ub = ap.bubble_user_color || pc;
    var vars = {
      "--p": pc, "--pt": onColor(pc), "--pc": dark && lum(pc) < 0.2 ? "#a5b4fc" : pc,
      "--bg": dark ? "#0f172a" : ap.background_color || "#fff", "--tx": dark ? "#e5e7eb" : ap.text_color || "#111827",
      "--ub": ub, "--ut": onColor(ub), "--bb": dark ? "#1e293b" : ap.bubble_bot_color || "#f3f4f6",
      "--bt": dark ? "#e5e7eb" : onColor(ap.bubble_bot_color || "#f3f4f6"),
      "--ln": dark ? "#334155" : "#e5e7eb", "--rd": (ap.radius == null ? 16 : ap.radius) + "px",
      "--f": ap.font_family || "system-ui,-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif",
      "--fs": (ap.font_size || 15) + "px", "--w": (em.width || 380) + "px", "--h": (em.height || 600) + "px",
      "--ox": (em.offset_x == null ? 20 : em.offset_x) + "px", "--oy": oy + "px"
    };
    var r = this.r = el("div", "r " + mode + " " + (pos === "bottom-left" ? "left" : "right") + (dark ? " dark" : ""));
    if (this.loc) r.lang = this.loc;  // screen readers pronounce the texts in their language
    Object.keys(vars).forEach(function (k) { r.style.setProperty(k, vars[k]); });
    // Inline fills its target; a target with no height of its own (an empty <div>) gets the config's height.
    if (target && !target.clientHeight) r.style.height = "var(--h)";
    // A constructed stylesheet is not an inline <style>, so a strict style-src CSP on the page allows it.
    try {
      var sheet = new CSSStyleSheet(); sheet.replaceSync(CSS); root.adoptedStyleSheets = [sheet];
    } catch (e) { root.appendChild(el("style")).textContent = CSS; }
    root.appendChild(r);

    var title = ap.title || "Chat";
    if (mode === "popup") {
      this.icon = ap.launcher_icon in ICONS ? ap.launcher_icon : "chat";
      var lau = this.lau = el("button", "lau", svg(this.icon));
      lau.type = "button";
      lau.setAttribute("aria-label", this.t("open_chat") + ": " + title);
      lau.setAttribute("aria-expanded", "false");
      lau.onclick = function () { self.toggle(); };
      r.appendChild(lau);
    }
    var pn = this.pn = el("section", "pn");
    pn.setAttribute("role", mode === "popup" ? "dialog" : "region");
    pn.setAttribute("aria-label", title);
    pn.id = "sb-panel";
    if (mode === "popup") { pn.hidden = true; this.lau.setAttribute("aria-controls", "sb-panel"); }
    var hd = el("header", "hd");
    var av = el("div", "av", svg(ap.launcher_icon in ICONS ? ap.launcher_icon : "chat"));
    var avatar = safeUrl(ap.avatar_url);
    if (avatar) { av.innerHTML = ""; var im = el("img"); im.src = avatar; im.alt = ""; av.appendChild(im); }
    var ti = el("div", "ti");
    ti.appendChild(el("b")).textContent = title;
    if (ap.subtitle) ti.appendChild(el("span")).textContent = ap.subtitle;
    hd.appendChild(av); hd.appendChild(ti);
    pn.appendChild(hd);
    (mode === "inline" ? target : D.body).appendChild(host);

    if (this.type === "chatkit") {
      if (mode === "popup") this.headerClose(hd);
      var fr = el("iframe", "fr");
      fr.title = title;
      fr.setAttribute("allow", "microphone; clipboard-write");
      // The ChatKit page only serves the site that frames it, proven by the Referer's origin.
      fr.referrerPolicy = "origin";
      // The ChatKit page's signed visitor, kept here (first-party storage) for the next visit.
      var vtKey = "sb:ck:" + this.o.key + ":vt", vt = store(vtKey);
      fr.dataset.src = this.base + (this.o.frame || "/widget/chatkit/" + encodeURIComponent(this.o.key)) +
        "?widget=" + encodeURIComponent(this.o.widget) + (vt ? "&vt=" + encodeURIComponent(vt) : "");
      W.addEventListener("message", function (e) {
        var d = e.data;
        if (e.source === fr.contentWindow && d && d.type === "switchboard:chatkit-visitor" &&
            typeof d.token === "string" && d.token.length < 300) store(vtKey, d.token);
      });
      if (mode !== "popup") fr.src = fr.dataset.src;
      this.frame = fr;
      pn.appendChild(fr);
      r.appendChild(pn);
      this.keys();
      return;
    }
    if (this.o.widget) {
      var rs = el("button", "ib", svg("reset"));
      rs.type = "button"; rs.setAttribute("aria-label", this.t("new_conversation")); rs.title = this.t("new_conversation");
      rs.onclick = function () { self.reset(); };
      hd.appendChild(rs);
    }
    if (mode === "popup") this.headerClose(hd);

    var lg = this.lg = el("div", "lg");
    lg.setAttribute("role", "log"); lg.setAttribute("aria-live", "polite"); lg.setAttribute("aria-relevant", "additions");
    lg.setAttribute("aria-label", this.t("conversation"));
    pn.appendChild(lg);
    this.st = el("div", "st");
    pn.appendChild(this.st);
    var vb = this.vb = el("div", "vb");
    vb.hidden = true; vb.setAttribute("role", "status");
    vb.innerHTML = '<span class="dt"></span><span class="vl"></span>';
    var mute = this.mute = el("button", "", svg("micoff") + "<span></span>");
    mute.lastChild.textContent = this.t("mute");
    mute.type = "button"; mute.setAttribute("aria-pressed", "false");
    mute.onclick = function () { self.setMuted(mute.getAttribute("aria-pressed") !== "true"); };
    var hang = el("button", "hu", svg("hang") + "<span></span>");
    hang.lastChild.textContent = this.t("end_call");
    hang.type = "button"; hang.onclick = function () { self.hangUp(); };
    vb.appendChild(mute); vb.appendChild(hang);
    pn.appendChild(vb);

    var cp = el("form", "cp");
    var ta = this.ta = el("textarea");
    ta.rows = 1; ta.maxLength = 4000;
    ta.placeholder = this.t("placeholder");
    ta.setAttribute("aria-label", this.t("message"));
    var sd = this.sd = el("button", "sd", svg("send"));
    sd.type = "submit"; sd.disabled = true; sd.setAttribute("aria-label", this.t("send"));
    ta.oninput = function () {
      sd.disabled = !ta.value.trim();
      ta.style.height = "auto"; ta.style.height = Math.min(ta.scrollHeight, 120) + "px";
    };
    ta.onkeydown = function (e) {
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); self.submit(); }
    };
    cp.onsubmit = function (e) { e.preventDefault(); self.submit(); };
    cp.appendChild(ta);
    if (c.voice && c.voice.enabled) {
      var mc = this.mc = el("button", "mc", svg("mic"));
      mc.type = "button"; mc.setAttribute("aria-label", this.t("voice_start")); mc.setAttribute("aria-pressed", "false");
      mc.onclick = function () { self.voice || self.vstate === "connecting" ? self.hangUp() : self.startVoice(); };
      cp.appendChild(mc);
    }
    cp.appendChild(sd);
    pn.appendChild(cp);
    if (bh.disclaimer) pn.appendChild(el("div", "dc")).textContent = bh.disclaimer;
    r.appendChild(pn);
    this.keys();
    if (mode !== "popup") this.load();
  };

  P.headerClose = function (hd) {
    var self = this, x = el("button", "ib", svg(this.mode === "popup" ? "down" : "close"));
    x.type = "button"; x.setAttribute("aria-label", this.t("close_chat"));
    x.onclick = function () { self.toggle(false); };
    hd.appendChild(x);
  };

  P.keys = function () {
    var self = this;
    this.pn.addEventListener("keydown", function (e) {
      if (e.key === "Escape" && self.mode === "popup") { e.stopPropagation(); self.toggle(false); }
    });
  };

  P.toggle = function (open) {
    if (this.mode !== "popup") return;
    open = open == null ? this.pn.hidden : open;
    this.pn.hidden = !open;
    this.r.classList.toggle("open", open);
    this.lau.setAttribute("aria-expanded", String(open));
    this.lau.setAttribute("aria-label", this.t(open ? "close_chat" : "open_chat") + ": " + (this.cfg.appearance.title || "Chat"));
    this.lau.innerHTML = svg(open ? "down" : this.icon);
    if (open) {
      if (this.frame && !this.frame.src) this.frame.src = this.frame.dataset.src;
      this.load();
      if (this.ta) this.ta.focus();
    } else this.lau.focus();
  };

  /* Conversation history: n8n's loadPreviousSession when configured, else this browser's copy. */
  P.load = function () {
    if (this.loaded || !this.lg) return;
    this.loaded = true;
    var self = this, bh = this.cfg.behaviour || {}, log = store(this.skey + "log") || [];
    this.intro(log);
    if (bh.load_previous_session && this.resumed) {
      this.post({ action: "loadPreviousSession", sessionId: this.sid }).then(function (res) {
        return res.ok ? res.json() : null;
      }).then(function (data) {
        var msgs = (data && data.messages) || [];
        if (msgs.length) msgs.forEach(function (m) { self.bubble(m.role, m.text, -1, true); });
        else log.forEach(function (m) { self.replay(m); });
        self.starters();
      }, function () { log.forEach(function (m) { self.replay(m); }); self.starters(); });
    } else {
      if (bh.history !== false) log.forEach(function (m) { self.replay(m); });
      this.starters();
    }
  };
  P.replay = function (m) {
    var self = this;
    if (m.text) this.bubble(m.role, m.text, m.ts, true);
    (m.ui || []).forEach(function (ev) { self.renderEvent(ev, true); });
  };
  /* The greeting is as old as the conversation: the time it was first shown, kept with the session,
     never later than the first message under it. */
  P.intro = function (log) {
    var self = this, bh = this.cfg.behaviour || {}, first = log[0] && log[0].ts, at = store(this.skey + "started");
    if (!at || (first && first < at)) { at = first || Date.now(); store(this.skey + "started", at); }
    if (bh.greeting) this.bubble("assistant", bh.greeting, at, true);
    (bh.initial_messages || []).forEach(function (t) { self.bubble("assistant", t, at, true); });
  };
  P.starters = function () {
    var self = this, st = this.st, prompts = (this.cfg.behaviour || {}).starter_prompts || [];
    st.innerHTML = "";
    if (this.lg.querySelector(".m.u")) return;
    prompts.forEach(function (p) {
      var b = el("button"); b.type = "button"; b.textContent = p;
      b.onclick = function () { self.send(p); };
      st.appendChild(b);
    });
  };
  P.persist = function (role, text, ui, ts) {
    var log = store(this.skey + "log") || [];
    log.push({ role: role, text: text, ui: ui || [], ts: ts || Date.now() });
    store(this.skey + "log", log.slice(-60));
  };
  P.reset = function () {
    if (this.voice) this.hangUp();
    store(this.skey + "log", null); store(this.skey + "started", null);
    this.queue = [];
    this.sid = uid("s_"); this.resumed = false; store(this.skey + "session", this.sid);
    this.lg.innerHTML = ""; this.loaded = false; this.load();
    this.ta.focus();
  };

  P.bubble = function (role, text, ts, quiet) {
    var m = el("div", "m " + (role === "user" ? "u" : "a"));
    var b = el("div", "b", role === "user" ? esc(text).replace(/\n/g, "<br>") : md(text));
    m.appendChild(b);
    var when = m.ts = ts || Date.now();
    if (when > 0) {  // -1: a message from n8n's memory, whose time we do not know
      var tm = m.appendChild(el("time", "tm"));
      tm.dateTime = new Date(when).toISOString(); tm.textContent = clock(when, this.loc);
    }
    this.partial(null);
    this.lg.appendChild(m);
    if (!quiet) this.scroll();
    else this.lg.scrollTop = this.lg.scrollHeight;
    return m;
  };
  P.scroll = function () { var lg = this.lg; setTimeout(function () { lg.scrollTop = lg.scrollHeight; }, 0); };
  P.typing = function (on) {
    if (this.ty) { this.ty.remove(); this.ty = null; }
    if (!on) return;
    var t = this.ty = el("div", "m a", '<div class="b ty"><i></i><i></i><i></i></div>');
    t.firstChild.setAttribute("aria-label", this.t("typing"));
    this.lg.appendChild(t); this.scroll();
  };
  P.partial = function (role, text) {
    if (this.pt) { this.pt.remove(); this.pt = null; }
    if (!text) return;
    var m = this.pt = el("div", "m pt " + (role === "user" ? "u" : "a"));
    m.setAttribute("aria-hidden", "true");
    m.appendChild(el("div", "b")).textContent = text;
    this.lg.appendChild(m); this.scroll();
  };

  P.post = function (body, path) {
    body.metadata = body.metadata || { visitorId: this.vid, page: location.href.slice(0, 500) };
    body.widget = this.o.widget;
    return fetch(this.api + (path || "/chat") + this.q, {
      method: "POST", credentials: "omit",
      headers: { "Content-Type": "application/json", "X-Switchboard-Visitor": this.vid },
      body: JSON.stringify(body)
    });
  };

  P.submit = function () {
    var text = this.ta.value.trim();
    if (!text) return;
    this.ta.value = ""; this.ta.oninput();
    if (this.voice && this.voice.sendText) {
      this.st.innerHTML = "";
      try { this.voice.sendText(text); } catch (e) { this.setVoiceState("error", this.t("not_delivered")); }
      return;
    }
    this.send(text);
  };

  /* One message at a time goes to the assistant (n8n keeps one memory per session). A message typed
     while it answers is never dropped: it shows at once, marked queued, and is sent right after the
     current reply, then moved below that reply so the log reads in the order the assistant saw it. */
  P.send = function (text, um) {
    var self = this, old = um && um.querySelector(".er");
    if (old) old.remove();
    this.st.innerHTML = "";
    if (this.busy) {
      um = um || this.bubble("user", text);
      um.classList.add("q");
      if (!um.querySelector(".qn")) um.appendChild(el("div", "tm qn")).textContent = this.t("queued");
      this.queue.push({ text: text, um: um });
      return;
    }
    this.busy = true;
    if (um) {
      um.classList.remove("q");
      if (um.querySelector(".qn")) { um.querySelector(".qn").remove(); this.lg.appendChild(um); }
    } else um = this.bubble("user", text);
    this.typing(true);
    var finished = false, done = function () {
      if (finished) return;
      finished = true; self.busy = false; self.typing(false);
      setTimeout(function () { var n = self.queue.shift(); if (n) self.send(n.text, n.um); }, 0);
    };
    this.post({ action: "sendMessage", sessionId: this.sid, chatInput: text }).then(function (res) {
      var ctype = res.headers.get("content-type") || "";
      if (!res.ok) {
        return res.json().catch(function () { return {}; }).then(function (b) {
          var e = (b && b.error) || {};
          if (res.status === 403 || res.status === 404) self.fail((e.message || "chat refused") + " (" + (e.code || res.status) + ")");
          throw new Error(e.message || self.t("error"));
        });
      }
      self.persist("user", text, null, um.ts);
      if (ctype.indexOf("ndjson") >= 0 && res.body && res.body.getReader) return self.stream(res, done);
      return res.json().then(function (b) { done(); self.reply(b.output || "", b.ui || []); });
    }).catch(function (err) {
      done();
      var er = el("div", "er");
      er.setAttribute("role", "alert");
      er.appendChild(el("span")).textContent = (err && err.message && !/fetch/i.test(err.message)) ? err.message : self.t("not_delivered");
      var rb = el("button"); rb.type = "button"; rb.textContent = self.t("retry");
      rb.onclick = function () { self.send(text, um); };
      er.appendChild(rb); um.appendChild(er); self.scroll();
    });
  };

  P.reply = function (text, ui) {
    var self = this;
    var m = text && this.bubble("assistant", text);
    (ui || []).forEach(function (ev) { self.renderEvent(ev); });
    this.persist("assistant", text, ui, m && m.ts);
  };

  /* NDJSON relay: {"type":"item","content"} … {"type":"end","output","ui"} | {"type":"error","code","message"}. */
  P.stream = function (res, done) {
    var self = this, reader = res.body.getReader(), dec = new TextDecoder(), buf = "", text = "", m = null, b = null;
    function handle(line) {
      if (!line.trim()) return;
      var ev; try { ev = JSON.parse(line); } catch (e) { return; }
      if (ev.type === "item" && ev.content) {
        if (!m) { self.typing(false); m = self.bubble("assistant", ""); b = m.querySelector(".b"); }
        text += ev.content; b.innerHTML = md(text); self.lg.scrollTop = self.lg.scrollHeight;
      } else if (ev.type === "end") {
        (ev.ui || []).forEach(function (u) { self.renderEvent(u); });
        self.persist("assistant", ev.output || text, ev.ui || [], m && m.ts);
      } else if (ev.type === "error") {
        throw new Error(ev.message || self.t("interrupted"));
      }
    }
    function pump() {
      return reader.read().then(function (r) {
        if (r.done) { handle(buf); done(); return; }
        buf += dec.decode(r.value, { stream: true });
        var lines = buf.split("\n"); buf = lines.pop();
        lines.forEach(handle);
        return pump();
      });
    }
    return pump();
  };

  /* UI events: the same renderer for text chat and voice. */
  P.renderEvent = function (ev, quiet) {
    if (!ev || !ev.type) return;
    var self = this, box = el("div", "ui");
    if (ev.type === "ui.product_cards") {
      var row = el("div", "cs");
      row.setAttribute("role", "list"); row.setAttribute("aria-label", this.t("products"));
      (ev.products || []).slice(0, 10).forEach(function (p) {
        var cd = el("div", "cd"); cd.setAttribute("role", "listitem");
        var img = safeUrl(p.image_url), ph = el("div", "ph");
        ph.textContent = (p.title || "?").charAt(0).toUpperCase();
        if (img) {
          var im = el("img"); im.src = img; im.alt = p.title || ""; im.loading = "lazy";
          im.onerror = function () { if (im.parentNode) im.parentNode.replaceChild(ph, im); };  // no broken image
          cd.appendChild(im);
        } else cd.appendChild(ph);
        var ci = el("div", "ci");
        ci.appendChild(el("b")).textContent = p.title || "";
        if (p.description) ci.appendChild(el("span", "ds")).textContent = p.description;
        var price = money(p.price, p.currency, self.loc);
        if (price) ci.appendChild(el("span", "pr")).textContent = price;
        if (p.in_stock === false) ci.appendChild(el("span", "os")).textContent = self.t("out_of_stock");
        var u = safeUrl(p.url);
        if (u) ci.appendChild(link(u, self.t("view_product"), "bt"));
        cd.appendChild(ci); row.appendChild(cd);
      });
      box.appendChild(row);
    } else if (ev.type === "ui.trade_in_form") {
      box.appendChild(this.form(ev));
    } else if (ev.type === "ui.demo_clip" || ev.type === "ui.meeting_link") {
      var u2 = safeUrl(ev.url);
      if (!u2) return;
      var w = el("div", "cdw");
      w.appendChild(el("h4")).textContent = ev.title || (ev.type === "ui.demo_clip" ? ev.topic : this.t("book_meeting"));
      if (ev.type === "ui.demo_clip" && /\.(mp4|webm|ogg)(\?|$)/i.test(u2)) {
        var v = el("video"); v.src = u2; v.controls = true; v.preload = "metadata"; w.appendChild(v);
      }
      w.appendChild(link(u2, this.t(ev.type === "ui.demo_clip" ? "watch_demo" : "pick_time"), "bt"));
      box.appendChild(w);
    } else return;
    this.lg.appendChild(box);
    if (!quiet) this.scroll();
  };

  P.form = function (ev) {
    var self = this, f = el("form", "cdw fm");
    f.noValidate = true;
    f.appendChild(el("h4")).textContent = this.t("trade_in_title");
    (ev.fields || []).forEach(function (fd) {
      var lb = el("label"), inp;
      lb.appendChild(el("span")).textContent = fd.label + (fd.required ? " *" : "");
      if (fd.type === "select") {
        inp = el("select");
        [""].concat(fd.options || []).forEach(function (o) {
          var op = el("option"); op.value = o; op.textContent = o || self.t("choose"); inp.appendChild(op);
        });
      } else {
        inp = el("input");
        inp.type = { email: "email", tel: "tel" }[fd.type] || "text";
        if (fd.name === "device") {
          inp.value = ev.device || "";
          if ((ev.devices || []).length) {
            var dl = el("datalist"); dl.id = "sb-dev-" + Date.now(); inp.setAttribute("list", dl.id);
            ev.devices.forEach(function (d) { var op = el("option"); op.value = d; dl.appendChild(op); });
            lb.appendChild(dl);
          }
        }
        if (fd.type === "email") inp.autocomplete = "email";
        if (fd.name === "name") inp.autocomplete = "name";
      }
      inp.name = fd.name; inp.required = !!fd.required;
      lb.appendChild(inp); f.appendChild(lb);
    });
    var fe = el("div", "fe"); fe.setAttribute("role", "alert"); f.appendChild(fe);
    var sb = el("button", "bt"); sb.textContent = this.t("get_quote"); sb.type = "submit"; f.appendChild(sb);
    f.onsubmit = function (e) {
      e.preventDefault();
      var v = {}, miss = null;
      Array.prototype.forEach.call(f.elements, function (x) {
        if (!x.name) return;
        v[x.name] = x.value.trim();
        if (x.required && !v[x.name] && !miss) miss = x;
      });
      if (miss) { fe.textContent = self.t("fill_in").replace("{field}", miss.parentNode.firstChild.textContent.replace(" *", "")); miss.focus(); return; }
      sb.disabled = true; fe.textContent = "";
      var body = {
        source: "trade_in_form", name: v.name, email: v.email, phone: v.phone, interest: v.device,
        data: { device: v.device, condition: v.condition }, sessionId: self.sid
      };
      self.post(body, "/leads").then(function (res) {
        return res.json().then(function (b) {
          if (!res.ok) throw new Error((b.error && b.error.message) || self.t("form_error"));
          f.innerHTML = "";
          f.appendChild(el("h4")).textContent = self.t("form_thanks");
        });
      }).catch(function (err) { sb.disabled = false; fe.textContent = err.message; });
    };
    return f;
  };

  /* Voice: the widget side of the contract with static/widget/voice.js. */
  P.voiceApi = function () {
    var self = this;
    return {
      baseUrl: this.base, licenseKey: this.o.key, widgetId: this.o.widget, visitorId: this.vid, config: this.cfg,
      root: this.root,
      // voice.js asks before a call when voice.consent_required: the same inline consent, remembered once.
      confirm: function (text) {
        return store(self.skey + "consent") ? Promise.resolve(true)
          : new Promise(function (done) { self.consent(text, done); });
      },
      addMessage: function (m) { self.bubble(m.role, m.text); self.persist(m.role, m.text); self.st.innerHTML = ""; },
      setPartial: function (role, text) { self.partial(role, text); },
      renderEvent: function (ev) { self.renderEvent(ev); self.persist("assistant", "", [ev]); },
      setVoiceState: function (s, d) { self.setVoiceState(s, d); }
    };
  };
  P.loadVoice = function () {
    // The loader passes voice.js's hashed URL; a mount without the loader (the configurator preview) uses the plain one.
    var src = this.base + (this.o.voice || "/static/widget/voice.js");
    if (W.SwitchboardVoice) return Promise.resolve(W.SwitchboardVoice);
    if (!W.__sbVoice) {
      W.__sbVoice = new Promise(function (ok, ko) {
        var s = D.createElement("script");
        s.src = src; s.async = true;
        s.onload = function () { W.SwitchboardVoice ? ok(W.SwitchboardVoice) : ko(new Error("")); };
        s.onerror = function () { W.__sbVoice = null; ko(new Error("")); };
        (D.head || D.documentElement).appendChild(s);
      });
    }
    return W.__sbVoice;
  };
  P.startVoice = function () {
    var self = this, v = this.cfg.voice || {};
    if (v.consent_required && !store(this.skey + "consent")) {
      return this.consent(v.consent_text, function (ok) { if (ok) self.startVoice(); });
    }
    this.setVoiceState("connecting");
    this.loadVoice().then(function (SV) {
      if (self.vstate !== "connecting" || self.voice) return;  // hung up while voice.js was loading
      var s = self.voice = SV.create(self.voiceApi());
      return s.start();
    }).catch(function (e) {
      self.voice = null;
      self.setVoiceState("error", (e && e.message) || self.t("voice_unavailable"));
    });
  };
  /* Voice consent, inline in the conversation (asked once per browser). */
  P.consent = function (text, done) {
    var self = this, box = el("div", "ui cdw");
    if (this.cbox) this.cbox.remove();
    this.cbox = box;
    box.setAttribute("role", "group"); box.setAttribute("aria-label", this.t("consent"));
    box.appendChild(el("p")).textContent = text || this.t("consent_text");
    var ok = el("button", "bt"), no = el("button", "");
    ok.textContent = this.t("start_call"); no.textContent = this.t("not_now");
    ok.type = no.type = "button";
    ok.onclick = function () { store(self.skey + "consent", 1); box.remove(); self.cbox = null; done(true); };
    no.onclick = function () { box.remove(); self.cbox = null; self.mc.focus(); done(false); };
    box.appendChild(ok); box.appendChild(no);
    this.lg.appendChild(box); this.scroll(); ok.focus();
  };
  P.setMuted = function (on) {
    this.mute.setAttribute("aria-pressed", String(on));
    this.mute.lastChild.textContent = this.t(on ? "unmute" : "mute");
    if (this.voice) this.voice.setMuted(on);
  };
  P.hangUp = function () {
    var s = this.voice; this.voice = null;
    if (s) { try { s.stop("user"); } catch (e) { /* already closed */ } }
    this.setVoiceState("idle");
  };
  var LABELS = { error: "voice_unavailable" };
  P.setVoiceState = function (s, detail) {
    if (!this.vb) return;
    this.vstate = s;
    var active = s !== "idle";
    this.vb.hidden = !active;
    this.vb.setAttribute("data-s", s);
    this.vb.querySelector(".vl").textContent = detail || this.t(LABELS[s] || s);
    this.mute.hidden = s === "error";
    if (this.mc) {
      this.mc.setAttribute("aria-pressed", String(active && s !== "error"));
      this.mc.setAttribute("aria-label", this.t(active ? "voice_end" : "voice_start"));
      this.mc.innerHTML = svg(active && s !== "error" ? "hang" : "mic");
    }
    if (!active || s === "error") this.voice = null;  // the call is over: the composer goes back to chat
    if (!active) this.setMuted(false);
  };

  function mount(o) {
    var w = new Widget(o);
    (W.SwitchboardWidgets = W.SwitchboardWidgets || []).push(w);
    w.boot();
    return w;
  }
  W.SwitchboardWidget = { mount: mount, markdown: md, version: 1 };
  var q = W.SwitchboardQueue || [];
  W.SwitchboardQueue = { push: mount };
  for (var i = 0; i < q.length; i++) mount(q[i]);
})();
