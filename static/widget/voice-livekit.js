/* Switchboard voice over LiveKit (transport: livekit). Loaded by voice.js only for this transport.
 * window.SwitchboardVoiceLiveKit.create(api) -> {start(): Promise, stop(reason?), setMuted(bool), sendText(text)},
 * the same contract and the same `api` as voice.js (widget.js voiceApi()).
 * 1. POST /api/livekit/token -> {server_url, participant_token} (the server checks license, Origin, caps);
 * 2. LiveKit's browser SDK, vendored at static/widget/vendor/ (pinned: SDK_VERSION, manifest livekit-client.json),
 *    loaded on the first LiveKit call and never left as a global (a page's own LivekitClient stays as it was);
 * 3. joins the call's room, publishes the microphone, plays the agent's audio track;
 * 4. the agent (python manage.py voice_agent) sends the relay's events (realtime/events.py) on the text-stream
 *    topic "switchboard.voice": the same turns, cards and forms as the relay; typed text goes on "lk.chat".
 * Tests replace the SDK with a stand-in: set SwitchboardVoiceLiveKit.sdk before a call.
 */
(function () {
  "use strict";
  if (window.SwitchboardVoiceLiveKit) return;

  var SDK_VERSION = "2.23.0";
  var SDK_PATH = "/static/widget/vendor/livekit-client-" + SDK_VERSION + ".umd.js";
  var TOPIC = "switchboard.voice";
  var CHAT_TOPIC = "lk.chat"; // livekit-agents' text input
  var JOIN_TIMEOUT_MS = 20000; // the agent must say session.ready within this
  var module = { create: create, load: loadSdk, sdk: null, SDK_VERSION: SDK_VERSION, TOPIC: TOPIC };
  var sdkLoading = null;

  function loadSdk(api) {
    if (module.sdk) return Promise.resolve(module.sdk);
    if (!sdkLoading) {
      sdkLoading = new Promise(function (resolve, reject) {
        var had = Object.prototype.hasOwnProperty.call(window, "LivekitClient");
        var prior = window.LivekitClient;
        var script = document.createElement("script");
        script.src = String(api.baseUrl || "").replace(/\/$/, "") + SDK_PATH;
        script.async = true;
        script.onload = function () {
          var ours = window.LivekitClient;
          if (had) window.LivekitClient = prior; else { try { delete window.LivekitClient; } catch (e) { window.LivekitClient = undefined; } }
          if (!ours || ours.version !== SDK_VERSION) {
            sdkLoading = null;
            reject(new Error("Voice couldn't start on this page."));
            return;
          }
          module.sdk = ours;
          resolve(ours);
        };
        script.onerror = function () { sdkLoading = null; reject(new Error("Voice isn't available on this site right now.")); };
        (document.head || document.documentElement).appendChild(script);
      });
    }
    return sdkLoading;
  }

  function fetchToken(api) {
    var base = String(api.baseUrl || location.origin).replace(/\/$/, "");
    // Who calls from which page (voice.js callContext): the server checks it and writes it into the agent's
    // dispatch metadata. text/plain: a simple request, no CORS preflight; the server reads it as JSON.
    var context = window.SwitchboardVoice && window.SwitchboardVoice.callContext
      ? window.SwitchboardVoice.callContext(api) : Promise.resolve({ identity: "", page_context: {} });
    return context.then(function (ctx) {
      return fetch(base + "/api/livekit/token?license=" + encodeURIComponent(api.licenseKey), {
        method: "POST",
        credentials: "omit",
        headers: { "Content-Type": "text/plain" },
        body: JSON.stringify({ license: api.licenseKey, widget: api.widgetId || "", visitor_id: api.visitorId || "",
          identity: ctx.identity, page_context: ctx.page_context }),
      });
    }).catch(function () {
      throw new Error("Voice isn't available on this site right now.");
    }).then(function (res) {
      return res.json().catch(function () { return {}; }).then(function (body) {
        if (!res.ok || !body.server_url || !body.participant_token) {
          throw new Error((body.error && body.error.message) || "Voice isn't available on this site right now.");
        }
        return body;
      });
    });
  }

  function create(api) {
    var room = null, ended = true, ready = false, muted = false, state = "idle";
    var audioEls = [], joinTimer = null;
    var voiceCfg = (api.config && api.config.voice) || {};

    function setState(next, detail) {
      state = next;
      api.setVoiceState(next, detail);
    }

    function askConsent() {
      if (!voiceCfg.consent_required) return Promise.resolve(true);
      var text = voiceCfg.consent_text || "This call is processed by an AI assistant and may be transcribed.";
      return Promise.resolve(typeof api.confirm === "function" ? api.confirm(text) : window.confirm(text));
    }

    function onEvent(evt) {
      switch (evt.type) {
        case "session.ready":
          ready = true;
          if (joinTimer) { clearTimeout(joinTimer); joinTimer = null; }
          setState("listening");
          break;
        case "speech.started": setState("listening"); break;
        case "speech.stopped": case "response.started": case "tool.started":
          if (state !== "speaking") setState("thinking");
          break;
        case "response.done": setState("listening"); break;
        case "transcript.partial": api.setPartial(evt.role, evt.text); break;
        case "transcript.final":
          api.setPartial(evt.role, null);
          api.addMessage({ role: evt.role, text: evt.text });
          break;
        case "ui.event": api.renderEvent(evt.event); break;
        case "lead.captured": if (typeof api.lead === "function") api.lead(String(evt.source || "")); break;
        case "warning": setState(state, evt.message); break;
        case "error":
          if (evt.fatal) setState("error", evt.message); else console.warn("[switchboard voice]", evt.message);
          break;
        case "session.ended":
          var hadError = state === "error";
          cleanup();
          var calm = evt.reason === "hangup" || evt.reason === "max_duration";
          if (!hadError) setState(calm ? "idle" : "error", evt.message);
          break;
      }
    }

    function onAgentAttributes(changed, participant) {
      // livekit-agents publishes its state as the participant attribute lk.agent.state.
      if (!participant || participant === room.localParticipant || !ready || ended) return;
      var agentState = changed && changed["lk.agent.state"];
      if (agentState === "speaking") setState("speaking");
      else if (agentState === "listening" && state === "speaking") setState("listening");
    }

    function cleanup() {
      ended = true;
      ready = false;
      if (joinTimer) { clearTimeout(joinTimer); joinTimer = null; }
      audioEls.forEach(function (el) { try { el.remove(); } catch (e) { /* gone */ } });
      audioEls = [];
      var r = room;
      room = null;
      if (r) { r.removeAllListeners && r.removeAllListeners(); r.disconnect().catch(function () {}); }
    }

    function join(LK, grant) {
      room = new LK.Room({ adaptiveStream: false, dynacast: false });
      var E = LK.RoomEvent;
      room.registerTextStreamHandler(TOPIC, function (reader) {
        reader.readAll().then(function (text) {
          var evt;
          try { evt = JSON.parse(text); } catch (e) { return; }
          if (!ended && evt && typeof evt.type === "string") onEvent(evt);
        });
      });
      room.on(E.TrackSubscribed, function (track) {
        if (track.kind !== LK.Track.Kind.Audio) return;
        var el = track.attach();
        el.setAttribute("data-switchboard-voice", "agent");
        el.style.display = "none";
        document.body.appendChild(el);
        audioEls.push(el);
      });
      room.on(E.ParticipantAttributesChanged, onAgentAttributes);
      room.on(E.Disconnected, function () {
        if (ended) return;
        cleanup();
        setState("error", "The voice connection was lost.");
      });
      return room.connect(grant.server_url, grant.participant_token).then(function () {
        if (ended) return;
        if (room.startAudio) room.startAudio().catch(function () {});
        return room.localParticipant.setMicrophoneEnabled(!muted).catch(function (err) {
          var name = err && err.name;
          throw new Error(name === "NotAllowedError" || name === "SecurityError"
            ? "Microphone access was blocked. Allow the microphone for this site to talk."
            : name === "NotFoundError" ? "No microphone was found. Plug one in or type instead."
              : "The microphone could not be started.");
        });
      }).then(function () {
        if (ended || ready) return;
        joinTimer = setTimeout(function () {
          if (ended || ready) return;
          cleanup();
          setState("error", "The voice assistant didn't join. Please try again.");
        }, JOIN_TIMEOUT_MS);
      });
    }

    return {
      start: function () {
        if (!ended) return Promise.resolve();
        return askConsent().then(function (ok) {
          if (!ok) { setState("idle"); return; }
          ended = false;
          setState("connecting");
          return Promise.all([loadSdk(api), fetchToken(api)]).then(function (both) {
            if (ended) return;
            return join(both[0], both[1]);
          }).catch(function (err) {
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
      setMuted: function (value) {
        muted = !!value;
        if (room && !ended) room.localParticipant.setMicrophoneEnabled(!muted).catch(function () {});
      },
      sendText: function (text) {
        text = String(text || "").trim();
        if (!text || !room || ended) return;
        room.localParticipant.sendText(text, { topic: CHAT_TOPIC }).catch(function () {});
      },
    };
  }

  window.SwitchboardVoiceLiveKit = module;
})();
