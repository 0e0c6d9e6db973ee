"""The emulator's API: JPush v3 requests in, JPush-shaped answers out, with no HTTP server in it.

``Emulator.handle(method, target, headers, body)`` is the whole API; ``server.py`` only moves bytes.
Every answer is JSON. Every refusal is the seed's shape, ``{"error": {"code", "message"}}``, with
the HTTP status of the seed's table, and changes nothing. Each app has its own registry; a key
reaches its own app's devices only (a group key: the devices of its apps, through grouppush).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hmac
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np

from ..errors import PushError
from ..imports import import_directory
from ..jpush import PushRequest, parse_push
from ..registry import Registry, Resolution
from ..ums import (
    AUTH_FAILED,
    BAD_RECORD,
    BAD_REQUEST,
    MISSING,
    RATE_LIMITED,
    TOO_LARGE,
    WRONG_TYPE,
    UmsError,
    UmsRegistry,
    UmsResolution,
    parse_template_send,
)
from . import messages
from .mutations import (
    DeleteAlias,
    DeleteDevice,
    DeleteTag,
    DeleteUser,
    Mutation,
    Register,
    SetOnline,
    SetUndeliverable,
    UpdateDevice,
    UpdateTag,
    UpsertUser,
    UserMutation,
    parse_platforms,
)
from .store import Store, StoredMessage

log = logging.getLogger("reach.emulator")

DAY: Final = 86400.0
MAX_BODY: Final = 1 << 20
"""Largest request body of the vendor API (a push with 1000 aliases is about 45 KB)."""
MAX_REGISTER_BODY: Final = 64 << 20
"""Largest body of the emulator's bulk device registration."""
_UUID = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


@dataclass(frozen=True, slots=True)
class AppConfig:
    """An app: its key and master secret."""

    appkey: str
    secret: str

    @classmethod
    def parse(cls, text: str) -> AppConfig:
        """``APPKEY:MASTERSECRET``."""
        key, sep, secret = text.partition(":")
        if not sep or not key or not secret or key.startswith("group-"):
            raise ValueError(f"an app is APPKEY:MASTERSECRET, got {text!r}")
        return cls(key, secret)


@dataclass(frozen=True, slots=True)
class GroupConfig:
    """An app group: its key (without the ``group-`` prefix), secret and member apps."""

    key: str
    secret: str
    apps: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> GroupConfig:
        """``GROUPKEY:SECRET=APPKEY,APPKEY``."""
        creds, sep, apps = text.partition("=")
        key, sep2, secret = creds.partition(":")
        members = tuple(a for a in apps.split(",") if a)
        if not (sep and sep2 and key and secret and members):
            raise ValueError(f"a group is GROUPKEY:SECRET=APPKEY,APPKEY, got {text!r}")
        return cls(key.removeprefix("group-"), secret, members)


@dataclass(frozen=True, slots=True)
class Reply:
    """An answer: HTTP status, headers and a JSON body."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, value: object, status: int = 200) -> Reply:
        body = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
        return cls(status, body, {})

    @classmethod
    def error(cls, e: PushError | UmsError) -> Reply:
        return cls.json(e.to_json(), e.http_status)

    @property
    def payload(self) -> Any:
        """The body, parsed (tests read answers with it)."""
        return json.loads(self.body) if self.body else None


class _App:
    """One app at run time: its registry and the lock that orders its mutations."""

    def __init__(self, appkey: str, secret: str, registry: Registry) -> None:
        self.appkey = appkey
        self.secret = secret.encode()
        self.registry = registry
        self.lock = threading.Lock()
        self.unsaved = 0  # journal entries since the last checkpoint


class _Ums:
    """One UMS account at run time: its users and the lock that orders their changes."""

    def __init__(self, key: str, secret: str, registry: UmsRegistry) -> None:
        self.key = key
        self.secret = secret.encode()
        self.registry = registry
        self.owner = _ums_owner(key)
        self.lock = threading.Lock()
        self.unsaved = 0  # journal entries since the last checkpoint


def _ums_owner(key: str) -> str:
    """A UMS account's owner name in the store (keys of apps and accounts may not clash)."""
    return f"ums:{key}"


