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
    strings: widgetStrings(config.behaviour),
    embed: structuredClone(config.embed),
    voice: {
      enabled: Boolean(v.enabled), transport: v.transport, consent_required: Boolean(v.consent_required),
      consent_text: v.consent_text, max_session_seconds: v.max_session_seconds,
    },
  };
}

let catalog = null;

// Mirror of widgets.widget_strings.strings_resolve, over the catalog the page embeds (#widget-strings).
function widgetStrings(behaviour) {
  catalog ??= JSON.parse(document.getElementById("widget-strings")?.textContent || "null");
  if (!catalog) return undefined;
  const language = (behaviour.locale || "").split("-")[0].toLowerCase();
  const out = { ...catalog.strings[language in catalog.strings ? language : "en"] };
  const placeholder = (behaviour.placeholder || "").trim();
  if (placeholder && placeholder !== catalog.default_placeholder) out.placeholder = placeholder;
  for (const [key, value] of Object.entries(behaviour.strings || {})) {
    if (key in out && typeof value === "string" && value.trim()) out[key] = value.trim();
  }
  return out;
}
