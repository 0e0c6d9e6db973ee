"""Loading a directory of import files (DESIGN.md, "Import format") into a registry."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import LoadError, PushError
from .jpush import Audience, parse_audience
from .registry import Registry

DEVICE_FILES = ("devices.jsonl", "segments.jsonl")
"""The files of a directory that a device registry loads, in the order they are loaded."""


def import_directory(
    reg: Registry, directory: str | Path, on_file: Callable[[Path], None] | None = None
) -> dict[str, int]:
    """Load ``devices.jsonl`` then ``segments.jsonl`` from ``directory`` (each if present);
    how many lines of each were loaded. ``on_file`` is told of each file before it loads.

    Device segments only: a ``{"segment", "userids"}`` line (a UMS user segment) is refused until
    the registry knows users.
    """
    root = Path(directory)
    if not root.is_dir():
        raise LoadError(f"{root} is not a directory")
    counts: dict[str, int] = {}
    for name in DEVICE_FILES:
        path = root / name
        if not path.exists():
            continue
        if on_file is not None:
            on_file(path)
        if name == "devices.jsonl":
            counts[name] = reg.load_jsonl(path)
        else:
            counts[name] = _load_segments(reg, path)
    return counts


def _lines(path: Path) -> Iterator[tuple[int, dict[str, object]]]:
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as e:
                raise LoadError(f"{path.name} line {number}: not JSON: {e}") from None
            if not isinstance(value, dict):
                raise LoadError(f"{path.name} line {number}: not a JSON object")
            yield number, value


def _load_segments(reg: Registry, path: Path) -> int:
    """Each line defines one segment: ``{"segment", "audience"}`` or ``{"segment",
    "registration_ids"}``. Every line is checked before any segment is defined."""
    parsed: list[tuple[str, Audience | list[str]]] = []
    for number, line in _lines(path):
        name = line.get("segment")
        try:
            if not isinstance(name, str) or not name:
                raise PushError(1003, "segment must be a non-empty string")
            if "audience" in line:
                parsed.append((name, parse_audience(line["audience"])))
            elif isinstance(line.get("registration_ids"), list):
                rids = line["registration_ids"]
                if not all(isinstance(r, str) for r in rids):  # type: ignore[attr-defined]
                    raise PushError(1003, "registration_ids must be strings")
                parsed.append((name, list(rids)))  # type: ignore[call-overload]
            else:
                raise PushError(1003, "a device segment needs audience or registration_ids")
        except PushError as e:
            raise LoadError(f"{path.name} line {number}: {e}") from None
    for name, value in parsed:
        if isinstance(value, Audience):
            reg.add_segment(name, audience=value)
        else:
            reg.add_segment(name, registration_ids=value)
    return len(parsed)
