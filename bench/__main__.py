"""python -m bench: one run of every benchmark, written to docs/benchmarks.md.

Everything runs on 127.0.0.1 on ports of its own (Triton from 18000, gateway
from 18080, the next free ones when taken), in the database ``risk_bench``
and Redis db 7 of the local servers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import gateway_side as gw
from bench import report, tools, triton_side
from bench.triton_side import Variant

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".bench"
DEFAULT_DB = "postgresql://postgres@127.0.0.1:5432/risk_bench"
DEFAULT_REDIS = "redis://127.0.0.1:6379/7"


def _log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def triton_runs(binary: Path, quick: bool) -> dict[str, Any]:
    levels = [1, 8] if quick else [1, 2, 4, 8, 16]
    window = 500 if quick else 1000
    results: dict[str, Any] = {"sweep": [], "no_batching": [], "two_instances": []}
    models = triton_side.served_models()
    parked = triton_side.ensemble_parked()
    if parked is not None:
        _log(parked)

    _log("Triton, dynamic batching on, 1 instance: every model, gRPC and HTTP")
    with triton_side.start(Variant("batching"), WORK, 18000) as handle:
        for model in models:
            for protocol in ("grpc", "http"):
                for c in levels:
                    row = triton_side.perf_analyzer(
                        binary, handle, model, protocol, c, window
                    )
                    _log(f"  {model} {protocol} c={c}: {_brief(row)}")
                    results["sweep"].append(row)

    _log("Triton, dynamic batching off")
    with triton_side.start(Variant("no-batching", batching=False), WORK, 18100) as h:
        for model in models:
            for c in [1, 8, 16]:
                row = triton_side.perf_analyzer(binary, h, model, "grpc", c, window)
                _log(f"  {model} grpc c={c}: {_brief(row)}")
                results["no_batching"].append(row)

    if parked is not None:
        return results
    _log("Triton, dynamic batching on, 2 instances per model")
    with triton_side.start(Variant("two-instances", instances=2), WORK, 18200) as h:
        for c in [1, 8, 16]:
            row = triton_side.perf_analyzer(
                binary, h, "risk_ensemble", "grpc", c, window
            )
            _log(f"  risk_ensemble grpc c={c}: {_brief(row)}")
            results["two_instances"].append(row)
    return results


def _brief(row: dict[str, Any]) -> str:
    if "error" in row:
        return f"ERROR {row['error']}"
    keys = ("throughput", "p50_ms", "p99_ms")
    return ", ".join(f"{k} {row[k]:.2f}" for k in keys if k in row)


def gateway_runs(args: argparse.Namespace, quick: bool) -> dict[str, Any]:
    seconds = 4 if quick else 12
    peak_seconds = 4 if quick else 10
    rates = [500] if quick else [250, 500, 1000]
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    results: dict[str, Any] = {}
    log_path = WORK / "run" / "gateway.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    counter = iter(range(1_000_000))

    def prefix() -> str:
        return f"bench-{stamp}-{next(counter)}"

    def gateway(triton_port: int, **settings: str) -> gw.Gateway:
        g = gw.Gateway(
            port=tools.free_ports_from(18080),
            triton_grpc=f"127.0.0.1:{triton_port}",
            database_url=args.database_url,
            redis_url=args.redis_url,
            log_path=log_path,
            settings=settings,
        )
        g.start()
        return g

    def peak(g: gw.Gateway, path: str) -> dict[str, Any]:
        row = gw.wrk(
            g, path, rate=0, seconds=peak_seconds, connections=32, prefix=prefix()
        )
        _log(
            f"  peak {path}: {row['throughput']:.0f}/s, p99 {row['p99_ms']:.1f} ms, "
            f"errors {row['errors']}"
        )
        return row

    def fixed(g: gw.Gateway, path: str, rate: int) -> dict[str, Any]:
        row = gw.wrk(g, path, rate=rate, seconds=seconds, prefix=prefix())
        _log(
            f"  {path} at {rate}/s: {row['throughput']:.0f}/s, p50 {row['p50_ms']:.2f}"
            f" p99 {row['p99_ms']:.2f} p99.9 {row['p999_ms']:.2f} ms, "
            f"errors {row['errors']}"
        )
        return row

    paths = ["/noop", "/risk/analyze", "/transactions"]
    with triton_side.start(Variant("batching"), WORK, 18000) as triton:
        triton_port = triton.options.ports.grpc
        _log("gateway, 1 worker, group commit on")
        g = gateway(triton_port)
        try:
            gw.wrk(
                g, "/transactions", rate=0, seconds=2, connections=16, prefix=prefix()
            )
            results["peak"] = [peak(g, p) for p in paths]
            results["fixed"] = [fixed(g, p, r) for p in paths for r in rates]
            _log("  profile (py-spy) at 500/s")
            results["profile"] = gw.profile(
                g, rate=500, seconds=seconds, prefix=prefix(), out=WORK / "run"
            )
            tx_peak = results["peak"][2]["throughput"]
            rate = int(min(1000, max(100, 0.7 * tx_peak)))
            requests = 2_000 if quick else 20_000
            _log(f"  memory: {requests} transactions at {rate}/s")
            results["memory"] = gw.memory_run(
                g, requests=requests, rate=rate, prefix=prefix()
            )
            results["metrics_sample"] = _metrics_excerpt(g.get("/metrics"))
        finally:
            g.stop()

        scaling: list[dict[str, Any]] = []
        variants: list[tuple[str, dict[str, str]]] = [
            ("1 worker, group commit off", {"DB_GROUP_COMMIT_MAX_ROWS": "1"}),
            ("2 workers, group commit on", {"WORKERS": "2"}),
        ]
        for label, settings in variants:
            _log(f"gateway, {label}")
            g = gateway(triton_port, **settings)
            try:
                for path in ("/risk/analyze", "/transactions"):
                    scaling.append({"setup": label, **peak(g, path)})
                scaling.append({"setup": label, **fixed(g, "/transactions", 500)})
            finally:
                g.stop()
    with triton_side.start(Variant("two-instances", instances=2), WORK, 18200) as t2:
        label = "1 worker, 2 Triton instances"
        _log(f"gateway, {label}")
        g = gateway(t2.options.ports.grpc)
        try:
            for path in ("/risk/analyze", "/transactions"):
                scaling.append({"setup": label, **peak(g, path)})
        finally:
            g.stop()
    results["scaling"] = scaling
    return results


def _metrics_excerpt(text: str) -> list[str]:
    keep = (
        "gateway_stage_duration_seconds_sum",
        "gateway_stage_duration_seconds_count",
        "gateway_decisions_total",
        "gateway_degraded_total",
        "gateway_group_commit_rows_sum",
        "gateway_group_commit_rows_count",
    )
    return [line for line in text.splitlines() if line.startswith(keep)]


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short runs, for a check")
    parser.add_argument(
        "--database-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_DB)
    )
    parser.add_argument(
        "--redis-url", default=os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS)
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument(
        "--only", choices=("triton", "gateway", "floor"), action="append"
    )
    args = parser.parse_args(argv)
    only = set(args.only or ("triton", "gateway", "floor"))

    binary = tools.ensure_all()
    started = time.monotonic()
    results: dict[str, Any] = {"machine": machine(), "quick": args.quick}
    if "floor" in only:
        _log("floor: the models in-process in ONNX Runtime")
        results["onnxruntime"] = triton_side.onnxruntime_floor()
    if "triton" in only:
        results["triton"] = triton_runs(binary, args.quick)
    if "gateway" in only:
        results["gateway"] = gateway_runs(args, args.quick)
    results["wall_s"] = round(time.monotonic() - started)

    raw = WORK / "results.json"
    raw.write_text(json.dumps(results, indent=1))
    report.write(results, args.out)
    _log(f"wrote {args.out} in {results['wall_s']} s (raw: {raw})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
