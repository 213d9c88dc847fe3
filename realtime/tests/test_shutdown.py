"""Issue 11, finding 10: a web process told to stop (SIGTERM → config.serve.GracefulServer) ends every voice
call with `session.ended {reason: "server_restart"}` and close 1012 before it closes sockets, records the calls
as `server_restart` with their usage, and the widget (voice.js) reconnects with the microphone still open."""

from __future__ import annotations

import json
import os
import threading
import time
from contextlib import nullcontext

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from conftest import free_port
from realtime.tests.conftest import FRAME, ORIGIN
from realtime.tests.voice_browser import host_page, launch_with_mic, speech_wav, widget_page
from widgets.models import Conversation


class WebProcess:
    """config.serve's server on a SO_REUSEPORT socket, in a thread; `stop()` is what SIGTERM triggers."""

    def __init__(self, port: int) -> None:
        import realtime.relay
        from config.asgi import application
        from config.serve import GracefulServer, reuseport_socket, server_config

        realtime.relay._DRAINING = False  # a new process starts accepting calls
        self.port = port
        self.server = GracefulServer(server_config(graceful_timeout=5, app=application))
        self.server.config.loop = "asyncio"  # uvloop wants the main thread's signal set-up
        sock = reuseport_socket("127.0.0.1", port)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.time() + 15
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("web process did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True  # uvicorn's SIGTERM handler does exactly this
        self.thread.join(15)
        assert not self.thread.is_alive()


@pytest.fixture
def not_draining(monkeypatch):
    """The drain flag is per process; a test process must take calls again after a simulated restart."""
    monkeypatch.setattr("realtime.relay._DRAINING", False)


def wait_until(predicate, timeout: float = 5.0) -> None:
    deadline = time.time() + timeout
    while not predicate():
        if time.time() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


@pytest.mark.django_db(transaction=True)
def test_sigterm_ends_voice_calls_with_server_restart(voice_widget, fake_realtime_thread, not_draining):
    fake_realtime_thread.scenario = "idle"
    web = WebProcess(free_port())
    url = f"ws://127.0.0.1:{web.port}/ws/realtime/{voice_widget.license.key}/?widget={voice_widget.public_id}&visitor=v"
    with ws_connect(url, origin=ORIGIN, open_timeout=10) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "session.ready"
        ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": FRAME}))
        wait_until(lambda: len(fake_realtime_thread.of_type("input_audio_buffer.append")) == 1)
        stopper = threading.Thread(target=web.stop)
        stopper.start()
        received = []
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                received.append(json.loads(ws.recv(timeout=10)))
        stopper.join(20)
    assert received[-1] == {
        "type": "session.ended",
        "reason": "server_restart",
        "message": "The voice service is restarting. Reconnecting…",
    }
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1012, "server_restart")
    conversation = Conversation.objects.get()
    assert conversation.end_reason == "server_restart" and conversation.ended_at is not None
    assert conversation.audio_in_seconds == pytest.approx(0.02)
    wait_until(lambda: fake_realtime_thread.closed.is_set())


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_the_widget_reconnects_after_a_server_restart(
    playwright_driver, voice_widget, fake_realtime_thread, customer_site, tmp_path, artifacts_dir, not_draining
):
    from playwright.sync_api import expect

    wav = speech_wav(tmp_path)
    fake_realtime_thread.scenario = "idle"
    port = free_port()
    web = WebProcess(port)
    root, site = customer_site.dir, customer_site.origin
    (root / "index.html").write_text(host_page(f"http://127.0.0.1:{port}", voice_widget))
    with nullcontext(playwright_driver) as p:
        browser = launch_with_mic(p, wav)
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        try:
            page.goto(site + "/index.html")
            page.wait_for_function("window.voice !== undefined")
            page.click("#talk")
            expect(page.locator("#state")).to_have_text("listening", timeout=15000)
            wait_until(lambda: len(fake_realtime_thread.of_type("input_audio_buffer.append")) >= 5, timeout=10)
            stopping = threading.Thread(target=web.stop)  # a deploy: this process goes away ...
            stopping.start()
            expect(page.locator("#detail")).to_have_text("Reconnecting…", timeout=15000)
            stopping.join(30)
            page.screenshot(path=os.path.join(artifacts_dir, "voice-reconnecting.png"), full_page=True)
            web = WebProcess(port)  # ... and its successor takes the port
            expect(page.locator("#state")).to_have_text("listening", timeout=20000)
            before = len(fake_realtime_thread.of_type("input_audio_buffer.append"))
            wait_until(lambda: len(fake_realtime_thread.of_type("input_audio_buffer.append")) >= before + 5)
            states = page.evaluate("window.states")
            assert "error" not in states and states.count("listening") >= 2
            page.click("#hangup")
            expect(page.locator("#state")).to_have_text("idle")
        except Exception:
            page.screenshot(path=os.path.join(artifacts_dir, "voice-reconnect-failure.png"), full_page=True)
            raise
        finally:
            browser.close()
            web.stop()
    assert not errors
    calls = list(Conversation.objects.order_by("id").values_list("end_reason", flat=True))
    assert calls == ["server_restart", "hangup"]


