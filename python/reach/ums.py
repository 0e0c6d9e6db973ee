"""Jiguang UMS template sends (seed 000): parsed and validated once, at the edge.

``parse_template_send(body, broadcast=...)`` takes the JSON object of ``POST /v1/template/sent``
(or ``/v1/template/broadcast``) and returns a frozen ``TemplateSend`` or raises ``UmsError`` with a
code of the table below and a message naming the field. Only the shape and the seed's limits are
checked here; what needs the registry (does the template exist, its variables and channels, the
lists and rules) is checked where the send is resolved.

The seed gives one code (1015031, an unknown template); the others are this project's, one per
rule, in the same range:

======== =====================================================================================
code     refusal
======== =====================================================================================
1015001  a required field is missing (template_id, template_para; a target on /sent)
1015002  a value of the wrong type, or a body that is not a JSON object
1015003  an unsupported key
1015004  aud_tag: more than 20 tags, a tag over 40 UTF-8 bytes or with other characters
1015005  aud_userid: more than 1000 users, a userid over 64 characters or with other characters
1015006  aud_segment: not exactly one segment
1015007  custom channel IDs: not ``[{"instance"?, "data": [1..1000 IDs]}]``, or over 1000 IDs
1015008  custom channel IDs mixed with user-class targets (aud_tag, aud_userid, aud_segment)
1015009  a broadcast with a target, or more than one kind of user-class target
1015010  option: black_id and white_id together; priority not 1, 2 or 3
1015011  app_para: platform, time_to_live (0..864000 s) or apns_production invalid
1015012  aud_segment names no user segment
1015013  option.black_id or option.white_id names no black/white list
1015014  rule_id names no send strategy, or one whose channels are not the template's
1015015  a template or send strategy channel key that is not a registered channel
1015016  template_para lacks a variable of the template (the message names the channel)
1015017  a filled channel content is over that channel's length limit (names the channel)
1015018  user management: a refused user, tag, binding, channel (or its ``appkey``), segment,
         list, template, rule or undeliverable ID
1015019  app_para missing for a template with an app channel
1015020  emulator: missing or wrong Basic auth (ChannelKey:MasterSecret), HTTP 401
1015021  emulator: a method the path does not take, or no API at the path
1015022  emulator: a body over the size limit
1015023  emulator: over the rate limit, HTTP 429
1015031  the template does not exist (seed)
======== =====================================================================================
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

import numpy as np

from . import _core
from .errors import SnapshotError
from .jpush import PLATFORMS

if TYPE_CHECKING:
    from .registry import Registry

UmsResolution = _core.UmsResolution
UmsChannel = _core.UmsChannel
UmsStage = _core.UmsStage

__all__ = [
    "CHANNEL_TYPES",
    "AppPara",
    "ChannelIds",
    "SendOption",
    "SendRule",
    "Template",
    "TemplateContent",
    "TemplateSend",
    "UmsChannel",
    "UmsError",
    "UmsRegistry",
    "UmsResolution",
    "UmsStage",
    "parse_rule",
    "parse_template",
    "parse_template_send",
]

CHANNEL_TYPES: Final[tuple[str, ...]] = (
    "app",
    "wechatoa",
    "wechatmp",
    "sms",
    "email",
    "alipay_life",
    "dingtalk_cc",
    "wechatwk",
    "wechatwk_linkedcorp",
)
"""The UMS channel types; ``aud_<type>`` carries custom channel registration IDs."""

MISSING: Final = 1015001
WRONG_TYPE: Final = 1015002
UNSUPPORTED_KEY: Final = 1015003
BAD_TAG: Final = 1015004
BAD_USERID: Final = 1015005
BAD_SEGMENT: Final = 1015006
BAD_CHANNEL_IDS: Final = 1015007
MIXED_TARGETS: Final = 1015008
BAD_TARGET: Final = 1015009
BAD_OPTION: Final = 1015010
BAD_APP_PARA: Final = 1015011
UNKNOWN_SEGMENT: Final = 1015012
UNKNOWN_LIST: Final = 1015013
UNKNOWN_RULE: Final = 1015014
UNKNOWN_CHANNEL: Final = 1015015
MISSING_VARIABLE: Final = 1015016
TOO_LONG: Final = 1015017
BAD_RECORD: Final = 1015018
APP_PARA_REQUIRED: Final = 1015019
AUTH_FAILED: Final = 1015020
BAD_REQUEST: Final = 1015021
TOO_LARGE: Final = 1015022
RATE_LIMITED: Final = 1015023
UNKNOWN_TEMPLATE: Final = 1015031

_TAGS_MAX: Final = 20
_TAG_MAX_BYTES: Final = 40
_USERIDS_MAX: Final = 1000
_USERID_MAX_CHARS: Final = 64
_IDS_PER_CHANNEL_MAX: Final = 1000
_TTL_MAX: Final = 864000  # 10 days

# The seed's characters: letters, digits, _, and @!#$&*+=.|¥; tags also Chinese (CJK ideographs).
_SPECIAL: Final = r"@!#$&*+=.|¥"
_TAG_RE: Final = re.compile(
    rf"[A-Za-z0-9_{re.escape(_SPECIAL)}\u4E00-\u9FFF\u3400-\u4DBF\uF900-\uFAFF\U00020000-\U0002A6DF]+"
)
_USERID_RE: Final = re.compile(rf"[A-Za-z0-9_{re.escape(_SPECIAL)}]+")

_KEYS: Final = (
    *(f"aud_{t}" for t in ("tag", "userid", "segment")),
    *(f"aud_{t}" for t in CHANNEL_TYPES),
    "template_id",
    "template_para",
    "app_para",
    "rule_id",
    "option",
    "callback",
)


class UmsError(ValueError):
    """A refused UMS request: ``code`` (table in the module docstring) and ``message``.

    >>> UmsError(1015031, "template 7 does not exist").to_json()
    {'code': 1015031, 'message': 'template 7 does not exist'}
    """

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"[{code}] {message}")
        self.code = code
        self.message = message
        self.http_status = {AUTH_FAILED: 401, RATE_LIMITED: 429}.get(code, 400)

    def to_json(self) -> dict[str, object]:
        """The vendor's error body: ``{"code", "message"}``."""
        return {"code": self.code, "message": self.message}


