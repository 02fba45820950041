"""Which version of a model Triton serves: go live, roll back, and the record.

The live version is recorded in the model's ``config.pbtxt`` as
``version_policy: { specific: { versions: [ N ] } }``, so a restarted Triton
serves the same version. Every change is appended to ``RELEASES.log`` at the
top of the repository (one JSON object a line; Triton only looks at
directories that hold a ``config.pbtxt``) and printed.

A version speaks the feature schema its model card names (older versions
without one: the config's). The config's input width and ``feature_schema``
parameter are shared by all versions, so they are rewritten together with the
version policy, in one atomic write: a change of version may switch the
model's schema. The ensemble ``risk_ensemble`` (kept for perf_analyzer; the
gateway calls the models) follows its members once they agree on a schema;
while they disagree it is parked out of Triton's sight (see ``_park``), so a
Triton started on the repository still starts.

A change is made in Triton as one step that never drops a request: Triton
loads the new version (with the new config) next to the old one and unloads
the old one only once the new one is ready. In explicit model control mode
the command asks Triton to load the model and gets its verdict; in poll mode
it waits for the poll to do the same. A version that fails to load leaves
the old one serving, and the record is put back (version and schema), so a
restart keeps the old version too.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import os
import re
import shutil
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from export.errors import ExportError, SchemaMismatchError
from export.repository import (
    CONFIG,
    MODEL_FILE,
    _fsync_dir,
    _locked,
    _write_atomically,
    config_feature_schema,
    config_input_width,
    schema_text,
    version_feature_schema,
    versions,
)
from features import schemas

__all__ = [
    "config_feature_schema",
    "go_live",
    "live_version",
    "rollback",
    "status",
    "version_feature_schema",
]

RELEASES_LOG = "RELEASES.log"
ENSEMBLE = "risk_ensemble"
# Where the ensemble's config waits while its members disagree: a file at the
# top of the repository, which Triton ignores like RELEASES.log.
PARKED = f"{ENSEMBLE}.{CONFIG}.parked"
# The one file of the ensemble's version directory, put back when it returns.
ENSEMBLE_NOTE = (
    "The ensemble has no files of its own; Triton needs this version directory.\n"
)
_MEMBER = re.compile(r'model_name:\s*"([^"]+)"')
_POLICY = re.compile(r"^version_policy:.*$", re.MULTILINE)
_SPECIFIC = re.compile(r"specific:\s*\{\s*versions:\s*\[([^\]]*)\]")
_OUTPUT_NAME = re.compile(r'output\s*\[\s*\{\s*name:\s*"([^"]+)"')
# Requests to our own Triton must never go through a proxy.
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ReleaseError(ExportError):
    """The live version was not changed."""


@dataclass(frozen=True)
class Release:
    at: str
    who: str
    action: str
    model: str
    from_version: int | None
    to_version: int | None  # None: a rollback refused for want of a target
    outcome: str  # "ok", "unchanged", "failed" or "refused"
    detail: str = ""
    # The config's feature schema before, and the asked version's (like
    # to_version, also when the change failed); older entries have none.
    from_schema: str | None = None
    to_schema: str | None = None

    def line(self) -> str:
        return json.dumps(asdict(self), sort_keys=False)


def live_version(model_dir: Path) -> int | None:
    """The version the config makes live: its one specific version, else the
    newest on disk (``latest: 1``)."""
    text = (model_dir / CONFIG).read_text()
    match = _SPECIFIC.search(text)
    if match:
        numbers = [int(v) for v in re.findall(r"\d+", match.group(1))]
        return max(numbers) if numbers else None
    return max(versions(model_dir), default=None)


def policy_text(config_text: str, version: int) -> str:
    policy = f"version_policy: {{ specific: {{ versions: [ {version} ] }} }}"
    if _POLICY.search(config_text) is None:
        return config_text.rstrip("\n") + "\n" + policy + "\n"
    return _POLICY.sub(policy, config_text, count=1)


def onnx_input_width(path: Path) -> int | None:
    """Columns of the graph's one input (None when the graph leaves it open)."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise ReleaseError(f"{path} cannot be read as ONNX: {exc}") from exc
    initialisers = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initialisers]
    if len(inputs) != 1:
        raise ReleaseError(f"{path} has {len(inputs)} inputs, the serving contract one")
    dims = inputs[0].type.tensor_type.shape.dim
    if len(dims) != 2:
        raise SchemaMismatchError(
            f"{path}: input {inputs[0].name!r} has rank {len(dims)}, expected 2"
        )
    return dims[1].dim_value if dims[1].HasField("dim_value") else None


