"""Offline validation of Kubernetes manifests, as an API server with strict field validation would judge them.

No API server can run on these machines, so each check uses what a pip package or this repository carries:

- :func:`validate_core`: Kubernetes' own kinds (core, apps, policy, networking, autoscaling, rbac, …) with the
  ``kubernetes-validate`` package in strict mode (unknown fields are errors), once for every Kubernetes version in
  :data:`K8S_VERSIONS` (1.30 up to the newest the package ships), plus the name/label/annotation-key formats the
  API server checks and no schema carries.
- :func:`validate_crd_object`: any object whose ``apiVersion``/``kind`` is served by a CRD in ``deploy/schemas/``
  (Istio, KEDA, Gateway API, Flagger, Prometheus Operator): the CRD version's structural ``openAPIV3Schema``
  translated to JSON Schema that rejects unknown fields (``additionalProperties: false`` unless the schema says
  ``x-kubernetes-preserve-unknown-fields`` or gives ``additionalProperties``; int-or-string; embedded resources;
  list-type set/map uniqueness; ``metadata`` against the strict ObjectMeta), the schema's defaults applied first as
  the API server does, then every ``x-kubernetes-validations`` CEL rule evaluated with ``cel-python`` (plus the
  Kubernetes CEL library functions the CRDs use: ``url()``, ``isURL()``, the string extensions). Transition rules
  (those that need ``oldSelf``) cannot be judged on a create and are skipped, each with its reason in the report.
- :func:`kustomize_build`: ``kubectl kustomize DIR``.
- :func:`checkov`: ``checkov -d DIR --framework kubernetes`` in a subprocess; :func:`checkov_violations` keeps the
  failed checks that neither a ``checkov.io/skip<N>: CKV_K8S_xx=<reason>`` annotation nor an allow-list entry with a
  written reason accounts for.

A missing tool or schema is an error (:class:`ToolMissing`, :class:`InvalidManifest`), never a skip.
"""

from __future__ import annotations

import copy
import functools
import importlib.metadata
import importlib.resources
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import celpy
import celpy.celtypes as cel
import jsonschema
import kubernetes_validate
import yaml
from celpy.adapter import json_to_cel
from celpy.celparser import CELParseError
from celpy.evaluation import CELEvalError
from packaging.version import Version
from referencing import Registry, Resource

ROOT = Path(__file__).resolve().parents[2]
#: The CRD schemas the project carries (deploy/schemas/README.md names their sources), or where STATEFLEET_SCHEMAS
#: points.
SCHEMAS = Path(os.environ.get("STATEFLEET_SCHEMAS", ROOT / "deploy" / "schemas"))

#: The oldest Kubernetes version every core object must pass; the newest is the newest kubernetes-validate ships.
MIN_K8S_VERSION = "1.30"

Obj = dict[str, Any]
#: libyaml's loader when PyYAML has it (the Istio CRDs are 19k lines).
_YAML_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class ToolMissing(RuntimeError):
    """A validator's tool is not installed: the suite fails, it never skips."""


class InvalidManifest(AssertionError):
    """An object (or directory) does not pass a validator; ``problems`` lists every finding."""

    def __init__(self, what: str, problems: Sequence[str]) -> None:
        self.what = what
        self.problems = list(problems)
        super().__init__(f"{what}:\n" + "\n".join(f"  - {p}" for p in self.problems))


def describe(obj: Mapping[str, Any]) -> str:
    """``Kind namespace/name (apiVersion)``: how the reports name an object."""
    meta = obj.get("metadata") or {}
    namespace = meta.get("namespace")
    name = meta.get("name", "<no name>")
    return f"{obj.get('kind')} {namespace + '/' if namespace else ''}{name} ({obj.get('apiVersion')})"


def json_path(parts: Iterable[Any]) -> str:
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_$][\w$-]*", str(part)):
            out += f".{part}" if out else str(part)
        else:
            out += f"[{json.dumps(str(part))}]"
    return out or "<root>"


# --------------------------------------------------------------------------------------------------------------
# Metadata formats the API server enforces outside the OpenAPI schemas (apimachinery's validation).

_DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN = re.compile(rf"{_DNS1123_LABEL}(\.{_DNS1123_LABEL})*")
_DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
#: Kinds whose names must be DNS-1035 labels rather than DNS-1123 subdomains.
_DNS1035_KINDS = {("v1", "Service")}
#: Kinds whose names must be DNS-1123 labels.
_DNS1123_LABEL_KINDS = {("v1", "Namespace")}


def _qualified_key_problems(key: str) -> list[str]:
    prefix, _, name = key.rpartition("/")
    problems = []
    if prefix and (len(prefix) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(prefix)):
        problems.append(f"prefix {prefix!r} is not a DNS-1123 subdomain")
    if not name or len(name) > 63 or not _QUALIFIED_NAME.fullmatch(name):
        problems.append(f"name part {name!r} is not a qualified name (63 characters, alphanumeric, '-', '_', '.')")
    return problems


def metadata_problems(obj: Mapping[str, Any]) -> list[str]:
    """The object name, label and annotation-key formats of apimachinery's ObjectMeta validation."""
    meta = obj.get("metadata")
    if not isinstance(meta, Mapping):
        return ["metadata: required (an object)"]
    problems = []
    name = meta.get("name")
    key = (obj.get("apiVersion"), obj.get("kind"))
    if not isinstance(name, str) or not name:
        if not meta.get("generateName"):
            problems.append("metadata.name: required")
    elif key in _DNS1035_KINDS:
        if len(name) > 63 or not _DNS1035_LABEL.fullmatch(name):
            problems.append(f"metadata.name: {name!r} is not a DNS-1035 label (a Service name)")
    elif key in _DNS1123_LABEL_KINDS:
        if len(name) > 63 or not re.fullmatch(_DNS1123_LABEL, name):
            problems.append(f"metadata.name: {name!r} is not a DNS-1123 label")
    elif len(name) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(name):
        problems.append(f"metadata.name: {name!r} is not a DNS-1123 subdomain")
    namespace = meta.get("namespace")
    if namespace is not None and (len(str(namespace)) > 63 or not re.fullmatch(_DNS1123_LABEL, str(namespace))):
        problems.append(f"metadata.namespace: {namespace!r} is not a DNS-1123 label")
    for label, value in (meta.get("labels") or {}).items():
        problems += [f"metadata.labels[{label!r}]: key {p}" for p in _qualified_key_problems(str(label))]
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.fullmatch(value):
            problems.append(f"metadata.labels[{label!r}]: value {value!r} is not a valid label value")
    annotations = meta.get("annotations") or {}
    for annotation in annotations:
        problems += [f"metadata.annotations[{annotation!r}]: key {p}" for p in _qualified_key_problems(str(annotation))]
    size = sum(len(str(k)) + len(str(v)) for k, v in annotations.items())
    if size > 256 * 1024:
        problems.append(f"metadata.annotations: {size} bytes, more than the 256 KiB the API server accepts")
    return problems


# --------------------------------------------------------------------------------------------------------------
# Kubernetes' own kinds: kubernetes-validate, strict.


def _shipped_versions() -> list[str]:
    minors = {kubernetes_validate.utils.major_minor(v) for v in kubernetes_validate.utils.all_versions()}
    return sorted(minors, key=Version)


#: Every Kubernetes minor version core objects are validated against: 1.30 … the newest kubernetes-validate ships.
K8S_VERSIONS: tuple[str, ...] = tuple(v for v in _shipped_versions() if Version(v) >= Version(MIN_K8S_VERSION))
NEWEST_K8S_VERSION = K8S_VERSIONS[-1]
KUBERNETES_VALIDATE_VERSION = importlib.metadata.version("kubernetes-validate")


@dataclass(frozen=True)
class CoreReport:
    object: str
    versions: tuple[str, ...]


def validate_core(obj: Obj, versions: Sequence[str] = K8S_VERSIONS) -> CoreReport:
    """``obj`` passes kubernetes-validate's strict schema (unknown fields rejected) in every version of ``versions``.

    Raises :class:`InvalidManifest` naming, for each finding, the versions it holds in, the field and the rule; a
    kind the package has no schema for in a version (e.g. an API removed by then) is a finding too.
    """
    findings: dict[str, list[str]] = {}
    for version in versions:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            message = f"{json_path(error.absolute_path)}: {error.message}"
            findings.setdefault(message, []).append(version)
        except kubernetes_validate.utils.SchemaNotFoundError as error:
            findings.setdefault(f"no schema: {error.message}", []).append(version)
    problems = [f"Kubernetes {_span(found_in)}: {message}" for message, found_in in findings.items()]
    problems += metadata_problems(obj)
    if problems:
        raise InvalidManifest(f"{describe(obj)} (kubernetes-validate {KUBERNETES_VALIDATE_VERSION}, strict)", problems)
    return CoreReport(describe(obj), tuple(versions))


