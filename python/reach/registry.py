"""The device registry of one app: the public Python API over the compiled core."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from . import _core
from .errors import PushError
from .jpush import Audience, PushRequest, parse_audience, parse_platform, parse_push

Resolution = _core.Resolution
Batch = _core.Batch

AudienceInput = Audience | Mapping[str, Any] | str
"""An audience as JPush sends it (``"all"`` or an object) or already parsed."""


def _audience(audience: AudienceInput) -> Audience:
    return audience if isinstance(audience, Audience) else parse_audience(audience)


def _portable(bitmap: Any) -> bytes:
    """Portable roaring bytes of a ``pyroaring.BitMap`` (or bytes as they are)."""
    if isinstance(bitmap, bytes | bytearray | memoryview):
        return bytes(bitmap)
    return bytes(bitmap.serialize())


class Registry:
    """Devices of one app, their tags, aliases, platforms, vendor channels and segments.

    >>> reg = Registry()
    >>> _ = reg.upsert("rid1", "android", vendor="xiaomi", tags=["深圳", "vip"], alias="u1")
    >>> _ = reg.upsert("rid2", "ios", tags=["深圳"])
    >>> r = reg.resolve({"platform": "all", "audience": {"tag": ["深圳"], "tag_not": ["vip"]},
    ...                  "notification": {"alert": "hi"}})
    >>> r.registration_ids()
    ['rid2']
    >>> [(b.platform, b.vendor, len(b)) for b in r.batches()]
    [('ios', None, 1)]
    """

    __slots__ = ("_core",)

    def __init__(self, core: _core.Registry | None = None) -> None:
        self._core = core if core is not None else _core.Registry()

    def __len__(self) -> int:
        return len(self._core)

    # --- devices -------------------------------------------------------------------------------

    def upsert(
        self,
        registration_id: str,
        platform: str,
        vendor: str | None = None,
        tags: Sequence[str] = (),
        alias: str | None = None,
        mobile: str | None = None,
        online: bool = False,
    ) -> int:
        """Insert or replace a device; afterwards its attributes are exactly these. Its id."""
        return self._core.upsert(
            registration_id, platform, vendor, list(tags), alias, mobile, online
        )

    def add_tags(self, registration_id: str, tags: Sequence[str]) -> None:
        self._core.add_tags(registration_id, list(tags))

    def remove_tags(self, registration_id: str, tags: Sequence[str]) -> None:
        self._core.remove_tags(registration_id, list(tags))

    def set_alias(self, registration_id: str, alias: str | None) -> None:
        """Bind the device to ``alias`` (one per device), or unbind it with ``None``."""
        self._core.set_alias(registration_id, alias)

    def set_mobile(self, registration_id: str, mobile: str | None) -> None:
        self._core.set_mobile(registration_id, mobile)

    def set_online(self, registration_id: str, online: bool) -> None:
        self._core.set_online(registration_id, online)

    def delete(self, registration_id: str) -> bool:
        """Delete a device; whether it existed."""
        return self._core.delete(registration_id)

    def device(self, registration_id: str) -> dict[str, object] | None:
        """A live device's attributes, or None."""
        return self._core.device(registration_id)

    def device_id(self, registration_id: str) -> int | None:
        return self._core.device_id(registration_id)

    def registration_ids(self, ids: Any) -> list[str]:
        """The registration IDs of interned device ids (a numpy ``uint32`` array), in order."""
        return self._core.registration_ids(np.ascontiguousarray(ids, dtype=np.uint32))

    def tags(self) -> list[str]:
        """The tags some device holds."""
        return self._core.tags()

    # --- bulk ----------------------------------------------------------------------------------

    def load_jsonl(self, path: str | os.PathLike[str]) -> int:
        """Load a ``devices.jsonl`` file (DESIGN.md import format); the number of lines.

        All or nothing: a bad line raises ``LoadError`` naming it and nothing is applied.
        """
        return self._core.load_jsonl(os.fspath(path))

    def load_arrays(self, **columns: Any) -> int:
        """Load devices from numpy columns (see ``_core.Registry.load_arrays``)."""
        return self._core.load_arrays(**columns)

    # --- segments and A/B tests ----------------------------------------------------------------

    def add_segment(
        self,
        name: str,
        *,
        registration_ids: Sequence[str] | None = None,
        audience: AudienceInput | None = None,
        bitmap: Any = None,
    ) -> None:
        """Define a segment: explicit members (``registration_ids`` or a device-id ``bitmap``,
        a ``pyroaring.BitMap`` or portable bytes), or a saved ``audience`` evaluated at push time.
        """
        given = [x is not None for x in (registration_ids, audience, bitmap)]
        if sum(given) != 1:
            raise PushError(1003, "a segment takes one of registration_ids, audience or bitmap")
        if registration_ids is not None:
            self._core.add_segment(name, list(registration_ids))
        elif audience is not None:
            self._core.add_dynamic_segment(name, _audience(audience))
        else:
            self._core.add_segment_bitmap(name, _portable(bitmap))

    def add_abtest(self, name: str, base: AudienceInput, groups: Mapping[str, int]) -> None:
        """Define an A/B test: ``base`` split into ``groups`` by percentage of a stable hash."""
        self._core.add_abtest(name, _audience(base), list(groups.items()))

    # --- resolution ----------------------------------------------------------------------------

    def resolve(self, push: PushRequest | Mapping[str, Any]) -> Resolution:
        """The devices a JPush push object reaches; ``PushError(1011)`` if none. Its iOS
        batches carry the push's ``options.apns_production`` (production when absent)."""
        req = push if isinstance(push, PushRequest) else parse_push(push)
        res = self._core.resolve(
            req.audience, _platforms(req.platform), req.options.apns_production
        )
        if len(res) == 0:
            raise PushError(1011, "there are no push targets that meet the conditions")
        return res

    def resolve_audience(
        self, audience: AudienceInput, platform: str | Sequence[str] = "all"
    ) -> Resolution:
        """The devices an audience reaches on ``platform`` (possibly none)."""
        return self._core.resolve(_audience(audience), _platforms(parse_platform(platform)))

    def count_audience(self, audience: AudienceInput, platform: str | Sequence[str] = "all") -> int:
        """How many devices an audience reaches, without building the result where possible."""
        return self._core.count(_audience(audience), _platforms(parse_platform(platform)))

    # --- interop and persistence ---------------------------------------------------------------

    def tag_members(self, tag: str) -> bytes:
        """The device ids holding ``tag`` as portable roaring bytes (``BitMap.deserialize``)."""
        return self._core.tag_members(tag)

    def set_tag_members(self, tag: str, bitmap: Any) -> None:
        """Replace the members of ``tag`` by a ``pyroaring.BitMap`` (or portable bytes)."""
        self._core.set_tag_members(tag, _portable(bitmap))

    def memory_usage(self) -> dict[str, int]:
        """Bytes used per structure, and ``total``."""
        return self._core.memory_usage()

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write a snapshot atomically (temp file, fsync, rename) with a checksum."""
        self._core.save(os.fspath(path))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Registry:
        """Read a snapshot; ``SnapshotError`` if it is corrupt or truncated."""
        return cls(_core.Registry.load(os.fspath(path)))


def _platforms(platform: tuple[str, ...] | None) -> list[str] | None:
    return None if platform is None else list(platform)
