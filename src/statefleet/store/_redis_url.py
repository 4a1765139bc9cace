"""Redis store URLs, parsed once into a :class:`RedisUrl` (``InvalidStoreUrl`` with the reason if malformed).

One server, Sentinel, or Cluster::

    redis://[[user]:password@]host[:6379][/db][?option=value&...]            (rediss:// over TLS)
    unix://[[user]:password@]/path/to/redis.sock[?db=N&...]
    redis+sentinel://[[user]:password@]h1[:26379],h2[:26379]/master_name[/db][?...]   (rediss+sentinel://)
    redis+cluster://[[user]:password@]h1[:6379],h2[:6379][/][?...]                    (rediss+cluster://)

The user and password are the data nodes'; the sentinels' are ``sentinel_username`` / ``sentinel_password``.

Options (the names are redis-py's where redis-py has one):

- ``socket_connect_timeout`` (seconds, default 2): to connect and authenticate, on every path (discovery,
  cluster map refresh, reconnection).
- ``socket_timeout`` (seconds, default 5): how long a call waits for its reply unless it gives its own timeout.
- ``db`` (not in a cluster): the database number, also the path's last segment.
- ``wait_replicas`` (default 0) and ``wait_timeout`` (milliseconds, default 1000): every write waits until that
  many replicas acknowledge it (``WAIT``); fewer in time fails the call with ``ReplicaAckMissing``.
- ``sentinel_username``, ``sentinel_password``: credentials for the sentinels (Sentinel URLs only).
- ``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``, ``ssl_cert_reqs`` (``none`` | ``optional`` |
  ``required``), ``ssl_check_hostname`` (``true`` | ``false``): TLS, for ``rediss`` schemes only; the same
  settings serve the sentinels and the data nodes.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qs, unquote

from ..errors import InvalidStoreUrl
from . import redact_url

#: Seconds to connect (with the handshake) and to wait for a reply, unless the URL says otherwise.
CONNECT_TIMEOUT = 2.0
REPLY_TIMEOUT = 5.0
#: Milliseconds WAIT waits for replica acknowledgements, unless ``wait_timeout=`` says otherwise.
WAIT_TIMEOUT_MS = 1000

Shape = Literal["standalone", "sentinel", "cluster"]
#: Makes the error for a reason (``parse_redis_url``'s ``invalid``).
_Invalid = Callable[[str], InvalidStoreUrl]

#: scheme -> (shape, TLS, default port)
SCHEMES: dict[str, tuple[Shape, bool, int]] = {
    "redis": ("standalone", False, 6379),
    "rediss": ("standalone", True, 6379),
    "unix": ("standalone", False, 0),
    "redis+sentinel": ("sentinel", False, 26379),
    "rediss+sentinel": ("sentinel", True, 26379),
    "redis+cluster": ("cluster", False, 6379),
    "rediss+cluster": ("cluster", True, 6379),
}

_TLS_OPTIONS = {"ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs", "ssl_check_hostname"}
_OPTIONS = {
    "socket_connect_timeout", "socket_timeout", "db", "wait_replicas", "wait_timeout", "username", "password",
    "sentinel_username", "sentinel_password", *_TLS_OPTIONS,
}
#: redis-py connection-pool options that URLs written for redis-py may carry; they mean nothing here.
_IGNORED = {
    "health_check_interval", "max_connections", "socket_keepalive", "retry_on_timeout", "socket_read_size",
    "client_name", "decode_responses", "encoding", "protocol", "timeout",
}
_CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}
_BOOLEANS = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False, "off": False}


@dataclass(frozen=True)
class RedisUrl:
    """Where the Redis store is and how to talk to it; ``repr`` and ``description`` hide the passwords."""

    #: standalone (one server), sentinel (a primary found through sentinels) or cluster.
    shape: Shape
    #: The URL with its passwords replaced by ``***``, for messages.
    description: str
    #: The server (standalone), the sentinels, or the cluster's seed nodes: (host, port).
    hosts: tuple[tuple[str, int], ...] = ()
    #: The Unix socket of a ``unix://`` URL.
    path: str | None = None
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    db: int = 0
    #: The Sentinel master name.
    master_name: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)
    connect_timeout: float = CONNECT_TIMEOUT
    reply_timeout: float = REPLY_TIMEOUT
    #: Replica acknowledgements every write waits for (0: none), and for how long.
    wait_replicas: int = 0
    wait_timeout_ms: int = WAIT_TIMEOUT_MS
    ssl_ca_certs: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_cert_reqs: str = "required"
    ssl_check_hostname: bool = True

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for ``rediss`` schemes (certificate checks as redis-py does them), else None."""
        if not self.tls:
            return None
        context = ssl.create_default_context(cafile=self.ssl_ca_certs)
        verify = _CERT_REQS[self.ssl_cert_reqs]
        context.check_hostname = self.ssl_check_hostname and verify != ssl.CERT_NONE
        context.verify_mode = verify
        if self.ssl_certfile:
            context.load_cert_chain(self.ssl_certfile, self.ssl_keyfile)
        return context

    def auth(self, *, sentinel: bool = False) -> tuple[str, ...] | None:
        """The AUTH command for a data node (or a sentinel), None without a password."""
        user, password = (self.sentinel_username, self.sentinel_password) if sentinel else (self.username,
                                                                                           self.password)
        if not password:
            return None
        return ("AUTH", user, password) if user else ("AUTH", password)


