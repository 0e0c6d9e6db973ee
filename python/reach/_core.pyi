"""Typed stubs of the compiled core (`rust/py.rs`). Checked against the module by mypy.stubtest."""

from collections.abc import Mapping, Sequence
from typing import Protocol, final

import numpy as np
import numpy.typing as npt

__all__ = [
    "AUDIENCE_TYPES",
    "CHUNKING_DEFAULT",
    "NAME_MAX_BYTES",
    "PLATFORMS",
    "SMALL_THRESHOLD_DEFAULT",
    "UMS_CHANNEL_TYPES",
    "VENDORS",
    "Batch",
    "Registry",
    "Resolution",
    "UmsChannel",
    "UmsRegistry",
    "UmsResolution",
    "UmsStage",
    "__version__",
    "_jsonl_progress",
    "_set_chunking",
    "_set_small_threshold",
    "audience_values",
]
__version__: str

PLATFORMS: tuple[str, ...]
"""Device platforms, in the order of their numeric codes (``load_arrays``'s ``platform``)."""
VENDORS: tuple[str, ...]
"""Android vendor channels; code 0 is none (own long connection), code i+1 is VENDORS[i]."""

SMALL_THRESHOLD_DEFAULT: int
AUDIENCE_TYPES: tuple[str, ...]
"""The keys of a JPush audience object, in the order the core reads them."""
NAME_MAX_BYTES: int
"""The longest tag or alias, in UTF-8 bytes."""

def audience_values(values: Sequence[object], rule: str) -> tuple[str, ...]:
    """The distinct values of a list or tuple, first-seen order, each checked against ``rule``
    (``"name"``: tags and aliases; ``"registration_id"``). The first value that breaks it raises
    ``ValueError(index, why)``, ``why`` one of ``"type"``, ``"empty"``, ``"chars"``, ``"bytes"``,
    ``"registration_id"``."""

def _jsonl_progress() -> int:
    """Bytes of JSON Lines parsed so far by the loads of this process (progress displays)."""

def _set_small_threshold(n: int) -> None:
    """Set the result size below which evaluation uses id lists (tests only)."""

CHUNKING_DEFAULT: tuple[int, int]
"""``(ranges_per_core, min_ids)`` of chunk-by-chunk evaluation out of the box."""

def _set_chunking(ranges_per_core: int, min_ids: int) -> None:
    """Evaluate audiences whose smallest positive operand has at least ``min_ids`` ids over
    ``ranges_per_core`` ranges of containers per core; 0 ranges evaluates every audience whole
    (tests and benchmarks only)."""

class AudienceLike(Protocol):
    """What the core reads from a validated audience (``reach.jpush.Audience`` is one)."""

    @property
    def all(self) -> bool: ...
    @property
    def tag(self) -> Sequence[str]: ...
    @property
    def tag_and(self) -> Sequence[str]: ...
    @property
    def tag_not(self) -> Sequence[str]: ...
    @property
    def alias(self) -> Sequence[str]: ...
    @property
    def registration_id(self) -> Sequence[str]: ...
    @property
    def segment(self) -> Sequence[str]: ...
    @property
    def abtest(self) -> Sequence[str]: ...

@final
class Batch:
    """One delivery batch: devices of one platform (and Android vendor channel)."""

    @property
    def platform(self) -> str: ...
    @property
    def vendor(self) -> str | None: ...
    @property
    def apns_production(self) -> bool | None: ...
    @property
    def ids(self) -> npt.NDArray[np.uint32]: ...
    def registration_ids(self) -> list[str]: ...
    def __len__(self) -> int: ...

@final
class Resolution:
    """The devices an audience reaches: a bitmap of interned device ids."""

    def __len__(self) -> int: ...
    def ids(self) -> npt.NDArray[np.uint32]: ...
    def registration_ids(self) -> list[str]: ...
    def to_bytes(self) -> bytes: ...
    def online(self) -> Resolution:
        """The devices of this resolution that are online now."""
    def with_mobile(self) -> Resolution:
        """The devices of this resolution that have a mobile number now."""
    def batches(self, max_size: int = 1000, apns_production: bool | None = None) -> list[Batch]: ...
    def explain(self) -> list[dict[str, object]]: ...

