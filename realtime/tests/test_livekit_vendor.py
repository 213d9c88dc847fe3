"""The vendored livekit-client build is the pinned npm release, byte for byte (bar its source-map line)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from django.conf import settings

VENDOR = Path(settings.BASE_DIR) / "static" / "widget" / "vendor"
MANIFEST = json.loads((VENDOR / "livekit-client.json").read_text())


def test_manifest_names_the_pinned_release():
    assert MANIFEST["package"] == "livekit-client" and MANIFEST["version"] == "2.23.0"
    assert MANIFEST["file"] == "livekit-client-2.23.0.umd.js" and MANIFEST["license"] == "Apache-2.0"
    assert MANIFEST["npm_integrity"].startswith("sha512-")


def test_committed_file_is_the_npm_build():
    data = (VENDOR / MANIFEST["file"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == MANIFEST["sha256"]
    # Put back the one line we removed and it is npm's dist/livekit-client.umd.js again.
    assert MANIFEST["removed_suffix"] == "//# sourceMappingURL=livekit-client.umd.js.map\n"
    assert hashlib.sha256(data + MANIFEST["removed_suffix"].encode()).hexdigest() == MANIFEST["npm_sha256"]
    assert b"sourceMappingURL" not in data
    # The build's own version constant (LivekitClient.version) is the pinned one.
    assert re.findall(rb'const \w+="(\d+\.\d+\.\d+)";class \w+ extends Error', data) == [b"2.23.0"]


def test_widget_loads_exactly_that_file_and_ships_its_license():
    source = (VENDOR.parent / "voice-livekit.js").read_text()
    assert f'var SDK_VERSION = "{MANIFEST["version"]}";' in source
    assert 'var SDK_PATH = "/static/widget/vendor/livekit-client-" + SDK_VERSION + ".umd.js";' in source
    license_text = (VENDOR / f"livekit-client-{MANIFEST['version']}.LICENSE.txt").read_text()
    assert "Apache License" in license_text and "Version 2.0" in license_text