@dataclass(frozen=True, slots=True)
class ChannelIds:
    """Custom registration IDs of one channel type (``aud_<type>``), duplicates dropped."""

    type: str
    ids: tuple[str, ...]
    instance: str | None = None


@dataclass(frozen=True, slots=True)
class AppPara:
    """``app_para``: how the template's app channel goes out through the JPush registry."""

    platform: tuple[str, ...] | None  # None: every platform
    time_to_live: int = 86400
    apns_production: bool = True


@dataclass(frozen=True, slots=True)
class SendOption:
    """``option``."""

    sendno: str | None = None
    owner: str | None = None
    black_id: int | None = None
    white_id: int | None = None
    priority: int | None = None


@dataclass(frozen=True, slots=True)
class TemplateSend:
    """A validated template send. At most one user-class target is set (none for a broadcast,
    or when ``channel_ids`` carries custom channel registration IDs instead)."""

    template_id: int
    template_para: dict[str, str]
    broadcast: bool = False
    tags: tuple[str, ...] = ()
    userids: tuple[str, ...] = ()
    segment: str | None = None
    channel_ids: tuple[ChannelIds, ...] = ()
    app_para: AppPara | None = None
    rule_id: int | None = None
    option: SendOption = field(default_factory=SendOption)
    callback: dict[str, object] | None = None

    @property
    def sendno(self) -> str:
        """What the answer echoes: ``option.sendno``, or ``""``."""
        return self.option.sendno or ""


def parse_template_send(body: object, *, broadcast: bool = False) -> TemplateSend:
    """Parse and validate a template send (``broadcast``: the ``/v1/template/broadcast`` API)."""
    obj = _object(body, "body")
    for key in obj:
        if key not in _KEYS:
            raise UmsError(UNSUPPORTED_KEY, f"unsupported key {key!r}")
    template_id = _int(obj, "template_id", 1, 2**63 - 1, required=True)
    assert template_id is not None
    para = _object(_required(obj, "template_para"), "template_para")
    template_para: dict[str, str] = {}
    for k, v in para.items():
        if isinstance(v, bool) or not isinstance(v, str | int | float):
            raise UmsError(WRONG_TYPE, f"template_para.{k} must be a string or a number")
        template_para[k] = v if isinstance(v, str) else str(v)
    tags = _names(obj, "aud_tag", _TAGS_MAX, BAD_TAG, _check_tag)
    userids = _names(obj, "aud_userid", _USERIDS_MAX, BAD_USERID, _check_userid)
    segments = _names(obj, "aud_segment", 1, BAD_SEGMENT, None)
    if "aud_segment" in obj and len(segments) != 1:
        raise UmsError(BAD_SEGMENT, "aud_segment takes exactly one segment")
    channel_ids = tuple(_channel_ids(obj, t) for t in CHANNEL_TYPES if f"aud_{t}" in obj)
    user_targets = [k for k in ("aud_tag", "aud_userid", "aud_segment") if k in obj]
    if broadcast and (user_targets or channel_ids):
        raise UmsError(BAD_TARGET, "a broadcast takes no aud_* target")
    if channel_ids and user_targets:
        raise UmsError(
            MIXED_TARGETS,
            f"custom channel IDs may not be mixed with user-class targets ({user_targets[0]})",
        )
    if len(user_targets) > 1:
        raise UmsError(BAD_TARGET, f"one user-class target at a time: {', '.join(user_targets)}")
    if not broadcast and not user_targets and not channel_ids:
        raise UmsError(
            MISSING, "a target is required: aud_tag, aud_userid, aud_segment or aud_<channel>"
        )
    return TemplateSend(
        template_id=template_id,
        template_para=template_para,
        broadcast=broadcast,
        tags=tags,
        userids=userids,
        segment=segments[0] if segments else None,
        channel_ids=channel_ids,
        app_para=_app_para(obj["app_para"]) if "app_para" in obj else None,
        rule_id=_int(obj, "rule_id", 0, 2**63 - 1) or None,
        option=_option(obj["option"]) if "option" in obj else SendOption(),
        callback=_callback(obj["callback"]) if "callback" in obj else None,
    )


