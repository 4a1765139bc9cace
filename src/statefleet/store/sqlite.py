"""``sqlite:///path/state.db``: the embedded default. One file, shared by several processes on one machine.

Each method is one SQLite transaction: a write (``BEGIN IMMEDIATE``, so writers queue on the file lock
instead of failing on a lock upgrade) loads the conversation's record, applies the reference rules of
``_records`` and writes back what changed. All sqlite3 calls of a store run on one dedicated thread, which
owns the connection; the event loop only waits. WAL lets readers run beside the single writer, and
``busy_timeout`` makes processes wait for each other rather than fail with "database is locked".

The URL follows SQLAlchemy: ``sqlite:///state.db`` is relative to the working directory,
``sqlite:////var/lib/statefleet/state.db`` is absolute.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import logging
import random
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from ..errors import InvalidStoreUrl, StoreUnavailable
from . import _records
from .base import (
    Acceptance,
    CommitOutcome,
    ConversationKey,
    ConversationView,
    Event,
    InboundMessage,
    JSONObject,
    Lease,
    Limits,
    Policy,
    Receipt,
    RenewOutcome,
    Routing,
    TurnCommit,
    WorkItem,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: How long a transaction waits for another process's write lock before the store counts as unavailable.
BUSY_TIMEOUT = 10.0
#: Expired conversations, receipts and event logs are swept this often (seconds)...
CLEANUP_INTERVAL = 5.0
#: ...at most this many of each per transaction, so a sweep never holds the write lock for long; a sweep that
#: filled a batch runs again before the next write instead of waiting an interval, so cleanup keeps up with
#: any write rate (each write transaction pays for at most one batch).
CLEANUP_BATCH = 500
SCHEMA_VERSION = 1

# Leases and inbox live in their own columns and rows so that a turn reads and writes O(window) data.
# `hint` is the lease-expiry hint the sweeper scans (`expired_leases`): NULL when there is nothing to reclaim.
# Conversations keep a rowid: their rows carry a whole history window, too big for WITHOUT ROWID.
# Event ids come from an AUTOINCREMENT key, so an id is never reused and `Last-Event-ID` resumes safely.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    tenant TEXT NOT NULL, id TEXT NOT NULL,
    version TEXT NOT NULL, turns INTEGER NOT NULL, history TEXT NOT NULL, state TEXT NOT NULL,
    created REAL NOT NULL, active REAL NOT NULL, expires REAL NOT NULL,
    lease_owner TEXT, lease_token INTEGER NOT NULL, lease_expires REAL NOT NULL,
    fence INTEGER NOT NULL, interrupt TEXT, attempts INTEGER NOT NULL, hint REAL,
    PRIMARY KEY (tenant, id)
);
CREATE INDEX IF NOT EXISTS conversations_hint ON conversations (hint) WHERE hint IS NOT NULL;
CREATE INDEX IF NOT EXISTS conversations_expires ON conversations (expires);
CREATE TABLE IF NOT EXISTS inbox (
    seq INTEGER PRIMARY KEY, tenant TEXT NOT NULL, id TEXT NOT NULL, message TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS inbox_conversation ON inbox (tenant, id, seq);
CREATE TABLE IF NOT EXISTS receipts (
    tenant TEXT NOT NULL, id TEXT NOT NULL, name TEXT NOT NULL, body TEXT NOT NULL, expires REAL NOT NULL,
    PRIMARY KEY (tenant, id, name)
);
CREATE INDEX IF NOT EXISTS receipts_expires ON receipts (expires);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, tenant TEXT NOT NULL, id TEXT NOT NULL,
    type TEXT NOT NULL, data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_conversation ON events (tenant, id, seq);
CREATE TABLE IF NOT EXISTS event_logs (
    tenant TEXT NOT NULL, id TEXT NOT NULL, expires REAL NOT NULL, PRIMARY KEY (tenant, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS event_logs_expires ON event_logs (expires);
CREATE TABLE IF NOT EXISTS instances (
    id TEXT PRIMARY KEY, info TEXT NOT NULL, expires REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS fleet (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS routing_log (revision INTEGER PRIMARY KEY, entry TEXT NOT NULL);
"""

