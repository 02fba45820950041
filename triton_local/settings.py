"""Launcher settings: command-line flag, else environment variable, else default."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from triton_local.server import LaunchOptions, Ports

PROJECT_ROOT = Path(__file__).resolve().parents[1]

# flag dest -> (environment variable, default)
DEFAULTS: dict[str, tuple[str, str]] = {
    "repository": ("TRITON_MODEL_REPOSITORY", str(PROJECT_ROOT / "model_repository")),
    "run_dir": ("TRITON_RUN_DIR", str(PROJECT_ROOT / ".run" / "triton")),
    "log_file": ("TRITON_LOG_FILE", ""),
    "grpc_port": ("TRITON_GRPC_PORT", "8001"),
    "http_port": ("TRITON_HTTP_PORT", "8000"),
    "metrics_port": ("TRITON_METRICS_PORT", "8002"),
    "control_mode": ("TRITON_MODEL_CONTROL_MODE", "poll"),
    "poll_secs": ("TRITON_REPOSITORY_POLL_SECS", "2"),
    "ready_timeout": ("TRITON_READY_TIMEOUT", "60"),
    "python_env": ("TRITON_PYTHON_ENV", sys.prefix),
}


class SettingError(ValueError):
    pass


def resolve(args: argparse.Namespace, env: Mapping[str, str]) -> dict[str, str]:
    values = {}
    for dest, (variable, default) in DEFAULTS.items():
        flag = getattr(args, dest, None)
        values[dest] = str(flag) if flag is not None else env.get(variable, default)
    return values


def _number(values: dict[str, str], dest: str, kind: type[int] | type[float]) -> float:
    raw = values[dest]
    try:
        value = kind(raw)
    except ValueError:
        variable = DEFAULTS[dest][0]
        raise SettingError(f"{dest} ({variable}) = {raw!r} is not a number") from None
    if value < 0 or (dest.endswith("_port") and not 0 < value < 65536):
        raise SettingError(f"{dest} ({DEFAULTS[dest][0]}) = {raw!r} is out of range")
    return value


def run_dir(args: argparse.Namespace, env: Mapping[str, str] = os.environ) -> Path:
    return Path(resolve(args, env)["run_dir"])


def launch_options(
    args: argparse.Namespace, env: Mapping[str, str] = os.environ
) -> LaunchOptions:
    values = resolve(args, env)
    mode = values["control_mode"]
    if mode not in ("poll", "explicit"):
        raise SettingError(
            f"control_mode (TRITON_MODEL_CONTROL_MODE) = {mode!r}: "
            "use 'poll' or 'explicit'"
        )
    ports = Ports(
        grpc=int(_number(values, "grpc_port", int)),
        http=int(_number(values, "http_port", int)),
        metrics=int(_number(values, "metrics_port", int)),
    )
    if len(set(ports.named().values())) != 3:
        raise SettingError(f"gRPC, HTTP and metrics ports must differ: {ports}")
    return LaunchOptions(
        repository=Path(values["repository"]),
        run_dir=Path(values["run_dir"]),
        ports=ports,
        control_mode="poll" if mode == "poll" else "explicit",
        poll_secs=int(_number(values, "poll_secs", int)),
        log_path=Path(values["log_file"]) if values["log_file"] else None,
        python_env=Path(values["python_env"]),
        ready_timeout=_number(values, "ready_timeout", float),
    )
