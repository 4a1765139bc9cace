"""The customer-support agent from the docs.

It remembers the user's name and order number across turns (``turn.state``), answers order-status questions
from a small order table, keeps the last 5 utterances, and streams its answer word by word.

Run it:  .venv/bin/statefleet serve examples/support_agent.py:agent
"""

from __future__ import annotations

import asyncio
import re

from statefleet import Agent, Turn

agent = Agent("support", version="v1", history_window=5, double_texting="enqueue")

ORDERS = {
    "12345": "being prepared",
    "23456": "shipped and arriving tomorrow",
    "34567": "delivered on Monday",
    "45678": "waiting for payment",
}

_NAME = re.compile(r"\b(?:my name is|i am|i'm|this is)\s+([A-Z][a-zA-Z-]{1,30})", re.IGNORECASE)
_ORDER = re.compile(r"#?\b(\d{5})\b")
#: Seconds between streamed words; small, so the demo feels live without being slow.
WORD_DELAY = 0.01


def answer(turn: Turn) -> str:
    """Update the conversation's state from the message and compose the reply."""
    text = turn.text
    if match := _NAME.search(text):
        turn.state["name"] = match.group(1).capitalize()
    if match := _ORDER.search(text):
        turn.state["order"] = match.group(1)
    name = turn.state.get("name")
    order = turn.state.get("order")
    greeting = f"{name}, " if name else ""
    lowered = text.lower()
    if "status" in lowered or "where" in lowered or "order" in lowered or _ORDER.search(text):
        if order is None:
            return f"{greeting}which order do you mean? Please give me its 5-digit number."
        status = ORDERS.get(order)
        if status is None:
            return f"{greeting}I can't find order #{order}. Could you check the number?"
        return f"{greeting}order #{order} is {status}."
    if _NAME.search(text):
        return f"Nice to meet you, {name}! How can I help?"
    if "name" in lowered and "my" in lowered and name:
        return f"Your name is {name}."
    if "thank" in lowered:
        return f"You're welcome{', ' + name if name else ''}!"
    return f"{greeting}I can help with orders: ask me about an order's status."


@agent.handler
async def handle(turn: Turn) -> None:
    reply = answer(turn)
    words = reply.split(" ")
    for i, word in enumerate(words):
        await turn.emit(word if i == len(words) - 1 else word + " ")
        await asyncio.sleep(WORD_DELAY)
    turn.reply(reply, data={"order": turn.state.get("order"), "name": turn.state.get("name")})