_RECORD_COLUMNS = (
    "version, turns, history, state, created, active, lease_owner, lease_token, lease_expires, fence, "
    "interrupt, attempts"
)


def parse_url(url: str) -> Path:
    """The database path of a ``sqlite:///relative`` or ``sqlite:////absolute`` URL."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "sqlite":
        raise InvalidStoreUrl(f"store URL {url!r} is not a sqlite:// URL")
    if parts.netloc:
        raise InvalidStoreUrl(
            f"sqlite store URL {url!r} names a host ({parts.netloc!r}); SQLite is a local file: "
            "use three slashes, as in sqlite:///state.db or sqlite:////var/lib/statefleet/state.db"
        )
    if parts.query or parts.fragment:
        raise InvalidStoreUrl(f"sqlite store URL {url!r} takes no query or fragment; give only the path")
    path = unquote(parts.path[1:])  # the path after the third slash; a fourth slash makes it absolute
    if not path or path.endswith("/"):
        raise InvalidStoreUrl(
            f"sqlite store URL {url!r} has no file path; use sqlite:///state.db (relative) "
            "or sqlite:////var/lib/statefleet/state.db (absolute)"
        )
    return Path(path)


def _message_json(message: InboundMessage) -> str:
    return json.dumps(dataclasses.asdict(message), separators=(",", ":"))


def _receipt_json(receipt: Receipt) -> str:
    return json.dumps(dataclasses.asdict(receipt), separators=(",", ":"))


def _receipt_from(body: str) -> Receipt:
    return Receipt(**json.loads(body))


@dataclasses.dataclass(slots=True)
class _Loaded:
    """A record as read, with the inbox rows it came from (to write back only what changed)."""

    record: _records.Record
    inbox_seqs: list[int]
    inbox_ids: list[str]


# -- SQL on the worker thread ------------------------------------------------------------------------------
# Plain functions of a connection: they run inside a transaction the caller opened.


def _purge(conn: sqlite3.Connection, key: ConversationKey) -> None:
    args = (key.tenant, key.id)
    for table in ("conversations", "inbox", "receipts", "events", "event_logs"):
        conn.execute(f"DELETE FROM {table} WHERE tenant = ? AND id = ?", args)


def _load(conn: sqlite3.Connection, key: ConversationKey, now: float) -> _Loaded | None:
    """The live record of ``key``; an expired one is deleted here and reads as absent."""
    row = conn.execute(
        f"SELECT {_RECORD_COLUMNS}, expires FROM conversations WHERE tenant = ? AND id = ?",
        (key.tenant, key.id),
    ).fetchone()
    if row is None:
        return None
    if row[12] <= now:
        _purge(conn, key)
        return None
    seqs: list[int] = []
    inbox: deque[InboundMessage] = deque()
    for seq, body in conn.execute(
        "SELECT seq, message FROM inbox WHERE tenant = ? AND id = ? ORDER BY seq", (key.tenant, key.id)
    ):
        seqs.append(seq)
        inbox.append(InboundMessage(**json.loads(body)))
    record = _records.Record(
        version=row[0], turns=row[1], history=json.loads(row[2]), state_json=row[3],
        created_at=row[4], active_at=row[5], lease_owner=row[6], lease_token=row[7],
        lease_expires=row[8], fence=row[9], interrupt=row[10], attempts=row[11], inbox=inbox,
    )
    return _Loaded(record, seqs, [m.id for m in inbox])


def _get_receipt(conn: sqlite3.Connection, key: ConversationKey, name: str, now: float) -> Receipt | None:
    row = conn.execute(
        "SELECT body FROM receipts WHERE tenant = ? AND id = ? AND name = ? AND expires > ?",
        (key.tenant, key.id, name, now),
    ).fetchone()
    return None if row is None else _receipt_from(row[0])


def _save_record(
    conn: sqlite3.Connection,
    key: ConversationKey,
    loaded: _Loaded | None,
    record: _records.Record,
    expires: float | None,
) -> None:
    """Write ``record`` back; ``expires`` None keeps the stored expiry (a release does not refresh the TTL)."""
    values = (
        record.version, record.turns, json.dumps(record.history, separators=(",", ":")), record.state_json,
        record.created_at, record.active_at, record.lease_owner, record.lease_token, record.lease_expires,
        record.fence, record.interrupt, record.attempts,
    )
    if loaded is None:
        assert expires is not None
        conn.execute(
            f"INSERT INTO conversations (tenant, id, {_RECORD_COLUMNS}, expires) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (key.tenant, key.id, *values, expires),
        )
    else:
        conn.execute(
            "UPDATE conversations SET version = ?, turns = ?, history = ?, state = ?, created = ?, active = ?, "
            "lease_owner = ?, lease_token = ?, lease_expires = ?, fence = ?, interrupt = ?, attempts = ?, "
            "expires = coalesce(?, expires) WHERE tenant = ? AND id = ?",
            (*values, expires, key.tenant, key.id),
        )
    _save_inbox(conn, key, loaded, record)


def _save_inbox(
    conn: sqlite3.Connection, key: ConversationKey, loaded: _Loaded | None, record: _records.Record
) -> None:
    # The rules only pop from the head and append at the tail, and message ids are unique, so the new inbox
    # is a suffix of the old one followed by new messages.
    old_ids = loaded.inbox_ids if loaded is not None else []
    new_ids = [m.id for m in record.inbox]
    popped = len(old_ids)
    if new_ids and new_ids[0] in old_ids:
        popped = old_ids.index(new_ids[0])
    kept = len(old_ids) - popped
    if new_ids[:kept] != old_ids[popped:]:
        raise AssertionError(f"inbox of {key} changed other than at its ends")
    if popped:
        assert loaded is not None
        conn.execute(
            "DELETE FROM inbox WHERE tenant = ? AND id = ? AND seq <= ?",
            (key.tenant, key.id, loaded.inbox_seqs[popped - 1]),
        )
    conn.executemany(
        "INSERT INTO inbox (tenant, id, message) VALUES (?, ?, ?)",
        [(key.tenant, key.id, _message_json(m)) for m in list(record.inbox)[kept:]],
    )


def _append_events(
    conn: sqlite3.Connection, key: ConversationKey, events: Iterable[JSONObject], limits: Limits, now: float
) -> None:
    args = (key.tenant, key.id)
    row = conn.execute("SELECT expires FROM event_logs WHERE tenant = ? AND id = ?", args).fetchone()
    if row is not None and row[0] <= now:
        conn.execute("DELETE FROM events WHERE tenant = ? AND id = ?", args)  # the whole log expired
    rows = []
    for data in events:
        body = dict(data)
        rows.append((key.tenant, key.id, str(body.pop("type")), json.dumps(body, separators=(",", ":"))))
    conn.executemany("INSERT INTO events (tenant, id, type, data) VALUES (?, ?, ?, ?)", rows)
    # Keep the newest `events_max`: find the seq of the first one too old, and drop it and all before it.
    cut = conn.execute(
        "SELECT seq FROM events WHERE tenant = ? AND id = ? ORDER BY seq DESC LIMIT 1 OFFSET ?",
        (*args, limits.events_max),
    ).fetchone()
    if cut is not None:
        conn.execute("DELETE FROM events WHERE tenant = ? AND id = ? AND seq <= ?", (*args, cut[0]))
    conn.execute(
        "INSERT INTO event_logs (tenant, id, expires) VALUES (?, ?, ?) "
        "ON CONFLICT (tenant, id) DO UPDATE SET expires = excluded.expires",
        (*args, now + limits.events_ttl),
    )


def _apply(
    conn: sqlite3.Connection,
    key: ConversationKey,
    loaded: _Loaded | None,
    record: _records.Record | None,
    fx: _records.Effects,
    limits: Limits | None,
    now: float,
) -> None:
    """Write what one rule step changed: the record, then receipts, events and the lease hint."""
    if record is not None:
        _save_record(conn, key, loaded, record, None if limits is None else now + limits.conversation_ttl)
    for write in fx.receipts:
        body = _receipt_json(write.receipt)
        ttl = write.ttl
        if write.ttl_if_new is not None:
            updated = conn.execute(
                "UPDATE receipts SET body = ?, expires = ? WHERE tenant = ? AND id = ? AND name = ? "
                "AND expires > ?",
                (body, now + write.ttl, key.tenant, key.id, write.name, now),
            ).rowcount
            if updated:
                continue
            ttl = write.ttl_if_new
        conn.execute(
            "INSERT OR REPLACE INTO receipts (tenant, id, name, body, expires) VALUES (?, ?, ?, ?, ?)",
            (key.tenant, key.id, write.name, body, now + ttl),
        )
    if fx.events:
        assert limits is not None
        _append_events(conn, key, fx.events, limits, now)
    if fx.hint is not None or fx.drop_hint:
        conn.execute(
            "UPDATE conversations SET hint = ? WHERE tenant = ? AND id = ?", (fx.hint, key.tenant, key.id)
        )


def _cleanup(conn: sqlite3.Connection, now: float) -> bool:
    """Delete a bounded batch of whatever expired and nobody touched since (lazy deletion misses those).

    Returns True when a batch was full: more may be left.
    """
    conversations = conn.execute(
        "SELECT tenant, id FROM conversations WHERE expires <= ? LIMIT ?", (now, CLEANUP_BATCH)
    ).fetchall()
    for tenant, conversation in conversations:
        _purge(conn, ConversationKey(tenant, conversation))
    receipts = conn.execute(
        "DELETE FROM receipts WHERE rowid IN (SELECT rowid FROM receipts WHERE expires <= ? LIMIT ?)",
        (now, CLEANUP_BATCH),
    ).rowcount
    logs = conn.execute(
        "SELECT tenant, id FROM event_logs WHERE expires <= ? LIMIT ?", (now, CLEANUP_BATCH)
    ).fetchall()
    for tenant, conversation in logs:
        conn.execute("DELETE FROM events WHERE tenant = ? AND id = ?", (tenant, conversation))
        conn.execute("DELETE FROM event_logs WHERE tenant = ? AND id = ?", (tenant, conversation))
    return max(len(conversations), receipts, len(logs)) >= CLEANUP_BATCH


def _lease_row(conn: sqlite3.Connection, key: ConversationKey, lease: Lease, now: float) -> tuple[Any, ...] | None:
    """The conversation's (interrupt, attempts) if ``lease`` is current, without reading history or inbox."""
    row: tuple[Any, ...] | None = conn.execute(
        "SELECT interrupt, attempts FROM conversations WHERE tenant = ? AND id = ? AND expires > ? "
        "AND lease_owner = ? AND lease_token = ?",
        (key.tenant, key.id, now, lease.owner, lease.token),
    ).fetchone()
    return row


