"""Reading the config file into a :class:`FleetConfig`; every problem reported with its field path."""

from __future__ import annotations

import difflib
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from ..errors import ConfigError
from . import _yaml
from .config import FleetConfig


def load_config(path: Path | str) -> FleetConfig:
    """The fleet config in ``path``, or ConfigError listing every problem (``field.path: what is wrong``)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the config {str(path)!r}: {exc.strerror or exc}") from None
    return parse_config(text, source=str(path))


def parse_config(text: str, source: str = "<config>") -> FleetConfig:
    """The fleet config in YAML ``text``; ConfigError names ``source`` and each field that is wrong."""
    try:
        data = _yaml.load(text)
    except ValueError as exc:
        raise ConfigError(f"{source} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source} must be a mapping of sections (agent, versions, store, ...), "
                          f"not {type(data).__name__}")
    try:
        return FleetConfig.model_validate(data)
    except ValidationError as exc:
        problems = [describe(error) for error in exc.errors(include_url=False)]
        raise ConfigError(f"{source} is not a valid fleet config ({len(problems)} "
                          f"problem{'s' if len(problems) != 1 else ''}):\n  " + "\n  ".join(problems)) from None


def describe(error: Any) -> str:
    """One pydantic error as ``path: message``, with the tag of a tagged union left out of the path."""
    raw = tuple(error["loc"])
    loc = _without_tags(raw)
    if loc and loc[-1] == "[key]":
        loc = loc[:-2]  # a mapping's key is refused: the message names it, the path names the mapping
    path = field_path(loc)
    kind = error["type"]
    if kind == "extra_forbidden":
        allowed = allowed_keys(raw[:-1])
        hint = ""
        if allowed:
            close = difflib.get_close_matches(str(raw[-1]), allowed, n=1) or [
                key for key in allowed if _common_prefix(key, str(raw[-1])) >= 4]
            hint = f"; did you mean {close[0]!r}?" if close else f"; expected one of: {', '.join(allowed)}"
        return f"{path}: unknown key{hint}"
    if kind == "missing":
        return f"{path}: missing (required)"
    message = str(error["msg"]).removeprefix("Value error, ")
    if kind == "union_tag_invalid" or kind == "union_tag_not_found":
        return f"{path}: {message}"
    if kind not in ("value_error", "assertion_error") and not isinstance(error.get("input"), dict | list):
        message = f"{message} (got {error.get('input')!r})"
    return f"{path}: {message}" if path else message


def _common_prefix(a: str, b: str) -> int:
    return next((index for index, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def field_path(loc: tuple[Any, ...]) -> str:
    """``("versions", 1, "weight")`` → ``versions[1].weight``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not str(part).isidentifier():
            out += f"[{str(part)!r}]"  # a mapping's key (a label, an environment variable)
        else:
            out += f".{part}" if out else str(part)
    return out


_TAGGED = {"redis": "mode", "mesh": "kind", "autoscaling": "kind"}


def _without_tags(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    out: list[Any] = []
    for part in loc:
        if out and out[-1] in _TAGGED and isinstance(part, str) and _is_tag(out[-1], part):
            continue
        out.append(part)
    return tuple(out)


def _is_tag(field: str, part: str) -> bool:
    return part in {"self-hosted", "external"} if field == "redis" else part in {
        "istio", "gateway-api", "none", "keda", "hpa"}


def allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    """The keys the model at ``loc`` (a raw pydantic location, tags included) accepts; empty when unknown."""
    annotation: Any = FleetConfig
    for part in loc:
        annotation = _model_of(annotation, part)
        if annotation is None:
            return []
    model = _model_of(annotation, None)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return []


def _tag_of(model: Any) -> str | None:
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return None
    for name in ("kind", "mode"):
        field = model.model_fields.get(name)
        if field is not None and typing.get_origin(field.annotation) is typing.Literal:
            return str(typing.get_args(field.annotation)[0])
    return None


def _model_of(annotation: Any, part: Any) -> Any:
    """Step from ``annotation`` into ``part`` (a field name, a list index, or None to unwrap only)."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
            if len(members) == 1:
                annotation = members[0]
                continue
            tagged = [member for member in members if isinstance(part, str) and _tag_of(member) == part]
            # A tagged union: pydantic's location names the member by its tag, which is consumed here.
            return tagged[0] if tagged else None
        else:
            break
    if part is None:
        return annotation
    if isinstance(part, int):
        return typing.get_args(annotation)[0] if typing.get_origin(annotation) is list else None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel) and part in annotation.model_fields:
        return annotation.model_fields[part].annotation
    return None
