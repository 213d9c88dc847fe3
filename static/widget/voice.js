/* Switchboard voice: a relay call from the widget (contract: BRIEF "Widget <-> voice JS").
 * window.SwitchboardVoice.create(api) -> {start(): Promise, stop(reason?), setMuted(bool), sendText(text)}
 * Mic: getUserMedia -> AudioWorklet (inlined, Blob URL) that downmixes, resamples to 24 kHz PCM16 and
 * hands over 40 ms chunks -> base64 input_audio_buffer.append. Playback: a gapless queue of 24 kHz
 * buffers scheduled back to back, cleared on speech.started (barge-in). Server events: realtime/events.py.
 * transport "livekit": createLiveKit() hands the call to static/widget/voice-livekit.js (loaded on demand).
 * Server restart (session.ended reason "server_restart", or close 1012): the mic stays open and the socket
 * reconnects with back-off ("Reconnecting…"), to another server process or the restarted one.
 */
(function () {
  "use strict";
  if (window.SwitchboardVoice) return;

  var RATE = 24000;
  var CHUNK = 960; // 40 ms at 24 kHz
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

  function wsUrl(api) {
    var base = String(api.baseUrl || location.origin).replace(/^http/, "ws").replace(/\/$/, "");
    return base + "/ws/realtime/" + encodeURIComponent(api.licenseKey) + "/?widget=" +
      encodeURIComponent(api.widgetId || "") + "&visitor=" + encodeURIComponent(api.visitorId || "");
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

  function create(api) {
    if (api.config && api.config.voice && api.config.voice.transport === "livekit") return createLiveKit(api);
    var ws = null, ctx = null, stream = null, node = null, source = null;
    var muted = false, ended = true, ready = false, state = "idle";
    var playing = [], playHead = 0, responding = false;
    var retry = -1, retryTimer = null; // retry >= 0 while reconnecting after a server restart
    var voiceCfg = (api.config && api.config.voice) || {};

    function setState(next, detail) {
      state = next;
      api.setVoiceState(next, detail);
    }

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
        if (!playing.length && !responding && !ended && ready) setState("listening");
      };
      if (state !== "speaking") setState("speaking");
    }

    function send(event) {
      if (ws && ws.readyState === 1) ws.send(JSON.stringify(event));
    }

    function onEvent(evt) {
      switch (evt.type) {
        case "session.ready": ready = true; retry = -1; setState("listening"); break;
        case "audio.delta": play(evt.delta); break;
        case "speech.started": clearPlayback(); setState("listening"); break;
        case "speech.stopped": case "response.started": case "tool.started":
          if (evt.type === "response.started") responding = true;
          if (state !== "speaking") setState("thinking");
          break;
        case "response.done": responding = false; if (!playing.length) setState("listening"); break;
        case "transcript.partial": api.setPartial(evt.role, evt.text); break;
        case "transcript.final":
          api.setPartial(evt.role, null);
          api.addMessage({ role: evt.role, text: evt.text });
          break;
        case "ui.event": api.renderEvent(evt.event); break;
        case "warning": setState(state, evt.message); break;
        case "error":
          // A restart or a busy server while reconnecting: the close that follows tries again.
          if (evt.fatal && (evt.code === "server_restart" || (retry >= 0 && RETRYABLE[evt.code]))) break;
          if (evt.fatal) setState("error", evt.message); else console.warn("[switchboard voice]", evt.message);
          break;
        case "session.ended":
          if (evt.reason === "server_restart") break; // close 1012 follows: reconnect
          var hadError = state === "error";
          cleanup();
          var calm = evt.reason === "hangup" || evt.reason === "max_duration";
          if (!hadError) setState(calm ? "idle" : "error", evt.message);
          break;
      }
    }

    function reconnect() {
      retry += 1;
      ready = false;
      responding = false;
      clearPlayback();
      api.setPartial("user", null);
      api.setPartial("assistant", null);
      if (ws) {
        ws.onclose = ws.onmessage = null;
        if (ws.readyState < 2) ws.close(1000);
        ws = null;
      }
      if (retry >= RETRY_DELAYS.length) {
        cleanup();
        setState("error", "The voice connection was lost.");
        return;
      }
      setState("connecting", "Reconnecting…");
      retryTimer = setTimeout(function () {
        retryTimer = null;
        if (!ended) openSocket().catch(function () { if (!ended) reconnect(); });
      }, RETRY_DELAYS[retry]);
    }

    function cleanup() {
      ended = true;
      ready = false;
      retry = -1;
      if (retryTimer) { clearTimeout(retryTimer); retryTimer = null; }
      clearPlayback();
      if (node) { node.port.onmessage = null; try { node.disconnect(); } catch (e) { /* gone */ } }
      if (source) { try { source.disconnect(); } catch (e) { /* gone */ } }
      if (stream) stream.getTracks().forEach(function (t) { t.stop(); });
      if (ctx) ctx.close().catch(function () {});
      if (ws && ws.readyState < 2) ws.close(1000);
      node = source = stream = ctx = null;
    }

    function askConsent() {
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

    function openMic() {
      if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia || !window.AudioWorkletNode) {
        return Promise.reject(new Error("Voice needs a secure (https) page in a browser with microphone support."));
      }
      return navigator.mediaDevices.getUserMedia({
        audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
      }).catch(function (err) {
        throw new Error(MIC_ERRORS[err && err.name] || "The microphone could not be started.");
      }).then(function (s) {
        stream = s;
        ctx = new (window.AudioContext || window.webkitAudioContext)();
        var url = URL.createObjectURL(new Blob([WORKLET], { type: "application/javascript" }));
        return ctx.audioWorklet.addModule(url).then(function () {
          URL.revokeObjectURL(url);
          source = ctx.createMediaStreamSource(stream);
          node = new AudioWorkletNode(ctx, "sb-capture");
          node.port.onmessage = function (e) {
            if (ready && !muted) send({ type: "input_audio_buffer.append", audio: toBase64(e.data) });
          };
          source.connect(node);
          node.connect(ctx.destination); // silent output: keeps the node pulled on every engine
          return ctx.resume();
        });
      });
    }

    function openSocket() {
      return new Promise(function (resolve, reject) {
        ws = new WebSocket(wsUrl(api));
        var opened = false;
        ws.onopen = function () { opened = true; resolve(); };
        ws.onmessage = function (m) {
          var evt;
          try { evt = JSON.parse(m.data); } catch (e) { return; }
          onEvent(evt);
        };
        ws.onclose = function (e) {
          if (!opened) { reject(new Error("Voice isn't available on this site right now.")); return; }
          if (!ended && (retry >= 0 || e.code === 1012)) { reconnect(); return; }
          if (!ended) {
            var hadError = state === "error";
            cleanup();
            if (!hadError) setState("error", e.code === 1000 ? "The call ended." : "The voice connection was lost.");
          }
        };
      });
    }

    return {
      start: function () {
        if (!ended) return Promise.resolve();
        return askConsent().then(function (ok) {
          if (!ok) { setState("idle"); return; }
          ended = false;
          setState("connecting");
          return openMic().then(openSocket).catch(function (err) {
            cleanup();
            setState("error", err.message);
            throw err;
          });
        });
      },
      stop: function () {
        if (ended) return;
        cleanup();
        setState("idle");
      },
      setMuted: function (value) { muted = !!value; },
      sendText: function (text) {
        text = String(text || "").trim();
        if (!text) return;
        send({ type: "conversation.item.create", item: { type: "message", role: "user",
          content: [{ type: "input_text", text: text }] } });
        send({ type: "response.create" });
      },
    };
  }

  window.SwitchboardVoice = { create: create };
})();
