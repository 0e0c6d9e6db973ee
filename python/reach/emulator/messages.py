"""What a push does in the emulator: its delivery batches, who received it, and how it is shown.

A push is delivered in batches of one channel (platform), Android vendor and APNs environment,
each capped at the emulator's batch size. ``big_push_duration`` spreads the batches' release
offsets evenly over that many minutes. With ``sms_message``, the targeted devices that have a mobile
number and were offline when the push went out get an SMS batch, released after ``delay_time`` on
Android and at once elsewhere (the seed: the delay is honoured on Android only).

A device received a push when it was online at send time, or when it came online within
``time_to_live`` seconds after it (never, for ``time_to_live`` 0).

A UMS template send with a send strategy has stages released ``offset`` seconds after the send.
Stage k goes to the users that no earlier stage delivered to *before it goes out*, and an app
push delivers to devices that come online within ``app_para.time_to_live`` of it, so a later
stage's audience depends on what happens after the send. The emulator resolves the send when
it arrives; a stage whose release time has not passed yet is *provisional* (``"final": false``
in the inspection's ``stages``). The first inspection at or after a stage's release time
resolves the send again, from the account's state then, with the app devices that were online
at the send (stored with the message) and the times the app channels' devices came online since
(the JPush apps' ``online_events``), and fixes every stage whose release time has passed: its
batches no longer change. Batches of fixed stages are kept; the counts are the last resolution's.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ..jpush import PushRequest
from ..registry import Resolution
from ..ums import UmsResolution
from .store import StoredMessage

_EMPTY = np.zeros(0, dtype=np.uint32)
_WHOLE = 2**32 - 1  # a batch cap no group reaches: one core batch per group


@dataclass(frozen=True, slots=True)
class Delivery:
    """The batches of one push in one app: metadata, the concatenated device ids in batch order,
    and the targeted devices that were online at send time (ascending)."""

    batches: list[dict[str, Any]]
    ids: npt.NDArray[np.uint32]
    online: npt.NDArray[np.uint32]


def plan(res: Resolution, push: PushRequest, batch_size: int) -> Delivery:
    """Split a resolution into the push's delivery batches (see the module docstring)."""
    online = res.online().ids()
    groups: list[tuple[dict[str, object], npt.NDArray[np.uint32]]] = []
    # One core batch per (platform, vendor) group, capped here: numpy views, not 1000-id objects.
    for g in res.batches(max_size=_WHOLE):
        head: dict[str, object] = {"channel": g.platform, "vendor": g.vendor}
        head["apns_production"] = g.apns_production
        groups.append((head, g.ids))
    pushes = sum(-(-len(ids) // batch_size) for _, ids in groups)
    spread = (push.options.big_push_duration or 0) * 60
    meta: list[dict[str, Any]] = []
    for head, ids in groups:
        for start in range(0, len(ids), batch_size):
            size = min(batch_size, len(ids) - start)
            meta.append(head | {"release_offset": len(meta) * spread // pushes, "size": size})
    parts = [ids for _, ids in groups]
    if push.sms_message is not None:
        for g in res.with_mobile().batches(max_size=_WHOLE):
            offline = np.setdiff1d(g.ids, online, assume_unique=True).astype(np.uint32)
            delay = push.sms_message.delay_time if g.platform == "android" else 0
            sms: dict[str, object] = {"channel": "sms", "platform": g.platform}
            sms["release_offset"] = delay
            for start in range(0, len(offline), batch_size):
                meta.append(sms | {"size": min(batch_size, len(offline) - start)})
            parts.append(offline)
    ids = np.concatenate(parts).astype(np.uint32, copy=False) if parts else _EMPTY
    return Delivery(meta, ids, online)


def summary(push: PushRequest) -> dict[str, Any]:
    """What the report needs to know of a push besides its batches."""
    note = push.notification  # its alert shortcut reaches iOS too, even without an ios object
    return {
        "sendno": push.sendno,
        "ios_notification": note is not None and push.targets("ios"),
        "message": push.message is not None,
        "override_msg_id": push.options.override_msg_id,
    }


def _platform_ids(m: StoredMessage, channel: str) -> npt.NDArray[np.uint32]:
    """The device ids of the message's batches on ``channel``, ascending."""
    parts, start = [], 0
    for b in m.batches:
        end = start + int(b["size"])
        if b["channel"] == channel:
            parts.append(m.ids[start:end])
        start = end
    return np.sort(np.concatenate(parts)) if parts else _EMPTY


def received(m: StoredMessage, came_online: npt.NDArray[np.uint32]) -> dict[str, Any]:
    """The report API's entry for a message: per-platform counts of devices that received it
    (``None`` for a platform the message did not target). ``came_online``: the app's devices that
    connected between the send and the end of ``time_to_live``."""
    late = np.setdiff1d(came_online, m.online, assume_unique=True) if m.ttl > 0 else _EMPTY

    def delivered(channel: str) -> int | None:
        targets = _platform_ids(m, channel)
        if not len(targets):
            return None
        now = np.isin(targets, m.online, assume_unique=True).sum()
        later = np.isin(targets, late, assume_unique=True).sum()
        return int(now + later)

    android, ios, winphone = delivered("android"), delivered("ios"), delivered("winphone")
    ios_sent = len(_platform_ids(m, "ios")) if ios is not None else None
    notify_ios = bool(m.info.get("ios_notification")) and ios is not None
    return {
        "msg_id": m.msg_id,
        "android_received": android,
        "ios_apns_sent": ios_sent if notify_ios else None,
        "ios_apns_received": ios if notify_ios else None,
        "ios_msg_received": ios if m.info.get("message") else None,
        "wp_received": winphone,
    }


def received_unknown(msg_id: int) -> dict[str, Any]:
    """The report API's entry for a message id the app never sent: every count null."""
    keys = ("android_received", "ios_apns_sent", "ios_apns_received", "ios_msg_received")
    return {"msg_id": msg_id} | dict.fromkeys((*keys, "wp_received"))


def ums_plan(res: UmsResolution, batch_size: int) -> Delivery:
    """The batches of a UMS template send: per stage (without a send strategy: every channel
    of the template, in its order, all stage 1), its channel's IDs in batches of at most
    ``batch_size``, released ``offset`` seconds after the send; an app channel routed through
    a JPush app is split as JPush splits a push (platform, Android vendor, APNs environment)."""
    meta: list[dict[str, Any]] = []
    parts: list[npt.NDArray[np.uint32]] = []
    for st in res.stages:
        c = st.channel
        head: dict[str, object] = {"channel": c.key, "type": c.type, "stage": st.stage}
        head |= {"delay": st.delay, "release_offset": st.offset}
        groups = [(head, c.ids)] if st.groups is None else [
            (head | {"platform": p, "vendor": v, "apns_production": a}, ids)
            for p, v, a, ids in st.groups
        ]  # fmt: skip
        for group, ids in groups:
            for start in range(0, len(ids), batch_size):
                meta.append(group | {"size": min(batch_size, len(ids) - start)})
            parts.append(ids)
    ids = np.concatenate(parts).astype(np.uint32, copy=False) if parts else _EMPTY
    return Delivery(meta, ids, _EMPTY)


def ums_restage(
    m: StoredMessage, new: Delivery, fixed: set[int]
) -> tuple[list[dict[str, Any]], npt.NDArray[np.uint32]]:
    """The batches (and their ids) of a UMS message resolved again: those of the ``fixed``
    stages as ``m`` has them, the others from ``new``, in stage order."""
    rows: list[tuple[int, dict[str, Any], npt.NDArray[np.uint32]]] = []
    for batches, ids, keep in ((m.batches, m.ids, True), (new.batches, new.ids, False)):
        start = 0
        for b in batches:
            end = start + int(b["size"])
            if (int(b["stage"]) in fixed) == keep:
                rows.append((int(b["stage"]), b, ids[start:end]))
            start = end
    rows.sort(key=lambda r: r[0])  # stable: each stage's batches stay in their order
    parts = [ids for _, _, ids in rows]
    ids = np.concatenate(parts).astype(np.uint32, copy=False) if parts else _EMPTY
    return [b for _, b, _ in rows], ids


def ums_stages(res: UmsResolution, final: set[int]) -> list[dict[str, Any]]:
    """What the inspection shows of each stage: its channel, timing and delivery counts, and
    whether it is ``final`` (released: its batches no longer change)."""
    return [
        {
            "stage": st.stage,
            "channel": st.channel.key,
            "delay": st.delay,
            "offset": st.offset,
            "users": st.channel.reached,
            "ids": len(st.channel),
            "delivered_ids": st.delivered_ids,
            "delivered": st.delivered,
            "final": st.stage in final,
        }
        for st in res.stages
    ]


def inspect(
    m: StoredMessage, names: Callable[[npt.NDArray[np.uint32]], list[str]]
) -> dict[str, Any]:
    """The emulator inspection answer (DESIGN.md, a stable contract): every batch with its ids,
    turned into strings by ``names`` (registration IDs, or UMS channel IDs)."""
    batches, start = [], 0
    for b in m.batches:
        end = start + int(b["size"])
        batches.append(
            {k: v for k, v in b.items() if v is not None} | {"ids": names(m.ids[start:end])}
        )
        start = end
    created = datetime.datetime.fromtimestamp(m.created, datetime.UTC)
    shown = {k: v for k, v in m.info.items() if k not in ("ios_notification", "message")}
    return (
        {
            "msg_id": str(m.msg_id),
            "api": m.api,
            "appkey": m.appkey,
            "cid": m.cid,
            "created": created.isoformat(timespec="milliseconds"),
            "time_to_live": m.ttl,
        }
        | shown
        | {"batches": batches}
    )
