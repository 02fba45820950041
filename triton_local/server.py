"""Start, watch and stop a local tritonserver process."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from triton_local.backend_dir import prepare_backend_dir
from triton_local.environment import check_stub_environment, server_environment
from triton_local.install import find_server

ControlMode = Literal["poll", "explicit"]
HOST = "127.0.0.1"
PID_FILE = "tritonserver.pid"
STATE_FILE = "tritonserver.json"

# Requests to our own server on 127.0.0.1 must never go through a proxy.
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class TritonStartError(RuntimeError):
    pass


class TritonAlreadyRunningError(TritonStartError):
    pass


@dataclass(frozen=True)
class Ports:
    grpc: int = 8001
    http: int = 8000
    metrics: int = 8002

    def named(self) -> dict[str, int]:
        return {"grpc": self.grpc, "http": self.http, "metrics": self.metrics}


@dataclass(frozen=True)
class LaunchOptions:
    repository: Path
    run_dir: Path
    ports: Ports = field(default_factory=Ports)
    control_mode: ControlMode = "poll"
    poll_secs: int = 2
    log_path: Path | None = None
    python_env: Path = field(default_factory=lambda: Path(sys.prefix))
    ready_timeout: float = 60.0
    exit_timeout_secs: int = 5
    extra_args: tuple[str, ...] = ()

    @property
    def log_file(self) -> Path:
        return self.log_path or self.run_dir / "tritonserver.log"


def read_log(path: Path, offset: int = 0) -> list[str]:
    try:
        with path.open("rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace").splitlines()
    except FileNotFoundError:
        return [f"(no log at {path})"]


def tail(path: Path, lines: int = 40, offset: int = 0) -> str:
    return "\n".join(read_log(path, offset)[-lines:])


def log_errors(path: Path, limit: int = 20, offset: int = 0) -> str:
    """Triton's error lines (severity E), without the harmless CUDA ones."""
    errors = [
        line
        for line in read_log(path, offset)
        if line[:1] == "E" and line[1:5].isdigit() and "CUDA" not in line.upper()
    ]
    return "\n".join(errors[-limit:])