@pytest.mark.django_db(transaction=True)
def test_web_processes_on_one_port_share_new_connections(not_draining):
    """SO_REUSEPORT: each process binds its own socket to the port and the kernel spreads new connections
    over them (with one shared socket a burst went to whichever process woke first: 20:0)."""
    import httpx

    port = free_port()
    first, second = WebProcess(port), WebProcess(port)
    try:
        for _ in range(60):  # a new connection each time
            assert httpx.get(f"http://127.0.0.1:{port}/healthz", headers={"Connection": "close"}).status_code == 200
        counts = (first.server.server_state.total_requests, second.server.server_state.total_requests)
    finally:
        first.stop()
        second.stop()
    assert sum(counts) == 60 and min(counts) >= 10, counts


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_the_real_widget_shows_reconnecting_and_carries_on(
    playwright_driver, voice_widget, fake_realtime_thread, customer_site, tmp_path, artifacts_dir, not_draining
):
    """The embedded widget (one-line loader) through a restart of the process holding its call."""
    from playwright.sync_api import expect

    wav = speech_wav(tmp_path)
    fake_realtime_thread.scenario = "idle"
    port = free_port()
    web = WebProcess(port)
    root, site = customer_site.dir, customer_site.origin
    (root / "index.html").write_text(widget_page(f"http://127.0.0.1:{port}", voice_widget.license.key))
    with nullcontext(playwright_driver) as p:
        browser = launch_with_mic(p, wav, "--autoplay-policy=no-user-gesture-required")
        page = browser.new_page(viewport={"width": 1100, "height": 820})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        w = "switchboard-widget >> "
        try:
            page.goto(site + "/index.html")
            page.locator(w + ".lau").click()
            page.locator(w + ".mc").click()
            bar = page.locator(w + ".vb")
            expect(bar).to_have_attribute("data-s", "listening", timeout=15000)
            stopping = threading.Thread(target=web.stop)
            stopping.start()
            expect(bar).to_have_attribute("data-s", "connecting", timeout=15000)
            expect(page.locator(w + ".vl")).to_have_text("Reconnecting…")
            page.screenshot(path=os.path.join(artifacts_dir, "widget-voice-reconnecting.png"))
            stopping.join(30)
            web = WebProcess(port)
            expect(bar).to_have_attribute("data-s", "listening", timeout=20000)
            expect(page.locator(w + ".vl")).to_have_text("Listening…")
            page.locator(w + ".hu").click()
            expect(bar).to_be_hidden()
        except Exception:
            page.screenshot(path=os.path.join(artifacts_dir, "widget-voice-reconnect-failure.png"))
            raise
        finally:
            browser.close()
            web.stop()
    assert not errors
    assert list(Conversation.objects.order_by("id").values_list("end_reason", flat=True)) == [
        "server_restart",
        "hangup",
    ]