def _object(value: object, where: str) -> Mapping[str, object]:
    if not isinstance(value, dict):
        raise UmsError(WRONG_TYPE, f"{where} must be a JSON object")
    return value


def _required(obj: Mapping[str, object], key: str) -> object:
    if key not in obj:
        raise UmsError(MISSING, f"{key} is required")
    return obj[key]


def _int(
    obj: Mapping[str, object], key: str, low: int, high: int, *, required: bool = False
) -> int | None:
    if key not in obj:
        if required:
            raise UmsError(MISSING, f"{key} is required")
        return None
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise UmsError(WRONG_TYPE, f"{key} must be an integer in {low}..{high}, got {value!r}")
    return value


def _check_tag(value: str, where: str) -> None:
    if _TAG_RE.fullmatch(value) is None:
        raise UmsError(BAD_TAG, f"{where}: {value!r} may only contain letters, digits, _, "
                       f"Chinese characters and {_SPECIAL}")  # fmt: skip
    if len(value.encode()) > _TAG_MAX_BYTES:
        raise UmsError(BAD_TAG, f"{where}: {value!r} is over {_TAG_MAX_BYTES} UTF-8 bytes")


def _check_userid(value: str, where: str) -> None:
    if _USERID_RE.fullmatch(value) is None or len(value) > _USERID_MAX_CHARS:
        raise UmsError(
            BAD_USERID,
            f"{where}: {value!r} must be 1 to {_USERID_MAX_CHARS} letters, digits, _ or {_SPECIAL}",
        )


def _names(
    obj: Mapping[str, object], key: str, limit: int, code: int, rule: object
) -> tuple[str, ...]:
    """A user-class target array: strings, at most ``limit``, each passing ``rule``."""
    if key not in obj:
        return ()
    value = obj[key]
    if not isinstance(value, list) or not value:
        raise UmsError(code, f"{key} must be a non-empty array of strings")
    if len(value) > limit:
        raise UmsError(code, f"{key} has {len(value)} values; at most {limit} are allowed")
    if key == "aud_userid" and _all_userids(value):
        return _distinct(value)  # fast path: 1000 userids in one regex match
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item:
            raise UmsError(code, f"{key}[{i}] must be a non-empty string")
        if callable(rule):
            rule(item, f"{key}[{i}]")
    return _distinct(value)


def _distinct(values: list[str]) -> tuple[str, ...]:
    """``values`` without repeats, in first-seen order (a set first: usually there are none)."""
    t = tuple(values)
    return t if len(set(t)) == len(t) else tuple(dict.fromkeys(t))


def _all_userids(values: list[object]) -> bool:
    """Whether every value is a valid userid, checked at once, each step one C-level pass:
    ``join`` refuses anything but strings, and the character class is the same for all, so
    the concatenation matches it exactly when every (non-empty) value does."""
    try:
        joined = "".join(values)  # type: ignore[arg-type]
    except TypeError:
        return False
    if "" in values or max(map(len, values)) > _USERID_MAX_CHARS:  # type: ignore[arg-type]
        return False
    return _USERID_RE.fullmatch(joined) is not None


