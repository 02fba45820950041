"""The load tools `make bench` needs, installed into .bench/ when missing.

- perf_analyzer: the binary inside the tritonclient 2.51.0 manylinux wheel (the
  newest that runs on glibc 2.36), with libcudart.so.12 from
  nvidia-cuda-runtime-cu12 (loads without a GPU) and Debian's libb64-0d. It
  lives in a folder of its own, apart from the project's newer tritonclient.
- wrk (Debian package) with bench/wrk/load.lua for unique ids and fixed rates.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / ".bench"
PA_DIR = BENCH_DIR / "perf_analyzer"
PA_WHEELS = ("tritonclient==2.51.0", "nvidia-cuda-runtime-cu12==12.9.79")
PA_BINARY = PA_DIR / "tritonclient-2.51.0.data" / "data" / "bin" / "perf_analyzer"
CUDART_DIR = PA_DIR / "nvidia" / "cuda_runtime" / "lib"
DEBIAN_PACKAGES = {"wrk": "wrk", "libb64-0d": "/usr/lib/x86_64-linux-gnu/libb64.so.0d"}


class ToolMissing(RuntimeError):
    """A load tool is missing and cannot be installed from here."""


def _debian_missing() -> list[str]:
    missing = []
    for package, probe in DEBIAN_PACKAGES.items():
        found = Path(probe).exists() if probe.startswith("/") else shutil.which(probe)
        if not found:
            missing.append(package)
    return missing


def ensure_debian_packages() -> None:
    missing = _debian_missing()
    if not missing:
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise ToolMissing(
            "make bench needs the Debian packages "
            + " ".join(missing)
            + "; install them with: sudo apt-get install -y "
            + " ".join(missing)
        )
    print(f"installing {' '.join(missing)} with apt-get", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    result = subprocess.run(
        ["apt-get", "install", "-y", "-qq", *missing], env=env, check=False
    )
    if result.returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=False)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", *missing], env=env, check=True
        )


def ensure_perf_analyzer() -> Path:
    if PA_BINARY.exists() and (CUDART_DIR / "libcudart.so.12").exists():
        return PA_BINARY
    wheels = BENCH_DIR / "wheels"
    print("downloading perf_analyzer (tritonclient 2.51.0 wheel)", flush=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
            "--platform",
            "manylinux2014_x86_64",
            "--platform",
            "manylinux1_x86_64",
            "--python-version",
            "3.11",
            "-d",
            str(wheels),
            *PA_WHEELS,
        ],
        check=True,
    )
    for wheel in sorted(wheels.glob("*.whl")):
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(PA_DIR)
    PA_BINARY.chmod(0o755)
    return PA_BINARY


def perf_analyzer_env() -> dict[str, str]:
    paths = [str(CUDART_DIR), os.environ.get("LD_LIBRARY_PATH", "")]
    return {**os.environ, "LD_LIBRARY_PATH": ":".join(p for p in paths if p)}


def ensure_all() -> Path:
    ensure_debian_packages()
    binary = ensure_perf_analyzer()
    check = subprocess.run(
        [str(binary), "--version"],
        env=perf_analyzer_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    if check.returncode != 0:
        raise ToolMissing(f"perf_analyzer does not run: {check.stderr.strip()}")
    return binary


def free_ports_from(base: int, count: int = 1, step: int = 10) -> int:
    """The first of ``count`` consecutive free ports at ``base`` or above.

    The bench prefers fixed ports (easy to find in `ss`), but must not fail
    because another service on the machine holds one of them.
    """
    for start in range(base, base + 100 * step, step):
        if all(_port_free(port) for port in range(start, start + count)):
            return start
    raise RuntimeError(f"no {count} free ports found from {base}")


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
