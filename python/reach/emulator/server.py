"""The emulator's HTTP server: the standard library's threading server around ``Emulator``.

HTTP/1.1 with keep-alive (the official SDK keeps its connection open). The server only moves
bytes: it reads a body of the announced length (refusing an oversized one before reading it),
hands the request to ``Emulator.handle`` and writes the answer.
"""

from __future__ import annotations

import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TextIO

from .. import _core
from ..errors import PushError
from .app import MAX_REGISTER_BODY, AppConfig, Emulator, GroupConfig, Reply
from .store import Store


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out as two writes; with Nagle's algorithm the second waits for the
    # client's delayed ACK (40 ms on Linux) on every keep-alive request.
    disable_nagle_algorithm = True
    server_version = "reach-emulator"
    server: EmulatorServer

    def _serve(self) -> None:
        length_text = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding"):
            reply = Reply.error(PushError(1002, "send the body with a Content-Length"))
            self.close_connection = True
        elif length_text is not None and (
            not length_text.isdigit() or int(length_text) > MAX_REGISTER_BODY
        ):
            reply = Reply.error(PushError(1005, "the request body is too large"))
            self.close_connection = True  # its bytes were not read: the connection is spent
        else:
            body = self.rfile.read(int(length_text)) if length_text else b""
            reply = self.server.emulator.handle(self.command, self.path, dict(self.headers), body)
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(reply.body)))
        for k, v in reply.headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(reply.body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            super().log_message(format, *args)


class EmulatorServer(ThreadingHTTPServer):
    """A threading HTTP server bound to one ``Emulator``."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], emulator: Emulator, verbose: bool = False) -> None:
        super().__init__(address, _Handler)
        self.emulator = emulator
        self.verbose = verbose

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        name = host.decode() if isinstance(host, bytes) else host
        return f"http://{name}:{port}"


def spawn(
    args: list[str], echo: Callable[[str], None] | None = None
) -> tuple[subprocess.Popen[str], int]:
    """Start ``reach serve ARGS --port 0`` in a subprocess; the process and the port it took once
    it serves. ``echo`` sees each line the server prints (its output is drained either way)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "reach.cli", "serve", "--port", "0", *args],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if echo is not None:
            echo(line.rstrip())
        m = re.search(r" on http://[^:]+:(\d+)", line)
        if m:
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            return proc, int(m.group(1))
    raise RuntimeError(f"reach serve did not start (exit {proc.wait()})")


def demo_app(store: Store) -> AppConfig:
    """The store's demo app, made (and remembered) on first use."""
    saved = store.meta("demo_app")
    if saved is None:
        saved = f"{secrets.token_hex(12)}:{secrets.token_hex(12)}"
        store.set_meta("demo_app", saved)
    return AppConfig.parse(saved)


def bar(fraction: float, width: int = 30) -> str:
    """A text progress bar.

    >>> bar(0.5, 10)
    '[#####-----]  50%'
    """
    fraction = min(max(fraction, 0.0), 1.0)
    filled = round(fraction * width)
    return f"[{'#' * filled}{'-' * (width - filled)}] {fraction:4.0%}"


def _progress(out: TextIO) -> Callable[[Path], None]:
    """Tells of each import file; on a terminal, a progress bar while it loads: the bytes of
    JSON Lines the core has parsed (``_core._jsonl_progress``), then the apply phase."""
    state: dict[str, Any] = {}

    def done() -> None:
        if "stop" in state:
            state["stop"].set()
            state["thread"].join()
            out.write(f"\r  {state['name']}: done in {time.perf_counter() - state['t0']:.2f} s\n")

    def on_file(path: Path) -> None:
        done()
        size = path.stat().st_size
        state.update(name=path.name, t0=time.perf_counter(), stop=threading.Event())
        if not out.isatty():
            out.write(f"  {path.name} ({size / 2**20:.1f} MiB)\n")
            state.pop("stop")
            return
        start = _core._jsonl_progress()
        parsed_by_core = path.name == "devices.jsonl"

        def tick() -> None:
            while not state["stop"].wait(0.1):
                elapsed = time.perf_counter() - state["t0"]
                if parsed_by_core:
                    fraction = (_core._jsonl_progress() - start) / max(size, 1)
                    phase = "parsed" if fraction < 1 else "parsed, applying"
                    line = f"{bar(fraction)} {phase}"
                else:
                    line = "loading"
                out.write(f"\r  {path.name} ({size / 2**20:.1f} MiB) {line} {elapsed:.1f} s  ")
                out.flush()

        state["thread"] = threading.Thread(target=tick, daemon=True)
        state["thread"].start()

    on_file.done = done  # type: ignore[attr-defined]
    return on_file


