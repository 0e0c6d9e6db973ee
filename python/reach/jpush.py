"""JPush v3 push objects: parsed and validated once, at the edge, into frozen dataclasses.

``parse_push`` takes a push object (a ``dict`` decoded from JSON) and either returns a
``PushRequest`` or raises ``PushError`` with the vendor's code (seed 001): 1002 for a missing
required field, 1003 for an illegal value, 1005 for a body that is too large, 1009 for an
unsupported key. For any JSON-decodable input it raises nothing else.

Decisions where the seed is vague (see also the comments at each rule):

- JSON ``null`` is a value like any other: an optional key given as ``null`` is a wrong type (1003),
  not an absent key; a required key given as ``null`` is 1003, not 1002.
- Array limits (20 tags, 1000 aliases, ...) count the array as sent, before duplicates are removed.
- The top-level ``notification.alert`` must be a string (it is the shortcut for every platform,
  and Android and Windows Phone take only strings); ``notification.ios.alert`` may be an object.
- Size limits (1005) are measured on the effective per-platform object: the platform object with
  its alert filled in from the shortcut, or ``{"alert": ...}`` when only the shortcut is given.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, TypeVar

from reach import _core
from reach.errors import PushError

__all__ = [
    "AUDIENCE_TYPES",
    "PLATFORMS",
    "AndroidNotification",
    "Audience",
    "IosNotification",
    "Message",
    "Notification",
    "Options",
    "PushRequest",
    "SmsMessage",
    "WinphoneNotification",
    "parse_audience",
    "parse_options",
    "parse_platform",
    "parse_push",
]

PLATFORMS: Final[tuple[str, ...]] = _core.PLATFORMS
"""The platform names a push may target (``platform`` values other than ``"all"``): the core's."""

AUDIENCE_TYPES: Final[tuple[str, ...]] = _core.AUDIENCE_TYPES
"""The keys of an audience object, in the order of ``Audience``'s fields (the core's list)."""

# JSON arrays and objects. Python callers may also pass tuples and other mappings.
_ARRAY: Final = (list, tuple)

_INT32_MIN: Final = -(2**31)
_INT32_MAX: Final = 2**31 - 1
_INT64_MAX: Final = 2**63 - 1

_NAME_MAX_BYTES: Final = _core.NAME_MAX_BYTES  # tag and alias, UTF-8 bytes
# The characters of tags and aliases and of registration IDs are checked in the core
# (`audience_values`, one pass over a whole array, ~10 ns a value); its rules: letters are
# ASCII only; "kanji" is read as the CJK ideograph blocks (URO, Ext. A, compatibility
# ideographs, Ext. B). The seed's special characters are @!#$&*+=.| (its trailing "$." repeats $).
_BADGE_RE: Final = re.compile(r"[+-]?[0-9]{1,10}")  # "+1", "-1", "5"; [0-9], not \d (Unicode)

_TTL_MAX: Final = 864000  # 10 days
_COLLAPSE_ID_MAX_BYTES: Final = 64
_BIG_PUSH_DURATION_MAX: Final = 1400  # minutes
_SMS_CONTENT_MAX: Final = 480  # characters
_SMS_DELAY_MAX: Final = 86400  # 24 hours
_CID_MAX: Final = 128

# Body size limits (error 1005), in UTF-8 bytes.
_ANDROID_MAX_BYTES: Final = 4000  # Android notification + message
_IOS_NOTIFICATION_MAX_BYTES: Final = 2000  # the text `"ios":{...}`
_IOS_MESSAGE_MAX_BYTES: Final = 4000
_WINPHONE_MAX_BYTES: Final = 1000

_Alert = TypeVar("_Alert", str, str | dict[str, object])

_NULL_VALUE_MESSAGE: Final = (
    "the tag, alias, registration_id in the Audience parameter has a null value"
)