def _routing(conn: sqlite3.Connection) -> Routing:
    row = conn.execute("SELECT value FROM fleet WHERE name = 'routing'").fetchone()
    if row is None:
        return Routing({}, 0)
    value = json.loads(row[0])
    return Routing(value["weights"], value["revision"])


def _connect(path: Path) -> sqlite3.Connection:
    if str(path) != ":memory:":
        path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None)
    try:
        # busy_timeout first: switching to WAL and creating the schema take locks another process may hold.
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT * 1000)}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("BEGIN IMMEDIATE")
        try:
            if conn.execute("PRAGMA user_version").fetchone()[0] > SCHEMA_VERSION:
                raise StoreUnavailable(
                    f"SQLite store {str(path)!r} was written by a newer statefleet (schema "
                    f"{conn.execute('PRAGMA user_version').fetchone()[0]}); upgrade statefleet"
                )
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    except BaseException:
        conn.close()
        raise
    return conn


def _connect_with_retry(path: Path) -> sqlite3.Connection:
    """``_connect``, retried: switching a new file to WAL fails at once (busy_timeout does not apply) while
    another process is creating the same file."""
    deadline = time.monotonic() + BUSY_TIMEOUT
    while True:
        try:
            return _connect(path)
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01 + random.random() * 0.04)


