"""How an engine runs turns (``EngineSettings``) and what it counts (``EngineStats``)."""

from __future__ import annotations

from dataclasses import dataclass

from .. import errors
from ..store.base import Limits

#: The store's defaults: the engine hands its settings to the store as ``Limits``, so they are named once.
_LIMITS = Limits()


@dataclass(frozen=True)
class EngineSettings:
    """How one engine runs turns. Defaults are tuned for real time: a dead owner's work resumes in < 5 s."""

    #: Lease time-to-live (s); a dead owner's conversations are taken over after this.
    lease_ttl: float = _LIMITS.lease_ttl
    #: How often (s) the sweeper looks for expired leases.
    sweep_interval: float = 1.0
    #: Expired leases one sweep takes over at most (a full sweep is followed by another at once).
    sweep_batch: int = 1000
    #: Takeovers one sweep runs at once (each a script call; they travel pipelined).
    sweep_parallelism: int = 64
    #: How often (s) the fleet looks for pending messages whose takeover hint was lost (one instance per
    #: minute does it; see ``Store.repair_hints``).
    audit_interval: float = 60.0
    #: How often (s) a running turn's lease is renewed; None: a third of ``lease_ttl``.
    heartbeat_interval: float | None = None
    #: Idle conversations expire after this (s).
    conversation_ttl: float = _LIMITS.conversation_ttl
    #: Idempotency records are kept this long (s).
    idempotency_ttl: float = _LIMITS.idempotency_ttl
    #: Results a waiting caller polls are kept this long (s).
    receipt_ttl: float = _LIMITS.receipt_ttl
    #: Every finished message's outcome stays readable by id this long (s), to resolve a lost commit reply.
    outcome_ttl: float = _LIMITS.outcome_ttl
    #: When the store fails while a turn commits, retry the commit and read the message's receipt back for up
    #: to this long (s) before answering ``outcome_unknown``; longer than a store restart or failover takes.
    resolve_timeout: float = 10.0
    #: After the store's epoch changed (it lost its data), ``/readyz`` fails this long (s); 0: never.
    store_reset_hold: float = 30.0
    #: Events kept per conversation, and for how long (s).
    events_max: int = _LIMITS.events_max
    events_ttl: float = _LIMITS.events_ttl
    #: Messages one conversation's inbox may hold.
    inbox_max: int = _LIMITS.inbox_max
    #: A message started this many times without committing fails.
    max_attempts: int = _LIMITS.max_attempts
    #: Calls to ``send`` this engine serves at once; more get ``Overloaded`` (503 + Retry-After) at once. 256:
    #: one instance streams ~200 model replies of ~1 s at saturation (docs/operations.md, "Sizing the in-flight
    #: limit"); in-process batch callers that send more at once raise it.
    max_in_flight: int = 256
    #: Write streamed tokens to the store's event log, so every instance can follow them live.
    publish_tokens: bool = True
    #: This engine's id in the fleet; None: hostname-pid-random.
    instance_id: str | None = None
    #: An instance that stops refreshing its registry entry (every third of this, s) leaves the fleet view.
    registry_ttl: float = 6.0
    #: How often (s) the engine reads the routing weights and the live instances: a change of the weights
    #: reaches every instance within this.
    fleet_view_interval: float = 1.0

    def __post_init__(self) -> None:
        for name in ("lease_ttl", "sweep_interval", "conversation_ttl", "idempotency_ttl", "receipt_ttl",
                     "outcome_ttl", "resolve_timeout", "events_ttl", "registry_ttl", "audit_interval",
                     "fleet_view_interval"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or value <= 0:
                raise errors.ConfigError(f"engine setting {name}={value!r} must be a positive number of seconds")
        for name in ("events_max", "inbox_max", "max_attempts", "max_in_flight", "sweep_batch", "sweep_parallelism"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise errors.ConfigError(f"engine setting {name}={value!r} must be a positive int")

        if not isinstance(self.store_reset_hold, int | float) or self.store_reset_hold < 0:
            raise errors.ConfigError(
                f"engine setting store_reset_hold={self.store_reset_hold!r} must be a number of seconds >= 0")

    @property
    def heartbeat(self) -> float:
        return self.heartbeat_interval or self.lease_ttl / 3


@dataclass(slots=True)
class EngineStats:
    """Counters this engine keeps (exported as metrics by the server)."""

    committed: int = 0
    failed: int = 0
    interrupted: int = 0
    rejected: int = 0
    takeovers: int = 0
    fenced: int = 0
    handed_back: int = 0
