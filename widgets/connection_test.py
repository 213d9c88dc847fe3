""""Test connection" for the configurator: call the widget's upstream through the server, report in words.

Never echoes secrets or upstream bodies back: only a reason code and a sentence. The n8n request is
built by widgets/n8n.py (the one n8n client); this module only maps the HTTP status to words, which
the chat proxy deliberately does not tell visitors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
from django.conf import settings

from widgets.n8n import n8n_payload, n8n_target, n8n_target_allowed

TEST_SESSION = "switchboard-connection-test"
TIMEOUT = httpx.Timeout(10.0, connect=5.0)


@dataclass(frozen=True)
class ConnectionResult:
    ok: bool
    code: str  # ok | unauthorised | not_found | timeout | unreachable | not_configured | upstream_error
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "code": self.code, "message": self.message}


def _from_status(status: int, what: str) -> ConnectionResult:
    if 200 <= status < 300:
        return ConnectionResult(True, "ok", f"Connected: {what} answered (HTTP {status}).")
    if status in (401, 403):
        return ConnectionResult(False, "unauthorised", f"{what} refused the credentials (HTTP {status}). "
                                "Check the username/password or API key.")
    if status == 404:
        return ConnectionResult(False, "not_found", f"{what} answered 404 Not found. Check the URL or id, and "
                                "that the workflow is active.")
    return ConnectionResult(False, "upstream_error", f"{what} answered HTTP {status}.")


def _call(method: str, url: str, what: str, **kwargs: Any) -> ConnectionResult:
    try:
        response = httpx.request(method, url, timeout=TIMEOUT, follow_redirects=False, **kwargs)
    except httpx.TimeoutException:
        return ConnectionResult(False, "timeout", f"{what} did not answer within 10 seconds.")
    except httpx.HTTPError:
        return ConnectionResult(False, "unreachable", f"Could not reach {what}. Check the address.")
    return _from_status(response.status_code, what)


def connection_test(*, config: dict[str, Any], secrets: dict[str, str]) -> ConnectionResult:
    """`config` is a normalized draft config; `secrets` the widget's decrypted secrets."""
    connection = config["connection"]
    if connection["provider"] == "n8n":
        target = n8n_target(config=config, secrets=secrets)
        if target is None:
            return ConnectionResult(False, "not_configured", "Enter the n8n webhook URL first.")
        if not n8n_target_allowed(target.url):
            return ConnectionResult(False, "not_allowed", "The webhook address points to a private or internal "
                                    "network, which Switchboard does not call. Use the n8n instance's public URL.")
        body = n8n_payload(action="loadPreviousSession", session_id=TEST_SESSION, chat_input=None,
                           metadata={"source": "switchboard-connection-test"})
        return _call("POST", target.url, "The n8n webhook", json=body, auth=target.auth)
    chatkit = connection["chatkit"]
    key = secrets.get("openai_api_key") or settings.OPENAI_API_KEY
    if not key:
        return ConnectionResult(False, "not_configured", "Add an OpenAI API key first.")
    headers = {"Authorization": f"Bearer {key}", "OpenAI-Beta": "chatkit_beta=v1"}
    base = settings.OPENAI_BASE_URL
    if chatkit["mode"] == "hosted":
        if not chatkit["workflow_id"]:
            return ConnectionResult(False, "not_configured", "Enter the Agent Builder workflow id (wf_…) first.")
        workflow: dict[str, Any] = {"id": chatkit["workflow_id"]}
        if chatkit.get("workflow_version"):
            workflow["version"] = chatkit["workflow_version"]
        body = {"workflow": workflow, "user": TEST_SESSION}
        return _call("POST", f"{base}/chatkit/sessions", "OpenAI ChatKit", json=body, headers=headers)
    model = chatkit.get("model") or settings.CHATKIT_DEFAULT_MODEL
    return _call("GET", f"{base}/models/{model}", f"OpenAI (model {model})", headers=headers)