def _span(versions: Sequence[str]) -> str:
    return versions[0] if len(versions) == 1 else f"{versions[0]}-{versions[-1]} ({len(versions)} versions)"


# --------------------------------------------------------------------------------------------------------------
# CRD objects: the structural schema as strict JSON Schema, defaults, CEL rules.

_DEFINITIONS_ID = "https://kubernetes.io/api/_definitions.json"
_OBJECT_META = {"$ref": f"{_DEFINITIONS_ID}#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}
#: JSON Schema keywords a structural schema may carry that mean the same in Draft 2020-12.
_SAME_KEYWORDS = {
    "type", "required", "enum", "minimum", "maximum", "minLength", "maxLength", "minItems", "maxItems",
    "uniqueItems", "multipleOf", "minProperties", "maxProperties", "description", "title", "format",
}  # fmt: skip
_LIST_MAP_KEYS = "x-statefleet-list-map-keys"


@functools.cache
def _k8s_definitions() -> Registry:
    """The strict ObjectMeta (and what it refers to) from kubernetes-validate's newest schemas."""
    folder = f"v{NEWEST_K8S_VERSION}.0-local-strict"
    path = importlib.resources.files("kubernetes_validate") / "kubernetes-json-schema" / folder / "_definitions.json"
    try:
        contents = json.loads(path.read_text())
    except FileNotFoundError as error:
        message = f"kubernetes-validate {KUBERNETES_VALIDATE_VERSION} has no {folder}/_definitions.json"
        raise ToolMissing(message) from error
    assert contents.get("$id") == _DEFINITIONS_ID, contents.get("$id")
    return Resource.from_contents(contents) @ Registry()


def go_regex(pattern: str) -> str:
    """A Go (RE2) pattern as Python's ``re`` reads it: a global flag group may follow ``^`` in Go, never in Python."""
    moved = re.sub(r"^\^\(\?([imsU]+)\)", r"(?\1)^", pattern)
    try:
        re.compile(moved)
    except re.error as error:
        message = f"schema pattern {pattern!r} is not a regular expression Python can check: {error}"
        raise ToolMissing(message) from error
    return moved


def structural_to_jsonschema(node: Mapping[str, Any], *, root: bool = False, value_validation: bool = False) -> Obj:
    """A CRD's structural (OpenAPI v3.0) schema node as Draft 2020-12 JSON Schema that rejects unknown fields.

    ``value_validation``: the node sits under allOf/anyOf/oneOf/not, where a structural schema only constrains
    values (its ``properties`` there declare no fields), so nothing is closed there.
    """
    out: Obj = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {name: structural_to_jsonschema(sub, value_validation=value_validation)
                        for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, Mapping):
            out[key] = structural_to_jsonschema(value, value_validation=value_validation)
        elif key == "not":
            out[key] = structural_to_jsonschema(value, value_validation=True)
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [structural_to_jsonschema(sub, value_validation=True) for sub in value]
        elif key == "pattern":
            out[key] = go_regex(value)
        elif key in ("exclusiveMinimum", "exclusiveMaximum"):
            bound = "minimum" if key == "exclusiveMinimum" else "maximum"
            if value is True and bound in node:
                out[key] = node[bound]
        elif key in _SAME_KEYWORDS or key == "additionalProperties":
            out[key] = value
    for bound, exclusive in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        if node.get(exclusive) is True:
            out.pop(bound, None)
    if node.get("x-kubernetes-int-or-string"):
        out["type"] = ["integer", "string"]
    if node.get("x-kubernetes-embedded-resource"):
        props = out.setdefault("properties", {})
        props.setdefault("apiVersion", {"type": "string", "minLength": 1})
        props.setdefault("kind", {"type": "string", "minLength": 1})
        props["metadata"] = _OBJECT_META
        out["required"] = sorted({*out.get("required", []), "apiVersion", "kind"})
    if root:  # every object has these whether its schema names them or not
        props = out.setdefault("properties", {})
        props.setdefault("apiVersion", {"type": "string"})
        props.setdefault("kind", {"type": "string"})
        props["metadata"] = _OBJECT_META
    list_type = node.get("x-kubernetes-list-type")
    if list_type == "set":
        out["uniqueItems"] = True
    elif list_type == "map":
        out[_LIST_MAP_KEYS] = list(node.get("x-kubernetes-list-map-keys") or [])
    if (
        not value_validation
        and out.get("type") == "object"
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    if node.get("nullable"):
        if isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
        elif isinstance(out.get("type"), list):
            out["type"] = [*out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    return out


def _list_map_keys(validator: Any, keys: list[str], instance: Any, schema: Any) -> Iterator[jsonschema.ValidationError]:
    if not isinstance(instance, list) or not keys:
        return
    seen: dict[tuple[str, ...], int] = {}
    for index, item in enumerate(instance):
        if not isinstance(item, dict):
            continue
        key = tuple(json.dumps(item.get(k), sort_keys=True) for k in keys)
        if key in seen:
            yield jsonschema.ValidationError(
                f"items {seen[key]} and {index} have the same map key ({', '.join(keys)}) in a list of type map",
                path=[index],
            )
        seen[key] = index


_StrictValidator = jsonschema.validators.extend(jsonschema.Draft202012Validator, {_LIST_MAP_KEYS: _list_map_keys})


def apply_defaults(value: Any, schema: Mapping[str, Any]) -> Any:
    """The structural schema's ``default`` values filled in where a field is absent, as the API server does before
    it validates (the CEL rules of e.g. the Gateway API count on them). Mutates and returns ``value``."""
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        for name, sub in properties.items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
            if name in value:
                value[name] = apply_defaults(value[name], sub)
        extra = schema.get("additionalProperties")
        if isinstance(extra, Mapping):
            for name in value:
                if name not in properties:
                    value[name] = apply_defaults(value[name], extra)
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for index, item in enumerate(value):
            value[index] = apply_defaults(item, schema["items"])
    return value


# The Kubernetes CEL environment beyond standard CEL: the functions the carried CRDs' rules call.

#: CEL's reserved words, which Kubernetes escapes as ``__word__`` when a property is named so.
_CEL_RESERVED = {
    "true", "false", "null", "in", "as", "break", "const", "continue", "else", "for", "function", "if", "import",
    "let", "loop", "package", "namespace", "return", "var", "void", "while",
}  # fmt: skip


def cel_property_name(name: str) -> str:
    """How a Kubernetes CEL expression names an object property (apiextensions' escaping rules)."""
    if name in _CEL_RESERVED:
        return f"__{name}__"
    return (
        name.replace("__", "__underscores__").replace(".", "__dot__").replace("-", "__dash__").replace("/", "__slash__")
    )


@dataclass(frozen=True)
class KubeURL:
    """The value ``url()`` returns (Kubernetes' CEL URL library)."""

    scheme: str
    host: str
    hostname: str
    port: str
    path: str
    query: str


def _url(text: Any) -> KubeURL:
    text = str(text)
    parts = urlsplit(text)
    if not (parts.scheme or text.startswith("/")) or any(c.isspace() for c in text):
        raise ValueError(f"URL parse error during conversion from string: {text!r}")
    port = str(parts.port) if parts.port is not None else ""
    return KubeURL(parts.scheme, parts.netloc.rpartition("@")[2], parts.hostname or "", port, parts.path, parts.query)


def _is_url(text: Any) -> cel.BoolType:
    try:
        _url(text)
    except ValueError:
        return cel.BoolType(False)
    return cel.BoolType(True)


def _substring(text: Any, start: Any, end: Any = None) -> cel.StringType:
    s = str(text)
    stop = len(s) if end is None else int(end)
    if not 0 <= int(start) <= stop <= len(s):
        raise ValueError(f"substring({start}, {end}) out of range for a string of length {len(s)}")
    return cel.StringType(s[int(start) : stop])


def _split(text: Any, separator: Any, limit: Any = -1) -> cel.ListType:
    limit = int(limit)
    if limit == 0:
        return cel.ListType([])
    parts = str(text).split(str(separator), limit - 1 if limit > 0 else -1)
    return cel.ListType([cel.StringType(p) for p in parts])


def _replace(text: Any, old: Any, new: Any, limit: Any = -1) -> cel.StringType:
    return cel.StringType(str(text).replace(str(old), str(new), int(limit)))


def _index_of(text: Any, sub: Any, start: Any = 0) -> cel.IntType:
    return cel.IntType(str(text).find(str(sub), int(start)))


def _last_index_of(text: Any, sub: Any) -> cel.IntType:
    return cel.IntType(str(text).rfind(str(sub)))


def _join(items: Any, separator: Any = "") -> cel.StringType:
    return cel.StringType(str(separator).join(str(i) for i in items))


def _query(u: KubeURL) -> cel.MapType:
    return cel.MapType(
        {cel.StringType(k): cel.ListType([cel.StringType(v) for v in vs]) for k, vs in parse_qs(u.query).items()}
    )


K8S_CEL_FUNCTIONS: dict[str, Callable[..., Any]] = {
    # URL library
    "url": _url,
    "isURL": _is_url,
    "getScheme": lambda u: cel.StringType(u.scheme),
    "getHost": lambda u: cel.StringType(u.host),
    "getHostname": lambda u: cel.StringType(u.hostname),
    "getPort": lambda u: cel.StringType(u.port),
    "getEscapedPath": lambda u: cel.StringType(u.path),
    "getQuery": _query,
    # string extensions
    "substring": _substring,
    "charAt": lambda s, i: cel.StringType(str(s)[int(i) : int(i) + 1]),
    "indexOf": _index_of,
    "lastIndexOf": _last_index_of,
    "lowerAscii": lambda s: cel.StringType(str(s).lower()),
    "upperAscii": lambda s: cel.StringType(str(s).upper()),
    "trim": lambda s: cel.StringType(str(s).strip()),
    "split": _split,
    "replace": _replace,
    "join": _join,
}

_TRANSITION = re.compile(r"\boldSelf\b")


@functools.cache
def _cel_program(rule: str) -> celpy.Runner:
    env = celpy.Environment()
    return env.program(env.compile(rule), functions=K8S_CEL_FUNCTIONS)


def to_cel(value: Any, schema: Mapping[str, Any]) -> Any:
    """A JSON value as the Kubernetes CEL environment sees it under ``schema``: declared properties by their
    escaped names, ``format: duration``/``date``/``date-time`` strings as durations/timestamps."""
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        extra = extra if isinstance(extra, Mapping) else {}
        return cel.MapType(
            {
                cel.StringType(cel_property_name(k) if k in properties else k): to_cel(v, properties.get(k, extra))
                for k, v in value.items()
            }
        )
    if isinstance(value, list):
        items = schema.get("items")
        return cel.ListType([to_cel(v, items if isinstance(items, Mapping) else {}) for v in value])
    if isinstance(value, str):
        fmt = schema.get("format")
        if fmt == "duration":
            return cel.DurationType(value)
        if fmt in ("date", "date-time"):
            return cel.TimestampType(datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC))
    return json_to_cel(value)


@dataclass(frozen=True)
class SkippedRule:
    path: str
    rule: str
    reason: str


@dataclass
class CelOutcome:
    evaluated: int = 0
    skipped: list[SkippedRule] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _evaluate(rule: str, self_value: Any) -> Any:
    result = _cel_program(rule).evaluate({"self": self_value})
    if isinstance(result, CELEvalError):
        raise result
    return result


def evaluate_cel_rules(value: Any, schema: Mapping[str, Any], path: list[Any] | None = None,
                       outcome: CelOutcome | None = None) -> CelOutcome:
    """Every ``x-kubernetes-validations`` rule of ``schema`` and its properties/items/map values, on ``value``.

    A rule that is false is a problem (its message, or messageExpression's); a rule that errors (a missing field,
    a function this environment lacks) is a problem too, never a pass. Transition rules are skipped with a reason.
    """
    path = path or []
    outcome = outcome if outcome is not None else CelOutcome()
    if value is None:
        return outcome
    for spec in schema.get("x-kubernetes-validations") or []:
        rule = spec["rule"]
        where = json_path([*path, *filter(None, [spec.get("fieldPath", "").lstrip(".")])])
        if _TRANSITION.search(rule) or spec.get("optionalOldSelf"):
            outcome.skipped.append(SkippedRule(where, rule, "transition rule: it compares with oldSelf, the stored "
                                                            "object, and a create (all this validates) has none"))
            continue
        outcome.evaluated += 1
        self_value = to_cel(value, schema)
        try:
            result = _evaluate(rule, self_value)
        except (CELEvalError, CELParseError, TypeError, ValueError) as error:
            outcome.problems.append(f"{where}: CEL rule {rule!r} could not be evaluated: {error}")
            continue
        if result is True or result == cel.BoolType(True):
            continue
        if not isinstance(result, bool | cel.BoolType):
            outcome.problems.append(f"{where}: CEL rule {rule!r} gave {result!r}, not a bool")
            continue
        message = spec.get("message") or f"failed rule: {rule}"
        if spec.get("messageExpression"):
            try:
                message = str(_evaluate(spec["messageExpression"], self_value))
            except (CELEvalError, CELParseError, TypeError, ValueError):
                pass
        reason = f" [{spec['reason']}]" if spec.get("reason") else ""
        outcome.problems.append(f"{where}: {message}{reason} (CEL rule: {' '.join(rule.split())})")
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        for name, item in value.items():
            sub = properties.get(name, extra if isinstance(extra, Mapping) else None)
            if sub is not None:
                evaluate_cel_rules(item, sub, [*path, name], outcome)
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for index, item in enumerate(value):
            evaluate_cel_rules(item, schema["items"], [*path, index], outcome)
    return outcome


@dataclass(frozen=True)
class CrdVersion:
    """One served version of a CRD the project carries."""

    file: str
    group: str
    kind: str
    version: str
    served: bool
    deprecated: bool
    schema: Obj = field(repr=False)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"

    @functools.cached_property
    def validator(self) -> Any:
        return _StrictValidator(structural_to_jsonschema(self.schema, root=True), registry=_k8s_definitions())

    def count_rules(self) -> int:
        return json.dumps(self.schema).count('"rule":')


@functools.cache
def crd_versions(schemas: Path = SCHEMAS) -> dict[tuple[str, str], CrdVersion]:
    """Every CRD version in ``schemas`` (each *.yaml file's CustomResourceDefinitions), by (apiVersion, kind)."""
    files = sorted(schemas.glob("*.yaml"))
    if not files:
        raise ToolMissing(f"no CRD schemas in {schemas} (deploy/schemas/ is part of the repository)")
    found: dict[tuple[str, str], CrdVersion] = {}
    for file in files:
        for doc in yaml.load_all(file.read_text(), Loader=_YAML_LOADER):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            for version in spec["versions"]:
                schema = (version.get("schema") or {}).get("openAPIV3Schema")
                if schema is None:
                    raise ToolMissing(f"{file.name}: {spec['names']['kind']} {version['name']} has no openAPIV3Schema")
                crd = CrdVersion(file.name, spec["group"], spec["names"]["kind"], version["name"],
                                 bool(version.get("served")), bool(version.get("deprecated")), schema)
                found[(crd.api_version, crd.kind)] = crd
    return found


def crd_for(obj: Mapping[str, Any]) -> CrdVersion | None:
    return crd_versions().get((str(obj.get("apiVersion")), str(obj.get("kind"))))


@dataclass(frozen=True)
class CrdReport:
    object: str
    crd: str
    rules_evaluated: int
    rules_skipped: tuple[SkippedRule, ...]
    warnings: tuple[str, ...]


def validate_crd_object(obj: Obj) -> CrdReport:
    """``obj`` against its CRD version's schema in ``deploy/schemas/``, strictly, then the CRD's CEL rules.

    Raises :class:`InvalidManifest` listing every finding (field path and rule); an object no carried CRD serves
    is a finding, never a pass.
    """
    crd = crd_for(obj)
    if crd is None:
        known = sorted({f"{api} {kind}" for api, kind in crd_versions()})
        raise InvalidManifest(describe(obj), [f"no CRD in {SCHEMAS} serves {obj.get('apiVersion')} "
                                              f"{obj.get('kind')} (carried: {', '.join(known)})"])
    problems: list[str] = []
    warnings: list[str] = []
    if not crd.served:
        problems.append(f"{crd.api_version} is not served by the CRD ({crd.file})")
    if crd.deprecated:
        warnings.append(f"{crd.api_version} {crd.kind} is deprecated ({crd.file})")
    defaulted = apply_defaults(copy.deepcopy(obj), crd.schema)
    errors = sorted(crd.validator.iter_errors(defaulted), key=lambda e: [str(p) for p in e.absolute_path])
    for error in errors:
        problems.append(f"{json_path(error.absolute_path)}: {_error_message(error)}")
    outcome = CelOutcome()
    if not errors:  # as the API server: CEL rules run on an object that passed the schema
        outcome = evaluate_cel_rules(defaulted, crd.schema)
        problems += outcome.problems
    problems += metadata_problems(obj)
    if problems:
        raise InvalidManifest(f"{describe(obj)} against {crd.file} {crd.api_version} {crd.kind}", problems)
    return CrdReport(describe(obj), f"{crd.file} {crd.api_version} {crd.kind}", outcome.evaluated,
                     tuple(outcome.skipped), tuple(warnings))


def _error_message(error: jsonschema.ValidationError) -> str:
    if error.context:  # anyOf/oneOf: the branch that came closest says most
        best = jsonschema.exceptions.best_match(error.context)
        return f"{error.message} ({json_path(best.absolute_path)}: {best.message})"
    return str(error.message)


@dataclass(frozen=True)
class ObjectReport:
    object: str
    validator: str
    detail: str


def validate_object(obj: Obj) -> ObjectReport:
    """The validator an object's kind calls for: its CRD when a carried CRD serves it, else kubernetes-validate."""
    if crd_for(obj) is not None:
        crd_report = validate_crd_object(obj)
        detail = f"{crd_report.crd}; {crd_report.rules_evaluated} CEL rules evaluated"
        if crd_report.rules_skipped:
            detail += f", {len(crd_report.rules_skipped)} skipped"
        return ObjectReport(crd_report.object, "crd", detail)
    core = validate_core(obj)
    return ObjectReport(core.object, "kubernetes-validate", f"strict, Kubernetes {_span(core.versions)}")


# --------------------------------------------------------------------------------------------------------------
# Tools: kubectl kustomize, checkov.


def _tool(name: str, hint: str) -> str:
    beside_python = Path(sys.executable).parent / name
    found = str(beside_python) if beside_python.exists() else shutil.which(name)
    if not found:
        raise ToolMissing(f"{name} is not installed ({hint}); the deploy tests need it and are never skipped")
    return found


def load_objects(text: str) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def kustomize_build(directory: Path) -> list[Obj]:
    """The objects ``kubectl kustomize DIRECTORY`` renders; a failing build raises :class:`InvalidManifest`."""
    kubectl = _tool("kubectl", "the machine image carries kubectl with kustomize built in")
    run = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=120,
                         check=False)
    if run.returncode != 0:
        raise InvalidManifest(f"kubectl kustomize {directory}", [run.stderr.strip() or f"exit {run.returncode}"])
    objects = load_objects(run.stdout)
    if not objects:
        raise InvalidManifest(f"kubectl kustomize {directory}", ["rendered no objects"])
    return objects


@dataclass(frozen=True)
class CheckovFinding:
    check_id: str
    name: str
    resource: str  # Kind.namespace.name, as checkov names it
    file: str
    keys: tuple[str, ...]

    def __str__(self) -> str:
        where = f" at {', '.join(self.keys)}" if self.keys else ""
        return f"{self.check_id} {self.name!r}: {self.resource} ({self.file}){where}"


@dataclass(frozen=True)
class CheckovReport:
    version: str
    resources: int
    passed: int
    skipped: int
    failed: tuple[CheckovFinding, ...]


def checkov(directory: Path, timeout: float = 600) -> CheckovReport:
    """``checkov -d DIRECTORY --framework kubernetes --quiet --compact -o json`` (offline: ``--skip-download``).

    Raises :class:`ToolMissing` when checkov is absent and :class:`InvalidManifest` when it cannot read the
    directory or finds no Kubernetes object in it; failed checks are returned, :func:`checkov_violations` judges them.
    """
    exe = _tool("checkov", "pip install -e '.[dev]'")
    command = [exe, "-d", str(directory), "--framework", "kubernetes", "--quiet", "--compact", "-o", "json",
               "--skip-download"]
    run = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False,
                         env={**os.environ, "LOG_LEVEL": "WARNING"})
    if run.returncode not in (0, 1):
        raise InvalidManifest(" ".join(command), [f"exit {run.returncode}", run.stderr.strip()[-2000:]])
    try:
        output = json.loads(run.stdout)
    except json.JSONDecodeError as error:
        problems = [f"no JSON on stdout ({error})", run.stderr.strip()[-2000:]]
        raise InvalidManifest(" ".join(command), problems) from error
    reports = output if isinstance(output, list) else [output]
    kubernetes = [r for r in reports if r.get("check_type") == "kubernetes"]
    if not kubernetes:
        raise InvalidManifest(" ".join(command), [f"checkov found no Kubernetes object to check: {output!r:.500}"])
    summary = kubernetes[0]["summary"]
    if summary.get("parsing_errors"):
        raise InvalidManifest(" ".join(command), [f"{summary['parsing_errors']} files checkov could not parse"])
    failed = tuple(
        CheckovFinding(c["check_id"], c["check_name"], c["resource"], c.get("file_path", ""),
                       tuple((c.get("check_result") or {}).get("evaluated_keys") or ()))
        for c in kubernetes[0].get("results", {}).get("failed_checks", [])
    )
    if run.returncode == 1 and not failed:
        raise InvalidManifest(" ".join(command), ["exit 1 without a failed check", run.stderr.strip()[-2000:]])
    return CheckovReport(summary.get("checkov_version", "?"), summary["resource_count"], summary["passed"],
                         summary["skipped"], failed)


