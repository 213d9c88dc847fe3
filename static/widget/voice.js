/* Switchboard voice: a call from the widget (contract: BRIEF "Widget <-> voice JS").
 * window.SwitchboardVoice.create(api) -> {start(): Promise, stop(reason?), setMuted(bool), sendText(text)}
 *
 * One call core for every transport: consent, the visible states (connecting, listening, thinking, speaking,
 * error, idle), transcripts as turns (a live partial line replaced by one bubble per turn), UI events
 * (product cards, forms). A transport feeds the core the relay's event vocabulary (realtime/events.py)
 * through call.handle(evt); the widget's voice.transport picks one:
 * - relay: WS /ws/realtime/<key>/. Mic: getUserMedia -> AudioWorklet (inlined, Blob URL) that downmixes,
 *   resamples to 24 kHz PCM16 and hands over FRAME_MS chunks -> base64 input_audio_buffer.append. Playback: a
 *   gapless queue of 24 kHz buffers scheduled back to back, cleared on speech.started (barge-in). Server
 *   restart (session.ended reason "server_restart", or close 1012): the mic stays open and the socket
 *   reconnects with back-off ("Reconnecting…"), to another server process or the restarted one.
 * - webrtc: the browser talks to OpenAI directly. POST /api/realtime/client-secret gives an ephemeral key,
 *   the calls URL ({OPENAI_BASE_URL}/realtime/calls, named by our server) and the call's token; the mic
 *   track and an `oai-events` data channel go in an RTCPeerConnection whose SDP offer is posted there; the
 *   remote track plays in an <audio> element. GA events on the data channel are translated into the relay's
 *   vocabulary (as realtime/relay.py does server-side); tools run on our server (POST
 *   /api/widget/<key>/tools/<name> with the call's token) and their output goes back as
 *   function_call_output + response.create; turns and token counts are posted to
 *   /api/widget/<key>/voice/record at every response.done, every 15 s and at the end (the server bills them;
 *   its answer may end the call: minutes used up, maximum length).
 * - livekit: createLiveKit() hands the call to static/widget/voice-livekit.js (loaded on demand).
 * The configurator preview passes api.preview = {ticket(): Promise<{ws_path}>}: a test call on the unsaved
 * draft always goes over the relay (WebRTC and LiveKit need real credentials in the browser), on
 * WS /ws/realtime/preview/<ticket>/ with a fresh one-use ticket for each socket (realtime/preview.py).
 * A visitor's call starts with who calls from which page, api.callContext() -> {identity, page_context}
 * (identify's signed token; the page context the widget sends): the relay as the socket's first frame
 * (session.context, with &context=1), WebRTC and LiveKit in their endpoint's body. The server checks both and
 * builds the session's instructions from them (realtime/session_config.py).
 * Lead events: `lead.captured` {source} (a tool stored the visitor's details) -> api.lead(source).
 * Other transports may register with SwitchboardVoice.register(name, factory): factory(call) returns
 * {open(): Promise, close(), playing(): bool, clearPlayback(), setMuted(bool), sendText(text)}.
 */
