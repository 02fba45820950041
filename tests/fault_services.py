"""Private servers that fault-injection tests may stop, kill or stall.

Each listens on a free port of 127.0.0.1 and belongs to the test that made
it; the machine's own PostgreSQL and Redis are never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from triton_fixtures import free_port

from triton_local.server import LaunchOptions, TritonHandle, start_triton

T = TypeVar("T")


def run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from synchronous code, on its own loop.

    A thread of its own keeps it clear of the loop that pytest-asyncio owns.
    """
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def _wait_for_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", port), timeout=0.5),
        ):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def _postgres_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    if not found:
        raise FileNotFoundError("no /usr/lib/postgresql/*/bin/pg_ctl")
    return found[-1].parent


class PrivatePostgres:
    """A throw-away cluster in a temporary folder, run as the ``postgres`` user.

    initdb refuses to run as root, so every server command runs through
    ``runuser``. Only TCP on 127.0.0.1 is open (no Unix socket), with trust
    authentication for 127.0.0.1 alone.
    """

    def __init__(self, database: str = "risk_faults") -> None:
        self.port = free_port()
        self.database = database
        self._bin = _postgres_bin()
        self.root = Path(tempfile.mkdtemp(prefix="risk-faults-pg-"))
        shutil.chown(self.root, "postgres", "postgres")
        self.data = self.root / "data"
        self.log = self.root / "server.log"

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{self.database}"

    def _run(self, *args: str) -> None:
        result = subprocess.run(
            ["runuser", "-u", "postgres", "--", str(self._bin / args[0]), *args[1:]],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{args[0]} failed ({result.returncode}): {result.stdout}"
                f"{result.stderr}\n{self.log_tail()}"
            )

    def log_tail(self) -> str:
        try:
            return "\n".join(self.log.read_text().splitlines()[-20:])
        except OSError:
            return "(no server log)"

    def init(self) -> None:
        self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "-E", "UTF8",
            "--locale=C", "--auth=trust", "--no-sync",
        )  # fmt: skip
        (self.data / "pg_hba.conf").write_text("host all all 127.0.0.1/32 trust\n")
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"port = {self.port}\n"
                "listen_addresses = '127.0.0.1'\n"
                "unix_socket_directories = ''\n"
                # Durability across a server crash needs the WAL written, not
                # flushed: the machine itself does not fail in these tests.
                "fsync = off\n"
                "max_connections = 60\n"
                "shared_buffers = 16MB\n"
            )

    def start(self) -> None:
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "30",
            "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """``immediate`` ends every server process at once, like a crash."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def destroy(self) -> None:
        if self.running():
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


class PrivateRedis:
    """redis-server as a child process, without persistence."""

    def __init__(self) -> None:
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self._process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],  # fmt: skip
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_for_port(self.port, 10)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(10)
        self._process = None


class PrivateTriton:
    """A private Triton that a test may SIGKILL and start again on its ports."""

    def __init__(self, options: LaunchOptions) -> None:
        self.options = options
        self.handle: TritonHandle = start_triton(options)

    @property
    def grpc_url(self) -> str:
        return self.handle.grpc_url

    def kill(self) -> None:
        """SIGKILL to the server and its backend stubs (one process group)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.handle.pid, signal.SIGKILL)
        if self.handle.process is not None:
            self.handle.process.wait(10)

    def restart(self) -> None:
        self.handle = start_triton(self.options)

    def stop(self) -> None:
        self.handle.stop(grace=5.0)


class StallProxy:
    """A TCP proxy to ``127.0.0.1:target_port`` that can stop passing bytes on.

    Forwarding, it is a transparent hop (optionally delaying each answer by
    ``delay_s``). Stalled, it still accepts connections and reads what is
    sent, but passes nothing on in either direction: a dependency that accepts
    TCP connections and never answers. It runs its own event loop in a
    thread, so that a test blocking its own loop cannot stall it by accident.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.stalled = False
        self.delay_s = 0.0
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("stall proxy did not start")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._accept, "127.0.0.1", self.port)
        )
        self._ready.set()
        self._loop.run_forever()
        # Connections still open when the loop stopped end here.
        for task in asyncio.all_tasks(self._loop):
            task.cancel()
        self._loop.run_until_complete(asyncio.sleep(0))

    async def _accept(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._writers.add(writer)
        try:
            if self.stalled:
                while await reader.read(65536):
                    pass  # swallowed
                return
            try:
                up_reader, up_writer = await asyncio.open_connection(
                    "127.0.0.1", self.target_port
                )
            except OSError:
                return
            self._writers.add(up_writer)
            try:
                await asyncio.gather(
                    self._pipe(reader, up_writer, delay=False),
                    self._pipe(up_reader, writer, delay=True),
                )
            finally:
                self._writers.discard(up_writer)
                up_writer.close()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _pipe(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, delay: bool
    ) -> None:
        try:
            while data := await source.read(65536):
                if delay and self.delay_s:
                    await asyncio.sleep(self.delay_s)
                while self.stalled:
                    await asyncio.sleep(0.02)
                sink.write(data)
                await sink.drain()
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError, RuntimeError):
                sink.write_eof()

    def close(self) -> None:
        async def shut() -> None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()

        asyncio.run_coroutine_threadsafe(shut(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