_SKIP_ANNOTATION = re.compile(r"checkov\.io/skip\d+")
_SKIP_VALUE = re.compile(r"(?P<check>CKV2?_K8S_\d+)(?:=(?P<reason>.*))?", re.DOTALL)


def checkov_resource(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{obj.get('kind')}.{meta.get('namespace') or 'default'}.{meta.get('name')}"


def skip_annotations(objects: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], str]:
    """``(checkov resource, check id) -> reason`` for every ``checkov.io/skip<N>`` annotation of ``objects``.

    Raises :class:`InvalidManifest` for an annotation that names no check or gives no written reason.
    """
    found: dict[tuple[str, str], str] = {}
    problems = []
    for obj in objects:
        annotations = (obj.get("metadata") or {}).get("annotations") or {}
        for key, value in annotations.items():
            if not _SKIP_ANNOTATION.fullmatch(key):
                continue
            match = _SKIP_VALUE.fullmatch(str(value).strip())
            if match is None:
                problems.append(f"{describe(obj)}: {key}: {value!r} is not CKV_K8S_<n>=<reason>")
            elif not (match["reason"] or "").strip():
                problems.append(f"{describe(obj)}: {key}: skips {match['check']} without a written reason")
            else:
                found[(checkov_resource(obj), match["check"])] = match["reason"].strip()
    if problems:
        raise InvalidManifest("checkov skip annotations", problems)
    return found


def checkov_violations(report: CheckovReport, objects: Iterable[Mapping[str, Any]],
                       allowed: Mapping[str, str] | None = None) -> list[CheckovFinding]:
    """The failed checks nothing accounts for.

    A failure is accounted for by a ``checkov.io/skip<N>: CKV_K8S_xx=<reason>`` annotation on the object it is
    about (checkov itself then usually reports it as skipped), or by ``allowed``, whose keys are ``CKV_K8S_xx``
    (every resource) or ``CKV_K8S_xx@Kind.namespace.name`` and whose values are the written reasons.
    """
    allowed = dict(allowed or {})
    unreasoned = [key for key, reason in allowed.items() if not reason.strip()]
    if unreasoned:
        raise InvalidManifest("checkov allow-list", [f"{key}: no written reason" for key in unreasoned])
    skips = skip_annotations(objects)
    return [
        finding
        for finding in report.failed
        if (finding.resource, finding.check_id) not in skips
        and finding.check_id not in allowed
        and f"{finding.check_id}@{finding.resource}" not in allowed
    ]