class SQLiteStore:
    """State in one SQLite file; safe to share between processes and between stores of one process.

    >>> store = await SQLiteStore.open("sqlite:////var/lib/statefleet/state.db")
    """

    def __init__(self, path: Path, executor: ThreadPoolExecutor, conn: sqlite3.Connection) -> None:
        self.path = path
        self._executor = executor
        self._conn = conn
        self._closed = False
        self._next_cleanup = 0.0
        self._clock = time.time

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    @classmethod
    async def open(cls, url: str) -> SQLiteStore:
        """Open (creating if needed) the database file of ``url``, e.g. ``sqlite:///state.db``."""
        path = parse_url(url)
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="statefleet-sqlite")
        try:
            # The connection is made on the thread that will use it for its whole life.
            conn = await asyncio.get_running_loop().run_in_executor(executor, _connect_with_retry, path)
        except (OSError, sqlite3.Error) as exc:
            executor.shutdown(wait=False)
            raise StoreUnavailable(f"cannot open SQLite store {str(path)!r}: {exc}") from exc
        except BaseException:
            executor.shutdown(wait=False)
            raise
        logger.debug("opened SQLite store %r", str(path))
        return cls(path, executor, conn)

    # -- running on the worker thread ----------------------------------------------------------------------

    async def _call(self, fn: Callable[[], T]) -> T:
        if self._closed:
            raise StoreUnavailable(f"SQLite store {str(self.path)!r} is closed")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn)
        except sqlite3.IntegrityError:
            raise  # a bug in this module, not an unavailable store
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite store {str(self.path)!r} failed: {exc}") from exc

    def _transaction(self, body: Callable[[sqlite3.Connection, float], T], *, write: bool) -> T:
        conn = self._conn
        if write:
            self._maybe_cleanup()
        conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            # Read the clock only once the lock is ours: waiting for it may have taken a while.
            result = body(conn, self._clock())
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return result

    def _maybe_cleanup(self) -> None:
        now = self._clock()
        if now < self._next_cleanup:
            return
        self._next_cleanup = now + CLEANUP_INTERVAL
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            if _cleanup(self._conn, self._clock()):
                self._next_cleanup = now  # more expired rows are left: another batch before the next write
            self._conn.execute("COMMIT")
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise

    async def _write(self, body: Callable[[sqlite3.Connection, float], T]) -> T:
        return await self._call(functools.partial(self._transaction, body, write=True))

    async def _read(self, body: Callable[[sqlite3.Connection, float], T]) -> T:
        return await self._call(functools.partial(self._transaction, body, write=False))

    # -- Store ---------------------------------------------------------------------------------------------

    async def accept(
        self,
        key: ConversationKey,
        message: InboundMessage,
        *,
        version: str,
        owner: str,
        policy: Policy,
        limits: Limits,
        new_version: str | None = None,
    ) -> Acceptance:
        def body(conn: sqlite3.Connection, now: float) -> Acceptance:
            loaded = _load(conn, key, now)
            existing = None
            if message.idempotency_key is not None:
                name = _records.receipt_name_for_key(message.idempotency_key)
                existing = _get_receipt(conn, key, name, now)
            acceptance, record, fx = _records.accept(
                loaded.record if loaded else None, existing, key, message,
                version=version, owner=owner, policy=policy, limits=limits, now=now, new_version=new_version,
            )
            _apply(conn, key, loaded, record, fx, limits, now)
            return acceptance

        return await self._write(body)

    async def commit(self, lease: Lease, commit: TurnCommit, *, limits: Limits) -> CommitOutcome:
        def body(conn: sqlite3.Connection, now: float) -> CommitOutcome:
            loaded = _load(conn, lease.key, now)
            outcome, record, fx = _records.commit(
                loaded.record if loaded else None, lease, commit, limits=limits, now=now
            )
            _apply(conn, lease.key, loaded, record, fx, limits, now)
            return outcome

        return await self._write(body)

    # renew and release touch only the lease columns: a heartbeat never reads the history or the inbox (the
    # rules are those of _records.renew / _records.release, which the contract suite holds all stores to).

    async def renew(self, lease: Lease, *, limits: Limits) -> RenewOutcome:
        key = lease.key

        def body(conn: sqlite3.Connection, now: float) -> RenewOutcome:
            row = _lease_row(conn, key, lease, now)
            if row is None:
                return RenewOutcome(kept=False)
            expires = now + limits.lease_ttl
            conn.execute(
                "UPDATE conversations SET lease_expires = ?, hint = ?, expires = ? WHERE tenant = ? AND id = ?",
                (expires, expires, now + limits.conversation_ttl, key.tenant, key.id),
            )
            return RenewOutcome(kept=True, interrupt=row[0] is not None)

        return await self._write(body)

    async def release(self, lease: Lease, *, started: bool = True) -> None:
        key = lease.key

        def body(conn: sqlite3.Connection, now: float) -> None:
            row = _lease_row(conn, key, lease, now)
            if row is None:
                return
            pending = conn.execute(
                "SELECT 1 FROM inbox WHERE tenant = ? AND id = ? LIMIT 1", (key.tenant, key.id)
            ).fetchone()
            attempts = row[1] if started else max(0, row[1] - 1)
            conn.execute(
                "UPDATE conversations SET lease_owner = NULL, lease_expires = 0, interrupt = NULL, attempts = ?, "
                "hint = ? WHERE tenant = ? AND id = ?",
                (attempts, 0.0 if pending else None, key.tenant, key.id),
            )

        await self._write(body)

    async def reclaim(
        self, key: ConversationKey, *, owner: str, limits: Limits, version: str | None = None
    ) -> WorkItem | None:
        def body(conn: sqlite3.Connection, now: float) -> WorkItem | None:
            loaded = _load(conn, key, now)
            work, record, fx, _failed = _records.reclaim(
                loaded.record if loaded else None, key, owner=owner, limits=limits, now=now, version=version
            )
            _apply(conn, key, loaded, record, fx, limits, now)
            return work

        return await self._write(body)

    async def expired_leases(self, limit: int, *, version: str | None = None) -> list[ConversationKey]:
        def body(conn: sqlite3.Connection, now: float) -> list[ConversationKey]:
            rows = conn.execute(
                "SELECT tenant, id FROM conversations WHERE hint IS NOT NULL AND hint <= ? "
                "AND (? IS NULL OR version = ?) ORDER BY hint LIMIT ?",
                (now, version, version, limit),
            )
            return [ConversationKey(tenant, conversation) for tenant, conversation in rows]

        return await self._read(body)

    async def receipt(self, key: ConversationKey, *, message_id: str) -> Receipt | None:
        name = _records.receipt_name_for_message(message_id)
        return await self._read(lambda conn, now: _get_receipt(conn, key, name, now))

    async def load(self, key: ConversationKey) -> ConversationView | None:
        def body(conn: sqlite3.Connection, now: float) -> ConversationView | None:
            row: Any = conn.execute(
                f"SELECT {_RECORD_COLUMNS} FROM conversations "
                "WHERE tenant = ? AND id = ? AND expires > ?",
                (key.tenant, key.id, now),
            ).fetchone()
            if row is None:
                return None
            (pending,) = conn.execute(
                "SELECT count(*) FROM inbox WHERE tenant = ? AND id = ?", (key.tenant, key.id)
            ).fetchone()
            record = _records.Record(
                version=row[0], turns=row[1], history=json.loads(row[2]), state_json=row[3],
                created_at=row[4], active_at=row[5], lease_owner=row[6], lease_expires=row[8],
            )
            return dataclasses.replace(_records.view(key, record, now), pending=pending)

        return await self._read(body)

    async def delete(self, key: ConversationKey) -> bool:
        def body(conn: sqlite3.Connection, now: float) -> bool:
            existed = _load(conn, key, now) is not None
            _purge(conn, key)
            return existed

        return await self._write(body)

    async def append_events(self, batches: Mapping[ConversationKey, list[JSONObject]], *, limits: Limits) -> None:
        if not batches:
            return
        batches = dict(batches)  # the transaction runs in another thread

        def body(conn: sqlite3.Connection, now: float) -> None:
            for key, events in batches.items():
                _append_events(conn, key, events, limits, now)

        await self._write(body)

    async def read_events(self, key: ConversationKey, *, after: str | None, limit: int) -> list[Event]:
        floor = int(after) if after else 0

        def body(conn: sqlite3.Connection, now: float) -> list[Event]:
            args = (key.tenant, key.id)
            live = conn.execute(
                "SELECT 1 FROM event_logs WHERE tenant = ? AND id = ? AND expires > ?", (*args, now)
            ).fetchone()
            if live is None:
                return []
            rows = conn.execute(
                "SELECT seq, type, data FROM events WHERE tenant = ? AND id = ? AND seq > ? ORDER BY seq "
                "LIMIT ?",
                (*args, floor, limit),
            )
            return [Event(str(seq), kind, json.loads(data)) for seq, kind, data in rows]

        return await self._read(body)

    async def backlog(self, version: str | None = None) -> int:
        if version is None:
            return int(await self._read(lambda conn, now: conn.execute(
                "SELECT COUNT(*) FROM (SELECT DISTINCT tenant, id FROM inbox)").fetchone()[0]))
        return int(await self._read(lambda conn, now: conn.execute(
            "SELECT COUNT(*) FROM conversations c WHERE c.version = ? AND EXISTS "
            "(SELECT 1 FROM inbox i WHERE i.tenant = c.tenant AND i.id = c.id)", (version,)).fetchone()[0]))

    async def pinned_conversations(self) -> dict[str, int]:
        def body(conn: sqlite3.Connection, now: float) -> dict[str, int]:
            rows = conn.execute("SELECT version, COUNT(*) FROM conversations WHERE expires > ? GROUP BY version",
                                (now,))
            return {str(version): int(count) for version, count in rows}

        return await self._read(body)

    async def routing(self) -> Routing:
        return await self._read(lambda conn, now: _routing(conn))

    async def set_routing(
        self, weights: Mapping[str, int], *, expected_revision: int | None, change: JSONObject, log_max: int
    ) -> Routing:
        def body(conn: sqlite3.Connection, now: float) -> Routing:
            routing, entry = _records.change_routing(_routing(conn), weights, expected_revision, change)
            conn.execute("INSERT OR REPLACE INTO fleet (name, value) VALUES ('routing', ?)",
                         (json.dumps({"weights": routing.weights, "revision": routing.revision}),))
            conn.execute("INSERT INTO routing_log (revision, entry) VALUES (?, ?)",
                         (routing.revision, json.dumps(entry)))
            conn.execute("DELETE FROM routing_log WHERE revision <= ?", (routing.revision - max(1, log_max),))
            return routing

        return await self._write(body)

    async def routing_log(self, limit: int) -> list[JSONObject]:
        def body(conn: sqlite3.Connection, now: float) -> list[JSONObject]:
            rows = conn.execute("SELECT entry FROM routing_log ORDER BY revision DESC LIMIT ?", (max(0, limit),))
            return [json.loads(entry) for (entry,) in rows]

        return await self._read(body)

    async def repair_hints(self, owner: str) -> int:
        return 0  # nothing to repair: leases are found by a query over the conversations themselves

    async def register_instance(self, instance_id: str, info: JSONObject, *, ttl: float) -> None:
        text = json.dumps(info)
        await self._write(lambda conn, now: conn.execute(
            "INSERT INTO instances (id, info, expires) VALUES (?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET info = excluded.info, expires = excluded.expires",
            (instance_id, text, now + ttl),
        ))

    async def deregister_instance(self, instance_id: str) -> None:
        await self._write(lambda conn, now: conn.execute("DELETE FROM instances WHERE id = ?", (instance_id,)))

    async def instances(self) -> list[JSONObject]:
        def body(conn: sqlite3.Connection, now: float) -> list[JSONObject]:
            rows = conn.execute("SELECT info FROM instances WHERE expires > ? ORDER BY id", (now,))
            return [json.loads(info) for (info,) in rows]

        return await self._read(body)

    async def fleet_epoch(self, candidate: str) -> str:
        def body(conn: sqlite3.Connection, now: float) -> str:
            conn.execute("INSERT OR IGNORE INTO fleet (name, value) VALUES ('epoch', ?)", (candidate,))
            return str(conn.execute("SELECT value FROM fleet WHERE name = 'epoch'").fetchone()[0])

        return await self._write(body)

    async def ping(self) -> None:
        await self._read(lambda conn, now: conn.execute("SELECT 1").fetchone())

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._conn.close)
        finally:
            self._executor.shutdown(wait=False)