def parse_redis_url(url: str) -> RedisUrl:
    """``url`` as a :class:`RedisUrl`, or ``InvalidStoreUrl`` naming what is wrong."""
    safe = redact_url(url)

    def invalid(reason: str) -> InvalidStoreUrl:
        return InvalidStoreUrl(f"store URL {safe!r} is not a valid Redis URL: {reason}")

    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in SCHEMES:
        raise invalid(f"unknown scheme {scheme!r}; use one of {', '.join(s + '://' for s in SCHEMES)}")
    shape, tls, default_port = SCHEMES[scheme.lower()]
    rest = rest.split("#", 1)[0]
    rest, _, query = rest.partition("?")
    netloc, slash, path = rest.partition("/")
    path = slash + path
    userinfo, at, hostlist = netloc.rpartition("@")
    if not at:
        userinfo, hostlist = "", netloc
    username, _, password = userinfo.partition(":")
    options = _options(query)
    unknown = sorted(set(options) - _OPTIONS - _IGNORED)
    if unknown:
        raise invalid(f"unknown option {unknown[0]!r}; the options are {', '.join(sorted(_OPTIONS))}")
    if not tls and (tls_given := sorted(set(options) & _TLS_OPTIONS)):
        raise invalid(f"{tls_given[0]} needs TLS: use a rediss scheme")
    if shape != "sentinel" and (given := sorted({"sentinel_username", "sentinel_password"} & set(options))):
        raise invalid(f"{given[0]} is for Sentinel URLs (redis+sentinel://)")

    fields: dict[str, object] = {}
    if scheme.lower() == "unix":
        if hostlist:
            raise invalid(f"a unix:// URL names a socket path, not a host ({hostlist!r}); write unix:///path")
        if not path or path == "/":
            raise invalid("no socket path; write unix:///path/to/redis.sock")
        fields["path"] = unquote(path)
        path = ""
    else:
        fields["hosts"] = hosts = _hosts(hostlist, default_port, invalid)
        if shape == "standalone" and len(hosts) > 1:
            raise invalid("several hosts; for a Sentinel or a Cluster use redis+sentinel:// or redis+cluster://")

    db: str | None = None
    segments = [unquote(s) for s in path.split("/")[1:]]
    if segments and segments[-1] == "":
        segments.pop()  # a trailing slash
    if shape == "sentinel":
        if not segments or not segments[0]:
            raise invalid("no master name; write redis+sentinel://host:26379,host2:26379/master_name[/db]")
        fields["master_name"] = segments[0]
        segments = segments[1:]
    if len(segments) > 1:
        raise invalid(f"unexpected path {path!r}")
    if segments:
        if shape == "cluster":
            raise invalid("a Redis Cluster has only database 0: remove the database from the path")
        db = segments[0]
    if "db" in options:
        if shape == "cluster":
            raise invalid("a Redis Cluster has only database 0: remove the db option")
        db = options["db"]
    if db is not None:
        fields["db"] = _integer("db", db, invalid, minimum=0)

    fields["username"] = unquote(username) or options.get("username") or None
    fields["password"] = unquote(password) or options.get("password") or None
    fields["sentinel_username"] = options.get("sentinel_username") or None
    fields["sentinel_password"] = options.get("sentinel_password") or None
    if "socket_connect_timeout" in options:
        fields["connect_timeout"] = _seconds("socket_connect_timeout", options["socket_connect_timeout"], invalid)
    if "socket_timeout" in options:
        fields["reply_timeout"] = _seconds("socket_timeout", options["socket_timeout"], invalid)
    if "wait_replicas" in options:
        fields["wait_replicas"] = _integer("wait_replicas", options["wait_replicas"], invalid, minimum=0)
    if "wait_timeout" in options:
        # 0 would make WAIT block until the replicas answer, however long that takes.
        fields["wait_timeout_ms"] = _integer("wait_timeout", options["wait_timeout"], invalid, minimum=1)
    for name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
        if name in options:
            fields[name] = options[name]
    if "ssl_cert_reqs" in options:
        reqs = options["ssl_cert_reqs"].lower().removeprefix("cert_")
        if reqs not in _CERT_REQS:
            raise invalid(f"ssl_cert_reqs={options['ssl_cert_reqs']!r}; use none, optional or required")
        fields["ssl_cert_reqs"] = reqs
    if "ssl_check_hostname" in options:
        flag = _BOOLEANS.get(options["ssl_check_hostname"].lower())
        if flag is None:
            raise invalid(f"ssl_check_hostname={options['ssl_check_hostname']!r}; use true or false")
        fields["ssl_check_hostname"] = flag
    parsed = RedisUrl(shape, safe, tls=tls, **fields)  # type: ignore[arg-type]
    if parsed.wait_replicas and parsed.wait_timeout_ms >= parsed.reply_timeout * 1000:
        raise invalid(
            f"wait_timeout ({parsed.wait_timeout_ms} ms) must be shorter than socket_timeout "
            f"({parsed.reply_timeout:g} s), or every unacknowledged write would time out instead of failing clearly"
        )
    return parsed


