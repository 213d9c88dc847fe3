// Mirror of widgets.config_schema.config_public: what a visitor's browser may see of a config.
// The preview frame receives only this, exactly like the embed does.
export function publicConfig(config) {
  const c = config.connection;
  const v = config.voice;
  return {
    provider: c.provider,
    connection: { provider: c.provider, streaming: Boolean(c.n8n.streaming), chatkit_mode: c.chatkit.mode },
    appearance: structuredClone(config.appearance[c.provider]),
    behaviour: structuredClone(config.behaviour),
    embed: structuredClone(config.embed),
    voice: {
      enabled: Boolean(v.enabled), transport: v.transport, consent_required: Boolean(v.consent_required),
      consent_text: v.consent_text, max_session_seconds: v.max_session_seconds,
    },
  };
}
