"""The process environment of tritonserver and its Python backend stub."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from triton_local.install import ServerInstall

_PROBE = (
    "import sys, numpy, onnxruntime; "
    "print(numpy.__version__, onnxruntime.__version__, sys.prefix)"
)


class StubEnvironmentError(RuntimeError):
    pass


def server_environment(
    install: ServerInstall, python_env: Path, base: dict[str, str] | None = None
) -> dict[str, str]:
    """Environment for tritonserver.

    The stub embeds Python and takes its prefix from the first `python3` on
    PATH, so the chosen environment's bin goes first.
    """
    env = dict(os.environ if base is None else base)
    env["PATH"] = os.pathsep.join([str(python_env / "bin"), env.get("PATH", "")])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        part for part in [str(install.libs_dir), env.get("LD_LIBRARY_PATH", "")] if part
    )
    env.pop("PYTHONHOME", None)
    return env


def check_stub_environment(env: dict[str, str]) -> str:
    """Refuse an environment whose numpy would make the stub return wrong scores.

    Returns a one-line description of the environment.
    """
    python = shutil.which("python3", path=env["PATH"])
    if python is None:
        raise StubEnvironmentError(f"no python3 on PATH={env['PATH']!r}")

    probe = subprocess.run(
        [python, "-c", _PROBE],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if probe.returncode != 0:
        raise StubEnvironmentError(
            f"{python} cannot import numpy and onnxruntime, which the Triton "
            f"Python backend stub needs: {probe.stderr.strip().splitlines()[-1:]}"
        )

    numpy_version, ort_version, prefix = probe.stdout.split()
    if not numpy_version.startswith("1."):
        raise StubEnvironmentError(
            f"numpy {numpy_version} in {prefix}, the environment the Triton Python "
            "backend stub runs in: the stub in nvidia-pytriton 0.7.0 was built for "
            "numpy 1 and returns wrong scores with numpy 2, without any error. "
            f"Install numpy==1.26.4 there ({python} -m pip install numpy==1.26.4)."
        )
    return f"{prefix} (numpy {numpy_version}, onnxruntime {ort_version})"
