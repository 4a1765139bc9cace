"""Routing weights: which version a *new* conversation is pinned to.

The fleet keeps one set of weights in the store, such as ``{"v1": 90, "v2": 10}`` (percent, summing to 100).
A new conversation's version is chosen by a stable hash of its tenant and id, so the choice is reproducible:

- ``bucket = int.from_bytes(sha256(f"{tenant}/{id}".encode()).digest()[:8], "big") % 10000``
- the versions, sorted by name, take consecutive ranges of the 10,000 buckets in proportion to their weights
  (``v1`` buckets 0-8999 and ``v2`` 9000-9999 for ``{"v1": 90, "v2": 10}``)

The version is then stored with the conversation and never changes, whatever the weights do later (see
docs/canary.md). A version at weight 0 gets no new conversations and keeps serving its own (it drains).

>>> pick_version({"v1": 90, "v2": 10}, "default", "alice123")
'v1'
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterable, Mapping

from .errors import ConfigError
from .store.base import JSONObject, Routing, Store

__all__ = [
    "BUCKETS", "LOG_MAX", "apply_weight_specs", "bucket_of", "check_weights", "pick_version", "set_weights",
]

#: The hash space new conversations are spread over (a weight of 1% is 100 buckets).
BUCKETS = 10_000
#: Changes of the weights the store keeps (who, when, old -> new, why), newest first.
LOG_MAX = 200
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_SPEC = re.compile(r"^\s*([^=\s]+)\s*=\s*(\d{1,3})\s*%?\s*$")


def bucket_of(tenant: str, conversation_id: str) -> int:
    """The conversation's bucket in ``range(BUCKETS)``: the same on every instance, in every release."""
    digest = hashlib.sha256(f"{tenant}/{conversation_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def pick_version(weights: Mapping[str, int], tenant: str, conversation_id: str) -> str | None:
    """The version a new conversation is pinned to under ``weights``; None when no version has weight."""
    total = sum(weights.values())
    if total <= 0:
        return None
    point = bucket_of(tenant, conversation_id) * total
    edge = 0
    for version in sorted(weights):
        edge += weights[version] * BUCKETS
        if point < edge:
            return version
    return None  # unreachable: point < total * BUCKETS


def check_weights(weights: Mapping[str, object]) -> dict[str, int]:
    """``weights`` validated: version names as agents allow them, whole percents summing to 100."""
    if not isinstance(weights, Mapping) or not weights:
        raise ConfigError("routing weights must name at least one version, e.g. {\"v1\": 90, \"v2\": 10}")
    checked: dict[str, int] = {}
    for version, weight in weights.items():
        if not isinstance(version, str) or not _VERSION.match(version):
            raise ConfigError(f"version {version!r} must be 1-63 chars of A-Z a-z 0-9 . _ -")
        if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= 100:
            raise ConfigError(f"weight of {version} must be a whole percent from 0 to 100, not {weight!r}")
        checked[version] = weight
    total = sum(checked.values())
    if total != 100:
        raise ConfigError(f"routing weights must sum to 100, not {total}: {_show(checked)}")
    return checked


def apply_weight_specs(current: Mapping[str, int], specs: Iterable[str]) -> dict[str, int]:
    """The weights after ``statefleet canary set v2=10 ...``.

    The versions named take the given percents; the remainder is shared by the versions not named, in
    proportion to their current weights (equally if those are all 0). With two versions, ``v2=10`` gives the
    other one 90. Naming every version requires a sum of 100.
    """
    named: dict[str, int] = {}
    for spec in specs:
        match = _SPEC.match(spec)
        if match is None:
            raise ConfigError(f"{spec!r} is not VERSION=PERCENT, e.g. v2=10")
        version, weight = match[1], int(match[2])
        if version in named:
            raise ConfigError(f"version {version} is named twice")
        named[version] = weight
    if not named:
        raise ConfigError("name at least one VERSION=PERCENT, e.g. v2=10")
    rest = {version: weight for version, weight in current.items() if version not in named}
    remainder = 100 - sum(named.values())
    if remainder < 0:
        raise ConfigError(f"the weights given sum to {100 - remainder}, over 100: {_show(named)}")
    if remainder and not rest:
        raise ConfigError(
            f"the weights given sum to {100 - remainder}, and no other version is known to take the remaining "
            f"{remainder}%: name every version, e.g. v1={remainder} {' '.join(specs)}"
        )
    shares = _share(remainder, rest)
    return check_weights({**shares, **named})


def _share(amount: int, among: Mapping[str, int]) -> dict[str, int]:
    """``amount`` split over ``among`` in proportion to their weights (largest remainders), in whole percents."""
    if not among:
        return {}
    total = sum(among.values())
    basis = dict(among) if total else dict.fromkeys(among, 1)
    total = sum(basis.values())
    exact = {version: amount * weight / total for version, weight in basis.items()}
    shares = {version: int(value) for version, value in exact.items()}
    left = amount - sum(shares.values())
    for version in sorted(exact, key=lambda v: (shares[v] - exact[v], v))[:left]:
        shares[version] += 1
    return shares


def _show(weights: Mapping[str, int]) -> str:
    return " ".join(f"{version}={weight}" for version, weight in weights.items())


async def set_weights(
    store: Store,
    weights: Mapping[str, object],
    *,
    actor: str,
    reason: str = "",
    expected_revision: int | None = None,
) -> Routing:
    """Validate and store new routing weights, audited: the change (``actor``, ``reason``, time, old -> new) is
    logged in the store. With ``expected_revision``, refuse (``RoutingConflict``) if they changed since read.

    Every instance applies them to the conversations that start from then on, within its
    ``fleet_view_interval`` (1 s); conversations already pinned keep their version.

    >>> await set_weights(store, {"v1": 90, "v2": 10}, actor="alice", reason="canary of v2")
    """
    checked = check_weights(weights)
    change: JSONObject = {"at": time.time(), "actor": actor[:200], "reason": reason[:500]}
    return await store.set_routing(checked, expected_revision=expected_revision, change=change, log_max=LOG_MAX)