# --- the parsed types ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Audience:
    """Who a push targets: ``all`` (a broadcast) or the union/intersection of the typed lists.

    Each tuple holds the distinct values of one audience type in first-seen order; an empty tuple
    means the type is absent. Types combine by AND (see DESIGN.md, "Semantics").
    """

    all: bool = False
    tag: tuple[str, ...] = ()
    tag_and: tuple[str, ...] = ()
    tag_not: tuple[str, ...] = ()
    alias: tuple[str, ...] = ()
    registration_id: tuple[str, ...] = ()
    segment: tuple[str, ...] = ()
    abtest: tuple[str, ...] = ()

    def to_json(self) -> str | dict[str, list[str]]:
        """The audience in JPush's wire form: ``"all"`` or an object of the present types."""
        if self.all:
            return "all"
        return {name: list(getattr(self, name)) for name in AUDIENCE_TYPES if getattr(self, name)}


@dataclass(frozen=True, slots=True)
class Options:
    """The push options; absent ones take the vendor's defaults."""

    sendno: int | None = None
    time_to_live: int = 86400
    override_msg_id: int | None = None
    # The seed: "if not specified, it means to push the production environment".
    apns_production: bool = True
    apns_collapse_id: str | None = None
    big_push_duration: int | None = None


@dataclass(frozen=True, slots=True)
class AndroidNotification:
    """``notification.android``; ``alert`` is the effective one (the shortcut filled in).

    ``inbox`` and ``extras`` are the caller's JSON objects (shallow copies); treat them as
    read-only.
    """

    alert: str
    title: str | None = None
    builder_id: int | None = None
    priority: int | None = None
    category: str | None = None
    style: int | None = None
    alert_type: int | None = None
    big_text: str | None = None
    inbox: dict[str, object] | None = None
    big_pic_path: str | None = None
    extras: dict[str, object] | None = None

    def to_json(self) -> dict[str, object]:
        """The object in JPush's wire form (the fields that are set)."""
        return _present(
            ("alert", self.alert),
            ("title", self.title),
            ("builder_id", self.builder_id),
            ("priority", self.priority),
            ("category", self.category),
            ("style", self.style),
            ("alert_type", self.alert_type),
            ("big_text", self.big_text),
            ("inbox", self.inbox),
            ("big_pic_path", self.big_pic_path),
            ("extras", self.extras),
        )


@dataclass(frozen=True, slots=True)
class IosNotification:
    """``notification.ios``; ``alert`` is the effective one (a string or an APNs alert object).

    ``badge`` is kept as sent: an ``int`` or a string such as ``"+1"``, ``"-1"`` or ``"5"``.
    """

    alert: str | dict[str, object]
    sound: str | None = None
    badge: int | str | None = None
    content_available: bool | None = None
    mutable_content: bool | None = None
    category: str | None = None
    extras: dict[str, object] | None = None

    def to_json(self) -> dict[str, object]:
        """The object in JPush's wire form (the fields that are set, with their hyphenated keys)."""
        return _present(
            ("alert", self.alert),
            ("sound", self.sound),
            ("badge", self.badge),
            ("content-available", self.content_available),
            ("mutable-content", self.mutable_content),
            ("category", self.category),
            ("extras", self.extras),
        )


@dataclass(frozen=True, slots=True)
class WinphoneNotification:
    """``notification.winphone`` (a toast); ``alert`` is the effective one."""

    alert: str
    title: str | None = None
    open_page: str | None = None
    extras: dict[str, object] | None = None

    def to_json(self) -> dict[str, object]:
        """The object in JPush's wire form (the fields that are set)."""
        return _present(
            ("alert", self.alert),
            ("title", self.title),
            ("_open_page", self.open_page),
            ("extras", self.extras),
        )