def serve(
    host: str = "127.0.0.1",
    port: int = 8800,
    apps: list[AppConfig] | None = None,
    groups: list[GroupConfig] | None = None,
    ums: list[AppConfig] | None = None,
    store_path: str | Path = "reach-data",
    import_dir: str | Path | None = None,
    demo: int = 0,
    rate_limit: int = 0,
    batch_size: int = 1000,
    checkpoint_every: int = 100_000,
    verbose: bool = False,
    out: TextIO = sys.stdout,
    ready: Callable[[EmulatorServer], None] | None = None,
) -> None:
    """Run the emulator until SIGINT or SIGTERM, then checkpoint the store and return."""
    from ..demo import build_demo
    from ..imports import import_directory

    store = Store(store_path)
    made_demo = not apps
    apps = apps or [demo_app(store)]
    emulator = Emulator(
        store,
        apps,
        groups,
        rate_limit=rate_limit,
        batch_size=batch_size,
        checkpoint_every=checkpoint_every,
        ums=ums,
        ums_import=import_dir,
    )
    first = emulator.apps[apps[0].appkey]
    if (import_dir is not None or demo) and len(first.registry) == 0:
        t0 = time.perf_counter()
        with first.lock:
            if import_dir is not None:
                out.write(f"importing {import_dir} into app {first.appkey}\n")
                progress = _progress(out)
                counts = import_directory(first.registry, import_dir, progress)
                progress.done()  # type: ignore[attr-defined]
                out.write(f"  loaded {counts}\n")
            if demo:
                build_demo(demo, into=first.registry)
        emulator.checkpoint()
        out.write(f"{len(first.registry):,} devices ready in {time.perf_counter() - t0:.2f} s\n")
    elif import_dir is not None or demo:
        out.write(
            f"store {store_path} already holds {len(first.registry):,} devices of "
            f"{first.appkey}; --import/--demo only fill an empty store\n"
        )
    server = EmulatorServer((host, port), emulator, verbose)
    audience = '{"tag":["深圳"]}' if "深圳" in first.registry.tags() else '"all"'
    _announce(server, apps[0], made_demo, audience, out)
    stop = threading.Event()

    def shutdown(*_: object) -> None:
        stop.set()

    previous = {s: signal.signal(s, shutdown) for s in (signal.SIGINT, signal.SIGTERM)}
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    if ready is not None:
        ready(server)
    try:
        stop.wait()
    finally:
        server.shutdown()
        server.server_close()
        emulator.checkpoint()
        store.close()
        for s, h in previous.items():
            signal.signal(s, h)
        out.write("stopped; store checkpointed\n")


def _announce(
    server: EmulatorServer, app: AppConfig, made_demo: bool, audience: str, out: TextIO
) -> None:
    url = server.url
    emulator = server.emulator
    who = "demo app" if made_demo else "app"
    out.write(f"reach emulator on {url}  ({who} {app.appkey}, master secret {app.secret})\n")
    out.write("try:\n")
    body = f'{{"platform":"all","audience":{audience},"notification":{{"alert":"Hi, JPush!"}}}}'
    out.write(
        f"  curl -s -u {app.appkey}:{app.secret} -H 'Content-Type: application/json' "
        f"-d '{body}' {url}/v3/push\n"
    )
    out.write(f"  curl -s {url}/_emulator/messages/<msg_id>\n")
    for acc in emulator.ums.values():
        out.write(f"UMS account {acc.key} ({len(acc.registry):,} users) on {url}/v1/\n")
    out.flush()
