"""python -m triton_local up|down|status"""

from __future__ import annotations

import argparse
import json
import sys

from triton_local.environment import StubEnvironmentError
from triton_local.install import ServerNotInstalledError
from triton_local.server import (
    TritonStartError,
    model_names,
    running,
    start_triton,
)
from triton_local.settings import DEFAULTS, SettingError, launch_options, run_dir


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m triton_local",
        description="Run the local Triton (nvidia-pytriton's tritonserver) "
        "on 127.0.0.1 with the project's onnxruntime Python backend.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start in the background, wait until ready")
    down = commands.add_parser("down", help="stop: SIGTERM, SIGKILL after --grace")
    status = commands.add_parser("status", help="print state; exit 0 when ready")

    for command in (up, down, status):
        command.add_argument("--run-dir", help=f"env {DEFAULTS['run_dir'][0]}")
    up.add_argument("--repository", help=f"env {DEFAULTS['repository'][0]}")
    up.add_argument("--log-file", help=f"env {DEFAULTS['log_file'][0]}")
    for name in ("grpc", "http", "metrics"):
        dest = f"{name}_port"
        up.add_argument(f"--{name}-port", type=int, help=f"env {DEFAULTS[dest][0]}")
    up.add_argument(
        "--control-mode",
        choices=("poll", "explicit"),
        help=f"env {DEFAULTS['control_mode'][0]}; default poll",
    )
    up.add_argument("--poll-secs", type=int, help=f"env {DEFAULTS['poll_secs'][0]}")
    up.add_argument(
        "--ready-timeout", type=float, help=f"env {DEFAULTS['ready_timeout'][0]}"
    )
    up.add_argument(
        "--python-env",
        help=f"env {DEFAULTS['python_env'][0]}; the environment the stub runs in",
    )
    down.add_argument("--grace", type=float, default=15.0)
    return parser


def _up(args: argparse.Namespace) -> int:
    options = launch_options(args)
    handle = start_triton(options)
    print(
        f"tritonserver ready (pid {handle.pid}, {options.control_mode} mode): "
        f"gRPC {handle.grpc_url}, HTTP {handle.http_url}, "
        f"metrics {handle.metrics_url}; log {handle.log_path}"
    )
    return 0


def _down(args: argparse.Namespace) -> int:
    handle = running(run_dir(args))
    if handle is None:
        print(f"no tritonserver running from {run_dir(args)}")
        return 0
    handle.stop(grace=args.grace)
    print(f"stopped tritonserver (pid {handle.pid})")
    return 0


def _status(args: argparse.Namespace) -> int:
    handle = running(run_dir(args))
    if handle is None:
        print(f"no tritonserver running from {run_dir(args)}")
        return 3
    models = {
        name: handle.model_ready(name)
        for name in model_names(handle.options.repository)
    }
    state = {
        "pid": handle.pid,
        "ports": handle.ports.named(),
        "control_mode": handle.options.control_mode,
        "repository": str(handle.options.repository),
        "log": str(handle.log_path),
        "models_ready": models,
    }
    print(json.dumps(state, indent=2))
    return 0 if all(models.values()) else 1


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    commands = {"up": _up, "down": _down, "status": _status}
    try:
        return commands[args.command](args)
    except (
        SettingError,
        TritonStartError,
        ServerNotInstalledError,
        StubEnvironmentError,
    ) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