@dataclass(frozen=True, slots=True)
class Notification:
    """``notification``: the ``alert`` shortcut and the platform objects that were given."""

    alert: str | None = None
    android: AndroidNotification | None = None
    ios: IosNotification | None = None
    winphone: WinphoneNotification | None = None

    def for_platform(self, platform: str) -> dict[str, object] | None:
        """The effective notification object a platform receives, or None if it gets none.

        The platform's own object if given, else ``{"alert": <shortcut>}`` if the shortcut is
        given (this is also the object whose size is checked against the 1005 limits).
        """
        own: AndroidNotification | IosNotification | WinphoneNotification | None = None
        if platform == "android":
            own = self.android
        elif platform == "ios":
            own = self.ios
        elif platform == "winphone":
            own = self.winphone
        if own is not None:
            return own.to_json()
        if self.alert is not None:
            return {"alert": self.alert}
        return None


@dataclass(frozen=True, slots=True)
class Message:
    """``message``: a custom (in-app, pass-through) message."""

    msg_content: str
    title: str | None = None
    content_type: str | None = None
    extras: dict[str, object] | None = None

    def to_json(self) -> dict[str, object]:
        """The object in JPush's wire form (the fields that are set)."""
        return _present(
            ("msg_content", self.msg_content),
            ("title", self.title),
            ("content_type", self.content_type),
            ("extras", self.extras),
        )


@dataclass(frozen=True, slots=True)
class SmsMessage:
    """``sms_message``: the SMS supplement, sent ``delay_time`` seconds after the push: either
    the seed's ``content``, or the SMS template form the official SDK sends (``temp_id`` with
    ``temp_para``, ``signid``, ``active_filter``)."""

    content: str | None
    delay_time: int
    temp_id: int | None = None
    temp_para: dict[str, object] | None = None
    signid: int | None = None
    active_filter: bool = True


@dataclass(frozen=True, slots=True)
class PushRequest:
    """A validated JPush v3 push object. ``platform`` None means every platform."""

    platform: tuple[str, ...] | None
    audience: Audience
    notification: Notification | None = None
    message: Message | None = None
    sms_message: SmsMessage | None = None
    options: Options = field(default_factory=Options)
    cid: str | None = None

    @property
    def sendno(self) -> str:
        """The ``sendno`` the push response echoes: the option as a string, ``"0"`` if none."""
        return str(self.options.sendno or 0)

    def targets(self, platform: str) -> bool:
        """Whether the push targets ``platform`` (always true for ``"platform": "all"``)."""
        return self.platform is None or platform in self.platform


# --- parsing ------------------------------------------------------------------------------------


def parse_push(obj: object) -> PushRequest:
    """Parse and validate a whole JPush v3 push object.

    Raises ``PushError`` (1002 missing, 1003 illegal, 1005 too large, 1009 unsupported key).

    >>> req = parse_push({
    ...     "platform": ["android", "ios"],
    ...     "audience": {"tag": ["深圳", "北京"], "tag_not": ["vip"]},
    ...     "notification": {"alert": "Hi, JPush!", "ios": {"badge": "+1"}},
    ...     "options": {"sendno": 18, "apns_production": False},
    ... })
    >>> req.platform, req.audience.tag, req.audience.tag_not
    (('android', 'ios'), ('深圳', '北京'), ('vip',))
    >>> req.notification.ios.alert, req.notification.ios.badge, req.sendno
    ('Hi, JPush!', '+1', '18')
    >>> parse_push({"platform": "all", "audience": "all"})
    Traceback (most recent call last):
    ...
    reach.errors.PushError: [1002] one of notification or message is required
    """
    top = _as_object(obj, "the push object")
    _check_keys(
        top,
        ("platform", "audience", "notification", "message", "sms_message", "options", "cid"),
        "the push object",
    )
    platform = parse_platform(_required(top, "platform", "platform"))
    audience = parse_audience(_required(top, "audience", "audience"))
    notification = _parse_notification(top["notification"]) if "notification" in top else None
    message = _parse_message(top["message"]) if "message" in top else None
    if notification is None and message is None:
        # sms_message only supplements a push; it is no content of its own.
        raise PushError(1002, "one of notification or message is required")
    if platform == ("winphone",) and notification is None:
        raise PushError(1003, "message: Windows Phone does not support custom messages")
    sms = _parse_sms_message(top["sms_message"]) if "sms_message" in top else None
    options = parse_options(top["options"]) if "options" in top else Options()
    cid = _get_str(top, "cid", "")
    if cid is not None and not 0 < len(cid) <= _CID_MAX:
        # The format is {appkey}-{uuid}; the emulator checks the appkey part against the app.
        raise PushError(1003, f"cid must be a non-empty string of at most {_CID_MAX} characters")
    request = PushRequest(platform, audience, notification, message, sms, options, cid)
    _check_sizes(request)
    return request


