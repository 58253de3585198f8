"""Numbers and words for people: sizes, addresses, articles (used by the report and scenarios)."""

from __future__ import annotations

from typing import Any


def article(word: object) -> str:
    """ "a heap", "an anon"."""
    text = str(word)
    return ("an " if text[:1].lower() in "aeiou" else "a ") + text


def hexaddr(value: Any) -> str:
    return f"{int(value):#x}" if isinstance(value, int) else str(value)


def human_bytes(value: Any) -> str:
    if not isinstance(value, int | float):
        return str(value)
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def short_value(value: Any, limit: int = 60) -> str:
    """Big integers as hex, lists joined, long text cut to ``limit`` characters."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int) and value > 65535:
        return hex(value)
    if isinstance(value, list | tuple):
        text = "[" + ", ".join(short_value(v, limit) for v in value) + "]"
    else:
        text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
