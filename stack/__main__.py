"""python -m stack up|down|status

`up` applies the migrations, starts the local Triton and the gateway in the
background on 127.0.0.1, and returns once the gateway's /health answers ok.
`down` stops what `up` started. Settings come from the environment, as for
the gateway itself (DATABASE_URL, REDIS_URL, PORT, TRITON_GRPC_PORT, ...).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from gateway.config import PROJECT_ROOT, get_settings
from gateway.migrate import apply_migrations

RUN_DIR = Path(os.environ.get("STACK_RUN_DIR", PROJECT_ROOT / ".run"))
PID_FILE = RUN_DIR / "gateway.pid"
LOG_FILE = RUN_DIR / "gateway.log"


def _triton(*args: str) -> int:
    return subprocess.call([sys.executable, "-m", "triton_local", *args])


def _triton_ready() -> bool:
    probe = subprocess.run(
        [sys.executable, "-m", "triton_local", "status"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return probe.returncode == 0


def _gateway_pid() -> int | None:
    try:
        pid = int(PID_FILE.read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def _health(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")
    except (OSError, ValueError):
        return 0, {}


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def up(timeout_s: float) -> int:
    settings = get_settings()
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    print(f"applying migrations to {settings.database_url.split('@')[-1]}")
    applied = asyncio.run(apply_migrations(settings.database_url))
    print(f"  {len(applied)} applied" if applied else "  up to date")

    if _triton_ready():
        print("tritonserver already running and ready; reusing it")
    elif _triton("up") != 0:
        return 1

    grpc_port = os.environ.get("TRITON_GRPC_PORT", "8001")
    env = {
        "TRITON_URL": f"127.0.0.1:{grpc_port}",
        # The gateway sees the repository that the local Triton serves, so
        # GET /model/info can show the versions on disk and the model cards.
        "MODEL_REPOSITORY": os.environ.get(
            "TRITON_MODEL_REPOSITORY", str(PROJECT_ROOT / "model_repository")
        ),
        **os.environ,
    }
    health_url = f"http://{settings.host}:{settings.port}/health"
    running = _gateway_pid()
    if running is not None:
        # Settings are read once at start-up: restart so the current ones apply.
        print(f"restarting the gateway (pid {running}) to apply current settings")
        _stop_gateway(running, grace_s=15.0)
    if _gateway_pid() is None:
        with LOG_FILE.open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "gateway"],
                cwd=PROJECT_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        PID_FILE.write_text(str(process.pid))
        print(f"gateway starting (pid {process.pid}), log {LOG_FILE}")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status, body = _health(health_url)
        if status == 200:
            print(f"gateway ready on http://{settings.host}:{settings.port}: {body}")
            return 0
        if _gateway_pid() is None:
            break
        time.sleep(0.5)
    print(f"gateway not healthy at {health_url}; last log lines:", file=sys.stderr)
    print(_tail(LOG_FILE), file=sys.stderr)
    return 1


def _stop_gateway(pid: int, grace_s: float) -> None:
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and _gateway_pid() is not None:
        time.sleep(0.2)
    if _gateway_pid() is not None:
        os.kill(pid, signal.SIGKILL)
    PID_FILE.unlink(missing_ok=True)


def down(grace_s: float) -> int:
    pid = _gateway_pid()
    if pid is not None:
        _stop_gateway(pid, grace_s)
        print(f"stopped gateway (pid {pid})")
    else:
        print("no gateway running")
    PID_FILE.unlink(missing_ok=True)
    return _triton("down")


def status() -> int:
    settings = get_settings()
    pid = _gateway_pid()
    code, body = _health(f"http://{settings.host}:{settings.port}/health")
    running = f"pid {pid}" if pid else "not running"
    print(f"gateway: {running}, health {code} {body}")
    return (_triton("status") or 0) if code == 200 else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stack", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    up_cmd = commands.add_parser("up")
    up_cmd.add_argument("--timeout", type=float, default=90.0)
    down_cmd = commands.add_parser("down")
    down_cmd.add_argument("--grace", type=float, default=15.0)
    commands.add_parser("status")
    args = parser.parse_args(argv)
    if args.command == "up":
        return up(args.timeout)
    if args.command == "down":
        return down(args.grace)
    return status()


if __name__ == "__main__":
    sys.exit(main())