(function () {
  "use strict";
  if (window.SwitchboardVoice) return;

  var RATE = 24000;
  // Audio per input_audio_buffer.append: 100 ms, as LiveKit Agents feeds OpenAI Realtime (our livekit transport too).
  // The relay's CPU is per message, not per byte; a frame adds <= FRAME_MS (mean FRAME_MS / 2) before server VAD
  // hears the end of a turn or a barge-in (bench/README-relay.md, 2026-12-04). bench/relay.py reads this line.
  var FRAME_MS = 100;
  var CHUNK = RATE * FRAME_MS / 1000; // samples per frame
  // ms between reconnect attempts (~40 s in all: a whole machine's processes may be restarting at once)
  var RETRY_DELAYS = [300, 700, 1500, 3000, 5000, 8000, 10000, 10000];
  var RETRYABLE = { server_restart: 1, server_busy: 1 }; // refusals worth another attempt while reconnecting
  var WORKLET = [
    "class SbCapture extends AudioWorkletProcessor {",
    "  constructor() { super(); this.step = sampleRate / " + RATE + "; this.pos = 0; this.prev = 0;",
    "    this.out = new Int16Array(" + CHUNK + "); this.n = 0; }",
    "  process(inputs) {",
    "    var input = inputs[0]; if (!input || !input.length) return true;",
    "    var len = input[0].length, chans = input.length, mono = new Float32Array(len);",
    "    for (var c = 0; c < chans; c++) for (var i = 0; i < len; i++) mono[i] += input[c][i] / chans;",
    "    while (this.pos < len) {",
    "      var i0 = Math.floor(this.pos), f = this.pos - i0;",
    "      var a = i0 === 0 ? this.prev : mono[i0 - 1], b = mono[i0];",
    "      var s = Math.max(-1, Math.min(1, a + (b - a) * f));",
    "      this.out[this.n++] = s < 0 ? s * 0x8000 : s * 0x7fff;",
    "      if (this.n === " + CHUNK + ") { this.port.postMessage(this.out.buffer, [this.out.buffer]);",
    "        this.out = new Int16Array(" + CHUNK + "); this.n = 0; }",
    "      this.pos += this.step;",
    "    }",
    "    this.pos -= len; this.prev = mono[len - 1]; return true;",
    "  }",
    "}",
    "registerProcessor('sb-capture', SbCapture);",
  ].join("\n");

  var MIC_ERRORS = {
    NotAllowedError: "Microphone access was blocked. Allow the microphone for this site to talk.",
    SecurityError: "Microphone access was blocked. Allow the microphone for this site to talk.",
    NotFoundError: "No microphone was found. Plug one in or type instead.",
    NotReadableError: "The microphone is busy in another app.",
  };
  var MIC_CONSTRAINTS = { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true };
  var CALM_ENDS = { hangup: 1, max_duration: 1 }; // ends that are not errors

  function toBase64(buffer) {
    var bytes = new Uint8Array(buffer), s = "";
    for (var i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    return btoa(s);
  }

  function fromBase64Pcm(b64) {
    var raw = atob(b64), n = raw.length >> 1, out = new Float32Array(n);
    for (var i = 0; i < n; i++) {
      var v = raw.charCodeAt(2 * i) | (raw.charCodeAt(2 * i + 1) << 8);
      out[i] = (v >= 0x8000 ? v - 0x10000 : v) / 0x8000;
    }
    return out;
  }

  function baseUrl(api) {
    return String(api.baseUrl || location.origin).replace(/\/$/, "");
  }

  function wsUrl(api) {
    return baseUrl(api).replace(/^http/, "ws") + "/ws/realtime/" + encodeURIComponent(api.licenseKey) + "/?widget=" +
      encodeURIComponent(api.widgetId || "") + "&visitor=" + encodeURIComponent(api.visitorId || "") + "&context=1";
  }

  /* Who calls from which page: {identity: identify's token or "", page_context: {...}} (widget.js). */
  function callContext(api) {
    var asked = typeof api.callContext === "function" ? api.callContext() : null;
    return Promise.resolve(asked).then(function (context) {
      context = context || {};
      return { identity: typeof context.identity === "string" ? context.identity : "",
        page_context: context.page_context && typeof context.page_context === "object" ? context.page_context : {} };
    }, function () { return { identity: "", page_context: {} }; });
  }

  function getMic(needs) {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia || !needs) {
      return Promise.reject(new Error("Voice needs a secure (https) page in a browser with microphone support."));
    }
    return navigator.mediaDevices.getUserMedia({ audio: MIC_CONSTRAINTS }).catch(function (err) {
      throw new Error(MIC_ERRORS[err && err.name] || "The microphone could not be started.");
    });
  }

  function askConsent(api, voiceCfg) {
    if (!voiceCfg.consent_required) return Promise.resolve(true);
    var key = "switchboard-voice-consent:" + api.widgetId;
    try { if (localStorage.getItem(key) === "1") return Promise.resolve(true); } catch (e) { /* private mode */ }
    var text = voiceCfg.consent_text || "This call is processed by an AI assistant and may be transcribed.";
    var asked = typeof api.confirm === "function" ? api.confirm(text) : Promise.resolve(window.confirm(text));
    return Promise.resolve(asked).then(function (ok) {
      if (ok) { try { localStorage.setItem(key, "1"); } catch (e) { /* private mode */ } }
      return !!ok;
    });
  }

  // transport: livekit lives in voice-livekit.js, loaded (with LiveKit's SDK) only for a LiveKit call.
  var QUERY = ((document.currentScript && document.currentScript.src) || "").split("?")[1] || "";
  function createLiveKit(api) {
    var inner = null, stopped = false, muted = false;
    function load() {
      if (window.SwitchboardVoiceLiveKit) return Promise.resolve(window.SwitchboardVoiceLiveKit);
      return new Promise(function (resolve, reject) {
        var script = document.createElement("script");
        script.src = String(api.baseUrl || "").replace(/\/$/, "") + "/static/widget/voice-livekit.js" + (QUERY ? "?" + QUERY : "");
        script.onload = function () { window.SwitchboardVoiceLiveKit ? resolve(window.SwitchboardVoiceLiveKit) : reject(new Error("")); };
        script.onerror = function () { reject(new Error("Voice isn't available on this site right now.")); };
        (document.head || document.documentElement).appendChild(script);
      });
    }
    return {
      start: function () {
        stopped = false;
        return load().then(function (LiveKitVoice) {
          if (stopped) return;
          inner = inner || LiveKitVoice.create(api);
          inner.setMuted(muted);
          return inner.start();
        });
      },
      stop: function (reason) { stopped = true; if (inner) inner.stop(reason); },
      setMuted: function (value) { muted = !!value; if (inner) inner.setMuted(muted); },
      sendText: function (text) { if (inner) inner.sendText(text); },
    };
  }

  /* ---- the call core: the same states, turns and UI events whatever the transport ---------------------- */

  var TRANSPORTS = {};

  function create(api) {
    var voiceCfg = (api.config && api.config.voice) || {};
    if (voiceCfg.transport === "livekit" && !api.preview) return createLiveKit(api);
    var factory = TRANSPORTS[api.preview ? "relay" : voiceCfg.transport || "relay"];
    var transport = null;
    var call = {
      api: api,
      voice: voiceCfg,
      state: "idle",
      ended: true,
      ready: false,
      responding: false,
      muted: false,
      setState: function (next, detail) {
        call.state = next;
        api.setVoiceState(next, detail);
      },
      // The relay's event vocabulary (realtime/events.py) plus audio.playing / audio.idle from the playback.
      handle: function (evt) {
        switch (evt.type) {
          case "session.ready": call.ready = true; call.setState("listening"); break;
          case "audio.playing": if (call.state !== "speaking") call.setState("speaking"); break;
          case "audio.idle": if (!call.responding && !call.ended && call.ready) call.setState("listening"); break;
          case "speech.started": transport.clearPlayback(); call.setState("listening"); break;
          case "speech.stopped": case "response.started": case "tool.started":
            if (evt.type === "response.started") call.responding = true;
            if (call.state !== "speaking") call.setState("thinking");
            break;
          case "response.done": call.responding = false; if (!transport.playing()) call.setState("listening"); break;
          case "transcript.partial": api.setPartial(evt.role, evt.text); break;
          case "transcript.final":
            api.setPartial(evt.role, null);
            api.addMessage({ role: evt.role, text: evt.text });
            break;
          case "ui.event": api.renderEvent(evt.event); break;
          case "lead.captured": if (typeof api.lead === "function") api.lead(String(evt.source || "")); break;
          case "warning": call.setState(call.state, evt.message); break;
          case "error":
            if (evt.fatal) call.setState("error", evt.message); else console.warn("[switchboard voice]", evt.message);
            break;
          case "session.ended":
            call.finish(CALM_ENDS[evt.reason] ? "idle" : "error", evt.message);
            break;
        }
      },
      // The call is over (the transport's side or the server's word): tear down, show the end once.
      finish: function (state, message) {
        var hadError = call.state === "error";
        call.teardown();
        if (!hadError) call.setState(state, message);
      },
      teardown: function () {
        call.ended = true;
        call.ready = false;
        call.responding = false;
        if (transport) transport.close();
      },
    };
    transport = factory ? factory(call) : null;

    return {
      start: function () {
        if (!call.ended) return Promise.resolve();
        if (!transport) {
          call.setState("error", "Voice isn't available on this site right now.");
          return Promise.reject(new Error("Unknown voice transport " + voiceCfg.transport));
        }
        return askConsent(api, voiceCfg).then(function (ok) {
          if (!ok) { call.setState("idle"); return; }
          call.ended = false;
          call.setState("connecting");
          return transport.open().catch(function (err) {
            if (call.ended) return; // hung up while connecting: nothing to show
            call.teardown();
            call.setState("error", err.message);
            throw err;
          });
        });
      },
      stop: function () {
        if (call.ended) return;
        call.teardown();
        call.setState("idle");
      },
      setMuted: function (value) {
        call.muted = !!value;
        if (transport) transport.setMuted(call.muted);
      },
      sendText: function (text) {
        text = String(text || "").trim();
        if (text && transport && !call.ended) transport.sendText(text);
      },
    };
  }

  /* ---- relay: WS /ws/realtime/<key>/ through our server --------------------------------------------- */

  TRANSPORTS.relay = function (call) {
    var api = call.api;
    var ws = null, ctx = null, stream = null, node = null, source = null;
    var playing = [], playHead = 0;
    var retry = -1, retryTimer = null; // retry >= 0 while reconnecting after a server restart

    function clearPlayback() {
      playing.forEach(function (src) { try { src.stop(); } catch (e) { /* already stopped */ } });
      playing = [];
      playHead = 0;
    }

    function play(b64) {
      var samples = fromBase64Pcm(b64);
      if (!samples.length || !ctx) return;
      var buffer = ctx.createBuffer(1, samples.length, RATE);
      buffer.copyToChannel(samples, 0);
      var src = ctx.createBufferSource();
      src.buffer = buffer;
      src.connect(ctx.destination);
      playHead = Math.max(playHead, ctx.currentTime + 0.03);
      src.start(playHead);
      playHead += buffer.duration;
      playing.push(src);
      src.onended = function () {
        playing = playing.filter(function (p) { return p !== src; });
        if (!playing.length) call.handle({ type: "audio.idle" });
      };
      call.handle({ type: "audio.playing" });
    }

    function send(event) {
      if (ws && ws.readyState === 1) ws.send(JSON.stringify(event));
    }

    function onEvent(evt) {
      switch (evt.type) {
        case "audio.delta": play(evt.delta); return;
        case "session.ready": retry = -1; break;
        case "error":
          // A restart or a busy server while reconnecting: the close that follows tries again.
          if (evt.fatal && (evt.code === "server_restart" || (retry >= 0 && RETRYABLE[evt.code]))) return;
          break;
        case "session.ended":
          if (evt.reason === "server_restart") return; // close 1012 follows: reconnect
          break;
      }
      call.handle(evt);
    }

    function reconnect() {
      retry += 1;
      call.ready = false;
      call.responding = false;
      clearPlayback();
      api.setPartial("user", null);
      api.setPartial("assistant", null);
      if (ws) {
        ws.onclose = ws.onmessage = null;
        if (ws.readyState < 2) ws.close(1000);
        ws = null;
      }
      if (retry >= RETRY_DELAYS.length) {
        call.finish("error", "The voice connection was lost.");
        return;
      }
      call.setState("connecting", "Reconnecting…");
      retryTimer = setTimeout(function () {
        retryTimer = null;
        if (!call.ended) openSocket().catch(function () { if (!call.ended) reconnect(); });
      }, RETRY_DELAYS[retry]);
    }

    function openMic() {
      return getMic(window.AudioWorkletNode).then(function (s) {
        stream = s;
        ctx = new (window.AudioContext || window.webkitAudioContext)();
        var url = URL.createObjectURL(new Blob([WORKLET], { type: "application/javascript" }));
        return ctx.audioWorklet.addModule(url).then(function () {
          URL.revokeObjectURL(url);
          source = ctx.createMediaStreamSource(stream);
          node = new AudioWorkletNode(ctx, "sb-capture");
          node.port.onmessage = function (e) {
            if (call.ready && !call.muted) send({ type: "input_audio_buffer.append", audio: toBase64(e.data) });
          };
          source.connect(node);
          node.connect(ctx.destination); // silent output: keeps the node pulled on every engine
          return ctx.resume();
        });
      });
    }

    // The visitor's socket, or the preview's: a new one-use ticket for every (re)connect.
    function socketUrl() {
      if (!api.preview) return Promise.resolve(wsUrl(api));
      return api.preview.ticket().then(function (answer) {
        return baseUrl(api).replace(/^http/, "ws") + answer.ws_path;
      });
    }

    function openSocket() {
      // A visitor's call says who calls from which page (the socket's first frame, context=1); a configurator
      // preview call has neither (its ticket names the draft).
      var context = api.preview ? Promise.resolve(null) : callContext(api);
      return Promise.all([socketUrl(), context]).then(function (both) { return connectSocket(both[0], both[1]); });
    }

    function connectSocket(url, context) {
      return new Promise(function (resolve, reject) {
        if (call.ended) { reject(new Error("")); return; } // hung up while the ticket was on its way
        ws = new WebSocket(url);
        var opened = false;
        ws.onopen = function () {
          opened = true;
          // The first frame (context=1): the server opens the call once it has read it.
          if (context) ws.send(JSON.stringify({ type: "session.context", identity: context.identity, page_context: context.page_context }));
          resolve();
        };
        ws.onmessage = function (m) {
          var evt;
          try { evt = JSON.parse(m.data); } catch (e) { return; }
          onEvent(evt);
        };
        ws.onclose = function (e) {
          if (!opened) { reject(new Error("Voice isn't available on this site right now.")); return; }
          if (!call.ended && (retry >= 0 || e.code === 1012)) { reconnect(); return; }
          if (!call.ended) call.finish("error", e.code === 1000 ? "The call ended." : "The voice connection was lost.");
        };
      });
    }

    return {
      open: function () { return openMic().then(openSocket); },
      close: function () {
        retry = -1;
        if (retryTimer) { clearTimeout(retryTimer); retryTimer = null; }
        clearPlayback();
        if (node) { node.port.onmessage = null; try { node.disconnect(); } catch (e) { /* gone */ } }
        if (source) { try { source.disconnect(); } catch (e) { /* gone */ } }
        if (stream) stream.getTracks().forEach(function (t) { t.stop(); });
        if (ctx) ctx.close().catch(function () {});
        if (ws && ws.readyState < 2) ws.close(1000);
        node = source = stream = ctx = null;
      },
      playing: function () { return playing.length > 0; },
      clearPlayback: clearPlayback,
      setMuted: function () { /* the worklet checks call.muted */ },
      sendText: function (text) {
        send({ type: "conversation.item.create", item: { type: "message", role: "user",
          content: [{ type: "input_text", text: text }] } });
        send({ type: "response.create" });
      },
    };
  };

  /* ---- webrtc: straight to OpenAI, tools and records through our server ------------------------------ */

  var RECORD_EVERY_MS = 15000; // also the heartbeat the server's reaper watches (60 s)
  var RECORD_TURNS = 8; // per post (the server takes <= 16 and <= 64 KB)
  var READY_TIMEOUT_MS = 20000;
  var TOOL_FALLBACK = JSON.stringify({ ok: false, say: "Sorry, I couldn't do that just now. Could you say it another way?" });
  // The GA response.done usage shape the server accepts (counts only); anything else is left out.
  var USAGE_SHAPE = {
    total_tokens: 1, input_tokens: 1, output_tokens: 1,
    input_token_details: { text_tokens: 1, audio_tokens: 1, image_tokens: 1, cached_tokens: 1,
      cached_tokens_details: { text_tokens: 1, audio_tokens: 1, image_tokens: 1 } },
    output_token_details: { text_tokens: 1, audio_tokens: 1 },
  };

  function usageAdd(total, usage, shape) {
    Object.keys(shape).forEach(function (key) {
      var value = usage && usage[key];
      if (typeof shape[key] === "object") {
        total[key] = usageAdd(total[key] || {}, value, shape[key]);
      } else if (typeof value === "number" && value > 0) {
        total[key] = (total[key] || 0) + Math.floor(value);
      }
    });
    return total;
  }

  function itemId(id) {
    var clean = String(id || "").replace(/[^A-Za-z0-9_-]/g, "").slice(0, 64);
    return clean || "sb_" + Math.random().toString(36).slice(2, 12);
  }

  TRANSPORTS.webrtc = function (call) {
    var api = call.api;
    var base = baseUrl(api);
    var stream = null, pc = null, channel = null, audio = null, secret = null;
    var remotePlaying = false, responseActive = false, needResponse = false, pendingTools = 0;
    var partials = {}, handledCalls = {}, usage = {}, turns = [];
    var recordTimer = null, readyTimer = null, maxTimer = null, posting = Promise.resolve();
    var endReason = "";

    function postJson(url, body, keepalive) {
      // text/plain: a CORS "simple request", no preflight round trip (the server parses it as JSON).
      return fetch(url, { method: "POST", credentials: "omit", keepalive: !!keepalive,
        headers: { "Content-Type": "text/plain;charset=UTF-8" }, body: JSON.stringify(body) })
        .then(function (response) {
          return response.json().catch(function () { return {}; }).then(function (data) {
            if (!response.ok) {
              var err = new Error((data.error && data.error.message) || "Voice isn't available on this site right now.");
              err.status = response.status;
              throw err;
            }
            return data;
          });
        });
    }

    function send(event) {
      if (!channel || channel.readyState !== "open") return false;
      channel.send(JSON.stringify(event));
      return true;
    }

    function end(reason, message) {
      if (call.ended) return;
      endReason = reason;
      call.handle({ type: "session.ended", reason: reason, message: message });
    }

    /* Turns and token counts to our server, in order (one post at a time); the answer may end the call. */
    function record(final) {
      var batch = turns.splice(0, RECORD_TURNS);
      var url = base + secret.record_url;
      var body = { token: secret.tools_token, usage: usage };
      if (batch.length) body.turns = batch;
      if (final && !turns.length) body.end = endReason || "hangup";
      posting = posting.then(function () {
        return postJson(url, body, final).then(function (answer) {
          if (answer.warning && !call.ended) call.handle({ type: "warning", code: answer.warning.code, message: answer.warning.message });
          if (answer.end && !call.ended) end(answer.end.reason, answer.end.message);
        }, function (err) {
          if (!err.status) turns = batch.concat(turns); // unreachable: the next post carries them
          else console.warn("[switchboard voice]", err.message);
        });
      });
      if (turns.length && (final || batch.length === RECORD_TURNS)) record(final);
    }

    function addTurn(role, text, id) {
      turns.push({ role: role, text: text.slice(0, 4000), item_id: itemId(id) });
    }

    function runTool(evt) {
      var callId = String(evt.call_id || ""), name = String(evt.name || ""), tools = base + secret.tools_url;
      if (!callId || handledCalls[callId]) return;
      handledCalls[callId] = 1;
      pendingTools += 1;
      call.handle({ type: "tool.started", name: name });
      // One request to our server at a time, in order: the turns before the call are stored first, so the
      // transcript reads question, tool, answer; the next record waits for the tool.
      if (turns.length) record(false);
      var token = secret.tools_token;
      var ran = posting.then(function () {
        return postJson(tools + encodeURIComponent(name), { token: token, arguments: evt.arguments });
      }).catch(function (err) {
        console.warn("[switchboard voice]", err.message);
        return { output: TOOL_FALLBACK, ui_event: null };
      });
      posting = ran.then(function () {});
      ran.then(function (result) {
        pendingTools -= 1;
        if (call.ended) return;
        send({ type: "conversation.item.create", item: { type: "function_call_output", call_id: callId, output: result.output } });
        if (result.ui_event) call.handle({ type: "ui.event", event: result.ui_event });
        if (result.lead) call.handle({ type: "lead.captured", source: result.lead.source });
        needResponse = true;
        maybeContinue();
      });
    }

    /* After tool outputs: one response.create, once the calling response is done (as the relay does). */
    function maybeContinue() {
      if (needResponse && pendingTools === 0 && !responseActive && !call.ended) {
        needResponse = false;
        send({ type: "response.create" });
      }
    }

    function partial(role, evt) {
      var key = role[0] + ":" + (evt.item_id || "");
      partials[key] = (partials[key] || "") + String(evt.delta || "");
      call.handle({ type: "transcript.partial", role: role, text: partials[key], item_id: evt.item_id || "" });
    }

    function final(role, evt, text) {
      var key = role[0] + ":" + (evt.item_id || "");
      text = String(text || partials[key] || "").trim();
      delete partials[key];
      if (!text) return;
      addTurn(role, text, evt.item_id);
      call.handle({ type: "transcript.final", role: role, text: text, item_id: evt.item_id || "" });
    }

    /* GA events from OpenAI, translated into the relay's vocabulary (realtime/relay.py handle_upstream). */
    function onUpstream(evt) {
      switch (evt.type) {
        case "session.created":
          clearTimeout(readyTimer);
          call.handle({ type: "session.ready" });
          break;
        case "response.output_audio_transcript.delta": case "response.output_text.delta":
          partial("assistant", evt);
          break;
        case "response.output_audio_transcript.done": case "response.output_text.done":
          final("assistant", evt, evt.transcript || evt.text);
          break;
        case "conversation.item.input_audio_transcription.delta": partial("user", evt); break;
        case "conversation.item.input_audio_transcription.completed": final("user", evt, evt.transcript); break;
        case "input_audio_buffer.speech_started": call.handle({ type: "speech.started" }); break;
        case "input_audio_buffer.speech_stopped": call.handle({ type: "speech.stopped" }); break;
        // WebRTC only: the model's audio on the track starts / stops (cleared on barge-in).
        case "output_audio_buffer.started": remotePlaying = true; call.handle({ type: "audio.playing" }); break;
        case "output_audio_buffer.stopped": case "output_audio_buffer.cleared":
          remotePlaying = false;
          call.handle({ type: "audio.idle" });
          break;
        case "response.created": responseActive = true; call.handle({ type: "response.started" }); break;
        case "response.done":
          responseActive = false;
          usageAdd(usage, (evt.response || {}).usage, USAGE_SHAPE);
          record(false);
          call.handle({ type: "response.done", status: (evt.response || {}).status || "completed" });
          maybeContinue();
          break;
        case "response.function_call_arguments.done": runTool(evt); break;
        case "error":
          call.handle({ type: "error", code: "upstream_error", fatal: false,
            message: ((evt.error || {}).message) || "The voice service couldn't handle that; please try again." });
          break;
      }
    }

    function connect() {
      var peer = pc = new RTCPeerConnection();
      stream.getAudioTracks().forEach(function (track) { peer.addTrack(track, stream); });
      peer.ontrack = function (e) {
        audio = audio || new Audio();
        audio.autoplay = true;
        audio.srcObject = (e.streams && e.streams[0]) || new MediaStream([e.track]);
        audio.play().catch(function () { /* autoplay blocked: the next user gesture resumes it */ });
      };
      peer.onconnectionstatechange = function () {
        if (peer.connectionState === "failed") end("upstream_closed", "The voice connection was lost.");
      };
      channel = peer.createDataChannel("oai-events");
      channel.onmessage = function (m) {
        var evt;
        try { evt = JSON.parse(m.data); } catch (e) { return; }
        if (evt && typeof evt === "object") onUpstream(evt);
      };
      channel.onclose = function () { end("upstream_closed", "The voice service closed the call."); };
      var key = secret.value, callsUrl = secret.calls_url, maxSeconds = secret.max_session_seconds;
      return peer.createOffer().then(function (offer) {
        return peer.setLocalDescription(offer);
      }).then(function () {
        return fetch(callsUrl, { method: "POST", body: peer.localDescription.sdp, credentials: "omit",
          headers: { Authorization: "Bearer " + key, "Content-Type": "application/sdp" } });
      }).then(function (response) {
        if (!response.ok) throw new Error("The voice service refused the call. Please try again shortly.");
        return response.text();
      }, function () {
        throw new Error("The voice service can't be reached right now. Please try again shortly.");
      }).then(function (sdp) {
        if (call.ended) return;
        readyTimer = setTimeout(function () {
          end("upstream_closed", "The voice service can't be reached right now. Please try again shortly.");
        }, READY_TIMEOUT_MS);
        recordTimer = setInterval(function () { record(false); }, RECORD_EVERY_MS);
        maxTimer = setTimeout(function () {
          end("max_duration", "The call reached its maximum length.");
        }, maxSeconds * 1000);
        return peer.setRemoteDescription({ type: "answer", sdp: sdp });
      });
    }

    function onPageHide() { if (!call.ended) { endReason = "browser_gone"; call.teardown(); } }

    return {
      open: function () {
        return getMic(window.RTCPeerConnection).then(function (s) {
          stream = s;
          if (call.muted) stream.getAudioTracks().forEach(function (t) { t.enabled = false; });
          return callContext(api);
        }).then(function (context) {
          var url = base + "/api/realtime/client-secret?license=" + encodeURIComponent(api.licenseKey);
          return postJson(url, { license: api.licenseKey, widget: api.widgetId || "", visitor_id: api.visitorId || "",
            identity: context.identity, page_context: context.page_context });
        }).then(function (answer) {
          secret = answer;
          if (call.ended) { record(true); secret = null; return; } // hung up while the key was on its way
          window.addEventListener("pagehide", onPageHide);
          return connect();
        });
      },
      close: function () {
        window.removeEventListener("pagehide", onPageHide);
        clearInterval(recordTimer);
        clearTimeout(readyTimer);
        clearTimeout(maxTimer);
        recordTimer = readyTimer = maxTimer = null;
        Object.keys(partials).forEach(function (key) { // a turn cut off mid-way still counts once
          var text = partials[key].trim();
          if (text && key[0] === "a") addTurn("assistant", text, key.slice(2));
        });
        partials = {};
        if (secret) record(true);
        secret = null;
        if (channel) { channel.onclose = channel.onmessage = null; try { channel.close(); } catch (e) { /* gone */ } }
        if (pc) { pc.onconnectionstatechange = pc.ontrack = null; pc.close(); }
        if (stream) stream.getTracks().forEach(function (t) { t.stop(); });
        if (audio) { audio.pause(); audio.srcObject = null; }
        channel = pc = stream = audio = null;
        remotePlaying = responseActive = needResponse = false;
        pendingTools = 0;
      },
      playing: function () { return remotePlaying; },
      clearPlayback: function () { /* OpenAI stops the track itself on barge-in (output_audio_buffer.cleared) */ },
      setMuted: function (muted) {
        if (stream) stream.getAudioTracks().forEach(function (t) { t.enabled = !muted; });
      },
      sendText: function (text) {
        var id = itemId("sbt_" + Date.now().toString(36) + Math.random().toString(36).slice(2, 6));
        text = text.slice(0, 4000);
        var sent = send({ type: "conversation.item.create", item: { id: id, type: "message", role: "user",
          content: [{ type: "input_text", text: text }] } });
        if (!sent) { console.warn("[switchboard voice]", "The call is not connected yet."); return; }
        send({ type: "response.create" });
        addTurn("user", text, id);
        call.handle({ type: "transcript.final", role: "user", text: text, item_id: id });
      },
    };
  };

  window.SwitchboardVoice = {
    create: create,
    callContext: callContext,
    register: function (name, factory) { TRANSPORTS[name] = factory; },
  };
})();
