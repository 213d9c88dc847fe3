"""The configurator's "Test connection" for a ChatKit widget (registered with widgets.connection_test in
`ChatkitConfig.ready`, so the configurator reaches it without widgets importing chatkit).

Server mode: the OpenAI SDK retrieves the widget's model with the tenant's key (or the platform's),
`OPENAI_BASE_URL`, no retries, a 10 s timeout — the check every ChatKit answer depends on (a wrong key
or a model the key cannot use). Nothing is generated, so it costs nothing. Hosted mode answers
`hosted_retired` without calling OpenAI. The key never appears in the result; OpenAI's own message
(which may quote part of it) is not passed on either.
"""

from __future__ import annotations

from typing import Any

import openai
from django.conf import settings

from widgets.connection_test import ConnectionResult, connection_fail
from widgets.selectors import openai_api_key

TIMEOUT_SECONDS = 10.0


def chatkit_connection_test(*, config: dict[str, Any], secrets: dict[str, str], message: str = "") -> ConnectionResult:
    chatkit = config["connection"]["chatkit"]
    if chatkit["mode"] == "hosted":
        # Agent Builder is gone: calling it would only produce a misleading upstream error.
        return connection_fail(
            "hosted_retired",
            "Hosted workflows stopped working when OpenAI shut Agent Builder down on "
            "2026-11-30. Choose “ChatKit server” (or use “Migrate to server mode”), then test again.",
        )
    key = openai_api_key(secrets=secrets)
    if not key:
        return connection_fail("not_configured", "Add an OpenAI API key first.")
    model = chatkit.get("model") or settings.CHATKIT_DEFAULT_MODEL
    what = f"OpenAI (model {model})"
    client = openai.OpenAI(api_key=key, base_url=settings.OPENAI_BASE_URL, max_retries=0, timeout=TIMEOUT_SECONDS)
    try:
        client.models.retrieve(model)
    except openai.APITimeoutError:
        return connection_fail("timeout", f"{what} did not answer within {TIMEOUT_SECONDS:g} seconds.")
    except openai.APIConnectionError:
        return connection_fail("unreachable", f"Could not reach {what}.")
    except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
        return connection_fail("unauthorised", f"{what} refused the API key ({exc.status_code}). Check the key.")
    except openai.NotFoundError:
        return connection_fail("not_found", f"{what} does not know that model with this key (404). Pick another.")
    except openai.APIStatusError as exc:
        return connection_fail("upstream_error", f"{what} answered with an error ({exc.status_code}).")
    finally:
        client.close()
    return ConnectionResult(True, "ok", f"Connected: {what} accepts the key.")