def _channel_ids(obj: Mapping[str, object], channel_type: str) -> ChannelIds:
    """``aud_<type>``: ``[{"instance"?, "data": [IDs]}]``, at most 1000 IDs in all."""
    key = f"aud_{channel_type}"
    value = obj[key]
    if not isinstance(value, list) or not value:
        raise UmsError(BAD_CHANNEL_IDS, f'{key} must be an array of {{"instance", "data"}} objects')
    ids: list[str] = []
    instance = None
    for i, item in enumerate(value):
        where = f"{key}[{i}]"
        if not isinstance(item, dict) or not set(item) <= {"instance", "data"}:
            raise UmsError(BAD_CHANNEL_IDS, f'{where} must be {{"instance"?, "data": [IDs]}}')
        if "instance" in item:
            if not isinstance(item["instance"], str):
                raise UmsError(BAD_CHANNEL_IDS, f"{where}.instance must be a string")
            instance = instance or item["instance"]
        data = item.get("data")
        if not isinstance(data, list) or not data:
            raise UmsError(BAD_CHANNEL_IDS, f"{where}.data must be a non-empty array of IDs")
        for j, rid in enumerate(data):
            if not isinstance(rid, str) or not rid or len(rid) > 256:
                raise UmsError(BAD_CHANNEL_IDS, f"{where}.data[{j}] must be a non-empty ID")
        ids += data
    if len(ids) > _IDS_PER_CHANNEL_MAX:
        raise UmsError(
            BAD_CHANNEL_IDS,
            f"{key} has {len(ids)} IDs; at most {_IDS_PER_CHANNEL_MAX} per channel",
        )
    return ChannelIds(channel_type, tuple(dict.fromkeys(ids)), instance)


def _app_para(value: object) -> AppPara:
    obj = _object(value, "app_para")
    for key in obj:
        if key not in ("platform", "time_to_live", "apns_production"):
            raise UmsError(UNSUPPORTED_KEY, f"app_para: unsupported key {key!r}")
    if "platform" not in obj:
        raise UmsError(BAD_APP_PARA, "app_para.platform is required")
    platform = obj["platform"]
    names = [platform] if isinstance(platform, str) else platform
    if platform == "all":
        platforms = None
    elif (
        isinstance(names, list)
        and names
        and all(isinstance(p, str) and p in PLATFORMS for p in names)
    ):
        platforms = tuple(dict.fromkeys(names))
    else:
        raise UmsError(
            BAD_APP_PARA, f'app_para.platform must be "all" or of {", ".join(PLATFORMS)}'
        )
    ttl = obj.get("time_to_live", 86400)
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not 0 <= ttl <= _TTL_MAX:
        raise UmsError(BAD_APP_PARA, f"app_para.time_to_live must be 0..{_TTL_MAX} seconds")
    apns = obj.get("apns_production", True)
    if not isinstance(apns, bool):
        raise UmsError(BAD_APP_PARA, "app_para.apns_production must be true or false")
    return AppPara(platforms, ttl, apns)


def _option(value: object) -> SendOption:
    obj = _object(value, "option")
    for key in obj:
        if key not in ("sendno", "owner", "black_id", "white_id", "priority"):
            raise UmsError(UNSUPPORTED_KEY, f"option: unsupported key {key!r}")
    for key in ("sendno", "owner"):
        if key in obj and not isinstance(obj[key], str):
            raise UmsError(WRONG_TYPE, f"option.{key} must be a string")
    black = _int(obj, "black_id", 0, 2**63 - 1)
    white = _int(obj, "white_id", 0, 2**63 - 1)
    if black is not None and white is not None:
        raise UmsError(BAD_OPTION, "option: black_id and white_id may not be given together")
    priority = obj.get("priority")
    if priority is not None and (isinstance(priority, bool) or priority not in (1, 2, 3)):
        raise UmsError(BAD_OPTION, "option.priority must be 1 (high), 2 (medium) or 3 (low)")
    return SendOption(obj.get("sendno"), obj.get("owner"), black, white, priority)  # type: ignore[arg-type]


def _callback(value: object) -> dict[str, object]:
    obj = _object(value, "callback")
    for key in obj:
        if key not in ("url", "params"):
            raise UmsError(UNSUPPORTED_KEY, f"callback: unsupported key {key!r}")
    if "url" in obj and not isinstance(obj["url"], str):
        raise UmsError(WRONG_TYPE, "callback.url must be a string")
    if "params" in obj and not isinstance(obj["params"], dict):
        raise UmsError(WRONG_TYPE, "callback.params must be a JSON object")
    return dict(obj)


# ---- templates, send strategies and the registry (issue 4) -------------------------------------

_VARIABLE: Final = re.compile(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}")


@dataclass(frozen=True, slots=True)
class TemplateContent:
    """One channel's content: ``text`` with ``{{variable}}`` placeholders, and the longest
    filled text the channel takes (``max_length`` characters; None: no limit)."""

    text: str
    max_length: int | None = None

    @property
    def variables(self) -> tuple[str, ...]:
        """The variables of ``text``, in first-use order."""
        return tuple(dict.fromkeys(_VARIABLE.findall(self.text)))