def parse_platform(obj: object) -> tuple[str, ...] | None:
    """Parse ``platform``: ``"all"`` gives None, else a non-empty array of distinct platforms.

    >>> parse_platform("all") is None, parse_platform(["ios", "android"])
    (True, ('ios', 'android'))
    """
    if obj == "all":
        return None
    if not isinstance(obj, _ARRAY) or not obj:
        raise PushError(
            1003, f'platform must be "all" or a non-empty array of platforms, got {_show(obj)}'
        )
    for value in obj:
        if not isinstance(value, str) or value not in PLATFORMS:
            raise PushError(
                1003, f"platform: unknown platform {_show(value)} (one of {', '.join(PLATFORMS)})"
            )
    if len(set(obj)) != len(obj):
        raise PushError(1003, "platform: a platform is listed twice")
    return tuple(obj)


def parse_audience(obj: object) -> Audience:
    """Parse ``audience``: ``"all"`` or an object of typed arrays (empty array = type absent).

    >>> parse_audience({"tag": ["a", "b", "a"], "alias": []})
    Audience(all=False, tag=('a', 'b'), tag_and=(), tag_not=(), alias=(), registration_id=(), \
segment=(), abtest=())
    """
    if obj == "all":
        return Audience(all=True)
    if not isinstance(obj, Mapping):
        raise PushError(
            1003, f'audience must be "all" or an object of audience types, got {_show(obj)}'
        )
    _check_keys(obj, AUDIENCE_TYPES, "audience")

    def values(name: str) -> tuple[str, ...]:
        return _audience_values(obj[name], name) if name in obj else ()

    audience = Audience(
        all=False,
        tag=values("tag"),
        tag_and=values("tag_and"),
        tag_not=values("tag_not"),
        alias=values("alias"),
        registration_id=values("registration_id"),
        segment=values("segment"),
        abtest=values("abtest"),
    )
    if audience == Audience():
        raise PushError(1003, "audience: at least one audience type must have a value")
    return audience


def parse_options(obj: object) -> Options:
    """Parse ``options``; absent options take their defaults.

    >>> parse_options({"sendno": 0, "time_to_live": 60})
    Options(sendno=None, time_to_live=60, override_msg_id=None, apns_production=True, \
apns_collapse_id=None, big_push_duration=None)
    """
    where = "options"
    opts = _as_object(obj, where)
    _check_keys(
        opts,
        (
            "sendno",
            "time_to_live",
            "override_msg_id",
            "apns_production",
            "apns_collapse_id",
            "big_push_duration",
        ),
        where,
    )
    # The seed: "a value of 0 indicates that the messageid has no sendno".
    sendno = _get_int(opts, "sendno", where, _INT32_MIN, _INT32_MAX) or None
    ttl = _get_int(opts, "time_to_live", where, 0, _TTL_MAX)
    production = _get_bool(opts, "apns_production", where)
    collapse_id = _get_str(opts, "apns_collapse_id", where)
    if collapse_id is not None and _utf8_len(collapse_id) > _COLLAPSE_ID_MAX_BYTES:
        raise PushError(
            1003,
            f"options.apns_collapse_id is {_utf8_len(collapse_id)} bytes; "
            f"at most {_COLLAPSE_ID_MAX_BYTES} UTF-8 bytes are allowed",
        )
    return Options(
        sendno=sendno,
        time_to_live=86400 if ttl is None else ttl,
        override_msg_id=_get_int(opts, "override_msg_id", where, 1, _INT64_MAX),
        apns_production=True if production is None else production,
        apns_collapse_id=collapse_id,
        big_push_duration=_get_int(opts, "big_push_duration", where, 1, _BIG_PUSH_DURATION_MAX),
    )


