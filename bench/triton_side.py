"""Triton under perf_analyzer: each model and the ensemble, gRPC and HTTP."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.perf_data import data_file
from bench.tools import free_ports_from, perf_analyzer_env
from export.live import ENSEMBLE, PARKED, ensemble_state, live_version
from export.repository import CONFIG, MODEL_FILE, config_feature_schema
from triton_local import LaunchOptions, Ports, start_triton
from triton_local.server import TritonHandle

ROOT = Path(__file__).resolve().parent.parent
REPOSITORY = ROOT / "model_repository"
MODELS = ("anomaly_autoencoder", "risk_classifier", ENSEMBLE)
ONNX_MODELS = ("anomaly_autoencoder", "risk_classifier")


def ensemble_parked(repository: Path = REPOSITORY) -> str | None:
    """Why the ensemble cannot be measured (None when it can): export.live
    parks it while its members speak different feature schemas."""
    state = ensemble_state(repository)
    if state is None:
        return f"{ENSEMBLE} is not in {repository}"
    if state["parked"]:
        spoken = ", ".join(f"{m} {s}" for m, s in state["members"].items())
        return (
            f"{ENSEMBLE} is parked ({repository / PARKED}) while its members "
            f"speak different feature schemas ({spoken}); skipped"
        )
    return None


def served_models(repository: Path = REPOSITORY) -> list[str]:
    """MODELS, less a parked ensemble."""
    if ensemble_parked(repository) is None:
        return list(MODELS)
    return [m for m in MODELS if m != ENSEMBLE]


@dataclass(frozen=True)
class Variant:
    """A copy of the repository served with other batching or instance settings."""

    name: str
    batching: bool = True
    instances: int = 1
    intra_op_threads: int | None = None


def make_repository(variant: Variant, into: Path) -> Path:
    target = into / variant.name
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(REPOSITORY, target)
    for model in ONNX_MODELS:
        config_path = target / model / "config.pbtxt"
        text = config_path.read_text()
        if not variant.batching:
            text, removed = re.subn(r"dynamic_batching\s*\{[^}]*\}\n?", "", text)
            if removed != 1:
                raise RuntimeError(f"{config_path}: no dynamic_batching block")
        text = re.sub(r"count:\s*\d+", f"count: {variant.instances}", text)
        if variant.intra_op_threads is not None:
            text += (
                'parameters {\n  key: "intra_op_thread_count"\n'
                f'  value: {{ string_value: "{variant.intra_op_threads}" }}\n}}\n'
            )
        config_path.write_text(text)
    return target


def start(variant: Variant, work: Path, base_port: int) -> TritonHandle:
    repository = make_repository(variant, work / "repos")
    base_port = free_ports_from(base_port, count=3)
    options = LaunchOptions(
        repository=repository,
        run_dir=work / "run" / f"triton-{variant.name}",
        ports=Ports(grpc=base_port + 1, http=base_port, metrics=base_port + 2),
        control_mode="explicit",
        ready_timeout=120.0,
    )
    return start_triton(options)


def perf_data_for(repository: Path, model: str) -> Path:
    """The input rows in the feature schema that the model's config speaks."""
    return data_file(config_feature_schema(repository / model / CONFIG))


def perf_analyzer(
    binary: Path,
    handle: TritonHandle,
    model: str,
    protocol: str,
    concurrency: int,
    window_ms: int = 1000,
) -> dict[str, Any]:
    url = handle.grpc_url if protocol == "grpc" else handle.http_url
    url = url.removeprefix("http://")
    with_csv = handle.options.run_dir / f"pa-{model}-{protocol}-{concurrency}.csv"
    command = [
        str(binary),
        "-m", model,
        "-u", url,
        "-i", protocol,
        "--concurrency-range", f"{concurrency}:{concurrency}",
        "--input-data", str(perf_data_for(REPOSITORY, model)),
        "--measurement-interval", str(window_ms),
        "--stability-percentage", "25",
        "--max-trials", "15",
        "-f", str(with_csv),
    ]  # fmt: skip
    started = time.monotonic()
    result = subprocess.run(
        command,
        env=perf_analyzer_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    row: dict[str, Any] = {
        "model": model,
        "protocol": protocol,
        "concurrency": concurrency,
        "seconds": round(time.monotonic() - started, 1),
    }
    if result.returncode != 0 or not with_csv.exists():
        row["error"] = (result.stdout + result.stderr).strip().splitlines()[-3:]
        return row
    record = next(csv.DictReader(io.StringIO(with_csv.read_text())))
    row.update(
        {
            "throughput": float(record["Inferences/Second"]),
            "p50_ms": float(record["p50 latency"]) / 1000,
            "p99_ms": float(record["p99 latency"]) / 1000,
            "server_queue_ms": float(record["Server Queue"]) / 1000,
            "server_compute_ms": float(record["Server Compute Infer"]) / 1000,
        }
    )
    return row


def onnxruntime_floor(repository: Path = REPOSITORY) -> list[dict[str, Any]]:
    """Each model in-process, one thread: the cost of the model alone."""
    import onnxruntime as ort  # only the bench and the Triton backend need it

    out = []
    for model in ONNX_MODELS:
        data = perf_data_for(repository, model)
        rows = np.asarray(
            [r["features"] for r in json.loads(data.read_text())["data"]],
            dtype=np.float32,
        )
        live = live_version(repository / model)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(
            str(repository / model / str(live) / MODEL_FILE),
            options,
            providers=["CPUExecutionProvider"],
        )
        name = session.get_inputs()[0].name
        for batch in (1, 8, 64, 256):
            x = np.ascontiguousarray(np.resize(rows, (batch, rows.shape[1])))
            for _ in range(50):
                session.run(None, {name: x})
            repeats = max(200, 20_000 // batch)
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                session.run(None, {name: x})
                times.append(time.perf_counter() - t0)
            median = float(np.median(times))
            out.append(
                {
                    "model": model,
                    "batch": batch,
                    "median_us": median * 1e6,
                    "us_per_row": median * 1e6 / batch,
                    "rows_per_s": batch / median,
                }
            )
    return out