def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with _HTTP.open(url, timeout=timeout) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def is_tritonserver(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    argv0 = cmdline.split(b"\0", 1)[0]
    return argv0.endswith(b"tritonserver")


def check_port_free(name: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise TritonAlreadyRunningError(
                    f"{name} port {HOST}:{port} is already in use "
                    "(another Triton or another service); choose another port"
                ) from None
            raise


def model_names(repository: Path) -> list[str]:
    return sorted(
        path.parent.name for path in repository.glob("*/config.pbtxt") if path.is_file()
    )


@dataclass
class TritonHandle:
    """A running tritonserver; `stop()` ends it and its stubs."""

    pid: int
    options: LaunchOptions
    process: subprocess.Popen[bytes] | None = None
    log_offset: int = 0  # where this run's lines start in an appended log

    @property
    def ports(self) -> Ports:
        return self.options.ports

    @property
    def grpc_url(self) -> str:
        return f"{HOST}:{self.ports.grpc}"

    @property
    def http_url(self) -> str:
        return f"http://{HOST}:{self.ports.http}"

    @property
    def metrics_url(self) -> str:
        return f"http://{HOST}:{self.ports.metrics}/metrics"

    @property
    def log_path(self) -> Path:
        return self.options.log_file

    def is_running(self) -> bool:
        if self.process is not None:
            return self.process.poll() is None
        return is_tritonserver(self.pid)

    def log_tail(self, lines: int = 40) -> str:
        return tail(self.log_path, lines, self.log_offset)

    def failure_report(self) -> str:
        errors = log_errors(self.log_path, offset=self.log_offset)
        report = f"log {self.log_path}, last lines:\n{self.log_tail(15)}"
        return f"errors in the log:\n{errors}\n{report}" if errors else report

    def model_ready(self, name: str, version: str = "") -> bool:
        suffix = f"/versions/{version}" if version else ""
        return http_ok(f"{self.http_url}/v2/models/{name}{suffix}/ready")

    def wait_ready(self, models: list[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pending = ["", *models]  # "" is the server itself
        while pending:
            if not self.is_running():
                raise TritonStartError(
                    f"tritonserver (pid {self.pid}) exited during start-up; "
                    + self.failure_report()
                )
            name = pending[0]
            ready = (
                http_ok(f"{self.http_url}/v2/health/ready")
                if name == ""
                else self.model_ready(name)
            )
            if ready:
                pending.pop(0)
                continue
            if time.monotonic() > deadline:
                what = "the server" if name == "" else f"model {name!r}"
                raise TritonStartError(
                    f"{what} not ready after {timeout:.0f} s; " + self.failure_report()
                )
            time.sleep(0.1)

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM, then SIGKILL to the whole process group after `grace`."""
        if self.is_running():
            os.kill(self.pid, signal.SIGTERM)
            if not self._wait_exit(grace):
                # The stubs live in the server's process group, which we created.
                os.killpg(self.pid, signal.SIGKILL)
                self._wait_exit(5.0)
        for name in (PID_FILE, STATE_FILE):
            path = self.options.run_dir / name
            if path.exists() and _read_pid(path.parent) == self.pid:
                path.unlink()

    def _wait_exit(self, timeout: float) -> bool:
        if self.process is not None:
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                return False
            return True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not is_tritonserver(self.pid):
                return True
            time.sleep(0.1)
        return False

    def __enter__(self) -> TritonHandle:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def _read_pid(run_dir: Path) -> int | None:
    try:
        return int((run_dir / PID_FILE).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def running(run_dir: Path) -> TritonHandle | None:
    """The server recorded in `run_dir`, if it is still running."""
    pid = _read_pid(run_dir)
    if pid is None or not is_tritonserver(pid):
        return None
    try:
        state = json.loads((run_dir / STATE_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        raise TritonStartError(
            f"tritonserver pid {pid} from {run_dir / PID_FILE} is running but "
            f"{run_dir / STATE_FILE} is missing or broken; stop it by its pid"
        ) from None
    options = LaunchOptions(
        repository=Path(state["repository"]),
        run_dir=run_dir,
        ports=Ports(**state["ports"]),
        control_mode=state["control_mode"],
        log_path=Path(state["log_path"]),
    )
    return TritonHandle(pid=pid, options=options)


def command_line(options: LaunchOptions, backend_dir: Path, binary: Path) -> list[str]:
    ports = options.ports
    args = [
        str(binary),
        f"--model-repository={options.repository}",
        f"--backend-directory={backend_dir}",
        f"--model-control-mode={options.control_mode}",
        f"--grpc-address={HOST}",
        f"--grpc-port={ports.grpc}",
        f"--http-address={HOST}",
        f"--http-port={ports.http}",
        f"--metrics-address={HOST}",
        f"--metrics-port={ports.metrics}",
        "--allow-gpu-metrics=false",
        "--pinned-memory-pool-byte-size=0",
        f"--exit-timeout-secs={options.exit_timeout_secs}",
    ]
    if options.control_mode == "poll":
        args.append(f"--repository-poll-secs={options.poll_secs}")
    else:
        args.append("--load-model=*")
    return [*args, *options.extra_args]


def start_triton(options: LaunchOptions) -> TritonHandle:
    """Start tritonserver in the background and wait until every model is ready."""
    repository = options.repository.resolve()
    models = model_names(repository)
    if not models:
        raise TritonStartError(f"no */config.pbtxt in model repository {repository}")
    if options.control_mode not in ("poll", "explicit"):
        raise TritonStartError(
            f"model control mode {options.control_mode!r}: use 'poll' or 'explicit'"
        )
    options = replace(options, repository=repository)

    options.run_dir.mkdir(parents=True, exist_ok=True)
    existing = running(options.run_dir)
    if existing is not None:
        raise TritonAlreadyRunningError(
            f"tritonserver already running from {options.run_dir} "
            f"(pid {existing.pid}, ports {existing.ports.named()}); "
            "stop it first (python -m triton_local down)"
        )
    for name, port in options.ports.named().items():
        check_port_free(name, port)

    install = find_server(options.python_env)
    env = server_environment(install, options.python_env)
    check_stub_environment(env)
    backend_dir = prepare_backend_dir(install, options.run_dir / "backends")

    options.log_file.parent.mkdir(parents=True, exist_ok=True)
    with options.log_file.open("ab") as log:
        log_offset = log.tell()
        process = subprocess.Popen(
            command_line(options, backend_dir, install.binary),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=options.run_dir,
            start_new_session=True,
        )
    handle = TritonHandle(
        pid=process.pid, options=options, process=process, log_offset=log_offset
    )
    _write_state(handle)

    try:
        handle.wait_ready(models, options.ready_timeout)
    except BaseException:
        handle.stop(grace=5.0)
        raise
    return handle


def _write_state(handle: TritonHandle) -> None:
    run_dir = handle.options.run_dir
    state = {
        "pid": handle.pid,
        "repository": str(handle.options.repository),
        "ports": handle.ports.named(),
        "control_mode": handle.options.control_mode,
        "log_path": str(handle.log_path),
    }
    (run_dir / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")
    (run_dir / PID_FILE).write_text(f"{handle.pid}\n")