def check_version(model_dir: Path, version: int) -> str:
    """The feature schema of a version that may go live; refuses a version
    that is missing, speaks an unknown schema, or whose model.onnx does not
    take that schema's width."""
    version_dir = model_dir / str(version)
    if not (version_dir / MODEL_FILE).is_file():
        raise ReleaseError(f"{version_dir} has no {MODEL_FILE}; publish it first")
    schema = version_feature_schema(model_dir, version)
    if schema not in schemas.SCHEMAS:
        raise SchemaMismatchError(
            f"version {version} of {model_dir.name} speaks feature schema "
            f"{schema!r}, which is not a known schema ({', '.join(schemas.SCHEMAS)})"
        )
    width = schemas.width(schema)
    columns = onnx_input_width(version_dir / MODEL_FILE)
    if columns is not None and columns != width:
        raise SchemaMismatchError(
            f"version {version} of {model_dir.name}: its model card says feature "
            f"schema {schema!r} ({width} features) but its {MODEL_FILE} takes "
            f"{columns} columns"
        )
    return schema


def smoke_test(model_dir: Path, version: int, schema: str) -> None:
    """Score real rows in ``schema`` with onnxruntime; refuses a version whose
    output (the one the config names) is missing, not finite or outside
    [0, 1], or that fails to run. Triton would load such a version and every
    transaction would fall back to the degraded path."""
    import numpy as np
    import onnxruntime as ort

    path = model_dir / str(version) / MODEL_FILE
    match = _OUTPUT_NAME.search((model_dir / CONFIG).read_text())
    if match is None:
        raise ReleaseError(f"{model_dir / CONFIG} names no output")
    output = match.group(1)
    rows = _smoke_rows(schema)
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        if output not in names:
            raise ReleaseError(
                f"version {version} of {model_dir.name} has no output {output!r} "
                f"(its {MODEL_FILE} gives {names})"
            )
        feed = {session.get_inputs()[0].name: rows}
        (scores,) = session.run([output], feed)
    except ReleaseError:
        raise
    except Exception as exc:  # onnxruntime's errors share no base class
        raise ReleaseError(
            f"version {version} of {model_dir.name} fails to score "
            f"{len(rows)} rows of {schema}: {_first_line(str(exc))}"
        ) from exc
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape[:1] != (len(rows),) or scores.size != len(rows):
        raise ReleaseError(
            f"version {version} of {model_dir.name}: {output!r} has shape "
            f"{scores.shape} for {len(rows)} rows, expected ({len(rows)}, 1)"
        )
    bad = ~np.isfinite(scores) | (scores < 0.0) | (scores > 1.0)
    if bad.any():
        first = scores.reshape(-1)[int(np.argmax(bad.reshape(-1)))]
        raise ReleaseError(
            f"version {version} of {model_dir.name} scores {int(bad.sum())} of "
            f"{len(rows)} real rows outside [0, 1] or not finite (e.g. {first}); "
            "it cannot score"
        )


_SMOKE_ROWS: dict[str, Any] = {}


def _smoke_rows(schema: str) -> Any:
    """Rows of the committed sample in ``schema``, encoded once per process."""
    if schema not in _SMOKE_ROWS:
        from export.adapt import parity_rows

        _SMOKE_ROWS[schema] = parity_rows(schema, limit=64)
    return _SMOKE_ROWS[schema]


