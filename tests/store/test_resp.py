"""The pipelined connection against a real redis-server: ordering, per-call timeouts, retirement, WAIT."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio import Redis

from statefleet.store._resp import (
    ConnectionClosed,
    PipelinedConnection,
    ReplicaAckMissing,
    ReplyError,
    ReplyTimeout,
)
from statefleet.testing import LocalRedisServer, free_port

#: A Lua script that keeps Redis busy for ARGV[1] milliseconds (nothing else is served meanwhile).
BUSY_LUA = """
local t = redis.call('TIME')
local until_us = t[1] * 1000000 + t[2] + ARGV[1] * 1000
repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] >= until_us
return 'slept'
"""


@pytest.fixture(scope="module")
def server() -> Iterator[LocalRedisServer]:
    with LocalRedisServer("--enable-debug-command", "local") as started:
        yield started


@pytest.fixture
async def conn(server: LocalRedisServer) -> AsyncIterator[PipelinedConnection]:
    server.resume()
    opened = await PipelinedConnection.connect(port=server.port, connect_timeout=2, reply_timeout=0.5)
    yield opened
    opened.close()


async def client_count(server: LocalRedisServer) -> int:
    client = Redis(port=server.port)
    try:
        return len(await client.client_list()) - 1  # without this one
    finally:
        await client.aclose()


async def test_replies_resolve_their_own_calls_in_order(conn: PipelinedConnection) -> None:
    replies = await asyncio.gather(*[conn.execute("ECHO", f"m{i}") for i in range(1000)])

    assert replies == [f"m{i}" for i in range(1000)]


async def test_an_error_reply_fails_only_its_call(conn: PipelinedConnection) -> None:
    results: list[object] = await asyncio.gather(
        conn.execute("ECHO", "a"), conn.execute("NOSUCHCOMMAND"), conn.execute("ECHO", "b"), return_exceptions=True
    )
    ok, bad, after = results

    assert [ok, after] == ["a", "b"]
    assert isinstance(bad, ReplyError) and "unknown command" in str(bad)


async def test_a_slow_reply_fails_only_the_calls_that_waited_past_their_timeout(conn: PipelinedConnection) -> None:
    # Given a command that keeps Redis busy for 1.2 s, on a connection whose reply timeout is 0.5 s
    started = time.monotonic()
    slow = conn.execute("DEBUG", "SLEEP", "1.2")
    await asyncio.sleep(0.1)
    # When a call with the default timeout and one with a 5 s timeout queue up behind it
    short = conn.execute("ECHO", "short")
    patient = conn.execute("ECHO", "patient", timeout=5)

    # Then the slow one and the short one fail alone, each after its own timeout
    with pytest.raises(ReplyTimeout, match=r"did not reply within 0\.5 s"):
        await slow
    failed_after = time.monotonic() - started
    with pytest.raises(ReplyTimeout):
        await short
    # and the patient one gets its own reply once Redis is free, the late replies being discarded
    assert await patient == "patient"
    assert 0.5 <= failed_after < 1.2
    # and the connection, late by less than its dead limit (1.5 s), carries on
    assert not conn.closed
    assert await conn.execute("ECHO", "next") == "next"


async def test_a_slow_script_delays_a_later_call_without_failing_it(conn: PipelinedConnection) -> None:
    slow = conn.execute("EVAL", BUSY_LUA, 0, 800)
    later = conn.execute("ECHO", "later", timeout=3)

    with pytest.raises(ReplyTimeout):
        await slow
    assert await later == "later"


async def test_a_late_connection_is_retired_and_closes_once_its_last_waiter_is_done(server: LocalRedisServer) -> None:
    conn = await PipelinedConnection.connect(port=server.port, connect_timeout=2, reply_timeout=0.3)
    try:
        # Given a frozen Redis and a call that will wait 3 s for its reply
        baseline = await client_count(server)
        server.pause()
        first = conn.execute("ECHO", "first")
        patient = conn.execute("ECHO", "patient", timeout=3)
        with pytest.raises(ReplyTimeout):
            await first
        # When the oldest reply is later than 3x the reply timeout
        await asyncio.sleep(1.0)
        # Then the connection takes no new call, but the patient call still waits for its reply
        assert conn.closed
        with pytest.raises(ConnectionClosed, match="retired"):
            await conn.execute("PING")
        assert not patient.done()
        server.resume()
        assert await patient == "patient"
        # and the connection then closes itself
        await asyncio.sleep(0.1)
        assert await client_count(server) == baseline - 1
    finally:
        server.resume()
        conn.close()


async def test_calls_on_a_frozen_server_time_out_one_by_one_and_late_replies_are_discarded(
    conn: PipelinedConnection, server: LocalRedisServer
) -> None:
    server.pause()
    try:
        early = conn.execute("ECHO", "early")
        await asyncio.sleep(0.3)
        late = conn.execute("ECHO", "late", timeout=2)
        with pytest.raises(ReplyTimeout):
            await early
        assert not late.done()
    finally:
        server.resume()
    # The reply to "early" arrives first and is dropped: "late" gets its own.
    assert await late == "late"


async def test_a_dropped_connection_fails_every_waiter(server: LocalRedisServer) -> None:
    other = LocalRedisServer()
    conn = await PipelinedConnection.connect(port=other.port, connect_timeout=2, reply_timeout=5)
    try:
        other.pause()
        calls = [conn.execute("PING") for _ in range(10)]
        other.proc.kill()
        other.proc.wait()
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert all(isinstance(r, ConnectionClosed) and not isinstance(r, ReplyTimeout) for r in results)
        assert conn.closed
    finally:
        conn.close()
        other.stop()


async def test_connecting_to_nothing_or_to_a_frozen_server_fails_within_the_connect_timeout(
    server: LocalRedisServer,
) -> None:
    with pytest.raises(ConnectionClosed, match="cannot connect"):
        await PipelinedConnection.connect(port=free_port(), connect_timeout=1, reply_timeout=1)
    server.pause()
    try:
        started = time.monotonic()
        with pytest.raises(ConnectionClosed, match=r"within 0\.3 s"):
            await PipelinedConnection.connect(port=server.port, connect_timeout=0.3, reply_timeout=5,
                                              handshake=[("PING",)])
        assert time.monotonic() - started < 1
    finally:
        server.resume()


async def test_a_refused_handshake_raises_its_reply_error(server: LocalRedisServer) -> None:
    with pytest.raises(ReplyError, match="AUTH"):
        await PipelinedConnection.connect(port=server.port, connect_timeout=1, reply_timeout=1,
                                          handshake=[("AUTH", "wrong")])


# -- WAIT ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def replicated() -> Iterator[tuple[LocalRedisServer, LocalRedisServer]]:
    # The primary syncs a new replica at once, not after the default 5 s wait for more of them.
    with LocalRedisServer("--repl-diskless-sync-delay", "0") as primary, \
            LocalRedisServer(replica_of=primary.port) as replica:
        deadline = time.monotonic() + 10
        while b"master_link_status:up" not in _info(replica):
            assert time.monotonic() < deadline, "the replica did not connect to its primary"
            time.sleep(0.05)
        yield primary, replica


def _info(server: LocalRedisServer) -> bytes:
    import socket

    with socket.create_connection(("127.0.0.1", server.port), timeout=2) as sock:
        sock.sendall(b"INFO replication\r\n")
        time.sleep(0.05)
        return sock.recv(65536)


async def test_writes_wait_for_the_replica_acknowledgement(
    replicated: tuple[LocalRedisServer, LocalRedisServer],
) -> None:
    primary, replica = replicated
    replica.resume()
    conn = await PipelinedConnection.connect(port=primary.port, connect_timeout=2, reply_timeout=5,
                                             wait_replicas=1, wait_timeout_ms=2000)
    try:
        replies = await asyncio.gather(*[conn.execute("SET", f"k{i}", i) for i in range(100)])
        assert replies == ["OK"] * 100
        # Acknowledged means on the replica already.
        mirror = Redis(port=replica.port, decode_responses=True)
        assert await mirror.get("k99") == "99"
        await mirror.aclose()
        # Error replies still reach their callers as errors.
        with pytest.raises(ReplyError, match="unknown command"):
            await conn.execute("NOSUCHCOMMAND")
    finally:
        conn.close()


async def test_a_batch_the_replica_did_not_acknowledge_fails_with_replica_ack_missing(
    replicated: tuple[LocalRedisServer, LocalRedisServer],
) -> None:
    primary, replica = replicated
    conn = await PipelinedConnection.connect(port=primary.port, connect_timeout=2, reply_timeout=5,
                                             wait_replicas=1, wait_timeout_ms=300)
    replica.pause()
    try:
        started = time.monotonic()
        results = await asyncio.gather(*[conn.execute("INCR", "counter") for _ in range(5)], return_exceptions=True)
        assert all(isinstance(r, ReplicaAckMissing) for r in results), results
        assert "acknowledged by only 0 of 1 replicas within 300 ms" in str(results[0])
        assert "may be lost if the primary fails" in str(results[0])
        assert time.monotonic() - started >= 0.3
    finally:
        replica.resume()
        conn.close()


async def test_more_replicas_asked_than_exist_fail_every_write(
    replicated: tuple[LocalRedisServer, LocalRedisServer],
) -> None:
    primary, replica = replicated
    replica.resume()
    conn = await PipelinedConnection.connect(port=primary.port, connect_timeout=2, reply_timeout=5,
                                             wait_replicas=2, wait_timeout_ms=100)
    try:
        with pytest.raises(ReplicaAckMissing, match="only 1 of 2 replicas"):
            await conn.execute("SET", "x", "1")
    finally:
        conn.close()
