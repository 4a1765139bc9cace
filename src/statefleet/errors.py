"""The one error hierarchy of statefleet.

Client errors (``StatefleetClientError``) mean the caller sent something wrong and map to 4xx; the rest map
to 5xx. Every message names the thing that is wrong and, where there is one, the fix.
"""

from __future__ import annotations


class StatefleetError(Exception):
    """Root of every error statefleet raises on purpose."""

    #: Stable machine-readable code, used in HTTP error bodies.
    code = "internal"
    #: HTTP status the server answers with.
    status = 500


class StatefleetClientError(StatefleetError):
    """The request was wrong; retrying it unchanged will fail again."""

    code = "bad_request"
    status = 400


class InvalidConversationId(StatefleetClientError):
    """A conversation id or tenant is not of the allowed form."""

    code = "invalid_conversation_id"
    status = 400


class InvalidMessage(StatefleetClientError):
    """A message is malformed (wrong type, empty, metadata not a JSON object)."""

    code = "invalid_message"
    status = 422


class MessageTooLarge(StatefleetClientError):
    """A message is larger than the configured limit."""

    code = "message_too_large"
    status = 413


class ConversationBusy(StatefleetClientError):
    """Double texting with policy ``reject``: a turn of this conversation is already running or queued."""

    code = "conversation_busy"
    status = 409


class ConversationNotFound(StatefleetClientError):
    """No conversation with this id exists (or it expired)."""

    code = "not_found"
    status = 404


class IdempotencyKeyReused(StatefleetClientError):
    """An Idempotency-Key was reused for a different message."""

    code = "idempotency_key_reused"
    status = 422


class ConfigError(StatefleetError):
    """A setting has an invalid value."""

    code = "config_error"
    status = 500


class InvalidStoreUrl(ConfigError):
    """A store URL has an unknown scheme or a malformed form."""

    code = "invalid_store_url"
    status = 500


class TurnFailed(StatefleetError):
    """The agent's handler raised, or produced a result that cannot be committed; nothing was committed."""

    code = "turn_failed"
    status = 500


class StateNotSerializable(TurnFailed):
    """The handler left ``turn.state`` (or reply data) in a form JSON cannot encode; nothing was committed."""

    code = "state_not_serializable"
    status = 500


class TurnInterrupted(StatefleetError):
    """The turn was cancelled by a newer message (double texting ``interrupt``); nothing was committed."""

    code = "turn_interrupted"
    status = 409


class TurnTimeout(StatefleetError):
    """The reply did not arrive in time; the message stays accepted and will still be processed."""

    code = "turn_timeout"
    status = 504


class LeaseLost(StatefleetError):
    """This instance lost the lease of a conversation (paused or partitioned); its commit was refused."""

    code = "lease_lost"
    status = 503


class WrongVersion(StatefleetError):
    """The conversation is pinned to another agent version than the one this instance serves.

    The server forwards such a message to an instance of ``version``; this error reaches a client only from the
    Python API or when forwarding is not possible (then as ``VersionUnavailable``).
    """

    code = "wrong_version"
    status = 421

    def __init__(self, message: str, version: str = "") -> None:
        super().__init__(message)
        #: The version the conversation is pinned to (or, for a new one, was assigned by the weights).
        self.version = version


class VersionUnavailable(StatefleetError):
    """No live instance serves the version the conversation is pinned to; never served by another version."""

    code = "version_unavailable"
    status = 503


class InvalidWeights(StatefleetClientError):
    """Routing weights that are not whole percents of valid version names summing to 100."""

    code = "invalid_weights"
    status = 422


class RoutingConflict(StatefleetClientError):
    """The routing weights changed since they were read; read them again and retry."""

    code = "routing_conflict"
    status = 409


class StoreUnavailable(StatefleetError):
    """The state store cannot be reached."""

    code = "store_unavailable"
    status = 503


class StoreError(StatefleetError):
    """The state store refused a command for a reason other than being unavailable (a bug, not a blip)."""

    code = "store_error"
    status = 500


class OutcomeUnknown(StatefleetError):
    """The store failed while the turn committed, and it could not be read back in time whether it did.

    The message is accepted and is committed exactly once or not at all: a retry with the same
    Idempotency-Key tells which (and never runs a second turn).
    """

    code = "outcome_unknown"
    status = 503


class StoreLostData(StatefleetError):
    """The store's epoch changed under the running fleet: it lost its data (restarted empty, flushed)."""

    code = "store_reset"
    status = 503


class Overloaded(StatefleetError):
    """This instance is at its in-flight limit, or draining; try again shortly (Retry-After)."""

    code = "overloaded"
    status = 503
