"""Counted nouns in messages: "1 frame", "2 frames" (users read "1 frames" as a bug)."""

from __future__ import annotations


def plural(n: int, word: str, many: str | None = None) -> str:
    """``plural(1, "frame")`` -> "1 frame"; ``plural(3, "frame")`` -> "3 frames"; irregular: ``many``."""
    return f"{n} {word if n == 1 else (many or word + 's')}"
