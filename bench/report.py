"""docs/benchmarks.md and its plots, from one run's results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _find(rows: list[dict[str, Any]], **match: Any) -> dict[str, Any]:
    for row in rows:
        if all(row.get(k) == v for k, v in match.items()):
            return row
    return {}


def _num(value: Any, digits: int = 1) -> str:
    if value is None or value == "":
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = [
        "| " + " | ".join(header) + " |",
        "| " + " | ".join("---" for _ in header) + " |",
    ]
    lines += ["| " + " | ".join(_num(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "**not met**")


def targets(results: dict[str, Any]) -> list[list[Any]]:
    out: list[list[Any]] = []
    gateway = results.get("gateway", {})
    peak = gateway.get("peak", [])
    noop, tx = _find(peak, path="/noop"), _find(peak, path="/transactions")
    if noop and tx:
        share = tx["throughput"] / noop["throughput"] * 100
        out.append(
            [
                "POST /transactions peak throughput vs GET /noop",
                ">= 30 %",
                f"{tx['throughput']:,.0f} / {noop['throughput']:,.0f} /s"
                f" = {share:.0f} %",
                _verdict(share >= 30),
            ]
        )
    fixed = _find(gateway.get("fixed", []), path="/transactions", rate=500)
    if fixed:
        ok = fixed["p99_ms"] <= 20 and fixed["errors"] == 0
        out.append(
            [
                "POST /transactions p99 at 500/s (open loop)",
                "<= 20 ms, no errors",
                f"{fixed['p99_ms']:.1f} ms, {fixed['errors']} errors",
                _verdict(ok),
            ]
        )
    triton = results.get("triton", {})
    ens8 = _find(
        triton.get("sweep", []), model="risk_ensemble", protocol="grpc", concurrency=8
    )
    if ens8.get("throughput"):
        ok = ens8["throughput"] >= 5000 and ens8["p99_ms"] <= 3
        out.append(
            [
                "Triton ensemble at concurrency 8 (gRPC)",
                ">= 5,000/s, p99 <= 3 ms",
                f"{ens8['throughput']:,.0f}/s, p99 {ens8['p99_ms']:.2f} ms",
                _verdict(ok),
            ]
        )
    on = _find(
        triton.get("sweep", []), model="risk_ensemble", protocol="grpc", concurrency=16
    )
    off = _find(triton.get("no_batching", []), model="risk_ensemble", concurrency=16)
    if on.get("throughput") and off.get("throughput"):
        gain = on["throughput"] / off["throughput"]
        out.append(
            [
                "Dynamic batching, ensemble at concurrency 16",
                ">= 2x batching off",
                f"{on['throughput']:,.0f} vs {off['throughput']:,.0f}/s = {gain:.2f}x",
                _verdict(gain >= 2),
            ]
        )
    memory = gateway.get("memory")
    if memory:
        ok = abs(memory["growth_pct"]) <= 10
        out.append(
            [
                f"Gateway RSS over {memory['requests_ok']:,} transactions",
                "within 10 %",
                f"{memory['rss_start_mib']:.1f} -> {memory['rss_end_mib']:.1f} MiB "
                f"({memory['growth_pct']:+.1f} %)",
                _verdict(ok),
            ]
        )
    return out


def _plot_triton(results: dict[str, Any], path: Path) -> None:
    sweep = [r for r in results["triton"]["sweep"] if "throughput" in r]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for model in sorted({r["model"] for r in sweep}):
        for protocol, style in (("grpc", "-o"), ("http", "--s")):
            rows = sorted(
                (r for r in sweep if r["model"] == model and r["protocol"] == protocol),
                key=lambda r: r["concurrency"],
            )
            if not rows:
                continue
            xs = [r["concurrency"] for r in rows]
            left.plot(
                xs, [r["throughput"] for r in rows], style, label=f"{model} {protocol}"
            )
            right.plot(
                xs, [r["p99_ms"] for r in rows], style, label=f"{model} {protocol}"
            )
    for axis, title in ((left, "inferences/s"), (right, "p99 latency (ms)")):
        axis.set_xscale("log", base=2)
        axis.set_xlabel("concurrency (perf_analyzer)")
        axis.set_title(title)
        axis.grid(alpha=0.3)
    left.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_batching(results: dict[str, Any], path: Path) -> None:
    triton = results["triton"]
    fig, axis = plt.subplots(figsize=(7, 4))
    labels, on_values, off_values = [], [], []
    for model in ("anomaly_autoencoder", "risk_classifier", "risk_ensemble"):
        on = _find(triton["sweep"], model=model, protocol="grpc", concurrency=16)
        off = _find(triton["no_batching"], model=model, concurrency=16)
        if on.get("throughput") and off.get("throughput"):
            labels.append(model)
            on_values.append(on["throughput"])
            off_values.append(off["throughput"])
    xs = range(len(labels))
    axis.bar([x - 0.2 for x in xs], on_values, 0.4, label="dynamic batching on")
    axis.bar([x + 0.2 for x in xs], off_values, 0.4, label="off")
    axis.set_xticks(list(xs), labels)
    axis.set_ylabel("inferences/s at concurrency 16 (gRPC)")
    axis.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_gateway(results: dict[str, Any], path: Path) -> None:
    fixed = results["gateway"]["fixed"]
    fig, axis = plt.subplots(figsize=(7, 4))
    for route in sorted({r["path"] for r in fixed}):
        rows = sorted((r for r in fixed if r["path"] == route), key=lambda r: r["rate"])
        rates = [r["rate"] for r in rows]
        axis.plot(rates, [r["p50_ms"] for r in rows], "-o", label=f"{route} p50")
        axis.plot(rates, [r["p99_ms"] for r in rows], "--o", label=f"{route} p99")
    axis.set_yscale("log")
    axis.set_xlabel("arrival rate (requests/s, open loop)")
    axis.set_ylabel("latency (ms)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_memory(results: dict[str, Any], path: Path) -> None:
    samples = results["gateway"]["memory"]["samples"]
    fig, axis = plt.subplots(figsize=(7, 3))
    axis.plot([t for t, _ in samples], [m for _, m in samples])
    axis.set_xlabel("seconds")
    axis.set_ylabel("gateway RSS (MiB)")
    axis.set_ylim(bottom=0)
    axis.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write(results: dict[str, Any], out: Path) -> None:
    images = out.parent / "benchmarks"
    images.mkdir(parents=True, exist_ok=True)
    m = results["machine"]
    parts = [
        "# Benchmarks",
        "",
        "Written by `make bench` from one run (`.bench/results.json` holds the raw "
        "figures); rerun it to get this page for your machine. Everything ran on "
        "the one machine below: load generators, gateway, Triton, PostgreSQL and "
        "Redis share its cores, so each figure is a lower bound for a deployment "
        "that gives each part its own.",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores; Python {m['python']}, "
        f"Linux {m['kernel']}; {m['date']}; wall time {results.get('wall_s', 0)} s"
        + (" (quick run: short windows, fewer points)" if results.get("quick") else "")
        + ".",
        "",
        "## Targets",
        "",
        _table(["target", "goal", "measured", "verdict"], targets(results)),
        "",
    ]
    if "onnxruntime" in results:
        rows = results["onnxruntime"]
        parts += [
            "## Floor: the models in-process (ONNX Runtime, 1 thread)",
            "",
            _table(
                ["model", "batch", "median per call (us)", "per row (us)", "rows/s"],
                [
                    [
                        r["model"],
                        r["batch"],
                        r["median_us"],
                        r["us_per_row"],
                        round(r["rows_per_s"]),
                    ]
                    for r in rows
                ],
            ),
            "",
        ]
    if "triton" in results:
        triton = results["triton"]
        floor = {
            r["model"]: r for r in results.get("onnxruntime", []) if r["batch"] == 1
        }
        rows = []
        for r in triton["sweep"]:
            base = floor.get(r["model"])
            if r["model"] == "risk_ensemble" and floor:
                cost = sum(f["median_us"] for f in floor.values())
            else:
                cost = base["median_us"] if base else None
            ratio = r["p50_ms"] * 1000 / cost if cost and "p50_ms" in r else None
            rows.append(
                [
                    r["model"],
                    r["protocol"],
                    r["concurrency"],
                    round(r.get("throughput", 0)),
                    r.get("p50_ms"),
                    r.get("p99_ms"),
                    r.get("server_queue_ms"),
                    r.get("server_compute_ms"),
                    f"{ratio:,.0f}x" if ratio else "n/a",
                ]
            )
        _plot_triton(results, images / "triton_sweep.png")
        _plot_batching(results, images / "batching.png")
        parts += [
            "## Triton under perf_analyzer",
            "",
            "perf_analyzer 2.51 (closed loop: `concurrency` requests in flight, one "
            "row each), input rows from `bench/perf_data/features.json` (real "
            "transactions of the committed sample, encoded by `features`), "
            "`--stability-percentage 25 --max-trials 15`. Latencies in ms; "
            "server queue and compute are Triton's own averages. *p50 / floor* "
            "divides the median latency by the in-process ONNX Runtime time of one "
            "row (both models for the ensemble).",
            "",
            _table(
                [
                    "model",
                    "protocol",
                    "concurrency",
                    "inferences/s",
                    "p50",
                    "p99",
                    "server queue",
                    "server compute",
                    "p50 / floor",
                ],
                rows,
            ),
            "",
            "![throughput and p99 by concurrency](benchmarks/triton_sweep.png)",
            "",
            "### Dynamic batching on and off",
            "",
            "The same models from a copy of the repository without "
            "`dynamic_batching`, served by a second Triton; gRPC.",
            "",
            _table(
                [
                    "model",
                    "concurrency",
                    "off: inferences/s",
                    "off: p99",
                    "on: inferences/s",
                    "on: p99",
                    "on / off",
                ],
                [
                    [
                        r["model"],
                        r["concurrency"],
                        round(r.get("throughput", 0)),
                        r.get("p99_ms"),
                        round(
                            _find(
                                triton["sweep"],
                                model=r["model"],
                                protocol="grpc",
                                concurrency=r["concurrency"],
                            ).get("throughput", 0)
                        ),
                        _find(
                            triton["sweep"],
                            model=r["model"],
                            protocol="grpc",
                            concurrency=r["concurrency"],
                        ).get("p99_ms"),
                        _ratio(
                            _find(
                                triton["sweep"],
                                model=r["model"],
                                protocol="grpc",
                                concurrency=r["concurrency"],
                            ),
                            r,
                        ),
                    ]
                    for r in triton["no_batching"]
                ],
            ),
            "",
            "![batching on and off](benchmarks/batching.png)",
            "",
            "### Two instances per model",
            "",
            _table(
                [
                    "concurrency",
                    "1 instance: inferences/s",
                    "p99",
                    "2 instances: inferences/s",
                    "p99",
                ],
                [
                    [
                        r["concurrency"],
                        round(
                            _find(
                                triton["sweep"],
                                model="risk_ensemble",
                                protocol="grpc",
                                concurrency=r["concurrency"],
                            ).get("throughput", 0)
                        ),
                        _find(
                            triton["sweep"],
                            model="risk_ensemble",
                            protocol="grpc",
                            concurrency=r["concurrency"],
                        ).get("p99_ms"),
                        round(r.get("throughput", 0)),
                        r.get("p99_ms"),
                    ]
                    for r in triton["two_instances"]
                ],
            ),
            "",
        ]
    if "gateway" in results:
        parts += _gateway_section(results, images)
    out.write_text("\n".join(parts) + "\n")


def _ratio(on: dict[str, Any], off: dict[str, Any]) -> str:
    if on.get("throughput") and off.get("throughput"):
        return f"{on['throughput'] / off['throughput']:.2f}x"
    return "n/a"


def _gateway_section(results: dict[str, Any], images: Path) -> list[str]:
    g = results["gateway"]
    noop_peak = _find(g["peak"], path="/noop").get("throughput") or 0
    peak_rows = [
        [
            r["path"],
            round(r["throughput"]),
            r["p50_ms"],
            r["p99_ms"],
            r["errors"],
            f"{r['throughput'] / noop_peak * 100:.0f} %" if noop_peak else "n/a",
        ]
        for r in g["peak"]
    ]
    noop_fixed = {r["rate"]: r for r in g["fixed"] if r["path"] == "/noop"}
    fixed_rows = []
    for r in g["fixed"]:
        base = noop_fixed.get(r["rate"])
        ratio = (
            f"{r['p99_ms'] / base['p99_ms']:.1f}x"
            if base and base["p99_ms"] > 0
            else "n/a"
        )
        fixed_rows.append(
            [
                r["path"],
                r["rate"],
                round(r["throughput"]),
                r["p50_ms"],
                r["p99_ms"],
                r["p999_ms"],
                r["max_ms"],
                r["errors"],
                ratio,
            ]
        )
    _plot_gateway(results, images / "gateway_latency.png")
    _plot_memory(results, images / "gateway_rss.png")
    parts = [
        "## Gateway under HTTP load",
        "",
        "wrk 4.1 (Debian) with `bench/wrk/load.lua`: every request carries a "
        "real sample transaction with a fresh `transaction_id`, so "
        "`POST /transactions` scores, claims the id in Redis and commits a row "
        "in PostgreSQL each time. One gateway worker (uvicorn, uvloop, "
        "httptools), API key authentication on, Triton with dynamic batching. "
        "`GET /noop` is the floor: the same app and middleware, no work.",
        "",
        "### Peak throughput (closed loop, 32 connections)",
        "",
        _table(["route", "answers/s", "p50", "p99", "errors", "vs /noop"], peak_rows),
        "",
        "### Fixed arrival rates (open loop)",
        "",
        "Requests are sent on a fixed schedule whatever the answers do; latency "
        "counts from each request's scheduled time, so queueing behind a slow "
        "answer is charged (no coordinated omission). Latencies in ms; *p99 / noop* "
        "divides by `/noop`'s p99 at the same rate.",
        "",
        _table(
            [
                "route",
                "rate/s",
                "answers/s",
                "p50",
                "p99",
                "p99.9",
                "max",
                "errors",
                "p99 / noop",
            ],
            fixed_rows,
        ),
        "",
        "![latency by arrival rate](benchmarks/gateway_latency.png)",
        "",
    ]
    memory = g.get("memory")
    if memory:
        parts += [
            "### Memory",
            "",
            f"{memory['requests_ok']:,} `POST /transactions` at {memory['rate']}/s: "
            f"RSS {memory['rss_start_mib']:.1f} MiB after the first 10 % of the run, "
            f"{memory['rss_end_mib']:.1f} MiB at the end "
            f"({memory['growth_pct']:+.1f} %), "
            f"peak {memory['rss_max_mib']:.1f} MiB; {memory['errors']} errors.",
            "",
            "![gateway RSS](benchmarks/gateway_rss.png)",
            "",
        ]
    profile = g.get("profile")
    if profile and "buckets" in profile:
        parts += [
            "### Where the gateway's CPU goes (py-spy, POST /transactions at 500/s)",
            "",
            f"{profile['samples']:,} samples of the gateway's Python stacks at "
            "200 Hz (idle time is not sampled); each sample is charged to the "
            "innermost library it is in.",
            "",
            _table(
                ["where", "share of busy samples"],
                [[name, f"{share * 100:.1f} %"] for name, share in profile["buckets"]],
            ),
            "",
            "Hottest innermost frames:",
            "",
            _table(
                ["frame", "share"],
                [
                    [f"`{name[:90]}`", f"{share * 100:.1f} %"]
                    for name, share in profile["top_leaves"]
                ],
            ),
            "",
        ]
    if g.get("scaling"):
        base = [{"setup": "1 worker, group commit on", **r} for r in g["peak"][1:]]
        base.append(
            {
                "setup": "1 worker, group commit on",
                **_find(g["fixed"], path="/transactions", rate=500),
            }
        )
        rows = [
            [
                r["setup"],
                r["path"],
                "peak" if r["rate"] == 0 else f"{r['rate']}/s",
                round(r["throughput"]),
                r["p50_ms"],
                r["p99_ms"],
                r["errors"],
            ]
            for r in base + g["scaling"]
        ]
        parts += [
            "### Workers, Triton instances and group commit",
            "",
            _table(
                ["setup", "route", "load", "answers/s", "p50", "p99", "errors"], rows
            ),
            "",
        ]
    if g.get("metrics_sample"):
        parts += [
            "### The gateway's own stage timings after the run (`GET /metrics`)",
            "",
            "```",
            *g["metrics_sample"],
            "```",
            "",
        ]
    return parts
