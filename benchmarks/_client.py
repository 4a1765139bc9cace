"""A minimal HTTP/1.1 keep-alive client on asyncio streams, cheap enough not to be the bottleneck it measures.

Only what the benchmark needs: POST a small JSON body, read a response framed by Content-Length or chunked
(SSE), and note when the first chunk carrying a given marker arrived.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field


@dataclass(slots=True)
class Response:
    status: int
    body: bytes
    #: perf_counter() when the first body bytes containing the caller's marker arrived (None: never).
    marker_at: float | None = None
    #: Response headers, names in lower case.
    headers: dict[bytes, bytes] = field(default_factory=dict)


class Connection:
    """One keep-alive connection to ``host:port``."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> None:
        self.reader = reader
        self.writer = writer
        self.host = host

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer, f"{host}:{port}")

    def close(self) -> None:
        self.writer.close()

    async def post(self, path: str, body: bytes, accept: str = "application/json",
                   marker: bytes | None = None, extra_headers: str = "") -> Response:
        """``extra_headers``: more header lines, each ending in CRLF (``"Idempotency-Key: k\\r\\n"``)."""
        head = (f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
                f"Accept: {accept}\r\n{extra_headers}Content-Length: {len(body)}\r\n\r\n").encode()
        self.writer.write(head + body)
        return await self.read_response(marker)

    async def get(self, path: str) -> Response:
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n\r\n".encode())
        return await self.read_response(None)

    async def read_response(self, marker: bytes | None) -> Response:
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip()
        if b"content-length" in headers:
            body = await self.reader.readexactly(int(headers[b"content-length"]))
            return Response(status, body, time.perf_counter() if marker and marker in body else None, headers)
        if headers.get(b"transfer-encoding", b"").lower() != b"chunked":
            raise ValueError(f"response without Content-Length or chunked encoding: {head!r}")
        chunks: list[bytes] = []
        marker_at = None
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
            chunk = await self.reader.readexactly(size + 2)  # the chunk and its CRLF
            if marker_at is None and marker and marker in chunk:
                marker_at = time.perf_counter()
            if size == 0:
                return Response(status, b"".join(chunks), marker_at, headers)
            chunks.append(chunk[:-2])
