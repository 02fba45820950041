"""The gateway refuses model versions whose feature schema it does not speak."""

from __future__ import annotations

import features
from gateway.triton import ModelState, TritonScorer


def judged(state: ModelState, schema: str, versions: list[str]) -> ModelState:
    state.feature_schema, state.versions = schema, versions
    TritonScorer._judge_schema(object.__new__(TritonScorer), state)
    return state


def test_newer_version_with_another_schema_keeps_the_accepted_one_live() -> None:
    state = judged(ModelState("risk_classifier"), features.SCHEMA_ID, ["2"])
    assert (state.live_version, state.pinned_version) == ("2", None)

    judged(state, "txn-basic-v9", ["2", "3"])
    assert state.usable
    assert (state.live_version, state.pinned_version) == ("2", "2")
    assert state.refused is not None and "refused version(s) 3" in state.refused
    assert "txn-basic-v9" in state.refused


def test_no_accepted_version_left_makes_the_model_unusable() -> None:
    state = judged(ModelState("risk_classifier"), features.SCHEMA_ID, ["2"])
    judged(state, "txn-basic-v9", ["3"])
    assert not state.usable
    assert state.problem is not None and "txn-basic-v9" in state.problem


def test_schema_back_in_order_follows_the_newest_version_again() -> None:
    state = judged(ModelState("risk_classifier"), features.SCHEMA_ID, ["2"])
    judged(state, "txn-basic-v9", ["2", "3"])
    judged(state, features.SCHEMA_ID, ["2", "3"])
    assert (state.live_version, state.pinned_version, state.refused) == (
        "3",
        None,
        None,
    )