def history(repository: Path, model: str) -> list[Release]:
    path = repository / RELEASES_LOG
    if not path.is_file():
        return []
    entries = []
    for raw in path.read_text().splitlines():
        try:
            entry = Release(**json.loads(raw))
        except (json.JSONDecodeError, TypeError):
            continue
        if entry.model == model:
            entries.append(entry)
    return entries


def previous_version(repository: Path, model: str) -> int | None:
    """The version that was live before the current one.

    Replays the log: a go-live pushes a version, a rollback pops one. Without
    enough history, the newest version on disk below the live one.
    """
    model_dir = repository / model
    current = live_version(model_dir)
    stack: list[int] = []
    for entry in history(repository, model):
        if entry.outcome != "ok":
            continue
        if entry.action == "rollback":
            if stack:
                stack.pop()
            if not stack or stack[-1] != entry.to_version:
                stack.append(entry.to_version)
            continue
        if not stack and entry.from_version is not None:
            stack.append(entry.from_version)
        stack.append(entry.to_version)
    if len(stack) >= 2 and stack[-1] == current:
        return stack[-2]
    older = [v for v in versions(model_dir) if current is None or v < current]
    return max(older, default=None)


class Triton:
    """Triton's HTTP model repository API, as much as a release needs."""

    def __init__(self, url: str, timeout_s: float = 120.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def _post(self, path: str, body: dict[str, Any]) -> tuple[int, str]:
        request = urllib.request.Request(
            self.url + path,
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        try:
            with _HTTP.open(request, timeout=self.timeout_s) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")
        except (urllib.error.URLError, OSError) as exc:
            raise ReleaseError(f"Triton at {self.url} is unreachable: {exc}") from exc

    def states(self, model: str) -> dict[int, tuple[str, str]]:
        """Version -> (state, reason) of one model, from the repository index."""
        status, body = self._post("/v2/repository/index", {})
        if status != 200:
            raise ReleaseError(f"Triton's repository index answered {status}: {body}")
        return {
            int(entry["version"]): (entry.get("state", ""), entry.get("reason", ""))
            for entry in json.loads(body)
            if entry.get("name") == model and str(entry.get("version", "")).isdigit()
        }

    def unload(self, model: str) -> bool:
        """Ask Triton to unload a model; False when Triton polls instead."""
        status, body = self._post(f"/v2/repository/models/{model}/unload", {})
        if status == 200:
            return True
        if "polling" in body:
            return False
        raise ReleaseError(f"Triton refused to unload {model}: {_error(body)}")

    def load(self, model: str) -> bool:
        """Ask Triton to (re)load a model; False when Triton polls instead."""
        status, body = self._post(f"/v2/repository/models/{model}/load", {})
        if status == 200:
            return True
        if "polling" in body:
            return False
        raise ReleaseError(f"Triton refused to load {model}: {_error(body)}")

    def wait_live(self, model: str, version: int, timeout_s: float) -> None:
        """Until ``version`` alone is READY; raises when it fails to load."""
        deadline = time.monotonic() + timeout_s
        seen_loading = False
        while True:
            states = self.states(model)
            state, reason = states.get(version, ("", ""))
            ready = {v for v, (s, _) in states.items() if s == "READY"}
            if ready == {version}:
                return
            seen_loading = seen_loading or state == "LOADING"
            if seen_loading and state == "UNAVAILABLE" and reason != "unloaded":
                raise ReleaseError(
                    f"Triton failed to load version {version}: {_first_line(reason)}"
                )
            if time.monotonic() > deadline:
                raise ReleaseError(
                    f"version {version} of {model} not live after {timeout_s:.0f} s "
                    f"(Triton says {state or 'nothing'} {reason})".rstrip()
                )
            time.sleep(0.2)


def _error(body: str) -> str:
    try:
        message = str(json.loads(body).get("error", body))
    except json.JSONDecodeError:
        message = body
    return _first_line(message)


def _first_line(message: str) -> str:
    """Triton's reasons carry the backend's traceback; the first line says it."""
    return message.strip().splitlines()[0][:400] if message.strip() else message


def operator() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid {os.getuid()}"
    return f"{user}@{socket.gethostname()}"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _append(repository: Path, release: Release, echo: Callable[[str], None]) -> None:
    with (repository / RELEASES_LOG).open("a") as log:
        log.write(release.line() + "\n")
        log.flush()
        os.fsync(log.fileno())
    echo(release.line())


def go_live(
    repository: Path,
    model: str,
    version: int,
    *,
    triton: Triton | None,
    who: str | None = None,
    action: str = "live",
    timeout_s: float = 120.0,
    echo: Callable[[str], None] = print,
) -> Release:
    """Make ``version`` the one live version of ``model``, or change nothing."""
    model_dir = repository / model
    if not (model_dir / CONFIG).is_file():
        raise ReleaseError(f"no model {model!r} in {repository}")
    who = who or operator()

    with _locked(model_dir):
        current = live_version(model_dir)
        config = model_dir / CONFIG
        before = config.read_text()
        old_schema = config_feature_schema(config)
        new_schema: str | None = None

        def record(outcome: str, detail: str = "") -> Release:
            entry = Release(
                _now(),
                who,
                action,
                model,
                current,
                version,
                outcome,
                detail,
                old_schema,
                new_schema,
            )
            _append(repository, entry, echo)
            return entry

        try:
            new_schema = check_version(model_dir, version)
            smoke_test(model_dir, version, new_schema)
            # Policy, input width and schema in one write: Triton never reads
            # a config that pairs a version with another schema's width.
            after = schema_text(policy_text(before, version), new_schema)
        except ExportError as exc:
            with contextlib.suppress(ExportError):
                new_schema = version_feature_schema(model_dir, version)
            record("failed", str(exc))
            raise
        if current == version and after == before:
            return record("unchanged", f"version {version} is already live")

        switch = ""
        if new_schema != old_schema:
            switch = (
                f"; feature schema {old_schema} -> {new_schema} "
                f"({config_input_width(config)} -> {schemas.width(new_schema)} "
                "features)"
            )

        def note_switch() -> None:
            # Said only once the change happened, never before a refusal.
            if switch:
                echo(
                    f"{model}: version {version} speaks {new_schema}, version "
                    f"{current} {old_schema}: the config switched the model's "
                    f"input to {schemas.width(new_schema)} features ({new_schema})"
                )

        _write_atomically(config, after.encode())
        if triton is None:
            note_switch()
            ensemble = _sync_ensemble(repository, None, echo) if switch else ""
            return record(
                "ok", f"recorded only; Triton was not asked{switch}{ensemble}"
            )
        explicit: bool | None = None  # None: Triton refused the load
        try:
            explicit = triton.load(model)
            triton.wait_live(model, version, timeout_s)
        except ReleaseError as exc:
            # Put the record back so that Triton (now, or after a restart)
            # keeps serving the version that was live, with its schema.
            _write_atomically(config, before.encode())
            if explicit is not False:
                with contextlib.suppress(ReleaseError):
                    triton.load(model)
            if switch:
                # Nothing changed: the ensemble is only checked, quietly.
                _sync_ensemble(repository, triton, lambda _: None)
            record("failed", f"{exc}; version {current} still live ({old_schema})")
            raise
        note_switch()
        how = "loaded by Triton" if explicit else "picked up by Triton's poll"
        ensemble = _sync_ensemble(repository, triton, echo) if switch else ""
        return record("ok", f"{how}{switch}{ensemble}")


def _ensemble_config(repository: Path) -> Path | None:
    """The ensemble's config in the repository, else its parked one."""
    for config in (repository / ENSEMBLE / CONFIG, repository / PARKED):
        if config.is_file():
            return config
    return None


def ensemble_state(repository: Path) -> dict[str, Any] | None:
    """The ensemble's schema, its members', and whether it is parked (None
    without an ensemble)."""
    config = _ensemble_config(repository)
    if config is None:
        return None
    members = {
        name: config_feature_schema(repository / name / CONFIG)
        for name in _MEMBER.findall(config.read_text())
    }
    agreed = set(members.values())
    return {
        "feature_schema": config_feature_schema(config),
        "members": members,
        "members_agree": len(agreed) == 1,
        "parked": config.name == PARKED,
    }


def _sync_ensemble(
    repository: Path, triton: Triton | None, echo: Callable[[str], None]
) -> str:
    """Give the ensemble its members' schema once they agree, else park it;
    what was done. The gateway does not use the ensemble."""
    state = ensemble_state(repository)
    if state is None:
        return ""
    if not state["members_agree"]:
        spoken = ", ".join(f"{m} {s}" for m, s in state["members"].items())
        _park(repository, triton, echo)
        echo(
            f"{ENSEMBLE} is unavailable until its members speak one feature "
            f"schema ({spoken}): parked as {PARKED}, out of Triton's sight; "
            "the gateway does not use it"
        )
        return f"; {ENSEMBLE} unavailable until its members agree (parked)"
    (schema,) = set(state["members"].values())
    returned = _unpark(repository, schema)
    back = f" (back from {PARKED})" if returned else ""
    if triton is not None:
        try:
            triton.load(ENSEMBLE)
        except ReleaseError as exc:
            echo(f"{ENSEMBLE} speaks {schema}{back} but Triton did not load it: {exc}")
            return f"; {ENSEMBLE} speaks {schema}{back}, not loaded: {exc}"
    echo(f"{ENSEMBLE} speaks {schema} like its members{back}")
    return f"; {ENSEMBLE} speaks {schema}{back}"


def _park(repository: Path, triton: Triton | None, echo: Callable[[str], None]) -> None:
    """Take the ensemble out of the repository, its config kept as PARKED.

    No ensemble config can be valid while the members speak different
    schemas, and Triton loads every directory of the repository at start-up
    (one without a config.pbtxt too: it refuses to start), so the directory
    itself goes; the config, moved in one rename, is what comes back.
    """
    ensemble_dir = repository / ENSEMBLE
    with _locked(repository):
        config = ensemble_dir / CONFIG
        was_there = config.is_file()
        if was_there:
            os.replace(config, repository / PARKED)
        # Limitation: between that rename and this removal (milliseconds), or
        # after a crash there, the directory has no config and a Triton
        # started then would refuse to start; the next release finishes the
        # park. Moving the whole directory in one rename to a place Triton
        # does not scan (outside the repository, same filesystem) would close
        # the window.
        if ensemble_dir.exists():
            shutil.rmtree(ensemble_dir)
        _fsync_dir(repository)
    if triton is None or not was_there:
        return
    try:
        if triton.unload(ENSEMBLE):
            echo(f"{ENSEMBLE} unloaded by Triton")
    except ReleaseError as exc:
        echo(f"{ENSEMBLE} parked but Triton did not unload it: {exc}")


def _unpark(repository: Path, schema: str) -> bool:
    """Write the ensemble's config in ``schema``, putting a parked ensemble
    back; whether it was parked."""
    ensemble_dir = repository / ENSEMBLE
    config = ensemble_dir / CONFIG
    parked = repository / PARKED
    with _locked(repository):
        if config.is_file():
            before = config.read_text()
            after = schema_text(before, schema)
            if after != before:
                _write_atomically(config, after.encode())
            parked.unlink(missing_ok=True)
            return False
        # The config is rewritten while still parked, then the directory is
        # rebuilt and the config renamed into it: Triton never reads it in the
        # old schema. (The same short window as in _park, the other way.)
        _write_atomically(parked, schema_text(parked.read_text(), schema).encode())
        version_dir = ensemble_dir / "1"
        version_dir.mkdir(parents=True, exist_ok=True)
        note = version_dir / "README.md"
        if not note.exists():
            note.write_text(ENSEMBLE_NOTE)
        os.replace(parked, config)
        _fsync_dir(ensemble_dir)
        _fsync_dir(repository)
    return True


def rollback(
    repository: Path,
    model: str,
    *,
    triton: Triton | None,
    who: str | None = None,
    timeout_s: float = 120.0,
    echo: Callable[[str], None] = print,
) -> Release:
    """Back to the version that was live before the current one."""
    if not (repository / model / CONFIG).is_file():
        raise ReleaseError(f"no model {model!r} in {repository}")
    target = previous_version(repository, model)
    if target is None:
        error = ReleaseError(f"{model} has no earlier version to roll back to")
        current = live_version(repository / model)
        schema = config_feature_schema(repository / model / CONFIG)
        refused = Release(
            _now(),
            who or operator(),
            "rollback",
            model,
            current,
            None,
            "refused",
            str(error),
            schema,
            None,
        )
        _append(repository, refused, echo)
        raise error
    return go_live(
        repository,
        model,
        target,
        triton=triton,
        who=who,
        action="rollback",
        timeout_s=timeout_s,
        echo=echo,
    )


def _schema_or_problem(model_dir: Path, version: int) -> str:
    try:
        return version_feature_schema(model_dir, version)
    except ExportError as exc:
        return f"unknown ({exc})"


def status(repository: Path) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for config in sorted(repository.glob("*/" + CONFIG)):
        model_dir = config.parent
        if "onnxruntime_onnx" not in config.read_text():
            continue
        on_disk = versions(model_dir)
        out[model_dir.name] = {
            "live_version": live_version(model_dir),
            "feature_schema": config_feature_schema(config),
            "on_disk": on_disk,
            "version_schemas": {
                str(v): _schema_or_problem(model_dir, v) for v in on_disk
            },
            "rollback_to": previous_version(repository, model_dir.name),
        }
    ensemble = ensemble_state(repository)
    if ensemble is not None:
        out[ENSEMBLE] = ensemble
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m export.live",
        description="Show, change or roll back the live version of each model.",
    )
    # The same variables as the local Triton launcher, so that one environment
    # points both at the same server.
    parser.add_argument(
        "--repository",
        type=Path,
        default=Path(os.environ.get("TRITON_MODEL_REPOSITORY", "model_repository")),
        help="Triton repository (TRITON_MODEL_REPOSITORY)",
    )
    http_port = os.environ.get("TRITON_HTTP_PORT", "8000")
    parser.add_argument(
        "--triton-url",
        default=os.environ.get("TRITON_HTTP_URL", f"http://127.0.0.1:{http_port}"),
        help="Triton's HTTP address (TRITON_HTTP_URL, else 127.0.0.1 on "
        "TRITON_HTTP_PORT); 'none' only edits the record",
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds")
    parser.add_argument("--who", help="who asked (default user@host)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "status", help="live version and schema, versions on disk, rollback"
    )
    live = commands.add_parser("live", help="make one version the live one")
    live.add_argument("--model", required=True)
    live.add_argument("--version", type=int, required=True)
    back = commands.add_parser("rollback", help="back to the previous live version")
    back.add_argument("--model", required=True)
    args = parser.parse_args(argv)

    if args.command == "status":
        print(json.dumps(status(args.repository), indent=2))
        return 0
    triton = None if args.triton_url == "none" else Triton(args.triton_url)
    try:
        if args.command == "live":
            go_live(
                args.repository,
                args.model,
                args.version,
                triton=triton,
                who=args.who,
                timeout_s=args.timeout,
            )
        else:
            rollback(
                args.repository,
                args.model,
                triton=triton,
                who=args.who,
                timeout_s=args.timeout,
            )
    except ExportError as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
