"""Phone numbers as people type them: full-width digits, spaces, +86, hyphens."""

from __future__ import annotations

import unicodedata


def digits(phone: str | None) -> str:
    """The ASCII digits of a phone, full-width forms folded (NFKC); '' for none."""
    folded = unicodedata.normalize("NFKC", phone or "")
    return "".join(ch for ch in folded if ch.isascii() and ch.isdigit())
