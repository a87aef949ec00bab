"""A loopback TCP proxy for outage tests: forward, cut every connection, or freeze traffic."""

from __future__ import annotations

import asyncio
import contextlib


class TcpProxy:
    """Listens on 127.0.0.1 and forwards to a loopback upstream, until told otherwise.

    - `cut()`: close every open connection and refuse new ones (accepted, then closed at once),
      as when the database goes down or restarts;
    - `freeze()`: keep connections open but forward nothing, in either direction, and accept
      new connections without forwarding either (a hung server or a black-holed network);
    - `forward()`: back to normal for new connections; frozen ones resume where they stopped.
    """

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        if upstream_host not in {"127.0.0.1", "localhost", "::1"}:
            raise ValueError("the test proxy only talks to loopback addresses")
        self.upstream = (upstream_host, upstream_port)
        self.mode = "forward"
        self._resume = asyncio.Event()
        self._resume.set()
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        self.mode = "cut"
        self._resume.set()  # connections waiting in a freeze go on, find "cut", and close
        self._close_all()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def forward(self) -> None:
        self.mode = "forward"
        self._resume.set()

    def freeze(self) -> None:
        self.mode = "freeze"
        self._resume.clear()

    def cut(self) -> None:
        self.mode = "cut"
        self._resume.set()
        self._close_all()

    def _close_all(self) -> None:
        for writer in list(self._writers):
            with contextlib.suppress(Exception):
                writer.transport.abort()
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "cut":
            writer.transport.abort()
            return
        self._writers.add(writer)
        await self._resume.wait()  # a frozen proxy accepts but does not even connect upstream
        if self.mode == "cut":
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        self._writers.add(up_writer)
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while True:
                data = await src.read(65536)
                if not data:
                    break
                await self._resume.wait()  # frozen: hold the bytes, send nothing
                if dst.transport.is_closing():
                    break
                dst.write(data)
                await dst.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            with contextlib.suppress(Exception):
                dst.transport.abort()
            self._writers.discard(dst)
