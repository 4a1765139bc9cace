"""Fixtures: a real uvicorn server on a free port, in the test's event loop, serving the test agent."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from statefleet.server import StatefleetApp, create_app
from statefleet.store.memory import MemoryStore

from ._support import FAST, make_agent, serve


@pytest.fixture
def memory_store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def app(memory_store: MemoryStore) -> StatefleetApp:
    return create_app(make_agent(), memory_store, FAST)


@pytest.fixture
async def base_url(app: StatefleetApp) -> AsyncIterator[str]:
    async with serve(app) as url:
        yield url


@pytest.fixture
async def client(base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
        yield http
