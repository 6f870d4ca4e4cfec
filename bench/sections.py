"""A bench script's own section of bench/results.md, between its markers, rewritten in place."""

from __future__ import annotations

from pathlib import Path


def update(results: Path, begin: str, end: str, section: str) -> None:
    """Replace the text from ``begin`` to ``end`` (markers included) with ``section``, or append it."""
    text = results.read_text() if results.exists() else ""
    if begin in text:
        text = text[: text.index(begin)] + section + text[text.index(end) + len(end) + 1 :]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    results.write_text(text)
