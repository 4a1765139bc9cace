"""Checks for the names Kubernetes, HTTP and images accept; each raises ValueError saying what is wrong."""

from __future__ import annotations

import ipaddress
import re

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_SECRET_KEY = re.compile(r"[-._a-zA-Z0-9]+")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_MODULE_ATTR = re.compile(r"[^\s:]+:[A-Za-z_][A-Za-z0-9_.]*")
_IMAGE_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_IMAGE_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST = re.compile(r"sha256:[a-f0-9]{64}")


def dns_label(text: str) -> str:
    """An RFC 1123 label: what Service and Namespace names must be."""
    if len(text) > 63 or not _DNS_LABEL.fullmatch(text):
        raise ValueError(f"{text!r} must be 1-63 characters of a-z, 0-9 and '-', starting and ending with a letter "
                         f"or digit")
    return text


def dns_subdomain(text: str) -> str:
    """An RFC 1123 subdomain: what most object names (Secrets, ConfigMaps, storage classes) must be."""
    if len(text) > 253 or not all(_DNS_LABEL.fullmatch(part) for part in text.split(".")):
        raise ValueError(f"{text!r} must be lower-case labels of a-z, 0-9 and '-' separated by dots, at most 253 "
                         f"characters")
    return text


def hostname(text: str) -> str:
    """A DNS name a gateway serves, optionally with a leading ``*.``."""
    name = text[2:] if text.startswith("*.") else text
    try:
        dns_subdomain(name)
    except ValueError:
        raise ValueError(f"{text!r} is not a host name (e.g. support.example.com or *.example.com)") from None
    if "." not in name:
        raise ValueError(f"{text!r} is not a fully qualified host name (e.g. support.example.com)")
    return text


def label_key(text: str) -> str:
    """A label or annotation key: ``[prefix/]name``."""
    prefix, _, name = text.rpartition("/")
    if prefix:
        try:
            dns_subdomain(prefix)
        except ValueError:
            raise ValueError(f"label key {text!r}: its prefix {prefix!r} is not a DNS subdomain") from None
    if len(name) > 63 or not _LABEL_NAME.fullmatch(name):
        raise ValueError(f"label key {text!r}: {name!r} must be 1-63 characters of A-Z a-z 0-9 - _ ., starting and "
                         f"ending with a letter or digit")
    return text


def label_value(text: str) -> str:
    """A label value: empty, or 1-63 characters as a label name."""
    if text and (len(text) > 63 or not _LABEL_NAME.fullmatch(text)):
        raise ValueError(f"label value {text!r} must be at most 63 characters of A-Z a-z 0-9 - _ ., starting and "
                         f"ending with a letter or digit")
    return text


def secret_key(text: str) -> str:
    """A key inside a Secret."""
    if len(text) > 253 or not _SECRET_KEY.fullmatch(text):
        raise ValueError(f"{text!r} is not a Secret key (A-Z a-z 0-9 - _ . only)")
    return text


def env_name(text: str) -> str:
    """An environment variable name."""
    if not _ENV_NAME.fullmatch(text):
        raise ValueError(f"{text!r} is not an environment variable name (A-Z a-z 0-9 _, not starting with a digit)")
    return text


def http_token(text: str) -> str:
    """An HTTP header or cookie name."""
    if not _TOKEN.fullmatch(text):
        raise ValueError(f"{text!r} is not a valid header or cookie name (no spaces, colons or separators)")
    return text


def app_reference(text: str) -> str:
    """What ``statefleet serve`` takes as APP: ``module:attribute`` or ``path/to/file.py:attribute``."""
    if not _MODULE_ATTR.fullmatch(text):
        raise ValueError(f"{text!r} must be module:attribute or path/to/file.py:attribute, as statefleet serve takes")
    return text


def image(text: str) -> str:
    """A pinned container image: ``[registry[:port]/]repository:tag`` or ``…@sha256:…``; ``latest`` is refused."""
    reference, _, digest = text.partition("@")
    if digest and not _DIGEST.fullmatch(digest):
        raise ValueError(f"{text!r}: the digest must be sha256: and 64 hex digits")
    path, tag = reference, ""
    if ":" in reference.rsplit("/", 1)[-1]:
        path, _, tag = reference.rpartition(":")
    components = path.split("/")
    if len(components) > 1 and ("." in components[0] or ":" in components[0] or components[0] == "localhost"):
        components = components[1:]  # the registry host (and port)
    if not components or not all(_IMAGE_COMPONENT.fullmatch(part) for part in components):
        raise ValueError(f"{text!r} is not an image reference (registry/repository:tag, lower-case repository)")
    if tag and not _IMAGE_TAG.fullmatch(tag):
        raise ValueError(f"{text!r}: tag {tag!r} is not a valid image tag")
    if not digest and (not tag or tag == "latest"):
        raise ValueError(f"{text!r} must be pinned to a tag other than latest or to a digest, so every pod of a "
                         f"version runs the same code")
    return text


def has_digest(reference: str) -> bool:
    """Whether an image reference pins a digest (``…@sha256:…``)."""
    return "@" in reference


def cidr(text: str) -> str:
    """An IPv4 or IPv6 network in CIDR notation, host bits zero."""
    try:
        ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a CIDR block ({exc})") from None
    if "/" not in text:
        raise ValueError(f"{text!r} is not a CIDR block: add the prefix length (e.g. {text}/32)")
    return text