@final
class Registry:
    """A device registry: interned registration IDs and roaring-bitmap memberships."""

    def __init__(self) -> None: ...
    def __len__(self) -> int: ...
    def upsert(
        self,
        registration_id: str,
        platform: str,
        vendor: str | None = None,
        tags: Sequence[str] = ...,
        alias: str | None = None,
        mobile: str | None = None,
        online: bool = False,
    ) -> int: ...
    def add_tags(self, registration_id: str, tags: Sequence[str]) -> None: ...
    def remove_tags(self, registration_id: str, tags: Sequence[str]) -> None: ...
    def set_alias(self, registration_id: str, alias: str | None) -> None: ...
    def set_mobile(self, registration_id: str, mobile: str | None) -> None: ...
    def set_online(self, registration_id: str, online: bool) -> None: ...
    def delete(self, registration_id: str) -> bool: ...
    def device(self, registration_id: str) -> dict[str, object] | None: ...
    def device_id(self, registration_id: str) -> int | None: ...
    def registration_ids(self, ids: npt.NDArray[np.uint32]) -> list[str]: ...
    def tags(self) -> list[str]: ...
    def load_jsonl(self, path: str) -> int: ...
    def load_arrays(
        self,
        rid_bytes: npt.NDArray[np.uint8],
        rid_offsets: npt.NDArray[np.uint64],
        platform: npt.NDArray[np.uint8],
        vendor: npt.NDArray[np.uint8] | None = None,
        tag_names: Sequence[str] = ...,
        tag_indptr: npt.NDArray[np.uint64] | None = None,
        tag_indices: npt.NDArray[np.uint32] | None = None,
        alias_bytes: npt.NDArray[np.uint8] | None = None,
        alias_offsets: npt.NDArray[np.uint64] | None = None,
        online: npt.NDArray[np.bool_] | None = None,
    ) -> int: ...
    def add_segment(self, name: str, registration_ids: Sequence[str]) -> int: ...
    def add_segment_bitmap(self, name: str, portable: bytes) -> int: ...
    def add_dynamic_segment(self, name: str, audience: AudienceLike) -> None: ...
    def add_abtest(
        self, name: str, base: AudienceLike, groups: Sequence[tuple[str, int]]
    ) -> None: ...
    def resolve(
        self,
        audience: AudienceLike,
        platforms: Sequence[str] | None = None,
        apns_production: bool = True,
    ) -> Resolution: ...
    def count(self, audience: AudienceLike, platforms: Sequence[str] | None = None) -> int: ...
    def tag_members(self, tag: str) -> bytes: ...
    def set_tag_members(self, tag: str, portable: bytes) -> None: ...
    def memory_usage(self) -> dict[str, int]: ...
    def save(self, path: str) -> None: ...
    @staticmethod
    def load(path: str) -> Registry: ...
    def _kernel_floor(
        self, audience: AudienceLike, platforms: Sequence[str] | None = None
    ) -> int: ...

UMS_CHANNEL_TYPES: tuple[str, ...]
"""The UMS channel types, in the core's code order."""

