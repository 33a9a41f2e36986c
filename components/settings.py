"""Settings dataclasses from plain dicts (custom_config, JSON): defaults filled, typos refused."""

from __future__ import annotations

from dataclasses import fields
from typing import Any, TypeVar

T = TypeVar("T")


def settings_from_dict(cls: type[T], values: dict[str, Any] | None, what: str) -> T:
    """cls(**values) with missing fields at their defaults; an unknown key is an error naming
    it, so a misspelt setting never silently falls back to its default."""
    values = dict(values or {})
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {what} settings: {unknown}; known: {sorted(known)}")
    return cls(**values)
