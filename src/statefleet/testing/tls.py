"""Throwaway TLS files for the Redis fixtures: a certificate authority made on the spot (``trustme``) and a server
certificate it signed for 127.0.0.1 and localhost, so that tests can run Redis over TLS and verify it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote


@dataclass(frozen=True)
class TLSFiles:
    """PEM files: the CA certificate clients trust, and the server's certificate chain and private key."""

    ca_cert: Path
    cert: Path
    key: Path

    @property
    def query(self) -> str:
        """The URL query that makes a client verify the server with this CA: ``ssl_ca_certs=<ca path>``."""
        return f"ssl_ca_certs={quote(str(self.ca_cert))}"

    def server_config(self) -> list[tuple[str, str]]:
        """The redis-server directives (name, value) that serve TLS with these files, clients unauthenticated, and
        replicate (or, for a sentinel, watch) over TLS; the port itself is ``tls-port``, set by the caller."""
        return [("tls-cert-file", str(self.cert)), ("tls-key-file", str(self.key)),
                ("tls-ca-cert-file", str(self.ca_cert)), ("tls-auth-clients", "no"), ("tls-replication", "yes")]


def make_tls_files(directory: Path | str) -> TLSFiles:
    """Write ``ca.pem``, ``server.pem`` and ``server.key`` in ``directory`` (which must exist)."""
    import trustme  # a dev dependency: importing this module (for TLSFiles) must not need it

    directory = Path(directory)
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost")
    files = TLSFiles(ca_cert=directory / "ca.pem", cert=directory / "server.pem", key=directory / "server.key")
    ca.cert_pem.write_to_path(str(files.ca_cert))
    issued.private_key_pem.write_to_path(str(files.key))
    with files.cert.open("wb") as chain:
        for pem in issued.cert_chain_pems:
            chain.write(pem.bytes())
    return files
