"""The gateway under HTTP load from wrk: fixed rates, peak throughput, memory."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.migrate import apply_migrations

ROOT = Path(__file__).resolve().parent.parent
LUA = ROOT / "bench" / "wrk" / "load.lua"
BODIES = ROOT / "bench" / "perf_data" / "transactions.jsonl"
_LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class Gateway:
    """A gateway process of our own, on 127.0.0.1, with a bench-only API key."""

    port: int
    triton_grpc: str
    database_url: str
    redis_url: str
    log_path: Path
    settings: dict[str, str] = field(default_factory=dict)
    key: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        asyncio.run(apply_migrations(self.database_url))
        digest = hashlib.sha256(self.key.encode()).hexdigest()
        env = {
            **os.environ,
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "TRITON_URL": self.triton_grpc,
            "NOOP_ROUTE": "true",
            "API_KEYS": f"bench:score+operator:{digest}",
            **self.settings,
        }
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gateway"],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gateway exited; see {self.log_path}")
            try:
                with _LOCAL.open(self.url + "/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"gateway not healthy in 60 s; see {self.log_path}")

    def pids(self) -> list[int]:
        """The gateway's processes: the server, or its workers when there are any."""
        assert self.process is not None
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        try:
            workers = [int(p) for p in children.read_text().split()]
        except OSError:
            workers = []
        # uvicorn's multiprocess mode also starts a resource tracker; keep the
        # processes that listen, which are python -m gateway's workers.
        return workers or [self.process.pid]

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def get(self, path: str) -> str:
        request = urllib.request.Request(
            self.url + path, headers={"X-API-Key": self.key}
        )
        with _LOCAL.open(request, timeout=5) as response:
            return str(response.read().decode())


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def wrk(
    gateway: Gateway,
    path: str,
    *,
    rate: int,
    seconds: int,
    connections: int = 64,
    prefix: str,
) -> dict[str, Any]:
    """One wrk run; rate 0 means closed loop (as fast as answers come back)."""
    env = {
        **os.environ,
        "BENCH_PATH": path,
        "BENCH_BODIES": str(BODIES),
        "BENCH_PREFIX": prefix,
        "BENCH_RATE": str(rate),
        "BENCH_THREADS": "1",
        "BENCH_KEY": gateway.key,
    }
    command = [
        "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "2s",
        "-s", str(LUA), gateway.url,
    ]  # fmt: skip
    result = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=seconds + 60
    )
    line = next(
        (x for x in result.stdout.splitlines() if x.startswith("BENCH_RESULT ")), None
    )
    if line is None:
        raise RuntimeError(f"wrk gave no result: {result.stdout}\n{result.stderr}")
    out: dict[str, Any] = json.loads(line.removeprefix("BENCH_RESULT "))
    statuses = {int(k): v for k, v in out.pop("statuses").items()}
    ok = statuses.get(200, 0)
    out.update(
        {
            "path": path,
            "rate": rate,
            "connections": connections,
            "throughput": ok / out["duration_s"] if out["duration_s"] else 0.0,
            "ok": ok,
            "errors": sum(v for k, v in statuses.items() if k != 200)
            + out["socket_errors"]
            + out["timeouts"],
            "statuses": statuses,
        }
    )
    return out


def memory_run(
    gateway: Gateway, *, requests: int, rate: int, prefix: str
) -> dict[str, Any]:
    """RSS of the gateway, sampled while ``requests`` transactions are sent."""
    pids = gateway.pids()
    samples: list[tuple[float, int]] = []
    stop = threading.Event()
    started = time.monotonic()

    def sample() -> None:
        while not stop.is_set():
            samples.append((time.monotonic() - started, sum(rss_kib(p) for p in pids)))
            stop.wait(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    seconds = max(5, round(requests / rate))
    try:
        run = wrk(gateway, "/transactions", rate=rate, seconds=seconds, prefix=prefix)
    finally:
        stop.set()
        sampler.join()
    # Compare with the RSS after the first 10 % of the run, once pools, caches
    # and the allocator have warmed up.
    warm = [kib for t, kib in samples if t >= seconds * 0.1]
    first, last = (warm[0], warm[-1]) if warm else (0, 0)
    return {
        "requests_ok": run["ok"],
        "errors": run["errors"],
        "seconds": seconds,
        "rate": rate,
        "rss_start_mib": first / 1024,
        "rss_end_mib": last / 1024,
        "rss_max_mib": max((kib for _, kib in samples), default=0) / 1024,
        "growth_pct": (last - first) / first * 100 if first else 0.0,
        "samples": [(round(t, 1), round(kib / 1024, 1)) for t, kib in samples],
    }


def profile(
    gateway: Gateway, *, rate: int, seconds: int, prefix: str, out: Path
) -> dict[str, Any]:
    """py-spy samples of the gateway while it serves a fixed rate of transactions."""
    pid = gateway.pids()[0]
    raw = out / "pyspy.txt"
    spy = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "py-spy"),
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(seconds),
            "--rate",
            "200",
            "--format",
            "raw",
            "--output",
            str(raw),
            "--nonblocking",
        ],  # fmt: skip
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    time.sleep(1)
    wrk(gateway, "/transactions", rate=rate, seconds=seconds, prefix=prefix)
    _, err = spy.communicate(timeout=60)
    if not raw.exists():
        return {"error": err.decode(errors="replace")[-500:]}
    return summarise_profile(raw.read_text())


# Where a sample's time goes, judged by the innermost frame that matches.
_BUCKETS = (
    ("PostgreSQL (asyncpg)", ("asyncpg",)),
    ("Redis client", ("redis/",)),
    ("Triton gRPC client", ("tritonclient", "grpc/")),
    ("pydantic validation and serialisation", ("pydantic",)),
    ("features.encode", ("features/",)),
    ("FastAPI / Starlette routing", ("fastapi/", "starlette/")),
    ("uvicorn / httptools", ("uvicorn/", "httptools")),
    ("Prometheus metrics", ("prometheus_client",)),
    ("logging", ("logging/",)),
    ("gateway code", ("gateway/",)),
    ("event loop (uvloop)", ("uvloop",)),
)


def summarise_profile(text: str) -> dict[str, Any]:
    total = 0
    idle = 0
    buckets: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    for line in text.splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not count_s.isdigit():
            continue
        count = int(count_s)
        frames = stack.split(";")
        total += count
        leaf = frames[-1]
        if "select" in leaf or "epoll" in leaf or "run_forever" in leaf:
            idle += count
        leaves[leaf] += count
        for frame in reversed(frames):
            bucket = next(
                (name for name, keys in _BUCKETS if any(k in frame for k in keys)), None
            )
            if bucket:
                buckets[bucket] += count
                break
        else:
            buckets["other"] += count
    busy = max(total - idle, 1)
    return {
        "samples": total,
        "idle_share": idle / total if total else 0.0,
        "buckets": [(name, n / busy) for name, n in buckets.most_common()],
        "top_leaves": [(name, n / max(total, 1)) for name, n in leaves.most_common(12)],
    }
