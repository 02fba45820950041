"""Unseen-value augmentation and the blockwise reconstruction error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import features
from training import autoencoder as ae
from training import synthetic
from training.calibration import fit_quantile_knots, standardisation
from training.unseen import augment_unseen, categorical_blocks, with_other, with_value

pytestmark = [pytest.mark.export]


def synthetic_features(rows: int = 3000) -> np.ndarray:
    return features.encode(synthetic.generate(rows, seed=11))


def test_blocks_cover_every_one_hot_column_and_end_in_other() -> None:
    blocks = categorical_blocks()
    assert blocks[0].start == len(features.NUMERIC_FEATURES)
    assert blocks[-1].stop == features.NUM_FEATURES
    for block in blocks:
        assert features.FEATURE_NAMES[block.other] == f"{block.field}=__other__"


def test_augmentation_moves_about_the_rate_of_values_to_other() -> None:
    x = synthetic_features(2000)
    out = augment_unseen(x, 0.1, np.random.default_rng(0))
    assert out.shape == x.shape and not np.shares_memory(out, x)
    for block in categorical_blocks():
        assert np.all(out[:, block.start : block.stop].sum(axis=1) == 1.0)
        moved = out[:, block.other].mean() - x[:, block.other].mean()
        assert 0.07 < moved < 0.13
    np.testing.assert_array_equal(out[:, :6], x[:, :6])
    np.testing.assert_array_equal(augment_unseen(x, 0.0, np.random.default_rng(0)), x)
    with pytest.raises(ValueError, match="rate"):
        augment_unseen(x, 1.0, np.random.default_rng(0))


def test_swap_gives_known_values_and_keeps_one_hot_rows() -> None:
    x = synthetic_features(4000)
    out = augment_unseen(x, 0.0, np.random.default_rng(1), swap_rate=0.5)
    device = next(b for b in categorical_blocks() if b.field == "device")
    assert np.all(out[:, 6:].sum(axis=1) == len(categorical_blocks()))
    assert np.array_equal(out[:, device.other], x[:, device.other])
    known = out[:, device.start : device.other].mean(axis=0)
    assert known.min() > 0.1  # every known device now shows up
    with pytest.raises(ValueError, match="below 1"):
        augment_unseen(x, 0.6, np.random.default_rng(0), swap_rate=0.5)


def test_with_value_and_with_other_set_one_field() -> None:
    x = synthetic_features(50)
    mobile = with_value(x, "device", "mobile")
    column = features.FEATURE_NAMES.index("device=mobile")
    assert np.all(mobile[:, column] == 1.0)
    other = with_other(x, "currency")
    assert np.all(other[:, features.FEATURE_NAMES.index("currency=__other__")] == 1)
    assert np.all(other[:, features.FEATURE_NAMES.index("currency=USD")] == 0)
    with pytest.raises(ValueError, match="no categorical field"):
        with_other(x, "colour")


def test_blockwise_error_of_a_categorical_block_is_at_most_one_term() -> None:
    n = features.NUM_FEATURES
    std = np.full(n, 0.05, np.float32)  # rare one-hot columns: the worst case
    terms = ae.error_terms(std, "blockwise").tensors()
    z = torch.zeros(1, n)
    wrong = z.clone()
    wrong[0, 6:] = 1.0 / 0.05  # every one-hot column off by a whole unit
    error = ae.mean_error(wrong, z, torch.zeros(1, n), terms)
    # Four blocks at their cap of 1, six exact numeric terms.
    assert float(error) == pytest.approx(4 / 10)


def test_known_blocks_error_leaves_out_fields_in_other() -> None:
    n = features.NUM_FEATURES
    terms = ae.error_terms(np.full(n, 0.5, np.float32), "known-blocks").tensors()
    x = torch.from_numpy(with_other(synthetic_features(1), "currency"))
    z = torch.zeros(1, n)
    wrong = z.clone()
    currency = next(b for b in categorical_blocks() if b.field == "currency")
    wrong[0, currency.start : currency.stop] = 10.0
    assert float(ae.mean_error(wrong, z, x, terms)) == 0.0
    assert float(ae.mean_error(wrong, z, torch.zeros(1, n), terms)) > 0.0


def train_scorer(x: np.ndarray, error: str, rate: float) -> ae.AnomalyScorer:
    rng = np.random.default_rng(0)
    train, cal = x[:2400], x[2400:]
    mean, std = standardisation(augment_unseen(train, rate, rng))
    net = ae.train_autoencoder(
        train, mean, std, epochs=8, seed=0, error=error, unseen_rate=rate
    )
    scorer = ae.AnomalyScorer(net, x.shape[1], 7, error)
    scorer.set_standardisation(mean, std)
    scorer.set_calibration(fit_quantile_knots(ae.score(scorer, cal, errors=True)))
    return scorer


def every_field_other(x: np.ndarray) -> np.ndarray:
    for vocab in features.VOCABULARIES:
        x = with_other(x, vocab.field)
    return x


def test_augmented_blockwise_model_does_not_call_every_unseen_value_maximal() -> None:
    x = synthetic_features()
    probe = every_field_other(x[2400:])
    baseline = ae.score(train_scorer(x, "mse", 0.0), probe)
    robust = ae.score(train_scorer(x, "blockwise", 0.1), probe)
    # Version 1's recipe sends every such row to REVIEW (anomaly above 0.8).
    assert np.mean(baseline > 0.8) > 0.95
    assert np.median(robust) < 0.8
    assert np.mean(robust > 0.8) < 0.2


def test_scorer_saved_before_error_kinds_loads_as_mse(tmp_path: Path) -> None:
    x = synthetic_features(600)
    scorer = ae.AnomalyScorer(ae.Autoencoder(x.shape[1]), x.shape[1], 7, "mse")
    scorer.set_standardisation(*standardisation(x))
    legacy = {
        k: v
        for k, v in scorer.state_dict().items()
        if k not in ("feature_weight", "term_matrix", "term_cap")
    }
    path = tmp_path / "legacy.pt"
    torch.save({"state_dict": legacy, "num_features": x.shape[1], "num_knots": 7}, path)
    loaded = ae.load_scorer(path)
    assert loaded.error == "mse"
    np.testing.assert_allclose(
        ae.score(loaded, x, errors=True), ae.score(scorer, x, errors=True), rtol=1e-6
    )