def _parse_notification(obj: object) -> Notification:
    """``notification``: the alert shortcut and the platform objects, alerts resolved."""
    where = "notification"
    note = _as_object(obj, where)
    _check_keys(note, ("alert", "android", "ios", "winphone"), where)
    alert = _get_str(note, "alert", where)
    android = _parse_android(note["android"], alert) if "android" in note else None
    ios = _parse_ios(note["ios"], alert) if "ios" in note else None
    winphone = _parse_winphone(note["winphone"], alert) if "winphone" in note else None
    if alert is None and android is None and ios is None and winphone is None:
        raise PushError(1002, "notification needs an alert or a platform object")
    return Notification(alert, android, ios, winphone)


def _parse_android(obj: object, shortcut: str | None) -> AndroidNotification:
    """``notification.android``, its alert defaulting to the shortcut."""
    where = "notification.android"
    android = _as_object(obj, where)
    _check_keys(
        android,
        (
            "alert",
            "title",
            "builder_id",
            "priority",
            "category",
            "style",
            "alert_type",
            "big_text",
            "inbox",
            "big_pic_path",
            "extras",
        ),
        where,
    )
    return AndroidNotification(
        alert=_effective_alert(_get_str(android, "alert", where), shortcut, where),
        title=_get_str(android, "title", where),
        builder_id=_get_int(android, "builder_id", where, _INT32_MIN, _INT32_MAX),
        priority=_get_int(android, "priority", where, -2, 2),
        category=_get_str(android, "category", where),
        style=_get_int(android, "style", where, 0, 3),
        alert_type=_get_int(android, "alert_type", where, -1, 7),
        big_text=_get_str(android, "big_text", where),
        inbox=_get_object(android, "inbox", where),
        big_pic_path=_get_str(android, "big_pic_path", where),
        extras=_get_object(android, "extras", where),
    )


def _parse_ios(obj: object, shortcut: str | None) -> IosNotification:
    """``notification.ios``, its alert defaulting to the shortcut."""
    where = "notification.ios"
    ios = _as_object(obj, where)
    _check_keys(
        ios,
        ("alert", "sound", "badge", "content-available", "mutable-content", "category", "extras"),
        where,
    )
    own_alert: str | dict[str, object] | None = None
    if "alert" in ios:
        # iOS alone also takes the APNs alert dictionary (title, body, ...).
        value = ios["alert"]
        if isinstance(value, Mapping):
            own_alert = dict(value)
        else:
            own_alert = _get_str(ios, "alert", where)
    return IosNotification(
        alert=_effective_alert(own_alert, shortcut, where),
        sound=_get_str(ios, "sound", where),
        badge=_parse_badge(ios),
        content_available=_get_bool(ios, "content-available", where),
        mutable_content=_get_bool(ios, "mutable-content", where),
        category=_get_str(ios, "category", where),
        extras=_get_object(ios, "extras", where),
    )


def _parse_badge(ios: Mapping[str, object]) -> int | str | None:
    """``notification.ios.badge``: an integer >= 0 or a string ``N``, ``+N`` or ``-N``."""
    # An int or "N" sets the badge (0 clears it); "+N"/"-N" changes it.
    if "badge" not in ios:
        return None
    value = ios["badge"]
    if isinstance(value, str):
        if _BADGE_RE.fullmatch(value) is None or abs(int(value)) > _INT32_MAX:
            raise PushError(
                1003,
                f'notification.ios.badge must be a number or "+N"/"-N", got {_show(value)}',
            )
        return value
    return _get_int(ios, "badge", "notification.ios", 0, _INT32_MAX)


