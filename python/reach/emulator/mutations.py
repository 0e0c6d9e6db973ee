"""Device mutations of the emulator: parsed once from the device API, journaled, then applied.

Every change to an app's registry is one of the frozen dataclasses below. The same object is
validated against the registry (``check``), written to the store's journal (``to_json``), applied
(``apply``) and, after a restart, read back from the journal (``from_json``) and applied again, so
that the live path and the replay share one piece of code per rule. ``apply`` never fails on a
mutation that passed ``check`` under the same lock: that is what makes "journal, then apply" safe.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Final

from .. import _core
from ..errors import PushError
from ..jpush import _check_name, _check_registration_id, parse_platform
from ..registry import Registry
from ..ums import BAD_RECORD, UmsError, UmsRegistry

_MAX_IDS: Final = 1000  # registration IDs per tag update (the device API's limit)
_MAX_TAGS: Final = 100  # tags per device update

UNSET: Final = "\0unset"
"""Marks a field the request did not mention (None means "clear it")."""


def _rid(value: object, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise PushError(1003, f"{where} must be a non-empty string")
    _check_registration_id(value, where)
    return value


def _names(value: object, where: str, limit: int) -> tuple[str, ...]:
    """A list of tags (or aliases): each checked by the push API's rule, duplicates dropped."""
    if not isinstance(value, list):
        raise PushError(1003, f"{where} must be an array of strings")
    if len(value) > limit:
        raise PushError(1003, f"{where} has {len(value)} values; at most {limit} are allowed")
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item:
            raise PushError(1003, f"{where}[{i}] must be a non-empty string")
        _check_name(item, f"{where}[{i}]")
    return tuple(dict.fromkeys(value))


def _object(value: object, where: str, allowed: Sequence[str]) -> Mapping[str, object]:
    if not isinstance(value, dict):
        raise PushError(1003, f"{where} must be a JSON object")
    unknown = [k for k in value if k not in allowed]
    if unknown:
        raise PushError(1009, f"{where}: unsupported key {unknown[0]!r}")
    return value


def _live(reg: Registry, rid: str) -> None:
    if reg.device_id(rid) is None:
        raise PushError(1003, f"registration_id {rid!r} is not a registered device")


@dataclass(frozen=True, slots=True)
class Register:
    """Create or fully replace a device (the emulator's stand-in for the client SDK)."""

    op: ClassVar[str] = "register"
    registration_id: str
    platform: str
    vendor: str | None = None
    tags: tuple[str, ...] = ()
    alias: str | None = None
    mobile: str | None = None
    online: bool = False

    @classmethod
    def parse(cls, obj: object, where: str = "device") -> Register:
        """One device of the import format (DESIGN.md): registration_id, platform, vendor?, ..."""
        keys = ("registration_id", "platform", "vendor", "tags", "alias", "mobile", "online")
        d = _object(obj, where, keys)
        if "registration_id" not in d or "platform" not in d:
            raise PushError(1002, f"{where} needs registration_id and platform")
        rid = _rid(d["registration_id"], f"{where}.registration_id")
        platform = d["platform"]
        if platform not in _core.PLATFORMS:
            raise PushError(1003, f"{where}.platform must be one of {', '.join(_core.PLATFORMS)}")
        vendor = d.get("vendor")
        if vendor is not None and (vendor not in _core.VENDORS or platform != "android"):
            raise PushError(
                1003, f"{where}.vendor must be one of {', '.join(_core.VENDORS)} (android only)"
            )
        alias = d.get("alias")
        if alias is not None:
            if not isinstance(alias, str) or not alias:
                raise PushError(1003, f"{where}.alias must be a non-empty string")
            _check_name(alias, f"{where}.alias")
        mobile = _mobile(d.get("mobile"), f"{where}.mobile")
        online = d.get("online", False)
        if not isinstance(online, bool):
            raise PushError(1003, f"{where}.online must be true or false")
        tags = _names(d.get("tags", []), f"{where}.tags", _MAX_TAGS)
        return cls(rid, str(platform), vendor, tags, alias, mobile, online)

    def check(self, reg: Registry) -> None:
        """Nothing to check against the registry: a register creates or replaces."""

    def apply(self, reg: Registry) -> None:
        reg.upsert(
            self.registration_id,
            self.platform,
            vendor=self.vendor,
            tags=list(self.tags),
            alias=self.alias,
            mobile=self.mobile,
            online=self.online,
        )


