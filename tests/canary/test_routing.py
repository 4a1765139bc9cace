"""Routing weights: the stable pick of a new conversation's version, weight specs, and changing them."""

from __future__ import annotations

import hashlib
from collections import Counter

import pytest

from statefleet.errors import ConfigError, RoutingConflict
from statefleet.routing import BUCKETS, apply_weight_specs, bucket_of, check_weights, pick_version, set_weights
from statefleet.store.memory import MemoryStore


def test_the_bucket_is_the_documented_hash() -> None:
    digest = hashlib.sha256(b"acme/alice123").digest()
    assert bucket_of("acme", "alice123") == int.from_bytes(digest[:8], "big") % BUCKETS


def test_versions_take_consecutive_bucket_ranges_in_name_order() -> None:
    ids = [f"c{n}" for n in range(20_000)]
    picks = {i: pick_version({"v2": 10, "v1": 90}, "t", i) for i in ids}
    for i, version in picks.items():
        assert version == ("v1" if bucket_of("t", i) < 9000 else "v2")
    share = Counter(picks.values())["v2"] / len(ids)
    assert 0.09 < share < 0.11


def test_raising_a_weight_moves_only_new_ids_toward_it() -> None:
    # A conversation picked for v2 at 10% is still v2 at 25%: raising a canary never moves an id away from it.
    ids = [f"c{n}" for n in range(5000)]
    at_10 = {i for i in ids if pick_version({"v1": 90, "v2": 10}, "t", i) == "v2"}
    at_25 = {i for i in ids if pick_version({"v1": 75, "v2": 25}, "t", i) == "v2"}
    assert at_10 < at_25


def test_no_weight_no_pick() -> None:
    assert pick_version({}, "t", "c") is None
    assert pick_version({"v1": 0}, "t", "c") is None
    assert pick_version({"v1": 0, "v2": 100}, "t", "c") == "v2"


@pytest.mark.parametrize(("specs", "current", "expected"), [
    (["v2=10"], {"v1": 100}, {"v1": 90, "v2": 10}),
    (["v2=25"], {"v1": 90, "v2": 10}, {"v1": 75, "v2": 25}),
    (["v2=100"], {"v1": 90, "v2": 10}, {"v1": 0, "v2": 100}),
    (["v1=50", "v2=50"], {}, {"v1": 50, "v2": 50}),
    (["v3=10"], {"v1": 60, "v2": 40}, {"v1": 54, "v2": 36, "v3": 10}),
    ([" v2 = 10% "], {"v1": 100}, {"v1": 90, "v2": 10}),
])
def test_weight_specs(specs: list[str], current: dict[str, int], expected: dict[str, int]) -> None:
    assert apply_weight_specs(current, specs) == expected


@pytest.mark.parametrize(("specs", "current", "message"), [
    (["v2=10"], {}, "name every version"),
    (["v2"], {"v1": 100}, "is not VERSION=PERCENT"),
    (["v2=60", "v3=50"], {"v1": 100}, "over 100"),
    (["v2=10", "v2=20"], {"v1": 100}, "named twice"),
    (["bad name=10"], {"v1": 100}, "is not VERSION=PERCENT"),
    (["-x=10"], {"v1": 100}, "must be 1-63 chars"),
    (["v1=50", "v2=40"], {}, "no other version"),
])
def test_bad_weight_specs_are_refused_precisely(specs: list[str], current: dict[str, int], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        apply_weight_specs(current, specs)


@pytest.mark.parametrize(("weights", "message"), [
    ({}, "at least one version"),
    ({"v1": 90}, "sum to 100"),
    ({"v1": 101}, "whole percent"),
    ({"v1": 50.0, "v2": 50}, "whole percent"),
    ({"v1": True, "v2": 99}, "whole percent"),
    ({"v 1": 100}, "must be 1-63 chars"),
])
def test_bad_weights_are_refused(weights: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        check_weights(weights)


async def test_set_weights_audits_who_and_why_and_refuses_a_lost_update() -> None:
    store = MemoryStore()
    routing = await set_weights(store, {"v1": 90, "v2": 10}, actor="alice", reason="canary of v2",
                                expected_revision=0)
    assert routing.revision == 1
    with pytest.raises(RoutingConflict, match="changed meanwhile"):
        await set_weights(store, {"v1": 50, "v2": 50}, actor="bob", expected_revision=0)
    (entry,) = await store.routing_log(10)
    assert entry["actor"] == "alice" and entry["reason"] == "canary of v2" and entry["at"] > 0
    assert entry["old"] == {} and entry["new"] == {"v1": 90, "v2": 10}
