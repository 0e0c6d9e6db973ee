"""Helpers of the emulator tests: an in-process emulator with a settable clock, and calls to it."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from reach.emulator import AppConfig, Emulator, GroupConfig, Reply, Store

APP = AppConfig("a1b2c3d4e5f6a1b2c3d4e5f6", "secret-one")
OTHER = AppConfig("f6e5d4c3b2a1f6e5d4c3b2a1", "secret-two")
GROUP = GroupConfig("9a8b7c6d5e4f9a8b7c6d5e4f", "group-secret", (APP.appkey, OTHER.appkey))


class Clock:
    """A clock the tests move by hand."""

    def __init__(self, now: float = 1_790_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def basic(user: str, secret: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def open_emulator(path: Path, clock: Clock | None = None, **kw: Any) -> Emulator:
    return Emulator(Store(path), [APP, OTHER], [GROUP], clock=clock or Clock(), **kw)


def call(
    emu: Emulator,
    method: str,
    target: str,
    body: object = None,
    app: AppConfig | None = APP,
    raw: bytes | None = None,
) -> Reply:
    """One request as ``app`` (None: no auth); ``body`` is sent as JSON, ``raw`` as it is."""
    headers = basic(app.appkey, app.secret) if app is not None else {}
    data = raw if raw is not None else b"" if body is None else json.dumps(body).encode()
    return emu.handle(method, target, headers, data)


def register(emu: Emulator, *devices: dict[str, Any], app: AppConfig = APP) -> None:
    r = call(emu, "POST", "/_emulator/devices", list(devices), app=app)
    assert r.status == 200, r.payload


def push_body(audience: object = "all", **extra: Any) -> dict[str, Any]:
    return {"platform": "all", "audience": audience, "notification": {"alert": "hi"}, **extra}


def error_code(r: Reply) -> int:
    """The vendor error code of a refusal (and the status must be the seed's for it)."""
    from reach.errors import JPUSH_HTTP_STATUS

    code = r.payload["error"]["code"]
    assert set(r.payload) == {"error"} and set(r.payload["error"]) == {"code", "message"}
    assert r.status == JPUSH_HTTP_STATUS[code]
    return int(code)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=50),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=25,
)
