// A stand-in for OpenAI's <openai-chatkit> (its CDN is not reachable in tests). It does what the real
// element does with a custom api: POSTs ChatKit requests through options.api.fetch to options.api.url
// (our endpoint) and reads the SSE stream; it draws text deltas, widgets (product cards, the trade-in
// form) and errors, and records every event in window.__events. Like the real element (openai/chatkit-js
// OpenAIChatKit) it has sendUserMessage({text}) and setThreadId(threadId | null), honours the `locale`
// option (data-locale, window.__locales), and dispatches chatkit.response.start / .end,
// chatkit.thread.change {threadId} and chatkit.effect {name, data} (a server `client_effect`).
function el(tag, attrs, text) {
  const node = document.createElement(tag);
  Object.entries(attrs || {}).forEach(([k, v]) => node.setAttribute(k, v));
  if (text !== undefined) node.textContent = text;
  return node;
}
class StandInChatKit extends HTMLElement {
  setOptions(options) {
    window.__chatkitSameApi = window.__chatkitApi === options.api;
    window.__chatkit = {options: JSON.parse(JSON.stringify(options)), apiKeys: Object.keys(options.api).sort()};
    window.__chatkitApi = options.api;
    window.__chatkitCalls = (window.__chatkitCalls || 0) + 1;
    window.__events = window.__events || [];
    this.options = options;
    window.__locales = (window.__locales || []).concat([options.locale || ""]);
    this.setAttribute("data-locale", options.locale || "");
    const t = options.theme, dark = t.colorScheme === "dark";
    this.style.cssText = `display:flex;flex-direction:column;height:100%;font:${t.typography.baseSize}px system-ui;` +
      `background:${dark ? "#111827" : "#fff"};color:${dark ? "#f9fafb" : "#111827"}`;
    if (!this.log) {
      this.innerHTML = "";
      this.appendChild(el("div", {style: "padding:10px 14px;border-bottom:1px solid #374151"}, "Stand-in ChatKit"));
      this.greeting = this.appendChild(el("h2", {style: "margin:12px 14px"}));
      this.log = this.appendChild(el("div", {"data-testid": "log", style: "flex:1;overflow:auto;padding:0 14px"}));
      const bar = this.appendChild(el("form", {style: "display:flex;gap:8px;padding:10px"}));
      this.input = bar.appendChild(el("input", {"aria-label": "Message", style:
        "flex:1;padding:10px;border-radius:12px;border:1px solid #4b5563;background:none;color:inherit"}));
      this.sendButton = bar.appendChild(el("button", {type: "submit"}, "Send"));
      bar.addEventListener("submit", (e) => { e.preventDefault(); const v = this.input.value; this.input.value = "";
        this.sendText(v); });
      this.request({type: "threads.list", params: {limit: 9, order: "desc"}}).then(r => r.json())
        .then(d => { window.__threads = d; });
    }
    this.greeting.textContent = options.startScreen.greeting;
    this.input.placeholder = options.composer.placeholder;
    this.sendButton.style.cssText = `background:${t.color.accent.primary};color:#fff;border:0;border-radius:12px;` +
      "padding:0 16px";
  }
  request(body) {
    return this.options.api.fetch(this.options.api.url, {method: "POST", headers: {"Content-Type": "application/json"},
                                                         body: JSON.stringify(body)});
  }
  emitEvent(type, detail) { this.dispatchEvent(new CustomEvent(type, {detail})); }
  sendUserMessage({text}) { return this.sendText(text); }
  async setThreadId(threadId) {
    this.threadId = threadId;
    if (threadId === null) this.log.innerHTML = "";
    this.emitEvent("chatkit.thread.change", {threadId});
  }
  async stream(body) {
    this.emitEvent("chatkit.response.start");
    try { await this.read(body); } finally { this.emitEvent("chatkit.response.end"); }
  }
  async read(body) {
    const res = await this.request(body);
    if (!res.ok) { window.__chatkitHttpError = res.status; return; }
    const reader = res.body.getReader(), decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const {done, value} = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, {stream: true});
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const frame = buffer.slice(0, cut); buffer = buffer.slice(cut + 2);
        if (frame.startsWith("data: ")) this.handle(JSON.parse(frame.slice(6)));
      }
    }
    window.__turns = (window.__turns || 0) + 1;
  }
  sendText(text) {
    this.log.appendChild(el("p", {class: "user"}, text));
    const params = {input: {content: [{type: "input_text", text}], attachments: [], inference_options: {}}};
    return this.stream(this.threadId ? {type: "threads.add_user_message", params: {thread_id: this.threadId, ...params}}
                                     : {type: "threads.create", params});
  }
  handle(event) {
    window.__events.push(event);
    if (event.type === "thread.created") {
      this.threadId = event.thread.id;
      this.emitEvent("chatkit.thread.change", {threadId: this.threadId});
    }
    if (event.type === "client_effect") this.emitEvent("chatkit.effect", {name: event.name, data: event.data});
    if (event.type === "thread.item.added" && event.item.type === "assistant_message") {
      this.bubble = this.log.appendChild(el("p", {class: "assistant", "data-item": event.item.id}, ""));
    }
    if (event.type === "thread.item.updated" && event.update.type === "assistant_message.content_part.text_delta") {
      this.bubble.textContent += event.update.delta;
    }
    if (event.type === "thread.item.done" && event.item.type === "assistant_message" &&
        !this.log.querySelector(`[data-item="${event.item.id}"]`)) {
      this.log.appendChild(el("p", {class: "assistant"}, event.item.content.map(c => c.text).join("")));
    }
    if (event.type === "thread.item.done" && event.item.type === "widget") this.widget(event.item);
    if (event.type === "thread.item.replaced" && event.item.type === "widget") {
      this.log.querySelector(`[data-item="${event.item.id}"]`).replaceWith(this.render(event.item));
    }
    if (event.type === "error") this.log.appendChild(el("p", {role: "alert"}, event.message || "error"));
  }
  widget(item) { this.log.appendChild(this.render(item)); }
  render(item) {
    const box = el("div", {class: "widget", "data-item": item.id, "data-type": item.widget.type,
                           style: "border:1px solid #4b5563;border-radius:10px;padding:8px;margin:6px 0"});
    const walk = (node, into) => {
      if (["Text", "Title", "Caption"].includes(node.type)) into.appendChild(el("div", {}, node.value));
      if (node.type === "Badge") into.appendChild(el("span", {class: "badge"}, node.label));
      if (node.type === "Form") {
        const form = into.appendChild(el("form", {"data-testid": "trade-in-form"}));
        (node.children || []).forEach(c => walk(c, form));
        form.addEventListener("submit", (e) => {
          e.preventDefault();
          const payload = Object.fromEntries(new FormData(form).entries());
          this.stream({type: "threads.custom_action", params: {thread_id: this.threadId, item_id: item.id,
            action: {...node.onSubmitAction, payload: {...(node.onSubmitAction.payload || {}), ...payload}}}});
        });
        return;
      }
      if (node.type === "Input") into.appendChild(el("input", {name: node.name, "aria-label": node.name,
        value: node.defaultValue || "", type: node.inputType || "text"}));
      if (node.type === "Select") {
        const select = into.appendChild(el("select", {name: node.name, "aria-label": node.name}));
        node.options.forEach(o => { const opt = select.appendChild(el("option", {value: o.value}, o.label));
          if (o.value === node.defaultValue) opt.selected = true; });
      }
      if (node.type === "Button" && node.submit) into.appendChild(el("button", {type: "submit"}, node.label));
      (Array.isArray(node.children) ? node.children : []).forEach(c => walk(c, into));
    };
    walk(item.widget, box);
    return box;
  }
}
customElements.define("openai-chatkit", StandInChatKit);