def _parse_winphone(obj: object, shortcut: str | None) -> WinphoneNotification:
    """``notification.winphone``, its alert defaulting to the shortcut."""
    where = "notification.winphone"
    winphone = _as_object(obj, where)
    _check_keys(winphone, ("alert", "title", "_open_page", "extras"), where)
    return WinphoneNotification(
        alert=_effective_alert(_get_str(winphone, "alert", where), shortcut, where),
        title=_get_str(winphone, "title", where),
        open_page=_get_str(winphone, "_open_page", where),
        extras=_get_object(winphone, "extras", where),
    )


def _effective_alert(own: _Alert | None, shortcut: str | None, where: str) -> _Alert | str:
    """The alert a platform object shows: its own, else the shortcut (1002 if neither)."""
    # The platform's alert overrides the shortcut; an empty string is a (silent) alert.
    if own is not None:
        return own
    if shortcut is not None:
        return shortcut
    raise PushError(1002, f"{where}.alert is required (here or as notification.alert)")


def _parse_message(obj: object) -> Message:
    """``message``: ``msg_content`` required."""
    where = "message"
    msg = _as_object(obj, where)
    _check_keys(msg, ("msg_content", "title", "content_type", "extras"), where)
    content = _get_str(msg, "msg_content", where, required=True)
    assert content is not None  # required=True
    return Message(
        msg_content=content,
        title=_get_str(msg, "title", where),
        content_type=_get_str(msg, "content_type", where),
        extras=_get_object(msg, "extras", where),
    )


def _parse_sms_message(obj: object) -> SmsMessage:
    """``sms_message``: ``delay_time`` and either ``content`` (1 to 480 characters, the seed) or
    ``temp_id`` (an SMS template, as the official SDK's ``smsmessage()`` sends)."""
    where = "sms_message"
    sms = _as_object(obj, where)
    _check_keys(
        sms, ("content", "delay_time", "temp_id", "temp_para", "signid", "active_filter"), where
    )
    delay = _get_int(sms, "delay_time", where, 0, _SMS_DELAY_MAX, required=True)
    assert delay is not None  # required=True
    if "temp_id" in sms:
        if "content" in sms:
            raise PushError(1003, "sms_message takes content or temp_id, not both")
        temp_id = _get_int(sms, "temp_id", where, 1, _INT64_MAX)
        signid = _get_int(sms, "signid", where, 1, _INT64_MAX)
        active = _get_bool(sms, "active_filter", where)
        para = _get_object(sms, "temp_para", where)
        return SmsMessage(None, delay, temp_id, para, signid, True if active is None else active)
    extra = [k for k in ("temp_para", "signid", "active_filter") if k in sms]
    if extra:
        raise PushError(1003, f"sms_message.{extra[0]} goes with temp_id, not content")
    content = _get_str(sms, "content", where, required=True)
    assert content is not None  # required=True
    # Characters, not bytes: the seed counts a Chinese character as one.
    if not 0 < len(content) <= _SMS_CONTENT_MAX:
        raise PushError(
            1003,
            f"sms_message.content has {len(content)} characters; "
            f"1 to {_SMS_CONTENT_MAX} are allowed",
        )
    return SmsMessage(content, delay)


# --- audience rules -----------------------------------------------------------------------------


def _audience_values(value: object, name: str) -> tuple[str, ...]:
    """One audience type's array: type, count limit, per-value rule; duplicates dropped."""
    where = f"audience.{name}"
    if not isinstance(value, _ARRAY):
        raise PushError(1003, f"{where} must be an array of strings, got {_show(value)}")
    limit, rule = _AUDIENCE_RULES[name]
    if len(value) > limit:
        raise PushError(1003, f"{where} has {len(value)} values; at most {limit} are allowed")
    if rule in ("name", "registration_id"):
        try:
            return _core.audience_values(value, rule)
        except ValueError as refused:
            i, why = refused.args
            raise PushError(1003, _refusal(f"{where}[{i}]", value[i], why)) from None
    for i, item in enumerate(value):
        why = _id_refusal(item, rule)
        if why is not None:
            raise PushError(1003, _refusal(f"{where}[{i}]", item, why))
    return tuple(dict.fromkeys(value))


