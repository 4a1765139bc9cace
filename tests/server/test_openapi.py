"""The OpenAPI document: valid OpenAPI 3.1, and true of the live server (schemathesis fuzzes every operation)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any, cast

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from openapi_spec_validator import validate
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from statefleet.server import create_app
from statefleet.server.openapi import openapi_document
from statefleet.store.memory import MemoryStore

from ._support import FAST, make_agent, serve_in_thread

#: An endless stream cannot be fuzzed by a client that reads the whole body, nor a WebSocket by an HTTP client;
#: both have their own tests.
NOT_FUZZED = {"streamEvents", "conversationWebSocket"}
#: Valid by the schema yet rightly refused: weights must also sum to 100, which JSON Schema cannot say.
SUM_CONSTRAINED = {"setRouting"}


def test_document_is_valid_openapi_3_1() -> None:
    validate(openapi_document(make_agent()))


async def test_served_document_is_the_document(client: httpx.AsyncClient) -> None:
    served = (await client.get("/openapi.json")).json()
    assert served == openapi_document(make_agent())
    assert served["openapi"] == "3.1.0"


@pytest.fixture(scope="module")
def live_url() -> Iterator[str]:
    with serve_in_thread(create_app(make_agent(hooks=False), MemoryStore(), FAST)) as url:
        yield url


@pytest.fixture(scope="module")
def routing_url() -> Iterator[str]:
    """A server of its own for the routing weights: weights fuzzed into the store would send the other
    operations' new conversations to versions no instance serves (503, rightly)."""
    with serve_in_thread(create_app(make_agent(hooks=False), MemoryStore(), FAST)) as url:
        yield url


def cases() -> list[Any]:
    """(operation, mode) pairs: every fuzzed operation with valid input, and with invalid input if it has any."""
    schema = schemathesis.openapi.from_dict(openapi_document(make_agent()))
    pairs = []
    for result in schema.get_all_operations():
        operation = cast(Any, result).ok()
        raw = operation.definition.raw
        if raw.get("operationId") in NOT_FUZZED:
            continue
        pairs.append(pytest.param(operation, GenerationMode.POSITIVE, id=f"{operation.label} valid"))
        if raw.get("parameters") or raw.get("requestBody"):
            pairs.append(pytest.param(operation, GenerationMode.NEGATIVE, id=f"{operation.label} invalid"))
    return pairs


@pytest.mark.parametrize(("operation", "mode"), cases())
def test_server_conforms_to_its_document(live_url: str, routing_url: str, operation: Any,
                                         mode: GenerationMode) -> None:
    routing = operation.definition.raw.get("operationId") in SUM_CONSTRAINED
    url = routing_url if routing else live_url

    @given(case=operation.as_strategy(mode))
    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(case: Any) -> None:
        if case.headers and "Idempotency-Key" in case.headers:
            # Hypothesis reuses values; a key reused for another message is rightly 422, which the
            # positive-data check would count as a rejected valid request.
            case.headers["Idempotency-Key"] = uuid.uuid4().hex
        # Then: no 5xx, every status and header documented, every body matches its schema.
        case.call_and_validate(base_url=url, timeout=10,
                               excluded_checks=[positive_data_acceptance] if routing else [])

    check()
