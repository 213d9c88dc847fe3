"""The chat widget's own UI texts, per `behaviour.locale`, overridable one by one in the config.

The widget bundle (static/widget/widget.js) ships no texts: the public config carries the resolved
set (`config_public(...)["strings"]`), so the live embed and the configurator preview show the same
words and a translation fix needs no bundle release. `{field}` in `fill_in` is replaced by the
widget. Unknown locales fall back by language (`de-AT` → `de`), then to English.
"""

from __future__ import annotations

from typing import Any

LOCALES = ("en", "de", "fr", "es", "nl")

STRINGS: dict[str, dict[str, str]] = {
    "en": {
        "open_chat": "Open chat", "close_chat": "Close chat", "new_conversation": "New conversation",
        "placeholder": "Type your message…", "message": "Message", "send": "Send message",
        "conversation": "Conversation", "typing": "Assistant is typing",
        "queued": "Sends after the current reply", "not_delivered": "Not delivered.", "retry": "Retry",
        "error": "Something went wrong. Please try again.", "interrupted": "The answer was interrupted.",
        "products": "Products", "out_of_stock": "Out of stock", "view_product": "View product",
        "trade_in_title": "Get a trade-in quote", "choose": "Choose…", "get_quote": "Get my quote",
        "fill_in": "Please fill in {field}.", "form_thanks": "Thanks! We'll be in touch with your quote.",
        "form_error": "Could not send the form.", "watch_demo": "Watch the demo",
        "book_meeting": "Book a meeting", "pick_time": "Pick a time",
        "voice_start": "Start voice call", "voice_end": "End voice call", "mute": "Mute", "unmute": "Unmute",
        "end_call": "End call", "connecting": "Connecting…", "listening": "Listening…", "thinking": "Thinking…",
        "speaking": "Speaking…", "voice_unavailable": "Voice unavailable", "consent": "Voice call consent",
        "consent_text": "This call is processed by an AI assistant.", "start_call": "Start the call",
        "not_now": "Not now",
    },
    "de": {
        "open_chat": "Chat öffnen", "close_chat": "Chat schließen", "new_conversation": "Neues Gespräch",
        "placeholder": "Nachricht eingeben…", "message": "Nachricht", "send": "Nachricht senden",
        "conversation": "Gespräch", "typing": "Der Assistent schreibt",
        "queued": "Wird nach der aktuellen Antwort gesendet", "not_delivered": "Nicht zugestellt.",
        "retry": "Erneut senden", "error": "Etwas ist schiefgelaufen. Bitte versuchen Sie es erneut.",
        "interrupted": "Die Antwort wurde unterbrochen.", "products": "Produkte", "out_of_stock": "Nicht vorrätig",
        "view_product": "Produkt ansehen", "trade_in_title": "Angebot für Ihr Altgerät", "choose": "Bitte wählen…",
        "get_quote": "Angebot anfordern", "fill_in": "Bitte füllen Sie {field} aus.",
        "form_thanks": "Danke! Wir melden uns mit Ihrem Angebot.",
        "form_error": "Das Formular konnte nicht gesendet werden.", "watch_demo": "Demo ansehen",
        "book_meeting": "Termin buchen", "pick_time": "Zeit wählen", "voice_start": "Sprachanruf starten",
        "voice_end": "Sprachanruf beenden", "mute": "Stumm", "unmute": "Ton an", "end_call": "Auflegen",
        "connecting": "Verbinde…", "listening": "Hört zu…", "thinking": "Denkt nach…", "speaking": "Spricht…",
        "voice_unavailable": "Sprache nicht verfügbar", "consent": "Einwilligung zum Sprachanruf",
        "consent_text": "Dieser Anruf wird von einem KI-Assistenten verarbeitet.",
        "start_call": "Anruf starten", "not_now": "Nicht jetzt",
    },
    "fr": {
        "open_chat": "Ouvrir le chat", "close_chat": "Fermer le chat", "new_conversation": "Nouvelle conversation",
        "placeholder": "Écrivez votre message…", "message": "Message", "send": "Envoyer le message",
        "conversation": "Conversation", "typing": "L'assistant écrit",
        "queued": "Envoyé après la réponse en cours", "not_delivered": "Non distribué.", "retry": "Réessayer",
        "error": "Une erreur s'est produite. Veuillez réessayer.", "interrupted": "La réponse a été interrompue.",
        "products": "Produits", "out_of_stock": "En rupture de stock", "view_product": "Voir le produit",
        "trade_in_title": "Estimer votre reprise", "choose": "Choisir…", "get_quote": "Obtenir mon estimation",
        "fill_in": "Veuillez remplir {field}.", "form_thanks": "Merci ! Nous revenons vers vous avec votre estimation.",
        "form_error": "Le formulaire n'a pas pu être envoyé.", "watch_demo": "Voir la démo",
        "book_meeting": "Prendre rendez-vous", "pick_time": "Choisir un créneau",
        "voice_start": "Démarrer l'appel vocal", "voice_end": "Terminer l'appel vocal", "mute": "Couper le micro",
        "unmute": "Activer le micro", "end_call": "Raccrocher", "connecting": "Connexion…",
        "listening": "À l'écoute…", "thinking": "Réflexion…", "speaking": "Parle…",
        "voice_unavailable": "Voix indisponible", "consent": "Consentement à l'appel vocal",
        "consent_text": "Cet appel est traité par un assistant IA.", "start_call": "Démarrer l'appel",
        "not_now": "Pas maintenant",
    },
    "es": {
        "open_chat": "Abrir el chat", "close_chat": "Cerrar el chat", "new_conversation": "Nueva conversación",
        "placeholder": "Escribe tu mensaje…", "message": "Mensaje", "send": "Enviar mensaje",
        "conversation": "Conversación", "typing": "El asistente está escribiendo",
        "queued": "Se enviará tras la respuesta actual", "not_delivered": "No entregado.", "retry": "Reintentar",
        "error": "Algo salió mal. Inténtalo de nuevo.", "interrupted": "La respuesta se interrumpió.",
        "products": "Productos", "out_of_stock": "Agotado", "view_product": "Ver producto",
        "trade_in_title": "Tasa tu dispositivo", "choose": "Elige…", "get_quote": "Obtener mi tasación",
        "fill_in": "Completa {field}.", "form_thanks": "¡Gracias! Te enviaremos tu tasación.",
        "form_error": "No se pudo enviar el formulario.", "watch_demo": "Ver la demo",
        "book_meeting": "Reservar una reunión", "pick_time": "Elegir hora", "voice_start": "Iniciar llamada de voz",
        "voice_end": "Terminar llamada de voz", "mute": "Silenciar", "unmute": "Activar sonido",
        "end_call": "Colgar", "connecting": "Conectando…", "listening": "Escuchando…", "thinking": "Pensando…",
        "speaking": "Hablando…", "voice_unavailable": "Voz no disponible", "consent": "Consentimiento de llamada",
        "consent_text": "Esta llamada la procesa un asistente de IA.", "start_call": "Iniciar la llamada",
        "not_now": "Ahora no",
    },
    "nl": {
        "open_chat": "Chat openen", "close_chat": "Chat sluiten", "new_conversation": "Nieuw gesprek",
        "placeholder": "Typ je bericht…", "message": "Bericht", "send": "Bericht versturen",
        "conversation": "Gesprek", "typing": "De assistent typt",
        "queued": "Wordt verstuurd na het huidige antwoord", "not_delivered": "Niet afgeleverd.",
        "retry": "Opnieuw", "error": "Er ging iets mis. Probeer het opnieuw.",
        "interrupted": "Het antwoord werd onderbroken.", "products": "Producten", "out_of_stock": "Uitverkocht",
        "view_product": "Bekijk product", "trade_in_title": "Inruilwaarde aanvragen", "choose": "Kies…",
        "get_quote": "Vraag mijn prijs aan", "fill_in": "Vul {field} in.",
        "form_thanks": "Bedankt! We nemen contact op met je prijs.",
        "form_error": "Het formulier kon niet worden verstuurd.",
        "watch_demo": "Bekijk de demo", "book_meeting": "Afspraak maken", "pick_time": "Kies een tijd",
        "voice_start": "Spraakgesprek starten", "voice_end": "Spraakgesprek beëindigen", "mute": "Dempen",
        "unmute": "Dempen opheffen", "end_call": "Ophangen", "connecting": "Verbinden…", "listening": "Luistert…",
        "thinking": "Denkt na…", "speaking": "Spreekt…", "voice_unavailable": "Spraak niet beschikbaar",
        "consent": "Toestemming voor spraakgesprek",
        "consent_text": "Dit gesprek wordt verwerkt door een AI-assistent.",
        "start_call": "Gesprek starten", "not_now": "Nu niet",
    },
}
STRING_KEYS = tuple(STRINGS["en"])
# The config's own placeholder predates locales; this default means "not customised".
DEFAULT_PLACEHOLDER = "Type your message…"


def strings_locale(locale: str) -> str:
    """The catalog a `behaviour.locale` uses: exact, then its language, then English."""
    language = (locale or "").split("-", 1)[0].lower()
    return language if language in STRINGS else "en"


def strings_resolve(behaviour: dict[str, Any]) -> dict[str, str]:
    """The widget's texts: the locale's catalog, then each non-empty `behaviour.strings` override."""
    out = dict(STRINGS[strings_locale(behaviour.get("locale", ""))])
    placeholder = (behaviour.get("placeholder") or "").strip()
    if placeholder and placeholder != DEFAULT_PLACEHOLDER:
        out["placeholder"] = placeholder
    for key, value in (behaviour.get("strings") or {}).items():
        if key in out and isinstance(value, str) and value.strip():
            out[key] = value.strip()
    return out