def _check_name(value: str, where: str) -> None:
    """One tag or alias outside an audience (the emulator's device API): the core's ``name``
    rule, with the push API's messages."""
    _check_value(value, where, "name")


def _check_registration_id(value: str, where: str) -> None:
    """One registration ID outside an audience: the core's ``registration_id`` rule (1 to 64
    ASCII letters and digits)."""
    _check_value(value, where, "registration_id")


def _check_value(value: str, where: str, rule: str) -> None:
    try:
        _core.audience_values((value,), rule)
    except ValueError as refused:
        _, why = refused.args
        raise PushError(1003, _refusal(where, value, why)) from None


def _id_refusal(value: object, rule: str | None) -> str | None:
    """Why a segment or A/B test ID is refused, or None. An A/B test ID is ``test`` or
    ``test:group``, both parts non-empty."""
    if not isinstance(value, str):
        return "type"
    if not value:
        return "empty"
    parts = value.split(":")
    if rule == "abtest" and (len(parts) > 2 or not all(parts)):
        return "abtest"
    return None


def _refusal(where: str, value: object, why: str) -> str:
    """The vendor message for an audience value refused for reason ``why`` (the core's names:
    ``type``, ``empty``, ``chars``, ``bytes``, ``registration_id``; and ``abtest``)."""
    if why == "type":
        return f"{where} must be a string, got {_show(value)}"
    if why == "empty":
        return f"{where}: {_NULL_VALUE_MESSAGE}"
    assert isinstance(value, str)
    if why == "chars":
        return (
            f"{where}: {_show(value)} may only contain letters a-z A-Z, digits, _, "
            "CJK ideographs and @!#$&*+=.|"
        )
    if why == "bytes":
        size = _utf8_len(value)
        return f"{where}: {_show(value)} is {size} bytes; at most {_NAME_MAX_BYTES} UTF-8 bytes"
    if why == "registration_id":
        rule = "1 to 64 ASCII letters and digits"
        return f"{where}: {_show(value)} is not a registration ID ({rule})"
    return f'{where}: {_show(value)} must be "test" or "test:group"'


# Per audience type: the most values an array may hold (seed 001, "Push Target") and the rule each
# value must pass beyond being a non-empty string (a segment ID may be any non-empty string):
# the core's "name" (tags, aliases) or "registration_id" rule, or "abtest".
_AUDIENCE_RULES: Final[dict[str, tuple[int, str | None]]] = {
    "tag": (20, "name"),
    "tag_and": (20, "name"),
    "tag_not": (20, "name"),
    "alias": (1000, "name"),
    "registration_id": (1000, "registration_id"),
    "segment": (1, None),
    "abtest": (1, "abtest"),
}


# --- size rules (1005) --------------------------------------------------------------------------


def _check_sizes(req: PushRequest) -> None:
    """The seed's body limits, for the platforms the push targets only."""
    note = req.notification
    message = req.message.to_json() if req.message is not None else None
    if req.targets("android"):
        android = note.for_platform("android") if note is not None else None
        size = sum(_json_size(part) for part in (android, message) if part is not None)
        _check_size("android notification + message", size, _ANDROID_MAX_BYTES)
    if req.targets("ios"):
        ios = note.for_platform("ios") if note is not None else None
        if ios is not None:
            # The seed counts the text `"ios":{...}`, key included.
            size = len('"ios":') + _json_size(ios)
            _check_size('"ios":{...} notification', size, _IOS_NOTIFICATION_MAX_BYTES)
        if message is not None:
            _check_size("ios message", _json_size(message), _IOS_MESSAGE_MAX_BYTES)
    if req.targets("winphone") and note is not None:
        winphone = note.for_platform("winphone")
        if winphone is not None:
            _check_size("winphone notification", _json_size(winphone), _WINPHONE_MAX_BYTES)


def _check_size(what: str, size: int, limit: int) -> None:
    """1005 when a body part is over its limit."""
    if size > limit:
        raise PushError(1005, f"{what} is {size} bytes; at most {limit} bytes are allowed")


