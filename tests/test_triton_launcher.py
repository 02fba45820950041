"""The local Triton launcher refuses unsafe or conflicting starts clearly."""

from __future__ import annotations

import argparse
import stat
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from triton_fixtures import build_test_repository, free_ports, write_linear_onnx

from triton_local.environment import (
    StubEnvironmentError,
    check_stub_environment,
    server_environment,
)
from triton_local.install import ServerInstall
from triton_local.server import (
    LaunchOptions,
    TritonAlreadyRunningError,
    TritonHandle,
    TritonStartError,
    start_triton,
)
from triton_local.settings import SettingError, launch_options


def fake_python_env(tmp_path: Path, script: str) -> Path:
    python = tmp_path / "env" / "bin" / "python3"
    python.parent.mkdir(parents=True)
    python.write_text(f"#!/bin/sh\n{script}\n")
    python.chmod(python.stat().st_mode | stat.S_IEXEC)
    return tmp_path / "env"


def test_numpy_2_in_stub_environment_is_refused(tmp_path: Path) -> None:
    env_dir = fake_python_env(tmp_path, 'echo "2.1.3 1.32.0 /fake/env"')
    env = server_environment(ServerInstall(tmp_path), env_dir, base={"PATH": ""})

    with pytest.raises(StubEnvironmentError, match=r"numpy 2\.1\.3 in /fake/env"):
        check_stub_environment(env)


def test_stub_environment_without_onnxruntime_is_refused(tmp_path: Path) -> None:
    script = "echo \"ModuleNotFoundError: No module named 'onnxruntime'\" >&2; exit 1"
    env_dir = fake_python_env(tmp_path, script)
    env = server_environment(ServerInstall(tmp_path), env_dir, base={"PATH": ""})

    with pytest.raises(StubEnvironmentError, match="No module named 'onnxruntime'"):
        check_stub_environment(env)


def test_current_environment_is_accepted() -> None:
    install = ServerInstall(Path("/nonexistent"))
    env = server_environment(install, Path(sys.prefix))

    assert "numpy 1." in check_stub_environment(env)


def test_settings_come_from_flags_then_environment() -> None:
    args = argparse.Namespace(grpc_port=9101, control_mode=None)
    env = {"TRITON_GRPC_PORT": "9001", "TRITON_HTTP_PORT": "9000"}

    options = launch_options(args, env)

    assert (options.ports.grpc, options.ports.http, options.ports.metrics) == (
        9101,
        9000,
        8002,
    )
    assert options.control_mode == "poll"
    assert options.poll_secs == 2


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TRITON_HTTP_PORT": "eighty"}, "TRITON_HTTP_PORT\\) = 'eighty'"),
        ({"TRITON_METRICS_PORT": "70000"}, "TRITON_METRICS_PORT\\) = '70000'"),
        ({"TRITON_MODEL_CONTROL_MODE": "none"}, "'none': use 'poll' or 'explicit'"),
        ({"TRITON_HTTP_PORT": "8001"}, "ports must differ"),
    ],
)
def test_bad_setting_is_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingError, match=message):
        launch_options(argparse.Namespace(), env)


@pytest.mark.integration
def test_second_start_from_same_run_dir_is_refused(triton_server: TritonHandle) -> None:
    with pytest.raises(TritonAlreadyRunningError, match=f"pid {triton_server.pid}"):
        start_triton(replace(triton_server.options, ports=free_ports()))


@pytest.mark.integration
def test_second_start_on_same_port_is_refused(
    triton_server: TritonHandle, tmp_path: Path
) -> None:
    options = replace(triton_server.options, run_dir=tmp_path / "run")
    grpc = triton_server.ports.grpc

    with pytest.raises(TritonAlreadyRunningError, match=f"127.0.0.1:{grpc} is already"):
        start_triton(options)


@pytest.mark.integration
def test_failed_start_reports_the_log_and_leaves_nothing_running(
    tmp_path: Path,
) -> None:
    repository = build_test_repository(tmp_path / "repository")
    write_linear_onnx(
        repository / "risk_classifier" / "1" / "model.onnx",
        "risk_probability",
        seed=2,
        width=30,
    )
    options = LaunchOptions(
        repository=repository, run_dir=tmp_path / "run", ports=free_ports()
    )

    with pytest.raises(TritonStartError, match="axis 1: 30 != 26") as failure:
        start_triton(options)

    assert "exited during start-up" in str(failure.value)
    assert not (tmp_path / "run" / "tritonserver.pid").exists()
