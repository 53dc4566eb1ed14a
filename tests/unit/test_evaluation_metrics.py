"""Diagnosis metrics on inputs whose answers are known by construction."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from exact_ct.evaluation import metrics as M

NAMES = ("a", "b")


def test_perfect_and_inverse_scorers_give_auroc_one_and_zero() -> None:
    y = np.array([0, 0, 1, 1, 0, 1])
    p = np.array([0.1, 0.2, 0.8, 0.9, 0.3, 0.7])
    assert M.auroc(y, p) == 1.0
    assert M.auroc(y, 1 - p) == 0.0
    assert M.auroc(np.zeros(4), p[:4]) is None  # one class only: undefined, not 0.5


def test_rank_auroc_matches_scikit_learn_with_ties() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=(20, 50))
    p = rng.integers(0, 5, size=(20, 50)) / 4.0  # many ties
    fast = M.rank_auroc(y, p)
    ref = [roc_auc_score(y[i], p[i]) for i in range(20)]
    np.testing.assert_allclose(fast, ref, atol=1e-12)


def test_bootstrap_interval_is_seeded_and_brackets_the_estimate() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, size=(80, 2))
    p = np.clip(y * 0.3 + rng.random((80, 2)) * 0.7, 0, 1)
    ci1, macro1 = M.bootstrap_auroc(y, p, NAMES, n_boot=300, seed=5)
    ci2, macro2 = M.bootstrap_auroc(y, p, NAMES, n_boot=300, seed=5)
    ci3, _ = M.bootstrap_auroc(y, p, NAMES, n_boot=300, seed=6)
    assert ci1 == ci2 and macro1 == macro2
    assert ci1 != ci3
    for j, n in enumerate(NAMES):
        lo, hi = ci1[n]
        assert lo <= roc_auc_score(y[:, j], p[:, j]) <= hi
        assert 0.0 <= lo < hi <= 1.0
    assert macro1[0] < macro1[1]


def test_thresholds_come_from_validation_and_are_applied_unchanged_to_test() -> None:
    y_val = np.array([[0], [0], [1], [1]])
    p_val = np.array([[0.1], [0.3], [0.6], [0.9]])
    y_test = np.array([[0], [1], [1], [0], [1]])
    p_test = np.array([[0.55], [0.65], [0.95], [0.2], [0.4]])
    out = M.diagnosis_metrics(y_val, p_val, None, y_test, p_test, None, ("a",), n_boot=0)
    e = out["per_abnormality"]["a"]
    assert e["threshold"] == pytest.approx(0.6)  # the lowest positive score on val separates perfectly
    # at 0.6 on test: tp = 2 (0.65, 0.95), fn = 1 (0.4), tn = 2 (0.55, 0.2), fp = 0
    assert (e["tp"], e["fn"], e["tn"], e["fp"]) == (2, 1, 2, 0)
    assert e["sensitivity"] == pytest.approx(2 / 3)
    assert e["specificity"] == 1.0
    # Changing the test labels must never move the threshold.
    out2 = M.diagnosis_metrics(y_val, p_val, None, 1 - y_test, p_test, None, ("a",), n_boot=0)
    assert out2["thresholds"] == out["thresholds"]


def test_f1_threshold_method_maximises_f1_on_validation() -> None:
    y = np.array([[0], [1], [0], [1], [1]])
    p = np.array([[0.2], [0.3], [0.4], [0.6], [0.8]])
    thr = M.choose_thresholds(y, p, ("a",), method="f1")["a"]
    f1 = {t: M.binary_metrics(y[:, 0], p[:, 0], t)["f1"] for t in p[:, 0]}
    assert f1[thr] == max(f1.values())


def test_uncertain_labels_are_left_out() -> None:
    y = np.array([[0], [1], [1], [0]])
    p = np.array([[0.1], [0.9], [0.05], [0.2]])
    valid = np.array([[True], [True], [False], [True]])  # the mis-scored positive is uncertain
    out = M.diagnosis_metrics(y, p, valid, y, p, valid, ("a",), n_boot=0)
    assert out["per_abnormality"]["a"]["auroc"] == 1.0
    assert out["per_abnormality"]["a"]["positives"] == 1


def test_expected_calibration_error() -> None:
    # bin [0.2, 0.3): 10 samples at p = 0.25 with 25 % positives -> perfectly calibrated
    y = np.array([1, 0, 0, 0] * 5)
    p = np.full(20, 0.25)
    assert M.expected_calibration_error(y, p) == pytest.approx(0.0)
    assert M.expected_calibration_error(np.zeros(5), np.ones(5)) == pytest.approx(1.0)
    # half the samples off by 0.5, half perfect -> 0.25
    y2 = np.array([0, 0, 1, 1])
    p2 = np.array([0.5, 0.5, 0.95, 0.95])
    assert M.expected_calibration_error(y2, p2) == pytest.approx(0.5 * 0.5 + 0.5 * 0.05)
