"""The emulator's durable store: one SQLite database and the core's snapshot files in a directory.

What is in it:

- ``apps``: every app (key, secret) and the snapshot its registry starts from, with the journal
  sequence number that snapshot covers; a UMS account has a row too (key ``ums:<ChannelKey>``),
  its snapshot a UMS registry's (``UmsRegistry.save``);
- ``journal``: every acknowledged device (or UMS user) mutation after that snapshot, in order;
- ``messages``: every sent push with its delivery batches (device ids as ``uint32`` bytes), the
  devices that were online when it was sent, and the answer given (for cid idempotency);
- ``online_events``: when devices came online (offline delivery within ``time_to_live``).

Invariant: a mutation is committed to the journal (``synchronous=FULL``: on disk) before it is
applied and acknowledged, so after a crash ``snapshot + journal`` is exactly what was acknowledged.
A checkpoint writes a new snapshot file next to the old one and switches to it in one transaction
that also drops the journal it covers; a crash at any point leaves one consistent pair.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import sqlite3
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..registry import Registry
from ..ums import UmsRegistry
from . import mutations
from .mutations import Mutation, UserMutation

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS apps(
    appkey TEXT PRIMARY KEY, secret TEXT NOT NULL, snapshot TEXT, seq INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS journal(
    seq INTEGER PRIMARY KEY AUTOINCREMENT, appkey TEXT NOT NULL, op TEXT NOT NULL,
    args TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS journal_app ON journal(appkey, seq);
CREATE TABLE IF NOT EXISTS messages(
    msg_id INTEGER PRIMARY KEY, appkey TEXT NOT NULL, api TEXT NOT NULL, cid TEXT,
    created REAL NOT NULL, ttl INTEGER NOT NULL, info TEXT NOT NULL, response TEXT NOT NULL,
    batches TEXT NOT NULL, ids BLOB NOT NULL, online BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS messages_cid ON messages(appkey, cid) WHERE cid IS NOT NULL;
CREATE TABLE IF NOT EXISTS online_events(appkey TEXT NOT NULL, registration_id TEXT NOT NULL,
    at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS online_events_at ON online_events(appkey, at);
"""

# msg_ids start here, so they look like JPush's (long integers, sent as strings).
_FIRST_MSG_ID = 1_800_000_001


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """One sent message as the store keeps it (see ``messages.Message`` for its meaning)."""

    msg_id: int
    appkey: str
    api: str
    cid: str | None
    created: float
    ttl: int
    info: dict[str, Any]
    response: dict[str, Any]
    batches: list[dict[str, Any]]
    ids: npt.NDArray[np.uint32]
    online: npt.NDArray[np.uint32]


_Statement = tuple[str, tuple[Any, ...]]