@dataclass(frozen=True, slots=True)
class Template:
    """A general template: its channels (keys, in order) and each one's content."""

    template_id: int
    channels: tuple[str, ...]
    content: dict[str, TemplateContent]

    def fill(self, para: Mapping[str, str]) -> dict[str, str]:
        """Each channel's text with ``para`` filled in (one value serves every channel).

        >>> t = parse_template({"template_id": 1, "channels": ["sms1"],
        ...                     "content": {"sms1": {"text": "Hi {{user}}", "max_length": 8}}})
        >>> t.fill({"user": "joe"})
        {'sms1': 'Hi joe'}
        >>> t.fill({"user": "joseph"})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        reach.ums.UmsError: [1015017] channel 'sms1': ... has 9 characters; its limit is 8
        """
        out: dict[str, str] = {}
        for key in self.channels:
            content = self.content[key]
            for name in content.variables:
                if name not in para:
                    raise UmsError(
                        MISSING_VARIABLE, f"channel {key!r}: template_para lacks {name!r}"
                    )
            text = _VARIABLE.sub(lambda m: para[m.group(1)], content.text)
            if content.max_length is not None and len(text) > content.max_length:
                raise UmsError(
                    TOO_LONG,
                    f"channel {key!r}: the filled content has {len(text)} characters; "
                    f"its limit is {content.max_length}",
                )
            out[key] = text
        return out

    def to_json(self) -> dict[str, object]:
        """The ``templates.jsonl`` form (``parse_template`` reads it back)."""
        content = {
            k: {"text": c.text} | ({} if c.max_length is None else {"max_length": c.max_length})
            for k, c in self.content.items()
        }
        channels = list(self.channels)
        return {"template_id": self.template_id, "channels": channels, "content": content}


@dataclass(frozen=True, slots=True)
class SendRule:
    """A send strategy: ``stages`` of (channel key, delay in seconds after the previous stage)."""

    rule_id: int
    stages: tuple[tuple[str, int], ...]

    @property
    def channels(self) -> tuple[str, ...]:
        return tuple(k for k, _ in self.stages)

    def to_json(self) -> dict[str, object]:
        """The ``rules.jsonl`` form (``parse_rule`` reads it back)."""
        stages = [{"channel_key": k, "delay": d} for k, d in self.stages]
        return {"rule_id": self.rule_id, "stages": stages}


def _record_error(message: str) -> UmsError:
    return UmsError(BAD_RECORD, message)


def _key(value: object, where: str) -> str:
    if not isinstance(value, str) or not value or len(value.encode()) > 256:
        raise _record_error(f"{where} must be a string of 1 to 256 bytes")
    return value