def _json_size(value: object) -> int:
    """UTF-8 byte length of the compact JSON text of ``value``."""
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    except RecursionError:
        # json.loads accepts slightly deeper nesting than json.dumps has stack left for here.
        raise PushError(1003, "a JSON object in the push is nested too deeply") from None
    return _utf8_len(text)


def _utf8_len(text: str) -> int:
    # surrogatepass: JSON may carry a lone surrogate ("\ud800"); count it as the 3 bytes it takes.
    return len(text.encode("utf-8", "surrogatepass"))


# --- field access helpers -----------------------------------------------------------------------


def _as_object(value: object, where: str) -> Mapping[str, object]:
    """``value`` as a JSON object (1003 if it is not one)."""
    if not isinstance(value, Mapping):
        raise PushError(1003, f"{where} must be a JSON object, got {_show(value)}")
    return value


def _check_keys(obj: Mapping[str, object], allowed: tuple[str, ...], where: str) -> None:
    """1009 for any key of ``obj`` not in ``allowed``."""
    unknown = [key for key in obj if key not in allowed]
    if unknown:
        names = ", ".join(_show(key) for key in unknown)
        raise PushError(1009, f"{where}: unsupported key {names}")


def _required(obj: Mapping[str, object], key: str, where: str) -> object:
    """``obj[key]`` (1002 if absent)."""
    if key not in obj:
        raise PushError(1002, f"{where} is required")
    return obj[key]


def _path(where: str, key: str) -> str:
    """The dotted name of a field, for error messages."""
    return f"{where}.{key}" if where else key


def _get_str(
    obj: Mapping[str, object], key: str, where: str, *, required: bool = False
) -> str | None:
    """``obj[key]`` as a string; None if absent (1002 instead when ``required``)."""
    if key not in obj:
        if required:
            raise PushError(1002, f"{_path(where, key)} is required")
        return None
    value = obj[key]
    if not isinstance(value, str):
        raise PushError(1003, f"{_path(where, key)} must be a string, got {_show(value)}")
    return value


def _get_int(
    obj: Mapping[str, object], key: str, where: str, low: int, high: int, *, required: bool = False
) -> int | None:
    """``obj[key]`` as an integer in ``low..high``; None if absent (1002 when ``required``)."""
    if key not in obj:
        if required:
            raise PushError(1002, f"{_path(where, key)} is required")
        return None
    value = obj[key]
    # bool is an int subclass in Python but not a JSON number.
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise PushError(
            1003, f"{_path(where, key)} must be an integer in {low}..{high}, got {_show(value)}"
        )
    return value


def _get_bool(obj: Mapping[str, object], key: str, where: str) -> bool | None:
    """``obj[key]`` as a boolean; None if absent."""
    if key not in obj:
        return None
    value = obj[key]
    if not isinstance(value, bool):
        raise PushError(1003, f"{_path(where, key)} must be true or false, got {_show(value)}")
    return value


def _get_object(obj: Mapping[str, object], key: str, where: str) -> dict[str, object] | None:
    """``obj[key]`` as a JSON object (copied); None if absent."""
    if key not in obj:
        return None
    # A shallow copy: the parsed request does not change when the caller's dict does.
    return dict(_as_object(obj[key], _path(where, key)))


def _present(*pairs: tuple[str, object]) -> dict[str, object]:
    """A wire object of the pairs whose value is set."""
    return {key: value for key, value in pairs if value is not None}


def _show(value: object) -> str:
    """A short, safe rendering of a JSON value for an error message."""
    if isinstance(value, str):
        return repr(value if len(value) <= 48 else value[:45] + "...")
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        # str() of a huge int is slow (and refused past 4300 digits).
        return str(value) if value.bit_length() <= 128 else "a very large integer"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, _ARRAY):
        return "an array"
    if isinstance(value, Mapping):
        return "an object"
    return f"a {type(value).__name__}"
