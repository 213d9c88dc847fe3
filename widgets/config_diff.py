"""A readable summary of what changed between two configs: dotted paths, old → new."""

from __future__ import annotations

from typing import Any

SECRET_LIKE = ("instructions", "business_facts")


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def _show(value: Any, limit: int = 60) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "on" if value else "off"
    text = (", ".join(map(str, value)) or "(none)") if isinstance(value, list) else str(value)
    if text == "":
        return "(empty)"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def config_diff(old: dict[str, Any] | None, new: dict[str, Any]) -> list[dict[str, str]]:
    """[{path, old, new}] for every leaf that differs, sorted by path."""
    before, after = _flatten(old or {}), _flatten(new)
    changes = []
    for path in sorted(set(before) | set(after)):
        if before.get(path) != after.get(path):
            changes.append({"path": path, "old": _show(before.get(path)), "new": _show(after.get(path))})
    return changes
