"""A new model version goes live and is rolled back under steady load.

A private Triton (explicit model control, then poll mode) serves a tmp copy
of the committed repository; an in-process gateway takes about 40
POST /transactions a second while `export.live` makes version 3 live and rolls
it back, while it tries broken versions, and while it makes versions on
another feature schema (txn-history-v1, 43 inputs, where the live ones speak
txn-basic-v1, 26) live and rolls them back, each config's input width and
schema switching with its version. No request may fail or be answered
degraded, and every decision must record the versions that computed it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from conftest import TEST_DATABASE_URL, TEST_REDIS_PREFIX, TEST_REDIS_URL, transaction
from triton_fixtures import (
    STAND_INS,
    copy_basic_repository,
    free_ports,
    write_linear_onnx,
)

from export import live
from export.errors import SchemaMismatchError
from export.repository import publish_version
from features.schemas import BASIC_SCHEMA_ID, HISTORY_SCHEMA_ID, SCHEMAS, width
from gateway.app import create_app
from gateway.config import Settings
from triton_local.server import LaunchOptions, TritonHandle, start_triton

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("anomaly_autoencoder", "risk_classifier")
RATE_PER_S = 40


@pytest.fixture(scope="module", params=["explicit", "poll"])
def control_mode(request: pytest.FixtureRequest) -> str:
    """Triton's model control: `export.live` loads, or waits for the poll."""
    return str(request.param)


@pytest.fixture(scope="module")
def repository(control_mode: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_basic_repository(tmp_path_factory.mktemp("swap") / "repository")


@pytest.fixture(scope="module")
def triton(
    control_mode: str, repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TritonHandle]:
    handle = start_triton(
        LaunchOptions(
            repository=repository,
            run_dir=tmp_path_factory.mktemp("swap-run"),
            ports=free_ports(),
            control_mode="explicit" if control_mode == "explicit" else "poll",
            poll_secs=1,
        )
    )
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture
async def client(
    triton: TritonHandle, repository: Path, db: asyncpg.Pool, redis_db: object
) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        database_url=TEST_DATABASE_URL,
        redis_url=TEST_REDIS_URL,
        redis_key_prefix=TEST_REDIS_PREFIX,
        triton_url=triton.grpc_url,
        triton_timeout_ms=2000,
        model_refresh_s=0.5,
        model_repository=repository,
    )
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gateway"
        ) as http,
    ):
        yield http


@dataclass
class Answer:
    sent: float
    done: float
    status: int
    body: dict[str, Any]


@dataclass
class Load:
    """Open-loop POST /transactions at a fixed rate until stopped."""

    client: httpx.AsyncClient
    answers: list[Answer] = field(default_factory=list)
    _ids: Iterator[int] = field(default_factory=itertools.count)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def _one(self) -> None:
        sent = time.monotonic()
        body = transaction(
            transaction_id=f"swap-{next(self._ids)}", amount=10 + sent % 90
        )
        body["amount"] = round(body["amount"], 2)
        response = await self.client.post("/transactions", json=body)
        self.answers.append(
            Answer(sent, time.monotonic(), response.status_code, response.json())
        )

    async def run(self) -> None:
        tasks = set()
        start = time.monotonic()
        for n in itertools.count():
            if self._stop.is_set():
                break
            task = asyncio.create_task(self._one())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            await asyncio.sleep(
                max(0.0, start + (n + 1) / RATE_PER_S - time.monotonic())
            )
        await asyncio.gather(*tasks)

    def stop(self) -> None:
        self._stop.set()

    def versions(self, after: float, before: float) -> set[tuple[str, ...]]:
        """Versions recorded by requests sent and answered within the window."""
        return {
            tuple(a.body["model_versions"][m] for m in MODELS)
            for a in self.answers
            if a.sent >= after and a.done <= before
        }


def publish_copy(repository: Path, model: str, source: str) -> int:
    files = {p.name: p.read_bytes() for p in (repository / model / source).iterdir()}
    return int(publish_version(repository / model, lambda _: files).name)


def releases(repository: Path) -> list[dict[str, Any]]:
    text = (repository / live.RELEASES_LOG).read_text()
    return [json.loads(line) for line in text.splitlines()]


def check_clean(answers: list[Answer]) -> None:
    failed = [a for a in answers if a.status != 200]
    degraded = [a for a in answers if a.status == 200 and a.body["degraded"]]
    assert not failed, failed[:3]
    assert not degraded, degraded[:3]


