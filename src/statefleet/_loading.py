"""Find the user's agent from ``module:attribute`` or ``path/to/file.py:attribute``."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

from .agent import Agent
from .errors import ConfigError


def load_agent(spec: str) -> Agent:
    """Import the ``Agent`` named by ``spec`` (``examples/support_agent.py:agent`` or ``pkg.mod:agent``)."""
    if ":" not in spec:
        raise ConfigError(f"agent {spec!r} must look like module:attribute or path/to/file.py:attribute")
    target, attribute = spec.rsplit(":", 1)
    if target.endswith(".py") or "/" in target:
        path = Path(target).resolve()
        if not path.is_file():
            raise ConfigError(f"agent file {target!r} does not exist")
        name = f"statefleet_user_{path.stem}"
        module_spec = importlib.util.spec_from_file_location(name, path)
        if module_spec is None or module_spec.loader is None:
            raise ConfigError(f"cannot import {target!r} as Python")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        sys.path.insert(0, str(path.parent))
        module_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise ConfigError(f"cannot import module {target!r}: {exc}") from exc
    agent = getattr(module, attribute, None)
    if not isinstance(agent, Agent):
        raise ConfigError(f"{spec!r} is {type(agent).__name__}, not a statefleet Agent")
    return agent