def _count(value: object, where: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise _record_error(f"{where} must be an integer >= {low}")
    return value


def parse_template(obj: object) -> Template:
    """A template definition (``templates.jsonl``): ``{"template_id", "channels": [keys],
    "content": {key: "text" | {"text", "max_length"?}}}``; every channel has content."""
    if not isinstance(obj, dict) or not set(obj) <= {"template_id", "channels", "content"}:
        raise _record_error('a template is {"template_id", "channels", "content"}')
    template_id = _count(obj.get("template_id"), "template_id", 1)
    channels = obj.get("channels")
    if not isinstance(channels, list) or not channels:
        raise _record_error("channels must be a non-empty array of channel keys")
    keys = tuple(dict.fromkeys(_key(c, "channels[]") for c in channels))
    content = obj.get("content")
    if not isinstance(content, dict) or set(content) != set(keys):
        raise _record_error("content must give every channel of the template, and no other")
    parsed: dict[str, TemplateContent] = {}
    for key, value in content.items():
        if isinstance(value, str):
            parsed[key] = TemplateContent(value)
            continue
        if not isinstance(value, dict) or not isinstance(value.get("text"), str):
            raise _record_error(f'content.{key} must be a string or {{"text", "max_length"?}}')
        if not set(value) <= {"text", "max_length"}:
            raise _record_error(f"content.{key}: unsupported key")
        limit = value.get("max_length")
        parsed[key] = TemplateContent(
            value["text"], None if limit is None else _count(limit, f"content.{key}.max_length", 1)
        )
    return Template(template_id, keys, parsed)


def parse_rule(obj: object) -> SendRule:
    """A send strategy (``rules.jsonl``): ``{"rule_id", "stages": [{"channel_key", "delay"?}]}``
    with ``delay`` the seconds after the previous stage (default 0)."""
    if not isinstance(obj, dict) or not set(obj) <= {"rule_id", "stages"}:
        raise _record_error('a send strategy is {"rule_id", "stages"}')
    rule_id = _count(obj.get("rule_id"), "rule_id", 1)
    stages = obj.get("stages")
    if not isinstance(stages, list) or not stages:
        raise _record_error("stages must be a non-empty array")
    out: list[tuple[str, int]] = []
    for i, stage in enumerate(stages):
        if not isinstance(stage, dict) or not set(stage) <= {"channel_key", "delay"}:
            raise _record_error(f'stages[{i}] must be {{"channel_key", "delay"?}}')
        key = _key(stage.get("channel_key"), f"stages[{i}].channel_key")
        if any(k == key for k, _ in out):
            raise _record_error(f"stages[{i}]: channel {key!r} is already a stage")
        out.append((key, _count(stage.get("delay", 0), f"stages[{i}].delay", 0)))
    return SendRule(rule_id, tuple(out))


UserArgs = tuple[str, Mapping[str, list[str]] | None, Mapping[str, Mapping[str, list[str]]] | None]
"""A user as ``UmsRegistry.upsert_users`` takes it: userid, tags and bindings by scope."""


def _user_args(
    userid: str,
    tags: Mapping[str, list[str]] | None,
    bindings: Mapping[str, Mapping[str, list[str]]] | None,
) -> tuple[str, dict[str, list[str]], dict[str, dict[str, list[str]]]]:
    """A user's fields as the core takes them (plain dicts and lists)."""
    binds = {s: {t: list(ids) for t, ids in types.items()} for s, types in (bindings or {}).items()}
    return userid, {s: list(t) for s, t in (tags or {}).items()}, binds


class UmsRegistry:
    """The UMS users of one account (in the core) with its templates and send strategies.

    >>> reg = UmsRegistry()
    >>> reg.add_channel("sms1", "sms")
    >>> _ = reg.add_template({"template_id": 7, "channels": ["sms1"], "content": {"sms1": "Hi"}})
    >>> _ = reg.upsert_user("u1", tags={"all": ["vip"]}, bindings={"all": {"sms": ["139"]}})
    >>> res = reg.resolve({"aud_tag": ["vip"], "template_id": 7, "template_para": {}})
    >>> [(c.key, c.channel_ids()) for c in res.channels]
    [('sms1', ['139'])]
    >>> reg.resolve({"aud_tag": ["vip"], "template_id": 8, "template_para": {}})
    Traceback (most recent call last):
    reach.ums.UmsError: [1015031] template 8 does not exist
    """

    __slots__ = ("_core", "channel_apps", "rules", "templates")

    def __init__(self, core: _core.UmsRegistry | None = None) -> None:
        self._core = core if core is not None else _core.UmsRegistry()
        self.templates: dict[int, Template] = {}
        self.rules: dict[int, SendRule] = {}
        self.channel_apps: dict[str, str] = {}
        """App channel key -> the JPush appkey its IDs belong to (``channels.jsonl``'s
        ``appkey``); the emulator routes the channel through that app's devices."""

    def __len__(self) -> int:
        return len(self._core)

    # --- users ---------------------------------------------------------------------------------

    def upsert_user(
        self,
        userid: str,
        tags: Mapping[str, list[str]] | None = None,
        bindings: Mapping[str, Mapping[str, list[str]]] | None = None,
    ) -> int:
        """Upload or replace a user: afterwards its tags and bindings (per scope: ``"all"`` or
        a channel key) are exactly these. Its id."""
        return self._core.upsert_user(*_user_args(userid, tags, bindings))

    def upsert_users(self, users: Iterable[UserArgs]) -> list[int]:
        """``upsert_user`` of several ``(userid, tags, bindings)`` users, all or nothing: a
        refusal of any (``UmsError`` naming it) changes nothing. Their ids."""
        return self._core.upsert_users([_user_args(*u) for u in users])

    def delete_user(self, userid: str) -> bool:
        return self._core.delete_user(userid)

    def user(self, userid: str) -> dict[str, object] | None:
        """A live user: ``{"userid", "tags": {scope: [tags, sorted]},
        "bindings": {scope: {type: [IDs]}}}``."""
        return self._core.user(userid)

    def user_id(self, userid: str) -> int | None:
        return self._core.user_id(userid)

    def userids(self, ids: object) -> list[str]:
        """The userids of interned user ids (a numpy ``uint32`` array), in order."""
        return self._core.userids(np.ascontiguousarray(ids, dtype=np.uint32))

    def channel_ids(self, ids: object) -> list[str]:
        """The strings of interned channel registration IDs, in order."""
        return self._core.channel_ids(np.ascontiguousarray(ids, dtype=np.uint32))

    def load_users(self, path: str | os.PathLike[str]) -> int:
        """Load ``users.jsonl`` (all or nothing; ``LoadError`` names the bad line)."""
        return self._core.load_users_jsonl(os.fspath(path))

    # --- channels, segments, lists, templates, rules -------------------------------------------

    def add_channel(self, channel_key: str, type: str, appkey: str | None = None) -> None:
        """Register (or re-type) a channel; an app channel may name the JPush app whose
        devices its IDs are (``appkey``)."""
        if appkey is not None and (type != "app" or not isinstance(appkey, str) or not appkey):
            raise _record_error(f"channel {channel_key!r}: appkey is for app channels only")
        self._core.add_channel(channel_key, type)
        if appkey is not None:
            self.channel_apps[channel_key] = appkey
        else:
            self.channel_apps.pop(channel_key, None)

    def channels(self) -> dict[str, str]:
        """Registered channels: key -> type."""
        return self._core.channels()

    def add_segment(self, name: str, userids: list[str]) -> int:
        """Define a static user segment; how many of its users exist now."""
        return self._core.add_segment(name, list(userids))

    def add_list(self, list_id: int, userids: list[str] = (), ids: list[str] = ()) -> None:  # type: ignore[assignment]
        """Define a black/white list of userids and channel registration IDs."""
        _count(list_id, "list_id", 0)
        self._core.add_list(list_id, list(userids), list(ids))

    def add_template(self, template: Template | Mapping[str, object]) -> Template:
        """Define a template; its channels must be registered (1015015)."""
        t = template if isinstance(template, Template) else parse_template(dict(template))
        self._check_channels(t.channels, f"template {t.template_id}")
        self.templates[t.template_id] = t
        return t

    def add_rule(self, rule: SendRule | Mapping[str, object]) -> SendRule:
        """Define a send strategy; its channels must be registered (1015015)."""
        r = rule if isinstance(rule, SendRule) else parse_rule(dict(rule))
        self._check_channels(r.channels, f"send strategy {r.rule_id}")
        self.rules[r.rule_id] = r
        return r

    def _check_channels(self, keys: tuple[str, ...], what: str) -> None:
        known = self._core.channels()
        for key in keys:
            if key not in known:
                raise UmsError(UNKNOWN_CHANNEL, f"{what}: channel {key!r} does not exist")

    # --- sending -------------------------------------------------------------------------------

    def template(self, send: TemplateSend) -> Template:
        """The template of a send, checked against it: exists (1015031), ``app_para`` given
        for an app channel (1015019), ``rule_id`` known and over the template's channels
        (1015014), ``template_para`` fills every channel within its limit (1015016/1015017)."""
        t = self.templates.get(send.template_id)
        if t is None:
            raise UmsError(UNKNOWN_TEMPLATE, f"template {send.template_id} does not exist")
        known = self._core.channels()
        if send.app_para is None and any(known.get(k) == "app" for k in t.channels):
            raise UmsError(
                APP_PARA_REQUIRED,
                f"template {t.template_id} has an app channel: app_para is required",
            )
        if send.rule_id is not None and not send.channel_ids:
            rule = self.rules.get(send.rule_id)
            if rule is None:
                raise UmsError(UNKNOWN_RULE, f"send strategy {send.rule_id} does not exist")
            if set(rule.channels) != set(t.channels):
                raise UmsError(
                    UNKNOWN_RULE,
                    f"send strategy {send.rule_id} is over other channels than template "
                    f"{t.template_id}",
                )
        t.fill(send.template_para)
        return t

    def resolve(
        self,
        send: TemplateSend | Mapping[str, object],
        *,
        broadcast: bool = False,
        devices: Mapping[str, Registry] | None = None,
        came_online: Mapping[str, Sequence[tuple[str, float]]] | None = None,
        online: Mapping[str, Sequence[str]] | None = None,
    ) -> UmsResolution:
        """Resolve a template send (``broadcast``: the ``/v1/template/broadcast`` API) into
        the IDs of every channel of its template, and its stages; refusals raise ``UmsError``.

        ``rule_id`` makes stages (``rust/ums/stages.rs``): stage 1 on the strategy's first
        channel, each later one, after its delay, to the users no earlier stage delivered to;
        custom channel IDs ignore it. An ID delivers unless it is ``undeliverable()``.
        ``devices``: app channel key -> the JPush ``Registry`` its IDs are registration IDs of;
        such a channel sends only to live devices on ``app_para.platform``, in JPush's
        platform/vendor groups (``UmsStage.groups``), and an ID delivers when its device is
        online at the send, or, with ``app_para.time_to_live`` > 0, came online at most that
        many seconds after its stage went out.

        A later stage's audience depends on what happened after the send: ``came_online``
        gives, per app channel key, ``(registration ID, seconds after the send)`` for each time
        a device came online. A later stage at ``offset`` seconds counts an earlier app stage's
        ID as delivered when its device was online at the send or came online before
        ``offset`` and within ``time_to_live`` of its stage (``rust/ums/stages.rs``).
        ``online`` (app channel key -> registration IDs) gives the devices online at the send
        when the send is resolved later than it went out (default: the JPush registry's online
        flags now); ``UmsResolution.app_online`` answers them.

        >>> from reach import Registry
        >>> reg = UmsRegistry()
        >>> reg.add_channel("app1", "app"); reg.add_channel("sms1", "sms")
        >>> _ = reg.add_template({"template_id": 1, "channels": ["app1", "sms1"],
        ...                       "content": {"app1": "Hi", "sms1": "Hi"}})
        >>> _ = reg.add_rule({"rule_id": 2, "stages": [{"channel_key": "app1"},
        ...                                            {"channel_key": "sms1", "delay": 300}]})
        >>> _ = reg.upsert_user("u1", bindings={"app1": {"app": ["r1"]}, "all": {"sms": ["139"]}})
        >>> _ = reg.upsert_user("u2", bindings={"app1": {"app": ["r2"]}, "all": {"sms": ["138"]}})
        >>> jpush = Registry()
        >>> _ = jpush.upsert("r1", "android", online=True)
        >>> _ = jpush.upsert("r2", "ios")
        >>> res = reg.resolve({"aud_userid": ["u1", "u2"], "template_id": 1,
        ...                    "template_para": {}, "app_para": {"platform": "all"},
        ...                    "rule_id": 2}, devices={"app1": jpush})
        >>> [(s.stage, s.offset, s.channel.channel_ids(), s.delivered) for s in res.stages]
        [(1, 0, ['r1', 'r2'], 1), (2, 300, ['138'], 1)]
        """
        s = (
            send
            if isinstance(send, TemplateSend)
            else parse_template_send(dict(send), broadcast=broadcast)
        )
        t = self.template(s)
        custom = [(c.type, list(c.ids)) for c in s.channel_ids] or None
        # The seed: a send strategy has no effect on custom channel IDs.
        rule = self.rules[s.rule_id].stages if s.rule_id is not None and not custom else None
        app = s.app_para
        return self._core.resolve(
            list(t.channels),
            broadcast=s.broadcast,
            tags=list(s.tags) or None,
            userids=list(s.userids) or None,
            segment=s.segment,
            custom=custom,
            black=s.option.black_id,
            white=s.option.white_id,
            rule=list(rule) if rule is not None else None,
            apps=[(k, r._core) for k, r in (devices or {}).items()] or None,
            platforms=list(app.platform) if app is not None and app.platform else None,
            apns_production=app.apns_production if app is not None else True,
            time_to_live=app.time_to_live if app is not None else 0,
            came_online=[(k, [(r, float(t)) for r, t in v]) for k, v in came_online.items()]
            if came_online
            else None,
            online=[(k, list(v)) for k, v in online.items()] if online is not None else None,
        )

    # --- delivery and snapshots ----------------------------------------------------------------

    def set_undeliverable(self, add: list[str] = (), remove: list[str] = ()) -> None:  # type: ignore[assignment]
        """Mark channel registration IDs undeliverable (a later stage of a send strategy
        retries their users), or deliverable again; a bad ID refuses the whole call (1015018)."""
        for value in (*add, *remove):
            if not isinstance(value, str):
                raise _record_error("an undeliverable ID must be a string")
        self._core.set_undeliverable(list(add), list(remove))

    def undeliverable(self) -> list[str]:
        """The undeliverable IDs."""
        return self._core.undeliverable()

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write a snapshot of everything (users, lists, templates, send strategies, channel
        apps, undeliverable IDs) atomically, with a checksum."""
        extra = {
            "templates": [t.to_json() for t in self.templates.values()],
            "rules": [r.to_json() for r in self.rules.values()],
            "channel_apps": self.channel_apps,
        }
        self._core.save(os.fspath(path), json.dumps(extra, ensure_ascii=False).encode())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> UmsRegistry:
        """Read a snapshot; ``SnapshotError`` if it is corrupt, truncated or not a UMS one."""
        core, extra = _core.UmsRegistry.load(os.fspath(path))
        reg = cls(core)
        try:
            data = json.loads(extra)
            for t in data["templates"]:
                reg.templates[t["template_id"]] = parse_template(t)
            for r in data["rules"]:
                reg.rules[r["rule_id"]] = parse_rule(r)
            reg.channel_apps = {str(k): str(v) for k, v in data["channel_apps"].items()}
        except (ValueError, KeyError, TypeError) as e:
            raise SnapshotError(f"bad snapshot: templates and rules do not decode: {e}") from None
        return reg

    def memory_usage(self) -> dict[str, int]:
        """Bytes used per structure, and ``total``."""
        return self._core.memory_usage()
