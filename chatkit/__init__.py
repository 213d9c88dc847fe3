"""The `chatkit` app, which shares its import name with the openai-chatkit SDK.

openai-chatkit installs its modules as the top-level package `chatkit` (`chatkit.server`,
`chatkit.types`, `chatkit.store`, `chatkit.agents`, `chatkit.widgets`, ...), the same name as this
Django app. The SDK's `__init__` is empty, so this package appends the SDK's directory to its own
`__path__`: `import chatkit.server` then finds the SDK module, and the SDK's own absolute and
relative imports resolve to itself. This app must therefore never define a module with one of the
SDK's names (chatkit/tests/test_sdk_namespace.py guards it).
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path


def _sdk_dir() -> Path | None:
    try:
        return Path(str(metadata.distribution("openai-chatkit").locate_file("chatkit"))).resolve()
    except metadata.PackageNotFoundError:
        return None


_SDK_DIR = _sdk_dir()
if _SDK_DIR is not None and _SDK_DIR.is_dir() and str(_SDK_DIR) not in __path__:
    __path__.append(str(_SDK_DIR))
