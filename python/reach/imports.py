"""Loading a directory of import files (DESIGN.md, "Import format") into a registry."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import LoadError, PushError
from .jpush import Audience, parse_audience
from .registry import Registry
from .ums import SendRule, Template, UmsError, UmsRegistry, parse_rule, parse_template

DEVICE_FILES = ("devices.jsonl", "segments.jsonl")
"""The files of a directory that a device registry loads, in the order they are loaded."""

UMS_FILES = (
    "channels.jsonl",
    "users.jsonl",
    "segments.jsonl",
    "lists.jsonl",
    "templates.jsonl",
    "rules.jsonl",
    "undeliverable.jsonl",
)
"""The files of a directory that a UMS registry loads, in the order they are loaded (channels
first: templates and send strategies name them)."""


def import_directory(
    reg: Registry | UmsRegistry,
    directory: str | Path,
    on_file: Callable[[Path], None] | None = None,
) -> dict[str, int]:
    """Load the import files of ``directory`` that exist (``DEVICE_FILES`` into a device
    registry, ``UMS_FILES`` into a UMS registry); how many lines of each were loaded.
    ``on_file`` is told of each file before it loads. Each file is all or nothing.

    A device registry takes device segments only; a UMS registry user segments only
    (``{"segment", "userids"}``).
    """
    root = Path(directory)
    if not root.is_dir():
        raise LoadError(f"{root} is not a directory")
    counts: dict[str, int] = {}
    for name in UMS_FILES if isinstance(reg, UmsRegistry) else DEVICE_FILES:
        path = root / name
        if not path.exists():
            continue
        if on_file is not None:
            on_file(path)
        if isinstance(reg, UmsRegistry):
            counts[name] = _load_ums(reg, path)
        elif name == "devices.jsonl":
            counts[name] = reg.load_jsonl(path)
        else:
            counts[name] = _load_segments(reg, path)
    return counts


def _string(line: dict[str, object], key: str) -> str:
    value = line.get(key)
    if not isinstance(value, str) or not value:
        raise UmsError(1015018, f"{key} must be a non-empty string")
    return value


def _strings(line: dict[str, object], key: str) -> list[str]:
    value = line.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UmsError(1015018, f"{key} must be an array of strings")
    return list(value)


def _ums_line(name: str, line: dict[str, object]) -> Callable[[UmsRegistry], object]:
    """Check one line of a UMS file; the change that applies it."""
    if name == "channels.jsonl":
        if not {"channel_key", "type"} <= set(line) <= {"channel_key", "type", "appkey"}:
            raise UmsError(1015018, 'a channel is {"channel_key", "type", "appkey"?}')
        key, kind = _string(line, "channel_key"), _string(line, "type")
        appkey = _string(line, "appkey") if "appkey" in line else None
        return lambda reg: reg.add_channel(key, kind, appkey)
    if name == "undeliverable.jsonl":
        if set(line) != {"id"}:
            raise UmsError(1015018, 'an undeliverable ID is {"id"}')
        rid = _string(line, "id")
        return lambda reg: reg.set_undeliverable([rid])
    if name == "segments.jsonl":
        if set(line) != {"segment", "userids"}:
            raise UmsError(1015018, 'a user segment is {"segment", "userids"}')
        seg, users = _string(line, "segment"), _strings(line, "userids")
        return lambda reg: reg.add_segment(seg, users)
    if name == "lists.jsonl":
        list_id = line.get("list_id")
        if not set(line) <= {"list_id", "userids", "ids"} or isinstance(list_id, bool):
            raise UmsError(1015018, 'a list is {"list_id", "userids"?, "ids"?}')
        if not isinstance(list_id, int) or list_id < 0:
            raise UmsError(1015018, "list_id must be an integer >= 0")
        users, ids = _strings(line, "userids"), _strings(line, "ids")
        return lambda reg: reg.add_list(list_id, users, ids)
    parsed: Template | SendRule = (
        parse_template(line) if name == "templates.jsonl" else parse_rule(line)
    )
    return lambda reg: (
        reg.add_template(parsed) if isinstance(parsed, Template) else reg.add_rule(parsed)
    )


def _load_ums(reg: UmsRegistry, path: Path) -> int:
    """One UMS import file, all or nothing: every line is checked, then applied. A refusal the
    registry makes (a bad userid, an unknown channel) is checked on a scratch copy first."""
    if path.name == "users.jsonl":
        return reg.load_users(path)
    changes: list[tuple[int, Callable[[UmsRegistry], object]]] = []
    for number, line in _lines(path):
        try:
            changes.append((number, _ums_line(path.name, line)))
        except UmsError as e:
            raise LoadError(f"{path.name} line {number}: {e}") from None
    scratch = UmsRegistry()
    for key, kind in reg.channels().items():
        scratch.add_channel(key, kind, reg.channel_apps.get(key))
    for number, change in changes:
        try:
            change(scratch)
        except UmsError as e:
            raise LoadError(f"{path.name} line {number}: {e}") from None
    for _, change in changes:
        change(reg)
    return len(changes)


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
