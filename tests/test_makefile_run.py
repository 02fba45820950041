"""`make export`'s default RUN: the newest finished training run."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

MAKEFILE = Path(__file__).resolve().parents[1] / "Makefile"

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="no make")


def default_run(cwd: Path) -> str:
    shown = subprocess.run(
        ["make", "-s", "-f", str(MAKEFILE), "--eval", "show-run: ; @echo $(RUN)"]
        + ["show-run"],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
        env={k: v for k, v in os.environ.items() if k != "RUN"},
    )
    return shown.stdout.strip()


def run(root: Path, name: str, mtime: float, finished: bool = True) -> Path:
    path = root / "runs" / name
    path.mkdir(parents=True)
    if finished:
        (path / "run.json").write_text("{}\n")
        os.utime(path / "run.json", (mtime, mtime))
    os.utime(path, (mtime, mtime))
    return path


def test_default_run_is_the_newest_with_a_run_json(tmp_path: Path) -> None:
    run(tmp_path, "20300101T000000Z", 1_000)
    run(tmp_path, "20300102T000000Z", 3_000)
    # One sorting after it by name but older, and a failed run left behind.
    run(tmp_path, "20300103T000000Z", 2_000)
    run(tmp_path, "20300104T000000Z", 4_000, finished=False)

    assert default_run(tmp_path) == "runs/20300102T000000Z"


def test_no_finished_run_leaves_run_empty(tmp_path: Path) -> None:
    run(tmp_path, "20300103T000000Z", 4_000, finished=False)
    assert default_run(tmp_path) == ""