def _options(query: str) -> dict[str, str]:
    """The query's options (the last value of a repeated one)."""
    return {name: values[-1] for name, values in parse_qs(query, keep_blank_values=True).items()}


def _hosts(hostlist: str, default_port: int, invalid: _Invalid) -> tuple[tuple[str, int], ...]:
    if not hostlist:
        raise invalid("no host; write host:port (several, comma-separated, for Sentinel and Cluster)")
    hosts = []
    for item in hostlist.split(","):
        if not item:
            raise invalid(f"an empty host in {hostlist!r}")
        if item.startswith("["):  # [IPv6]:port
            host, bracket, tail = item[1:].partition("]")
            if not bracket or (tail and not tail.startswith(":")):
                raise invalid(f"malformed IPv6 host {item!r}; write [::1]:6379")
            port_text = tail[1:] if tail else ""
        else:
            host, _, port_text = item.partition(":")
        if not host:
            raise invalid(f"no host name in {item!r}")
        port = default_port
        if port_text:
            if not port_text.isdigit() or not 0 < int(port_text) < 65536:
                raise invalid(f"bad port {port_text!r} in {item!r}; a port is a number from 1 to 65535")
            port = int(port_text)
        hosts.append((unquote(host), port))
    return tuple(hosts)


def _integer(name: str, text: str, invalid: _Invalid, *, minimum: int) -> int:
    if not text.strip().isdigit() or int(text) < minimum:
        raise invalid(f"{name}={text!r}; it must be a whole number >= {minimum}")
    return int(text)


def _seconds(name: str, text: str, invalid: _Invalid) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise invalid(f"{name}={text!r}; it must be a positive number of seconds")
    return value
