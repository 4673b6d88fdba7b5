"""A lean keep-alive HTTP/1.1 client for bench/server_load.py.

httpx's async pool tops out at a few hundred requests a second on this kind of
machine, which would measure the client rather than the server. This speaks
just enough HTTP/1.1 for the agent API: one request at a time per connection,
bodies with Content-Length.
"""

from __future__ import annotations

import asyncio

import httpx


class Connection:
    """One keep-alive connection, opened on first use and again after `Connection: close`."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, headers: dict[str, str],
                      body: bytes = b"") -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}",
                f"Content-Length: {len(body)}", *(f"{k}: {v}" for k, v in headers.items())]
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        status = int((await self.reader.readline()).split()[1])
        length, close = 0, False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "connection" and value.strip().lower() == "close":
                close = True
        data = await self.reader.readexactly(length) if length else b""
        if close:
            self.close()
        return status, data

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


class Pool:
    """Connections handed out one request at a time; grows up to `size`."""

    def __init__(self, base_url: str, size: int) -> None:
        url = httpx.URL(base_url)
        self.host, self.port = url.host, url.port or 80
        self.size = size
        self.idle: asyncio.Queue[Connection] = asyncio.Queue()
        self.created = 0
        self.gate = asyncio.Semaphore(size)

    async def request(self, method: str, path: str, headers: dict[str, str],
                      body: bytes = b"") -> tuple[int, bytes]:
        async with self.gate:
            connection = self.idle.get_nowait() if not self.idle.empty() else Connection(
                self.host, self.port)
            try:
                answer = await connection.request(method, path, headers, body)
            except BaseException:
                connection.close()
                raise
            self.idle.put_nowait(connection)
            return answer

    def close(self) -> None:
        while not self.idle.empty():
            self.idle.get_nowait().close()