@final
class UmsChannel:
    """The IDs one channel of a template send goes to."""

    @property
    def key(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def ids(self) -> npt.NDArray[np.uint32]:
        """Interned channel registration IDs, ascending and distinct."""
    @property
    def reached(self) -> int:
        """How many users this channel reaches."""
    def channel_ids(self) -> list[str]: ...
    def __len__(self) -> int: ...

@final
class UmsStage:
    """One stage of a template send: a channel's IDs, when they go out, whom they delivered to."""

    @property
    def stage(self) -> int:
        """1-based; every channel of a send without a strategy is stage 1."""
    @property
    def delay(self) -> int:
        """Seconds after the previous stage."""
    @property
    def offset(self) -> int:
        """Seconds after the send."""
    @property
    def channel(self) -> UmsChannel:
        """The channel's IDs of this stage (``reached``: the users sent to)."""
    @property
    def delivered(self) -> int:
        """How many users this stage delivered to."""
    @property
    def delivered_ids(self) -> int:
        """How many of its IDs delivered."""
    @property
    def groups(
        self,
    ) -> list[tuple[str, str | None, bool | None, npt.NDArray[np.uint32]]] | None:
        """For an app channel routed through a JPush app: its IDs per JPush delivery group,
        ``(platform, vendor, apns_production, ids)``; None otherwise."""

@final
class UmsResolution:
    """The answer to a template send: per channel its IDs, its stages, and the users no channel
    reaches."""

    @property
    def channels(self) -> list[UmsChannel]:
        """The template's channels, in its order."""
    @property
    def stages(self) -> list[UmsStage]:
        """The stages, in order (without a send strategy: every channel, all stage 1)."""
    @property
    def app_online(self) -> dict[str, npt.NDArray[np.uint32]]:
        """Per app channel routed through a JPush app: the interned IDs of its routable IDs
        whose device was online at the send."""
    @property
    def audience(self) -> int:
        """How many users the send targets (0 for custom channel IDs)."""
    @property
    def delivered(self) -> int:
        """How many users some stage delivered to."""
    def unreachable(self) -> npt.NDArray[np.uint32]:
        """The user ids of the audience that no channel reaches, ascending."""
    def unreachable_userids(self) -> list[str]: ...
    def explain(self) -> list[dict[str, object]]:
        """The count after every step: per channel, then per stage (with its ``stage``), then
        for the whole send."""
    def __len__(self) -> int: ...

@final
class UmsRegistry:
    """The UMS users of one account: tags and channel bindings per scope, channels, segments,
    black/white lists."""

    def __init__(self) -> None: ...
    def __len__(self) -> int: ...
    def upsert_user(
        self,
        userid: str,
        tags: Mapping[str, Sequence[str]] = ...,
        bindings: Mapping[str, Mapping[str, Sequence[str]]] = ...,
    ) -> int: ...
    def upsert_users(
        self,
        users: Sequence[
            tuple[str, Mapping[str, Sequence[str]], Mapping[str, Mapping[str, Sequence[str]]]]
        ],
    ) -> list[int]: ...
    def delete_user(self, userid: str) -> bool: ...
    def user(self, userid: str) -> dict[str, object] | None: ...
    def user_id(self, userid: str) -> int | None: ...
    def userids(self, ids: npt.NDArray[np.uint32]) -> list[str]: ...
    def channel_ids(self, ids: npt.NDArray[np.uint32]) -> list[str]: ...
    def add_channel(self, key: str, type: str) -> None: ...
    def channels(self) -> dict[str, str]: ...
    def add_segment(self, name: str, userids: Sequence[str]) -> int: ...
    def add_list(self, list_id: int, userids: Sequence[str], ids: Sequence[str]) -> None: ...
    def load_users_jsonl(self, path: str) -> int: ...
    def add_users(
        self, bytes: npt.NDArray[np.uint8], offsets: npt.NDArray[np.uint64]
    ) -> npt.NDArray[np.uint32]: ...
    def add_tag_users(self, tag: str, scope: str, portable: bytes) -> None: ...
    def bind_arrays(
        self,
        type: str,
        scope: str,
        users: npt.NDArray[np.uint32],
        id_bytes: npt.NDArray[np.uint8],
        id_offsets: npt.NDArray[np.uint64],
    ) -> None: ...
    def resolve(
        self,
        channels: Sequence[str],
        broadcast: bool = False,
        tags: Sequence[str] | None = None,
        userids: Sequence[str] | None = None,
        segment: str | None = None,
        custom: Sequence[tuple[str, Sequence[str]]] | None = None,
        black: int | None = None,
        white: int | None = None,
        rule: Sequence[tuple[str, int]] | None = None,
        apps: Sequence[tuple[str, Registry]] | None = None,
        platforms: Sequence[str] | None = None,
        apns_production: bool = True,
        time_to_live: int = 0,
        came_online: Sequence[tuple[str, Sequence[tuple[str, float]]]] | None = None,
        online: Sequence[tuple[str, Sequence[str]]] | None = None,
    ) -> UmsResolution: ...
    def set_undeliverable(self, add: Sequence[str] = ..., remove: Sequence[str] = ...) -> None: ...
    def undeliverable(self) -> list[str]: ...
    def save(self, path: str, extra: bytes) -> None: ...
    @staticmethod
    def load(path: str) -> tuple[UmsRegistry, bytes]: ...
    def memory_usage(self) -> dict[str, int]: ...