async def test_go_live_and_rollback_under_load_fail_nothing(
    client: httpx.AsyncClient,
    triton: TritonHandle,
    repository: Path,
    db: asyncpg.Pool,
    control_mode: str,
) -> None:
    control = live.Triton(triton.http_url)
    new = {m: publish_copy(repository, m, "1") for m in MODELS}
    assert new == {m: 3 for m in MODELS}
    load = Load(client)
    runner = asyncio.create_task(load.run())

    await asyncio.sleep(3)
    swap_started = time.monotonic()
    for model in MODELS:
        await asyncio.to_thread(
            live.go_live, repository, model, 3, triton=control, who="test"
        )
    live_at = time.monotonic()
    await asyncio.sleep(3)
    rollback_started = time.monotonic()
    for model in MODELS:
        await asyncio.to_thread(live.rollback, repository, model, triton=control)
    rolled_back_at = time.monotonic()
    await asyncio.sleep(3)
    load.stop()
    await runner

    check_clean(load.answers)
    assert len(load.answers) >= 9 * RATE_PER_S * 0.8
    assert load.versions(0, swap_started) == {("2", "2")}
    # Models swap one after the other: each is on N or N+1 during the swaps.
    during = load.versions(swap_started, rolled_back_at)
    assert {v for pair in during for v in pair} == {"2", "3"}
    assert load.versions(live_at, rollback_started) == {("3", "3")}
    assert load.versions(rolled_back_at, float("inf")) == {("2", "2")}

    stored = await db.fetch("SELECT transaction_id, model_versions FROM transactions")
    by_id = {a.body["transaction_id"]: a.body["model_versions"] for a in load.answers}
    assert len(stored) == len(by_id)
    assert all(json.loads(r["model_versions"]) == by_id[r[0]] for r in stored)

    assert [(r["action"], r["to_version"], r["outcome"]) for r in releases(repository)][
        -4:
    ] == [("live", 3, "ok")] * 2 + [("rollback", 2, "ok")] * 2
    for model in MODELS:
        assert live.live_version(repository / model) == 2
    seen = {
        phase: sorted(load.versions(a, b))
        for phase, a, b in (
            ("before", 0, swap_started),
            ("swapping", swap_started, rolled_back_at),
            ("after rollback", rolled_back_at, float("inf")),
        )
    }
    sent = len(load.answers)
    print(f"\n{control_mode}: {sent} requests, 0 failed, 0 degraded")
    print(f"versions (anomaly, classifier) seen: {seen}")


async def test_broken_versions_never_replace_the_live_one(
    client: httpx.AsyncClient, triton: TritonHandle, repository: Path
) -> None:
    """Versions the release command can tell are broken (unreadable, another
    width, nothing to score with) never reach Triton; one that only Triton
    finds broken fails to load and the old one serves."""
    control = live.Triton(triton.http_url)
    corrupt = {"model.onnx": b"not an onnx model"}
    unreadable = int(
        publish_version(repository / "anomaly_autoencoder", lambda _: corrupt).name
    )
    staged = repository.parent / "staged-wide.onnx"
    write_linear_onnx(staged, "risk_probability", seed=5, width=27)
    too_wide = int(
        publish_version(
            repository / "risk_classifier",
            lambda _: {"model.onnx": staged.read_bytes()},
        ).name
    )
    # Right width, but no `risk_probability` output: nothing to score with.
    write_linear_onnx(staged, "other_output", seed=6)
    no_output = int(
        publish_version(
            repository / "risk_classifier",
            lambda _: {"model.onnx": staged.read_bytes()},
        ).name
    )
    # Scores real rows fine in onnxruntime, but its input is not the config's
    # `features`: only loading it tells.
    write_linear_onnx(staged, "risk_probability", seed=7, input_name="x")
    unloadable = int(
        publish_version(
            repository / "risk_classifier",
            lambda _: {"model.onnx": staged.read_bytes()},
        ).name
    )
    load = Load(client)
    runner = asyncio.create_task(load.run())

    await asyncio.sleep(1)
    attempts: tuple[tuple[str, int, type[Exception], str], ...] = (
        ("anomaly_autoencoder", unreadable, live.ReleaseError, "cannot be read"),
        ("risk_classifier", too_wide, SchemaMismatchError, "takes 27 columns"),
        ("risk_classifier", no_output, live.ReleaseError, "no output"),
        ("risk_classifier", unloadable, live.ReleaseError, "failed to load|load fa"),
    )
    for model, version, error, message in attempts:
        with pytest.raises(error, match=message):
            await asyncio.to_thread(
                live.go_live, repository, model, version, triton=control
            )
        assert live.live_version(repository / model) == 2
        assert releases(repository)[-1]["outcome"] == "failed"
    await asyncio.sleep(1.5)
    load.stop()
    await runner

    check_clean(load.answers)
    assert load.versions(0, float("inf")) == {("2", "2")}
    info = (await client.get("/model/info")).json()["models"]
    assert str(unloadable) in info["risk_classifier"]["failed_versions"]
    for model in MODELS:
        assert info[model]["live_version"] == "2"
        assert info[model]["usable"] is True
    health = await client.get("/health")
    assert health.json()["checks"]["triton"] == "ok"


