"""A streaming LLM agent: each message goes to an OpenAI-compatible model with the conversation's history
window, and the model's tokens stream through statefleet to the client as they arrive.

Uses the official ``openai`` client (``pip install -e ".[llm]"``) pointed at ``OPENAI_BASE_URL`` — by default
the mock model ``statefleet mock-llm`` serves on http://127.0.0.1:8300/v1:

    .venv/bin/statefleet mock-llm --port 8300 &
    .venv/bin/statefleet serve examples/llm_agent.py:agent --port 8000
    curl -N -H 'Accept: text/event-stream' -H 'Content-Type: application/json' \\
         -d '{"text": "Where is my order?"}' http://127.0.0.1:8000/v1/conversations/alice/messages
"""

from __future__ import annotations

import os

import httpx
from openai import AsyncOpenAI, DefaultAsyncHttpxClient

from statefleet import Agent, Turn

agent = Agent("llm", version="v1", history_window=10, double_texting="enqueue")

SYSTEM = "You are a helpful customer-support assistant. Answer briefly."
_client: AsyncOpenAI | None = None


def client() -> AsyncOpenAI:
    """One client per process (it pools connections), created on first use so the env is read at run time."""
    global _client
    if _client is None:
        _client = AsyncOpenAI(
            base_url=os.environ.get("OPENAI_BASE_URL", "http://127.0.0.1:8300/v1"),
            api_key=os.environ.get("OPENAI_API_KEY", "mock"),
            max_retries=0,  # statefleet's turn is retried as a whole, with its idempotency key
            timeout=float(os.environ.get("OPENAI_TIMEOUT", "60")),
            # Every concurrent turn holds one streaming request: the default pool (1,000) would queue them.
            http_client=DefaultAsyncHttpxClient(
                limits=httpx.Limits(max_connections=int(os.environ.get("OPENAI_MAX_CONNECTIONS", "10000")),
                                    max_keepalive_connections=1000),
            ),
        )
    return _client


@agent.handler
async def handle(turn: Turn) -> None:
    messages = [{"role": "system", "content": SYSTEM}]
    for utterance in turn.history:
        messages.append({"role": "user" if utterance["role"] == "user" else "assistant",
                         "content": utterance["text"]})
    messages.append({"role": "user", "content": turn.text})
    stream = await client().chat.completions.create(
        model=os.environ.get("OPENAI_MODEL", "mock"),
        messages=messages,  # type: ignore[arg-type]
        stream=True,
        # Passed on, so a backend that deduplicates can: a turn may run again after an instance died.
        extra_headers={"Idempotency-Key": turn.idempotency_key},
    )
    parts: list[str] = []
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            text = chunk.choices[0].delta.content
            parts.append(text)
            await turn.emit(text)
    turn.state["answers"] = int(turn.state.get("answers", 0)) + 1
    turn.reply("".join(parts))