def _mobile(value: object, where: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not value.isascii() or not value.isdigit() or len(value) > 20:
        raise PushError(1003, f"{where} must be a string of at most 20 digits")
    return value


@dataclass(frozen=True, slots=True)
class UpdateDevice:
    """``POST /v3/devices/{registration_id}``: tags add/remove or cleared, alias, mobile."""

    op: ClassVar[str] = "update_device"
    registration_id: str
    tags_add: tuple[str, ...] = ()
    tags_remove: tuple[str, ...] = ()
    clear_tags: bool = False
    alias: str | None = UNSET
    mobile: str | None = UNSET

    @classmethod
    def parse(cls, registration_id: str, obj: object) -> UpdateDevice:
        rid = _rid(registration_id, "registration_id")
        d = _object(obj, "body", ("tags", "alias", "mobile"))
        tags = d.get("tags")
        add: tuple[str, ...] = ()
        remove: tuple[str, ...] = ()
        clear = False
        if tags == "":
            clear = True
        elif tags is not None:
            t = _object(tags, "tags", ("add", "remove"))
            add = _names(t.get("add", []), "tags.add", _MAX_TAGS)
            remove = _names(t.get("remove", []), "tags.remove", _MAX_TAGS)
        alias: str | None = UNSET
        if "alias" in d:
            a = d["alias"]
            if a is None or a == "":
                alias = None
            elif isinstance(a, str):
                _check_name(a, "alias")
                alias = a
            else:
                raise PushError(1003, "alias must be a string (an empty one clears it)")
        mobile: str | None = UNSET
        if "mobile" in d:
            mobile = _mobile(d["mobile"], "mobile")
        return cls(rid, add, remove, clear, alias, mobile)

    def check(self, reg: Registry) -> None:
        _live(reg, self.registration_id)

    def apply(self, reg: Registry) -> None:
        rid = self.registration_id
        if self.clear_tags:
            device = reg.device(rid)
            if device is not None:
                reg.remove_tags(rid, list(device["tags"]))  # type: ignore[call-overload]
        if self.tags_remove:
            reg.remove_tags(rid, list(self.tags_remove))
        if self.tags_add:
            reg.add_tags(rid, list(self.tags_add))
        if self.alias != UNSET:
            reg.set_alias(rid, self.alias)
        if self.mobile != UNSET:
            reg.set_mobile(rid, self.mobile)


@dataclass(frozen=True, slots=True)
class UpdateTag:
    """``POST /v3/tags/{tag}``: add the tag to and remove it from registration IDs."""

    op: ClassVar[str] = "update_tag"
    tag: str
    add: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()

    @classmethod
    def parse(cls, tag: str, obj: object) -> UpdateTag:
        _check_name(tag, "tag")
        d = _object(obj, "body", ("registration_ids",))
        if "registration_ids" not in d:
            raise PushError(1002, "body needs registration_ids: {add?, remove?}")
        ids = _object(d["registration_ids"], "registration_ids", ("add", "remove"))
        add = _rids(ids.get("add", []), "registration_ids.add")
        remove = _rids(ids.get("remove", []), "registration_ids.remove")
        return cls(tag, add, remove)

    def check(self, reg: Registry) -> None:
        for rid in (*self.add, *self.remove):
            _live(reg, rid)

    def apply(self, reg: Registry) -> None:
        for rid in self.remove:
            reg.remove_tags(rid, [self.tag])
        for rid in self.add:
            reg.add_tags(rid, [self.tag])


def _rids(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise PushError(1003, f"{where} must be an array of registration IDs")
    if len(value) > _MAX_IDS:
        raise PushError(1003, f"{where} has {len(value)} values; at most {_MAX_IDS} are allowed")
    return tuple(dict.fromkeys(_rid(v, f"{where}[{i}]") for i, v in enumerate(value)))


def parse_platforms(value: str | None) -> tuple[str, ...] | None:
    """The ``platform`` query parameter of the tag and alias APIs: ``android,ios`` or absent."""
    if value is None or value == "" or value == "all":
        return None
    return parse_platform(value.split(","))


def _holders(reg: Registry, kind: str, name: str, platforms: tuple[str, ...] | None) -> list[str]:
    """The registration IDs of the live devices holding tag or alias ``name`` on ``platforms``."""
    return reg.resolve_audience({kind: [name]}, platforms or "all").registration_ids()


@dataclass(frozen=True, slots=True)
class DeleteTag:
    """``DELETE /v3/tags/{tag}[?platform=...]``: the tag leaves every device (of the platforms)."""

    op: ClassVar[str] = "delete_tag"
    tag: str
    platforms: tuple[str, ...] | None = None

    def check(self, reg: Registry) -> None:
        _check_name(self.tag, "tag")

    def apply(self, reg: Registry) -> None:
        for rid in _holders(reg, "tag", self.tag, self.platforms):
            reg.remove_tags(rid, [self.tag])


@dataclass(frozen=True, slots=True)
class DeleteAlias:
    """``DELETE /v3/aliases/{alias}[?platform=...]``: the alias leaves its devices."""

    op: ClassVar[str] = "delete_alias"
    alias: str
    platforms: tuple[str, ...] | None = None

    def check(self, reg: Registry) -> None:
        _check_name(self.alias, "alias")

    def apply(self, reg: Registry) -> None:
        for rid in _holders(reg, "alias", self.alias, self.platforms):
            reg.set_alias(rid, None)


@dataclass(frozen=True, slots=True)
class SetOnline:
    """A device connects or disconnects (the emulator's stand-in for the client's connection)."""

    op: ClassVar[str] = "set_online"
    registration_id: str
    online: bool = field(default=True)

    @classmethod
    def parse(cls, registration_id: str, obj: object) -> SetOnline:
        d = _object(obj, "body", ("online",))
        online = d.get("online", True)
        if not isinstance(online, bool):
            raise PushError(1003, "online must be true or false")
        return cls(_rid(registration_id, "registration_id"), online)

    def check(self, reg: Registry) -> None:
        _live(reg, self.registration_id)

    def apply(self, reg: Registry) -> None:
        reg.set_online(self.registration_id, self.online)


@dataclass(frozen=True, slots=True)
class DeleteDevice:
    """A device is unregistered: it reaches nothing from now on."""

    op: ClassVar[str] = "delete_device"
    registration_id: str

    def check(self, reg: Registry) -> None:
        _live(reg, self.registration_id)

    def apply(self, reg: Registry) -> None:
        reg.delete(self.registration_id)


@dataclass(frozen=True, slots=True)
class UpsertUser:
    """UMS user management: upload or replace a user (the ``users.jsonl`` format). Unlike the
    device mutations it is applied before it is journaled: the core checks it whole and refuses
    it unchanged (1015018), so only accepted users reach the journal."""

    op: ClassVar[str] = "upsert_user"
    userid: str
    tags: dict[str, list[str]] = field(default_factory=dict)
    bindings: dict[str, dict[str, list[str]]] = field(default_factory=dict)

    @classmethod
    def parse(cls, obj: object, where: str = "user") -> UpsertUser:
        if not isinstance(obj, dict) or not isinstance(obj.get("userid"), str):
            raise UmsError(BAD_RECORD, f'{where} must be {{"userid", "tags"?, "bindings"?}}')
        unknown = [k for k in obj if k not in ("userid", "tags", "bindings")]
        if unknown:
            raise UmsError(BAD_RECORD, f"{where}: unsupported key {unknown[0]!r}")
        tags, bindings = obj.get("tags", {}), obj.get("bindings", {})
        if not isinstance(tags, dict) or not isinstance(bindings, dict):
            raise UmsError(BAD_RECORD, f"{where}: tags and bindings must be objects by scope")
        return cls(obj["userid"], tags, bindings)

    def apply(self, reg: UmsRegistry) -> None:
        reg.upsert_user(self.userid, self.tags, self.bindings)

    @staticmethod
    def apply_all(reg: UmsRegistry, users: Sequence[UpsertUser]) -> None:
        """``apply`` of several users, all or nothing (the core checks them together)."""
        reg.upsert_users([(u.userid, u.tags, u.bindings) for u in users])


@dataclass(frozen=True, slots=True)
class DeleteUser:
    """UMS user management: a user leaves (reaches nothing from now on)."""

    op: ClassVar[str] = "delete_user"
    userid: str

    def apply(self, reg: UmsRegistry) -> None:
        if not reg.delete_user(self.userid):
            raise UmsError(BAD_RECORD, f"user {self.userid!r} does not exist")


@dataclass(frozen=True, slots=True)
class SetUndeliverable:
    """The emulator's UMS delivery model: channel registration IDs that stop delivering
    (``add``) or deliver again (``remove``). Checked whole by the core before it changes."""

    op: ClassVar[str] = "set_undeliverable"
    add: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()

    @classmethod
    def parse(cls, obj: object) -> SetUndeliverable:
        """``{"add"?: [IDs], "remove"?: [IDs]}``, at most 1000 IDs in all."""
        if not isinstance(obj, dict) or not obj or not set(obj) <= {"add", "remove"}:
            raise UmsError(BAD_RECORD, 'the body is {"add"?: [IDs], "remove"?: [IDs]}')
        lists = {k: obj.get(k, []) for k in ("add", "remove")}
        for key, ids in lists.items():
            if not isinstance(ids, list) or not all(isinstance(i, str) and i for i in ids):
                raise UmsError(BAD_RECORD, f"{key} must be an array of non-empty ID strings")
        if sum(len(v) for v in lists.values()) > _MAX_IDS:
            raise UmsError(BAD_RECORD, f"at most {_MAX_IDS} IDs per call")
        return cls(tuple(lists["add"]), tuple(lists["remove"]))

    def apply(self, reg: UmsRegistry) -> None:
        reg.set_undeliverable(list(self.add), list(self.remove))


Mutation = Register | UpdateDevice | UpdateTag | DeleteTag | DeleteAlias | SetOnline | DeleteDevice
UserMutation = UpsertUser | DeleteUser | SetUndeliverable
_KINDS: Final[dict[str, type[Mutation | UserMutation]]] = {
    k.op: k
    for k in (
        Register,
        UpdateDevice,
        UpdateTag,
        DeleteTag,
        DeleteAlias,
        SetOnline,
        DeleteDevice,
        UpsertUser,
        DeleteUser,
        SetUndeliverable,
    )
}


def to_json(m: Mutation | UserMutation) -> tuple[str, str]:
    """The journal form of a mutation: its op name and its fields as JSON."""
    return m.op, json.dumps(asdict(m), ensure_ascii=False, separators=(",", ":"))


def from_json(op: str, args: str) -> Mutation | UserMutation:
    """A mutation back from its journal form (top-level lists become tuples again)."""
    fields: dict[str, Any] = json.loads(args)
    for k, v in fields.items():
        if isinstance(v, list):
            fields[k] = tuple(v)
    return _KINDS[op](**fields)