async def test_model_info_shows_disk_and_model_card(
    client: httpx.AsyncClient,
) -> None:
    info = (await client.get("/model/info")).json()["models"]
    classifier = info["risk_classifier"]
    assert classifier["live_version"] == "2"
    assert {"1", "2", "3"} <= set(classifier["versions_on_disk"])
    assert classifier["training"]["feature_schema"] == "txn-basic-v1"
    assert 0 < classifier["training"]["validation_metrics"]["roc_auc"] < 1


def publish_history_version(repository: Path, model: str) -> int:
    """A linear stand-in on txn-history-v1, its card copied from version 2."""
    output, seed = STAND_INS[model]
    staged = write_linear_onnx(
        repository.parent / f"staged-history-{model}.onnx",
        output,
        seed + 20,
        width=width(HISTORY_SCHEMA_ID),
    )
    card = json.loads((repository / model / "2" / "model_card.json").read_text())

    def files_for(version: int) -> dict[str, bytes]:
        content = card | {
            "version": version,
            "feature_schema": HISTORY_SCHEMA_ID,
            "feature_names": list(SCHEMAS[HISTORY_SCHEMA_ID]),
        }
        return {
            "model.onnx": staged.read_bytes(),
            "model_card.json": json.dumps(content).encode(),
        }

    return int(publish_version(repository / model, files_for).name)


async def ensemble_ready(control: live.Triton, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        states = await asyncio.to_thread(control.states, live.ENSEMBLE)
        if any(state == "READY" for state, _ in states.values()):
            return True
        await asyncio.sleep(0.25)
    return False


async def test_schema_switch_and_back_under_load_fail_nothing(
    client: httpx.AsyncClient,
    triton: TritonHandle,
    repository: Path,
    db: asyncpg.Pool,
    control_mode: str,
) -> None:
    control = live.Triton(triton.http_url)
    basic = {m: live.live_version(repository / m) for m in MODELS}
    configs = {m: (repository / m / "config.pbtxt").read_text() for m in MODELS}
    ensemble_config = (repository / live.ENSEMBLE / "config.pbtxt").read_text()
    assert all(BASIC_SCHEMA_ID in text for text in configs.values())
    history = {m: publish_history_version(repository, m) for m in MODELS}
    # Published, not live: Triton and the configs are as they were.
    assert {m: live.live_version(repository / m) for m in MODELS} == basic
    load = Load(client)
    runner = asyncio.create_task(load.run())

    await asyncio.sleep(3)
    swap_started = time.monotonic()
    for model in MODELS:
        await asyncio.to_thread(
            live.go_live, repository, model, history[model], triton=control
        )
    live_at = time.monotonic()
    for model in MODELS:
        config = (repository / model / "config.pbtxt").read_text()
        assert f"dims: [ {width(HISTORY_SCHEMA_ID)} ]" in config
        assert f'"{HISTORY_SCHEMA_ID}"' in config
    # Both members speak txn-history-v1: the ensemble follows them.
    assert (
        HISTORY_SCHEMA_ID in (repository / live.ENSEMBLE / "config.pbtxt").read_text()
    )
    assert await ensemble_ready(control)
    await asyncio.sleep(3)
    rollback_started = time.monotonic()
    for model in MODELS:
        await asyncio.to_thread(live.rollback, repository, model, triton=control)
    rolled_back_at = time.monotonic()
    await asyncio.sleep(3)
    load.stop()
    await runner

    check_clean(load.answers)
    assert len(load.answers) >= 9 * RATE_PER_S * 0.8
    before = tuple(str(basic[m]) for m in MODELS)
    switched = tuple(str(history[m]) for m in MODELS)
    assert load.versions(0, swap_started) == {before}
    assert load.versions(live_at, rollback_started) == {switched}
    assert load.versions(rolled_back_at, float("inf")) == {before}

    stored = await db.fetch("SELECT transaction_id, model_versions FROM transactions")
    by_id = {a.body["transaction_id"]: a.body["model_versions"] for a in load.answers}
    assert all(json.loads(r["model_versions"]) == by_id[r[0]] for r in stored)

    logged = [
        (r["action"], r["to_version"], r["outcome"], r["from_schema"], r["to_schema"])
        for r in releases(repository)[-4:]
    ]
    assert logged == [
        ("live", history[m], "ok", BASIC_SCHEMA_ID, HISTORY_SCHEMA_ID) for m in MODELS
    ] + [
        ("rollback", basic[m], "ok", HISTORY_SCHEMA_ID, BASIC_SCHEMA_ID) for m in MODELS
    ]
    for model in MODELS:
        assert (repository / model / "config.pbtxt").read_text() == configs[model]
    assert (repository / live.ENSEMBLE / "config.pbtxt").read_text() == ensemble_config
    assert await ensemble_ready(control)

    print(
        f"\n{control_mode}: {len(load.answers)} requests, 0 failed, 0 degraded; "
        f"versions {before} -> {switched} ({HISTORY_SCHEMA_ID}) -> {before}"
    )