class Store:
    """The durable state of an emulator, in the directory ``path`` (created if missing).

    Thread-safe: one connection, one lock. Writes go through one writer thread that commits
    whatever is queued in a single transaction (group commit): concurrent writers share one fsync,
    and writes reach the disk in the order they were queued. A write's future resolves once its
    transaction is on disk.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / "snapshots").mkdir(exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(
            self.path / "reach.sqlite3", check_same_thread=False, isolation_level=None
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        row = self._db.execute("SELECT max(msg_id) FROM messages").fetchone()
        self._next_msg_id = max(_FIRST_MSG_ID, (row[0] or 0) + 1)
        self._queue: list[tuple[list[_Statement], Future[None]]] = []
        self._wake = threading.Condition()
        self._closing = False
        self._writer = threading.Thread(target=self._write_loop, name="reach-store", daemon=True)
        self._writer.start()

    def close(self) -> None:
        """Commit what is queued, stop the writer, close the database."""
        with self._wake:
            self._closing = True
            self._wake.notify()
        self._writer.join()
        with self._lock:
            self._db.close()

    def _submit(self, statements: list[_Statement]) -> Future[None]:
        done: Future[None] = Future()
        with self._wake:
            if self._closing:
                raise RuntimeError("the store is closed")
            self._queue.append((statements, done))
            self._wake.notify()
        return done

    def flush(self) -> None:
        """Wait until everything queued so far is on disk."""
        self._submit([]).result()

    def _write_loop(self) -> None:
        while True:
            with self._wake:
                while not self._queue and not self._closing:
                    self._wake.wait()
                batch, self._queue = self._queue, []
                if not batch and self._closing:
                    return
            with self._lock:
                try:
                    self._commit([st for statements, _ in batch for st in statements])
                    for _, done in batch:
                        done.set_result(None)
                except sqlite3.Error:
                    # One bad write must not fail its neighbours: retry each on its own.
                    for statements, done in batch:
                        try:
                            self._commit(statements)
                            done.set_result(None)
                        except sqlite3.Error as e:
                            done.set_exception(e)

    def _commit(self, statements: list[_Statement]) -> None:
        with self._tx() as db:
            for sql, params in statements:
                db.execute(sql, params)

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One transaction (the caller holds the lock): committed whole or rolled back."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # --- settings ------------------------------------------------------------------------------

    def meta(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self._submit([("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))]).result()

    # --- apps and their registries -------------------------------------------------------------

    def add_app(self, appkey: str, secret: str) -> None:
        """Record an app (its secret may change between runs; its devices stay)."""
        sql = (
            "INSERT INTO apps(appkey, secret) VALUES (?, ?) "
            "ON CONFLICT(appkey) DO UPDATE SET secret = excluded.secret"
        )
        self._submit([(sql, (appkey, secret))]).result()

    def open_registry(self, appkey: str) -> tuple[Registry, int]:
        """The app's registry as acknowledged (snapshot + journal) and how many journal entries
        were replayed."""
        with self._lock:
            row = self._db.execute(
                "SELECT snapshot, seq FROM apps WHERE appkey = ?", (appkey,)
            ).fetchone()
            snapshot, seq = (None, 0) if row is None else row
            reg = Registry.load(self.path / "snapshots" / snapshot) if snapshot else Registry()
            rows = self._db.execute(
                "SELECT op, args FROM journal WHERE appkey = ? AND seq > ? ORDER BY seq",
                (appkey, seq),
            ).fetchall()
        for op, args in rows:
            m = mutations.from_json(op, args)
            assert not isinstance(m, UserMutation), "a device journal holds device mutations"
            m.apply(reg)
        return reg, len(rows)

    def open_ums(self, owner: str) -> tuple[UmsRegistry | None, list[UserMutation]]:
        """A UMS account's last snapshot (None if it has none yet: the caller starts from its
        import files) and the journaled user mutations after it, in order."""
        with self._lock:
            row = self._db.execute(
                "SELECT snapshot, seq FROM apps WHERE appkey = ?", (owner,)
            ).fetchone()
            snapshot, seq = (None, 0) if row is None else row
            reg = UmsRegistry.load(self.path / "snapshots" / snapshot) if snapshot else None
            rows = self._db.execute(
                "SELECT op, args FROM journal WHERE appkey = ? AND seq > ? ORDER BY seq",
                (owner, seq),
            ).fetchall()
        out = [mutations.from_json(op, args) for op, args in rows]
        assert all(isinstance(m, UserMutation) for m in out), "a user journal holds user mutations"
        return reg, out  # type: ignore[return-value]

    def journal(
        self,
        appkey: str,
        mutation: Mutation | UserMutation,
        came_online: tuple[str, float] | None = None,
    ) -> Future[None]:
        """Queue one mutation for the journal; ``came_online`` is (registration ID, when) for a
        device that connects with it. The future resolves when it is on disk."""
        op, args = mutations.to_json(mutation)
        statements: list[_Statement] = [
            ("INSERT INTO journal(appkey, op, args) VALUES (?, ?, ?)", (appkey, op, args))
        ]
        if came_online is not None:
            statements.append(
                ("INSERT INTO online_events VALUES (?, ?, ?)", (appkey, *came_online))
            )
        return self._submit(statements)

    def journal_length(self, appkey: str) -> int:
        with self._lock:
            row = self._db.execute(
                "SELECT count(*) FROM journal WHERE appkey = ? AND seq > "
                "(SELECT seq FROM apps WHERE appkey = ?)",
                (appkey, appkey),
            ).fetchone()
        return int(row[0])

    def checkpoint(self, appkey: str, reg: Registry | UmsRegistry) -> None:
        """Snapshot ``reg`` (which must hold every journaled mutation of the app or UMS account:
        the caller holds its lock) and drop the journal it covers."""
        self.flush()  # the journal must hold every mutation the registry has applied
        with self._lock:
            row = self._db.execute(
                "SELECT max(seq) FROM journal WHERE appkey = ?", (appkey,)
            ).fetchone()
            old = self._db.execute(
                "SELECT snapshot, seq FROM apps WHERE appkey = ?", (appkey,)
            ).fetchone()
            seq = max(int(row[0] or 0), int(old[1]) if old else 0)
            digest = hashlib.sha1(appkey.encode()).hexdigest()[:16]
            name = f"{digest}-{seq}.snap"
            if old and old[0] == name:
                return
            reg.save(self.path / "snapshots" / name)
            with self._tx() as db:
                db.execute(
                    "UPDATE apps SET snapshot = ?, seq = ? WHERE appkey = ?", (name, seq, appkey)
                )
                db.execute("DELETE FROM journal WHERE appkey = ? AND seq <= ?", (appkey, seq))
            if old and old[0]:
                (self.path / "snapshots" / old[0]).unlink(missing_ok=True)

    # --- messages ------------------------------------------------------------------------------

    def next_msg_id(self) -> int:
        """A fresh message id (never reused, also across restarts)."""
        with self._lock:
            msg_id = self._next_msg_id
            self._next_msg_id += 1
            return msg_id

    def add_message(self, m: StoredMessage) -> None:
        """Record a sent message; returns once it is on disk."""
        row = (
            m.msg_id,
            m.appkey,
            m.api,
            m.cid,
            m.created,
            m.ttl,
            _dumps(m.info),
            _dumps(m.response),
            _dumps(m.batches),
            pack_ids(m.ids),
            pack_ids(m.online),
        )
        sql = "INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        self._submit([(sql, row)]).result()

    def update_message(self, m: StoredMessage) -> None:
        """Rewrite a message's info, batches and ids (a UMS send whose later stages were
        resolved when their release time passed); returns once it is on disk."""
        sql = "UPDATE messages SET info = ?, batches = ?, ids = ? WHERE msg_id = ?"
        row = (_dumps(m.info), _dumps(m.batches), pack_ids(m.ids), m.msg_id)
        self._submit([(sql, row)]).result()

    def message(self, msg_id: int) -> StoredMessage | None:
        if not 0 <= msg_id < 2**63:  # SQLite's integers; no message has such an id
            return None
        with self._lock:
            row = self._db.execute("SELECT * FROM messages WHERE msg_id = ?", (msg_id,)).fetchone()
        return None if row is None else _message(row)

    def message_by_cid(self, appkey: str, cid: str, since: float) -> StoredMessage | None:
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM messages WHERE appkey = ? AND cid = ? AND created >= ? "
                "ORDER BY msg_id LIMIT 1",
                (appkey, cid, since),
            ).fetchone()
        return None if row is None else _message(row)

    def message_count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM messages").fetchone()[0])

    def came_online(self, appkey: str, start: float, end: float) -> list[str]:
        """The registration IDs of the app's devices that came online in ``[start, end]``."""
        with self._lock:
            rows = self._db.execute(
                "SELECT DISTINCT registration_id FROM online_events "
                "WHERE appkey = ? AND at BETWEEN ? AND ?",
                (appkey, start, end),
            ).fetchall()
        return [str(r[0]) for r in rows]

    def online_events(self, appkey: str, start: float, end: float) -> list[tuple[str, float]]:
        """When the app's devices came online in ``[start, end]``: (registration ID, time)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT registration_id, at FROM online_events "
                "WHERE appkey = ? AND at BETWEEN ? AND ? ORDER BY at",
                (appkey, start, end),
            ).fetchall()
        return [(str(r), float(t)) for r, t in rows]


def _dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _message(row: tuple[Any, ...]) -> StoredMessage:
    msg_id, appkey, api, cid, created, ttl, info, response, batches, ids, online = row
    return StoredMessage(
        msg_id=msg_id,
        appkey=appkey,
        api=api,
        cid=cid,
        created=created,
        ttl=ttl,
        info=json.loads(info),
        response=json.loads(response),
        batches=json.loads(batches),
        ids=unpack_ids(ids),
        online=unpack_ids(online),
    )


_RUN_HEAD = np.dtype([("count", "<u4"), ("first", "<u4"), ("width", "u1")])


def pack_ids(ids: npt.NDArray[np.uint32]) -> bytes:
    """Device ids, compactly: each ascending run as its first id and the gaps to the next ones,
    in the narrowest of 1, 2 or 4 bytes that holds them (a batch list is a few ascending runs)."""
    ids = np.ascontiguousarray(ids, dtype=np.uint32)
    if not len(ids):
        return b""
    gaps = np.diff(ids.astype(np.int64))
    starts = np.concatenate([[0], np.flatnonzero(gaps <= 0) + 1, [len(ids)]])
    out = []
    for lo, hi in itertools.pairwise(starts.tolist()):
        run = gaps[lo : hi - 1]
        top = int(run.max()) if len(run) else 0
        width = 1 if top < 2**8 else 2 if top < 2**16 else 4
        head = np.array([(hi - lo, ids[lo], width)], dtype=_RUN_HEAD)
        out += [head.tobytes(), run.astype(f"<u{width}").tobytes()]
    return b"".join(out)


def unpack_ids(data: bytes) -> npt.NDArray[np.uint32]:
    """The inverse of ``pack_ids``."""
    parts, at = [], 0
    while at < len(data):
        head = np.frombuffer(data, dtype=_RUN_HEAD, count=1, offset=at)[0]
        at += _RUN_HEAD.itemsize
        count, width = int(head["count"]), int(head["width"])
        gaps = np.frombuffer(data, dtype=f"<u{width}", count=count - 1, offset=at)
        at += (count - 1) * width
        run = np.empty(count, dtype=np.int64)
        run[0] = head["first"]
        np.cumsum(gaps, out=run[1:])
        run[1:] += run[0]
        parts.append(run)
    return np.concatenate(parts).astype(np.uint32) if parts else np.zeros(0, dtype=np.uint32)
