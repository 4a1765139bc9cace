"""Checks on what callers hand to the engine, with messages that name the problem."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from .errors import InvalidConversationId, InvalidMessage, MessageTooLarge

CONVERSATION_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
TENANT = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
DEFAULT_TENANT = "default"


def check_conversation_id(conversation_id: object) -> str:
    if not isinstance(conversation_id, str) or not CONVERSATION_ID.match(conversation_id):
        raise InvalidConversationId(
            f"conversation id {conversation_id!r} must be 1-128 chars of A-Z a-z 0-9 . _ : -"
        )
    return conversation_id


def check_tenant(tenant: object) -> str:
    if not isinstance(tenant, str) or not TENANT.match(tenant):
        raise InvalidConversationId(f"tenant {tenant!r} must be 1-64 chars of A-Z a-z 0-9 . _ -")
    return tenant


def check_message(
    text: object, metadata: object, idempotency_key: object, *, max_bytes: int
) -> tuple[str, dict[str, Any], str | None, str]:
    """Validate a message; returns (text, metadata, idempotency key, fingerprint)."""
    if not isinstance(text, str):
        raise InvalidMessage(f"message text must be a string, not {type(text).__name__}")
    if not text.strip():
        raise InvalidMessage("message text must not be empty")
    try:
        encoded = text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidMessage("message text is not valid Unicode (it has a lone surrogate)") from None
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise InvalidMessage(f"message metadata must be a JSON object, not {type(metadata).__name__}")
    size = len(encoded)
    meta_json = b""
    if metadata:
        try:
            meta_json = json.dumps(
                metadata, separators=(",", ":"), sort_keys=True, allow_nan=False, ensure_ascii=False
            ).encode("utf-8")
        except (TypeError, ValueError) as exc:  # UnicodeEncodeError is a ValueError
            raise InvalidMessage(f"message metadata is not JSON-serializable: {exc}") from None
        size += len(meta_json)
    if size > max_bytes:
        raise MessageTooLarge(f"message is {size} bytes; the limit is {max_bytes} bytes (text + metadata)")
    if idempotency_key is None:
        return text, metadata, None, ""
    if not isinstance(idempotency_key, str) or not IDEMPOTENCY_KEY.match(idempotency_key):
        raise InvalidMessage("idempotency key must be 1-255 printable ASCII characters without spaces")
    # Tells a retry (same text and metadata) from a reused key (different message).
    digest = hashlib.blake2b(encoded, digest_size=8)
    digest.update(meta_json)
    return text, metadata, idempotency_key, digest.hexdigest()
