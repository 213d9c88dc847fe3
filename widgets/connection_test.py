""""Test connection" for the configurator: call the widget's upstream through the server, report in words.

Never echoes secrets or upstream bodies back: only a reason code and a sentence.
The preview chat (draft webhook, not counted as usage) also lives here until widgets/n8n.py lands.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
from django.conf import settings

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


def n8n_auth(secrets: dict[str, str], config: dict[str, Any]) -> tuple[str, str] | None:
    if not config["connection"]["n8n"].get("basic_auth"):
        return None
    return (secrets.get("n8n_basic_auth_user", ""), secrets.get("n8n_basic_auth_password", ""))


def connection_test(*, config: dict[str, Any], secrets: dict[str, str]) -> ConnectionResult:
    """`config` is a normalized draft config; `secrets` the widget's decrypted secrets."""
    connection = config["connection"]
    if connection["provider"] == "n8n":
        url = connection["n8n"]["webhook_url"]
        if not url:
            return ConnectionResult(False, "not_configured", "Enter the n8n webhook URL first.")
        body = {"action": "loadPreviousSession", "sessionId": TEST_SESSION, "chatInput": ""}
        return _call("POST", url, "The n8n webhook", json=body, auth=n8n_auth(secrets, config))
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


def preview_chat_send(*, config: dict[str, Any], secrets: dict[str, str], body: dict[str, Any]) -> tuple[int, Any]:
    """Forward one preview chat message to the DRAFT webhook. Returns (status, json-able body)."""
    url = config["connection"]["n8n"]["webhook_url"]
    if not url:
        return 409, {"error": {"code": "not_configured", "message": "Set the n8n webhook URL to chat in the preview."}}
    payload = {
        "action": body.get("action") or "sendMessage",
        "sessionId": str(body.get("sessionId") or "preview")[:200],
        "chatInput": str(body.get("chatInput") or "")[:4000],
        "metadata": {"preview": True},
    }
    try:
        response = httpx.post(url, json=payload, auth=n8n_auth(secrets, config),
                              timeout=httpx.Timeout(settings.N8N_TOTAL_TIMEOUT, connect=settings.N8N_CONNECT_TIMEOUT))
    except httpx.TimeoutException:
        return 504, {"error": {"code": "upstream_timeout", "message": "The n8n webhook did not answer in time."}}
    except httpx.HTTPError:
        return 502, {"error": {"code": "upstream_unreachable", "message": "Could not reach the n8n webhook."}}
    if response.status_code >= 400:
        result = _from_status(response.status_code, "The n8n webhook")
        return 502, {"error": {"code": result.code, "message": result.message}}
    try:
        return 200, response.json()
    except ValueError:
        return 200, {"output": response.text[:4000]}