class _RateLimit:
    """A fixed one-minute window of requests per key (JPush counts calls per app and minute)."""

    def __init__(self, limit: int, clock: Callable[[], float]) -> None:
        self.limit = limit
        self.clock = clock
        self._windows: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> tuple[bool, dict[str, str]]:
        """Count one call of ``key``: whether it is allowed, and the X-Rate-Limit headers."""
        now = self.clock()
        window = int(now // 60)
        with self._lock:
            start, used = self._windows.get(key, (window, 0))
            if start != window:
                start, used = window, 0
            allowed = used < self.limit
            if allowed:
                used += 1
            self._windows[key] = (start, used)
        headers = {
            "X-Rate-Limit-Limit": str(self.limit),
            "X-Rate-Limit-Remaining": str(self.limit - used),
            "X-Rate-Limit-Reset": str(max(1, int((window + 1) * 60 - now))),
        }
        return allowed, headers


@dataclass(frozen=True, slots=True)
class _Request:
    method: str
    path: str
    query: dict[str, list[str]]
    body: bytes
    caller: str  # the authenticated appkey, or "group-<key>"


_Handler = Callable[["Emulator", _Request, re.Match[str]], Reply]


class Emulator:
    """JPush v3 over a durable store. Thread-safe: handlers may run concurrently.

    ``apps`` are the apps served (created in the store if new; their devices persist there);
    ``groups`` the app groups of ``/v3/grouppush``; ``rate_limit`` calls per app and minute
    (0: unlimited); ``batch_size`` the cap of a delivery batch; ``checkpoint_every`` how many
    journaled mutations of an app trigger a new snapshot.
    """

    def __init__(
        self,
        store: Store,
        apps: list[AppConfig],
        groups: list[GroupConfig] | None = None,
        *,
        rate_limit: int = 0,
        batch_size: int = 1000,
        checkpoint_every: int = 100_000,
        clock: Callable[[], float] = time.time,
        ums: list[AppConfig] | None = None,
        ums_import: str | Path | None = None,
    ) -> None:
        if not apps:
            raise ValueError("an emulator serves at least one app")
        self.store = store
        self.clock = clock
        self.batch_size = batch_size
        self.checkpoint_every = checkpoint_every
        self.apps: dict[str, _App] = {}
        for a in apps:
            store.add_app(a.appkey, a.secret)
            reg, replayed = store.open_registry(a.appkey)
            self.apps[a.appkey] = _App(a.appkey, a.secret, reg)
            self.apps[a.appkey].unsaved = replayed
        self.groups = {f"group-{g.key}": g for g in groups or []}
        for g in self.groups.values():
            unknown = [k for k in g.apps if k not in self.apps]
            if unknown:
                raise ValueError(f"group {g.key} names unknown apps: {', '.join(unknown)}")
        self._rate = _RateLimit(rate_limit, clock) if rate_limit > 0 else None
        self._cid_locks = {k: threading.Lock() for k in (*self.apps, *self.groups)}
        self.ums: dict[str, _Ums] = {}
        for i, a in enumerate(ums or []):
            if a.appkey in self.apps:
                raise ValueError(f"{a.appkey} is both a JPush app and a UMS account")
            self.ums[a.appkey] = self._open_ums(a, ums_import if i == 0 else None)

    def _open_ums(self, account: AppConfig, import_dir: str | Path | None) -> _Ums:
        """A UMS account's registry: its last snapshot, or on a store without one its import
        files (then snapshotted at once, so later starts do not read them again); then the
        user changes journaled after it, in order."""
        owner = _ums_owner(account.appkey)
        self.store.add_app(owner, account.secret)
        reg, entries = self.store.open_ums(owner)
        fresh = reg is None
        if reg is None:
            reg = UmsRegistry()
            if import_dir is not None:
                import_directory(reg, import_dir)
        acc = _Ums(account.appkey, account.secret, reg)
        for m in entries:
            try:
                m.apply(reg)
            except UmsError as e:  # a store journaled before its first snapshot, import changed
                log.warning("UMS %s: journaled %s no longer applies: %s", acc.key, m.op, e)
        acc.unsaved = len(entries)
        self._channel_apps(acc)  # every app channel must name a served app
        if fresh:
            self.store.checkpoint(owner, reg)
            acc.unsaved = 0
        return acc

    def _channel_apps(self, acc: _Ums) -> dict[str, _App]:
        """The JPush app of each app channel of a UMS account: the one its ``appkey`` names
        (``channels.jsonl``), else the app whose key is the channel key, else the first app."""
        first = next(iter(self.apps))
        out: dict[str, _App] = {}
        for key, kind in acc.registry.channels().items():
            if kind != "app":
                continue
            appkey = acc.registry.channel_apps.get(key) or (key if key in self.apps else first)
            if appkey not in self.apps:
                raise ValueError(f"UMS app channel {key!r} names app {appkey!r}, not served")
            out[key] = self.apps[appkey]
        return out

    # --- entry point ---------------------------------------------------------------------------

    def handle(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes = b""
    ) -> Reply:
        """Answer one request. ``headers`` keys are matched case-insensitively."""
        ums = urlsplit(target).path.startswith(_UMS_PATHS)
        try:
            reply = self._handle(method.upper(), target, headers, body)
        except (PushError, UmsError) as e:
            reply = Reply.error(e)
        except Exception:  # a bug: answer as the seed's 1000, never a bare 500 page
            log.exception("internal error on %s %s", method, target)
            reply = Reply.error(PushError(1000, "internal system error"))
        return _as_ums(reply) if ums else reply

    def _handle(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> Reply:
        parts = urlsplit(target)
        path = unquote(parts.path)
        for pattern, methods, auth in _ROUTES:
            m = pattern.fullmatch(path)
            if m is None:
                continue
            handler = methods.get(method)
            if handler is None:
                raise PushError(1001, f"{method} is not supported on {path}")
            limit = MAX_REGISTER_BODY if path == "/_emulator/devices" else MAX_BODY
            if len(body) > limit:
                raise PushError(1005, f"the request body is {len(body)} bytes; at most {limit}")
            caller = self._authenticate(headers) if auth else ""
            if caller and (caller in self.ums) != path.startswith(_UMS_PATHS):
                if path.startswith(_UMS_PATHS):
                    raise UmsError(AUTH_FAILED, f"{path} takes a UMS ChannelKey:MasterSecret")
                raise PushError(1008, f"{caller} is a UMS account: it calls the /v1/ APIs")
            rate_headers: dict[str, str] = {}
            if self._rate is not None and caller:
                allowed, rate_headers = self._rate.take(caller)
                if not allowed:
                    reply = Reply.error(PushError(2002, "API call frequency exceeds the limit"))
                    return Reply(reply.status, reply.body, rate_headers)
            query = parse_qs(parts.query, keep_blank_values=True)
            try:
                reply = handler(self, _Request(method, path, query, body, caller), m)
            except (PushError, UmsError) as e:
                reply = Reply.error(e)
            return Reply(reply.status, reply.body, reply.headers | rate_headers)
        raise PushError(1003, f"no API at {path}")

    def _authenticate(self, headers: Mapping[str, str]) -> str:
        """The caller named by HTTP Basic auth, checked against its secret in constant time."""
        value = next((v for k, v in headers.items() if k.lower() == "authorization"), None)
        if value is None:
            raise PushError(1004, "missing HTTP Basic authentication (appKey:masterSecret)")
        scheme, _, encoded = value.partition(" ")
        try:
            if scheme.lower() != "basic":
                raise ValueError(scheme)
            user, sep, secret = (
                base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
            )
            if not sep:
                raise ValueError("no colon")
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise PushError(1004, "malformed HTTP Basic authentication") from None
        if user.startswith("group-"):
            group = self.groups.get(user)
            expected = group.secret.encode() if group else None
        elif user in self.ums:
            expected = self.ums[user].secret
        else:
            app = self.apps.get(user)
            expected = app.secret if app else None
        if expected is None:
            raise PushError(1008, f"unknown app_key {user!r}")
        if not hmac.compare_digest(secret.encode(), expected):
            raise PushError(1004, "authentication failed: wrong master secret")
        return user

    def _app(self, req: _Request) -> _App:
        if req.caller.startswith("group-"):
            raise PushError(1008, "a group key can only push through /v3/grouppush")
        return self.apps[req.caller]

    # --- push ----------------------------------------------------------------------------------

    def _push(self, req: _Request, _: re.Match[str]) -> Reply:
        app = self._app(req)
        push = parse_push(_json_body(req.body))

        def send() -> dict[str, Any]:
            self._check_override(push, app.appkey)
            res = self._resolve(app, push)
            msg_id = self.store.next_msg_id()
            response = {"sendno": push.sendno, "msg_id": str(msg_id)}
            self._record(app, push, res, msg_id, "push", response)
            return response

        return Reply.json(self._once(app.appkey, push, send))

    def _once(self, owner: str, push: PushRequest, send: Callable[[], dict[str, Any]]) -> Any:
        """``send()``, unless ``push.cid`` was sent by ``owner`` within a day: then the first
        answer, and nothing is sent. Checked and recorded under the owner's lock, so two
        concurrent pushes with one cid send once."""
        self._check_cid(push, owner)
        if push.cid is None:
            return send()
        with self._cid_locks[owner]:
            first = self.store.message_by_cid(owner, push.cid, self.clock() - DAY)
            return first.response if first is not None else send()

    def _validate(self, req: _Request, _: re.Match[str]) -> Reply:
        app = self._app(req)
        push = parse_push(_json_body(req.body))
        self._check_cid(push, app.appkey)
        self._check_override(push, app.appkey)
        self._resolve(app, push)
        return Reply.json({"sendno": push.sendno, "msg_id": "0"})

    def _grouppush(self, req: _Request, _: re.Match[str]) -> Reply:
        group = self.groups.get(req.caller)
        if group is None:
            raise PushError(1004, "grouppush needs a group key: group-<key>:<secret>")
        push = parse_push(_json_body(req.body))
        if push.options.override_msg_id is not None:
            raise PushError(1003, "options.override_msg_id is not supported by group push")
        return Reply.json(self._once(req.caller, push, lambda: self._send_group(group, push)))

    def _send_group(self, group: GroupConfig, push: PushRequest) -> dict[str, Any]:
        resolved: list[tuple[_App, Resolution]] = []
        answer: dict[str, Any] = {}
        for key in group.apps:
            app = self.apps[key]
            try:
                resolved.append((app, self._resolve(app, push)))
            except PushError as e:
                answer[key] = e.to_json()
        if not resolved:
            raise PushError(1011, "there are no push targets that meet the conditions")
        group_msgid = self.store.next_msg_id()
        answer = {"group_msgid": str(group_msgid)} | answer
        for app, res in resolved:
            msg_id = self.store.next_msg_id()
            response = {"sendno": push.sendno, "msg_id": str(msg_id)}
            answer[app.appkey] = response
            self._record(app, push, res, msg_id, "grouppush", response)
        if push.cid is not None:  # the group's own record answers a repeated cid
            owner = f"group-{group.key}"
            self.store.add_message(
                StoredMessage(group_msgid, owner, "grouppush", push.cid, self.clock(), 0,
                              {"sendno": push.sendno}, answer, [], _NO_IDS, _NO_IDS)
            )  # fmt: skip
        return answer

    def _check_cid(self, push: PushRequest, owner: str) -> None:
        if push.cid is not None and re.fullmatch(re.escape(owner) + "-" + _UUID, push.cid) is None:
            raise PushError(1003, f"cid must be one issued by /v3/push/cid: {owner}-<uuid>")

    def _check_override(self, push: PushRequest, appkey: str) -> None:
        override = push.options.override_msg_id
        if override is None:
            return
        m = self.store.message(override)
        if m is None or m.appkey != appkey or m.created < self.clock() - DAY:
            raise PushError(1003, f"override_msg_id {override} is not a message of the last day")

    def _resolve(self, app: _App, push: PushRequest) -> Resolution:
        return app.registry.resolve(push)

    def _record(
        self,
        app: _App,
        push: PushRequest,
        res: Resolution,
        msg_id: int,
        api: str,
        response: dict[str, Any],
    ) -> None:
        delivery = messages.plan(res, push, self.batch_size)
        self.store.add_message(
            StoredMessage(
                msg_id=msg_id,
                appkey=app.appkey,
                api=api,
                cid=push.cid,
                created=self.clock(),
                ttl=push.options.time_to_live,
                info=messages.summary(push),
                response=response,
                batches=delivery.batches,
                ids=delivery.ids,
                online=delivery.online,
            )
        )

    def _cid(self, req: _Request, _: re.Match[str]) -> Reply:
        count = _int_param(req.query, "count", 1)
        if not 1 <= count <= 1000:
            raise PushError(1003, f"count must be in [1, 1000], got {count}")
        kind = _param(req.query, "type") or "push"
        if kind not in ("push", "schedule"):
            raise PushError(1003, f"type must be push or schedule, got {kind!r}")
        return Reply.json({"cidlist": [f"{req.caller}-{uuid.uuid4()}" for _ in range(count)]})

    # --- report --------------------------------------------------------------------------------

    def _received(self, req: _Request, _: re.Match[str]) -> Reply:
        app = self._app(req)
        raw = _param(req.query, "msg_ids")
        if not raw:
            raise PushError(1002, "msg_ids is required: comma-separated message ids")
        ids = raw.split(",")
        if len(ids) > 100 or not all(i.strip().isdigit() for i in ids):
            raise PushError(1003, "msg_ids must be at most 100 comma-separated message ids")
        out = []
        for text in ids:
            m = self.store.message(int(text))
            if m is None or m.appkey != app.appkey:
                out.append(messages.received_unknown(int(text)))
                continue
            end = m.created + m.ttl
            rids = self.store.came_online(app.appkey, m.created, end)
            came = [app.registry.device_id(r) for r in rids]
            online = np.array(sorted({d for d in came if d is not None}), dtype=np.uint32)
            out.append(messages.received(m, online))
        return Reply.json(out)

    # --- device API ----------------------------------------------------------------------------

    def _mutate(self, app: _App, mutation: Mutation) -> None:
        """Check, journal and apply one mutation; return once the journal entry is on disk."""
        with app.lock:
            mutation.check(app.registry)
            came_online = None
            if isinstance(mutation, SetOnline | Register) and mutation.online:
                came_online = (mutation.registration_id, self.clock())
            durable = self.store.journal(app.appkey, mutation, came_online)
            # Applied in journal order under the lock; answered only once on disk (below), so
            # concurrent changes share one fsync. A reader may see a change a moment before it is
            # durable; anything recorded after it (a push) reaches the disk after it.
            mutation.apply(app.registry)
            app.unsaved += 1
            if app.unsaved >= self.checkpoint_every:
                self.store.checkpoint(app.appkey, app.registry)
                app.unsaved = 0
        durable.result()

    def checkpoint(self) -> None:
        """Snapshot every app and UMS account that has journaled mutations (on shutdown, after
        an import)."""
        for app in self.apps.values():
            with app.lock:
                self.store.checkpoint(app.appkey, app.registry)
                app.unsaved = 0
        for acc in self.ums.values():
            with acc.lock:
                self.store.checkpoint(acc.owner, acc.registry)
                acc.unsaved = 0

    def _device(self, req: _Request, m: re.Match[str]) -> Reply:
        app = self._app(req)
        rid = m["rid"]
        if req.method == "POST":
            self._mutate(app, UpdateDevice.parse(rid, _json_body(req.body)))
            return Reply(200, b"")
        device = app.registry.device(rid)
        if device is None:
            raise PushError(1003, f"registration_id {rid!r} is not a registered device")
        return Reply.json(
            {"tags": device["tags"], "alias": device["alias"], "mobile": device["mobile"]}
        )

    def _status(self, req: _Request, _: re.Match[str]) -> Reply:
        app = self._app(req)
        body = _json_body(req.body)
        rids = body.get("registration_ids") if isinstance(body, dict) else None
        if not isinstance(rids, list) or not 0 < len(rids) <= 1000:
            raise PushError(1003, "registration_ids must be an array of 1 to 1000 IDs")
        out: dict[str, Any] = {}
        for rid in rids:
            device = app.registry.device(rid) if isinstance(rid, str) else None
            if device is None:
                raise PushError(1003, f"registration_id {rid!r} is not a registered device")
            out[rid] = {"online": device["online"]}
        return Reply.json(out)

    def _tags(self, req: _Request, _: re.Match[str]) -> Reply:
        return Reply.json({"tags": self._app(req).registry.tags()})

    def _tag(self, req: _Request, m: re.Match[str]) -> Reply:
        app = self._app(req)
        tag = m["tag"]
        if req.method == "POST":
            self._mutate(app, UpdateTag.parse(tag, _json_body(req.body)))
        else:
            platforms = parse_platforms(_param(req.query, "platform"))
            self._mutate(app, DeleteTag(tag, platforms))
        return Reply(200, b"")

    def _tag_member(self, req: _Request, m: re.Match[str]) -> Reply:
        device = self._app(req).registry.device(m["rid"])
        return Reply.json({"result": device is not None and m["tag"] in device["tags"]})  # type: ignore[operator]

    def _alias(self, req: _Request, m: re.Match[str]) -> Reply:
        app = self._app(req)
        platforms = parse_platforms(_param(req.query, "platform"))
        if req.method == "DELETE":
            self._mutate(app, DeleteAlias(m["alias"], platforms))
            return Reply(200, b"")
        res = app.registry.resolve_audience({"alias": [m["alias"]]}, platforms or "all")
        return Reply.json({"registration_ids": res.registration_ids()})

    # --- the emulator's own endpoints ----------------------------------------------------------

    def _register(self, req: _Request, _: re.Match[str]) -> Reply:
        """Register devices: one device object of the import format, or an array of them."""
        app = self._app(req)
        body = _json_body(req.body)
        items = body if isinstance(body, list) else [body]
        devices = [Register.parse(d, f"devices[{i}]") for i, d in enumerate(items)]
        for d in devices:
            self._mutate(app, d)
        return Reply.json({"registered": len(devices)})

    def _online(self, req: _Request, m: re.Match[str]) -> Reply:
        self._mutate(self._app(req), SetOnline.parse(m["rid"], _json_body(req.body or b"{}")))
        return Reply(200, b"")

    def _unregister(self, req: _Request, m: re.Match[str]) -> Reply:
        self._mutate(self._app(req), DeleteDevice(m["rid"]))
        return Reply(200, b"")

    def _message(self, req: _Request, m: re.Match[str]) -> Reply:
        msg = self.store.message(int(m["msg_id"]))
        if msg is not None and msg.appkey in self.apps:
            return Reply.json(
                messages.inspect(msg, self.apps[msg.appkey].registry.registration_ids)
            )
        if msg is not None and msg.appkey in self.ums:
            acc = self.ums[msg.appkey]
            msg = self._release_stages(acc, msg)
            shown = dataclasses.replace(msg, info={k: v for k, v in msg.info.items()
                                                   if k != "pending"})  # fmt: skip
            return Reply.json(messages.inspect(shown, acc.registry.channel_ids))
        raise PushError(1003, f"no message {m['msg_id']}")

    # --- UMS (seed 000) ------------------------------------------------------------------------

    def _ums_account(self, req: _Request) -> _Ums:
        return self.ums[req.caller]  # _handle let only UMS accounts through to /v1/

    def _template_sent(self, req: _Request, _: re.Match[str]) -> Reply:
        return self._template_send(req, broadcast=False)

    def _template_broadcast(self, req: _Request, _: re.Match[str]) -> Reply:
        return self._template_send(req, broadcast=True)

    def _template_send(self, req: _Request, broadcast: bool) -> Reply:
        acc = self._ums_account(req)
        body = _json_body(req.body)
        send = parse_template_send(body, broadcast=broadcast)
        devices = {k: app.registry for k, app in self._channel_apps(acc).items()}
        res = acc.registry.resolve(send, devices=devices)
        delivery = messages.ums_plan(res, self.batch_size)
        msg_id = self.store.next_msg_id()
        response = {"code": 0, "msgid": str(msg_id), "sendno": send.sendno}
        final = {st.stage for st in res.stages if st.offset == 0}
        info = {
            "sendno": send.sendno,
            "template_id": send.template_id,
            "rule_id": send.rule_id,
            "owner": send.option.owner,
            "priority": send.option.priority,
            "callback": send.callback,
        } | _ums_counts(res, final)
        online = _NO_IDS
        if len(final) < len(res.stages):
            # Later stages are resolved again when released (messages.py): keep the send and
            # the app IDs whose device was online at it.
            apps = res.app_online
            info["pending"] = {"send": body, "broadcast": broadcast,
                               "online": [[k, len(v)] for k, v in apps.items()]}  # fmt: skip
            online = np.concatenate([_NO_IDS, *apps.values()]).astype(np.uint32)
        ttl = send.app_para.time_to_live if send.app_para is not None else 0
        api = "template/broadcast" if broadcast else "template/sent"
        self.store.add_message(
            StoredMessage(msg_id, acc.key, api, None, self.clock(), ttl, info, response,
                          delivery.batches, delivery.ids, online)
        )  # fmt: skip
        return Reply.json(response)

    def _release_stages(self, acc: _Ums, m: StoredMessage) -> StoredMessage:
        """``m`` with the stages whose release time has passed fixed (``messages.py``): the
        send resolved again from the state now, with the app devices online at the send and
        the times app devices came online since; ``m`` itself when none is due."""

        def due(m: StoredMessage, now: float) -> bool:
            stages = m.info["stages"]
            return any(not s["final"] and m.created + s["offset"] <= now for s in stages)

        if "pending" not in m.info or not due(m, self.clock()):
            return m
        with acc.lock:  # one release at a time; another may have fixed them meanwhile
            now = self.clock()
            m = self.store.message(m.msg_id) or m
            if "pending" not in m.info or not due(m, now):
                return m
            pending = m.info["pending"]
            apps = self._channel_apps(acc)
            online, at = {}, 0
            for key, count in pending["online"]:
                online[key] = acc.registry.channel_ids(m.online[at : at + count])
                at += count
            came = {
                key: [(rid, t - m.created) for rid, t in
                      self.store.online_events(app.appkey, m.created, now)]
                for key, app in apps.items()
            }  # fmt: skip
            try:
                send = parse_template_send(pending["send"], broadcast=pending["broadcast"])
                res = acc.registry.resolve(
                    send,
                    devices={k: app.registry for k, app in apps.items()},
                    came_online=came,
                    online=online,
                )
            except UmsError as e:  # the account changed under the send: keep what was sent
                log.warning("UMS message %s: later stages not resolved: %s", m.msg_id, e)
                return m
            fixed = {s["stage"] for s in m.info["stages"] if s["final"]}
            final = fixed | {st.stage for st in res.stages if m.created + st.offset <= now}
            batches, ids = messages.ums_restage(m, messages.ums_plan(res, self.batch_size), fixed)
            info = m.info | _ums_counts(res, final)
            if len(final) == len(res.stages):
                del info["pending"]
            m = dataclasses.replace(m, info=info, batches=batches, ids=ids)
            self.store.update_message(m)
            return m

    def _user(self, req: _Request, m: re.Match[str]) -> Reply:
        acc = self._ums_account(req)
        userid = m["userid"]
        if req.method == "DELETE":
            self._mutate_users(acc, [DeleteUser(userid)])
            return Reply.json({"code": 0})
        user = acc.registry.user(userid)
        if user is None:
            raise UmsError(BAD_RECORD, f"user {userid!r} does not exist")
        return Reply.json({"code": 0, "data": user})

    def _users(self, req: _Request, _: re.Match[str]) -> Reply:
        """Upload users: one ``users.jsonl`` object, or an array of them."""
        acc = self._ums_account(req)
        body = _json_body(req.body)
        items = body if isinstance(body, list) else [body]
        users = [UpsertUser.parse(u, f"users[{i}]") for i, u in enumerate(items)]
        self._mutate_users(acc, users)
        return Reply.json({"code": 0, "uploaded": len(users)})

    def _undeliverable(self, req: _Request, _: re.Match[str]) -> Reply:
        """The delivery model's undeliverable channel IDs: read, or change with
        ``{"add"?: [IDs], "remove"?: [IDs]}``; answers the list as it is now."""
        acc = self._ums_account(req)
        if req.method == "POST":
            self._mutate_users(acc, [SetUndeliverable.parse(_json_body(req.body))])
        return Reply.json({"code": 0, "ids": acc.registry.undeliverable()})

    def _mutate_users(self, acc: _Ums, changes: Sequence[UserMutation]) -> None:
        """Apply (the core refuses a bad change whole) and journal each change; return once the
        journal is on disk. A request of several changes is all or nothing: its uploads go to
        the core together, which refuses them all if it refuses any."""
        uploads = [c for c in changes if isinstance(c, UpsertUser)]
        durable = []
        with acc.lock:
            if uploads:
                UpsertUser.apply_all(acc.registry, uploads)
            for change in changes:
                if not isinstance(change, UpsertUser):
                    change.apply(acc.registry)
                durable.append(self.store.journal(acc.owner, change))
                acc.unsaved += 1
            if acc.unsaved >= self.checkpoint_every:
                self.store.checkpoint(acc.owner, acc.registry)
                acc.unsaved = 0
        for d in durable:
            d.result()


_NO_IDS = np.zeros(0, dtype=np.uint32)


def _ums_counts(res: UmsResolution, final: set[int]) -> dict[str, Any]:
    """What a UMS message's inspection shows of its resolution besides the batches."""
    return {
        "audience": res.audience,
        "unreachable": len(res.unreachable()),
        "delivered": res.delivered,
        "stages": messages.ums_stages(res, final),
    }


_UMS_PATHS: Final = ("/v1/", "/_emulator/ums/")
"""Paths of UMS accounts: UMS auth, and answers in UMS's shape."""


# JPush refusals of the transport (auth, method, size, rate, JSON) as UMS codes on /v1/ paths.
_UMS_CODES: Final = {
    1001: BAD_REQUEST,
    1002: MISSING,
    1003: WRONG_TYPE,
    1004: AUTH_FAILED,
    1005: TOO_LARGE,
    1008: AUTH_FAILED,
    2002: RATE_LIMITED,
}


def _as_ums(reply: Reply) -> Reply:
    """A reply in UMS's shape: a JPush ``{"error": {...}}`` refusal becomes ``{"code",
    "message"}`` with the UMS code of the same rule."""
    payload = reply.payload
    if not (isinstance(payload, dict) and set(payload) == {"error"}):
        return reply
    code, message = payload["error"]["code"], payload["error"]["message"]
    e = UmsError(_UMS_CODES.get(code, code), message)
    return Reply(reply.status if code == 1000 else e.http_status, Reply.json(e.to_json()).body,
                 reply.headers)  # fmt: skip


def _json_body(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise PushError(1003, f"the request body is not valid JSON: {e}") from None


def _param(query: Mapping[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[-1] if values else None


def _int_param(query: Mapping[str, list[str]], name: str, default: int) -> int:
    text = _param(query, name)
    if text is None or text == "":
        return default
    if not text.isascii() or not text.isdigit():
        raise PushError(1003, f"{name} must be a number, got {text!r}")
    return int(text)


def _route(
    pattern: str, auth: bool = True, **methods: _Handler
) -> tuple[re.Pattern[str], dict[str, _Handler], bool]:
    return re.compile(pattern), methods, auth


_SEG = r"[^/]+"
_UNDELIVERABLE: Final = Emulator._undeliverable
_ROUTES: Final = [
    _route(r"/v3/push", POST=Emulator._push),
    _route(r"/v3/push/validate", POST=Emulator._validate),
    _route(r"/v3/push/cid", GET=Emulator._cid),
    _route(r"/v3/grouppush", POST=Emulator._grouppush),
    _route(r"/v3/received", GET=Emulator._received),
    _route(r"/v3/devices/status/?", POST=Emulator._status),
    _route(rf"/v3/devices/(?P<rid>{_SEG})", GET=Emulator._device, POST=Emulator._device),
    _route(r"/v3/tags/?", GET=Emulator._tags),
    _route(rf"/v3/tags/(?P<tag>{_SEG})/registration_ids/(?P<rid>{_SEG})", GET=Emulator._tag_member),
    _route(rf"/v3/tags/(?P<tag>{_SEG})", POST=Emulator._tag, DELETE=Emulator._tag),
    _route(rf"/v3/aliases/(?P<alias>{_SEG})", GET=Emulator._alias, DELETE=Emulator._alias),
    _route(r"/v1/template/sent", POST=Emulator._template_sent),
    _route(r"/v1/template/broadcast", POST=Emulator._template_broadcast),
    _route(r"/v1/users", POST=Emulator._users),
    _route(rf"/v1/users/(?P<userid>{_SEG})", GET=Emulator._user, DELETE=Emulator._user),
    _route(r"/_emulator/ums/undeliverable", GET=Emulator._undeliverable, POST=_UNDELIVERABLE),
    _route(r"/_emulator/devices", POST=Emulator._register),
    _route(rf"/_emulator/devices/(?P<rid>{_SEG})/online", POST=Emulator._online),
    _route(rf"/_emulator/devices/(?P<rid>{_SEG})", DELETE=Emulator._unregister),
    _route(r"/_emulator/messages/(?P<msg_id>[0-9]{1,19})", auth=False, GET=Emulator._message),
]
