"""YAML in (a duplicate key is an error, not a silent overwrite) and out (stable bytes, block scalars)."""

from __future__ import annotations

from typing import Any

import yaml  # type: ignore[import-untyped,unused-ignore]  # PyYAML ships no type information


class DuplicateKeyError(ValueError):
    """A mapping names one key twice."""


class _StrictLoader(yaml.SafeLoader):  # type: ignore[misc,unused-ignore]
    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise DuplicateKeyError(f"line {line}: key {key!r} appears twice in one mapping (first on line "
                                        f"{seen[key]})")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


class _Dumper(yaml.SafeDumper):  # type: ignore[misc,unused-ignore]
    def ignore_aliases(self, data: Any) -> bool:
        return True  # no &anchors: each object reads on its own, as Kubernetes shows it

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> Any:
        # Lists indented under their key, as kubectl and most manifests write them.
        return super().increase_indent(flow, False)


def _represent_str(dumper: Any, value: str) -> Any:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def load(text: str) -> Any:
    """Parse one YAML document; DuplicateKeyError or yaml.YAMLError (as ValueError) when it is not clean."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.YAMLError as exc:
        raise ValueError(str(exc)) from None


def dump(document: Any) -> str:
    """One document, keys in the order the renderer built them, long lines kept whole."""
    return str(yaml.dump(document, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=10_000,
                         allow_unicode=True))
