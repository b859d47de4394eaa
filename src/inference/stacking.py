"""Stacking (Wolpert 1992, "Stacked generalization"): a level-2 model fitted on the runs' out-of-fold probabilities.

``python -m src.ensemble runA runB ... --method stack [--stacker logistic|ridge|gbm]``. The features of a row are
the runs' OOF probabilities side by side (N, runs * classes). Its reported OOF score is honest: each row is
predicted by a stacker fitted on the rows of the other folds only (the folds the runs themselves used, read from
``oof.csv``), so no row's own label reaches its prediction; the test rows are predicted by a stacker fitted on
all OOF rows. Multi-label and multi-head tasks stack one problem per tag or head (`problems`). The estimators are
scikit-learn's; the fold-wise fitting is ours (scikit-learn's
``StackingClassifier`` refits the level-1 models, which here are whole training runs).
"""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression, Ridge
from threadpoolctl import threadpool_limits

from src.targets import Task

STACKERS = ("logistic", "ridge", "gbm")
FEATURES = ("auto", "all", "own")
ALL_FEATURES_MAX = 256  # `resolve_features`: up to this many columns (runs x outputs), each problem reads them all


class RidgeProbabilities:
    """Ridge regression on one-hot targets, read as probabilities (clipped to [0, 1], rows renormalised): the
    linear stacker of many Kaggle write-ups, with the ``fit`` / ``predict_proba`` / ``classes_`` of a classifier."""

    def __init__(self, alpha: float = 1.0):
        self.model = Ridge(alpha=alpha)

    def fit(self, features: np.ndarray, targets: np.ndarray) -> RidgeProbabilities:
        self.classes_ = np.unique(targets)
        self.model.fit(features, (targets[:, None] == self.classes_[None, :]).astype(np.float64))
        return self

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        scores = np.clip(self.model.predict(features), 0.0, 1.0) + 1e-9
        return scores / scores.sum(1, keepdims=True)


class _OneThread:
    """A classifier fitted and applied on one OpenMP thread: level-2 data are small, and scikit-learn's gradient
    boosting spins all cores' threads, which on a machine busy training costs seconds per fit instead of 0.1 s."""

    def __init__(self, model):
        self.model = model

    def fit(self, features: np.ndarray, targets: np.ndarray) -> _OneThread:
        with threadpool_limits(limits=1, user_api="openmp"):
            self.model.fit(features, targets)
        self.classes_ = self.model.classes_
        return self

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        with threadpool_limits(limits=1, user_api="openmp"):
            return self.model.predict_proba(features)


def make_stacker(name: str):
    """A fresh level-2 model: ``logistic`` (multinomial logistic regression), ``ridge`` (`RidgeProbabilities`) or
    ``gbm`` (scikit-learn's ``HistGradientBoostingClassifier``).

    Raises:
        ValueError: an unknown name (the known ones listed).
    """
    if name == "logistic":
        return LogisticRegression(max_iter=2000)
    if name == "ridge":
        return RidgeProbabilities()
    if name == "gbm":
        return _OneThread(HistGradientBoostingClassifier(max_iter=100, random_state=0))
    raise ValueError(f"--stacker {name!r}: unknown; known: {', '.join(STACKERS)}")


class _Constant:
    """The stacker of a problem whose training rows hold one class only (a tag never or always present)."""

    def fit(self, features: np.ndarray, targets: np.ndarray) -> _Constant:
        self.classes_ = np.unique(targets)
        return self

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        return np.ones((len(features), 1))


def _probabilities(model, features: np.ndarray, num_classes: int) -> np.ndarray:
    """(N, num_classes) float64: the model's probabilities in the task's class order (classes it never saw: 0)."""
    out = np.zeros((len(features), num_classes))
    out[:, model.classes_] = model.predict_proba(features)
    return out


def problems(task: Task, targets: np.ndarray) -> list[tuple[np.ndarray, int, slice]]:
    """The single-label problems a task's stacking is made of: ``(targets (N,) int64, classes, output columns)``.

    One label: one problem over all columns. Multi-label (targets (N, C) multi-hot): one yes/no problem per tag,
    whose probability of yes fills the tag's column. Several heads (targets (N, heads)): one problem per head, over
    the head's block of columns. Each problem's stacker reads every run's every column.
    """
    if task.kind == "single":
        return [(targets, len(task.classes), slice(0, len(task.classes)))]
    if task.kind == "multilabel":
        return [(targets[:, c].astype(np.int64), 2, slice(c, c + 1)) for c in range(targets.shape[1])]
    offsets = np.cumsum([0, *task.sizes])
    return [(targets[:, h], size, slice(offsets[h], offsets[h + 1])) for h, size in enumerate(task.sizes)]


def resolve_features(stack_features: str, runs: int, task: Task) -> str:
    """What each problem's stacker reads: ``all`` the runs' columns, or ``own``: the runs' columns of its own tag or
    head (``runs`` x its classes). ``auto`` is ``all`` up to `ALL_FEATURES_MAX` columns (runs x outputs: Planet's 17
    tags from a few runs, where one tag's probability informs another's) and ``own`` beyond: with 1,000 tags (iMet)
    every one of 1,000 problems would read 1,000 x runs columns, quadratic in the tags, and its rare tags' stackers
    would overfit them. A single-label task is one problem, which reads every column either way.

    Raises:
        ValueError: an unknown choice.
    """
    if stack_features not in FEATURES:
        raise ValueError(f"--stack-features {stack_features!r}: unknown; known: {', '.join(FEATURES)}")
    if stack_features != "auto":
        return stack_features
    return "all" if task.kind == "single" or runs * task.num_outputs <= ALL_FEATURES_MAX else "own"


def problem_features(features: np.ndarray, task: Task, columns: slice, stack_features: str) -> np.ndarray:
    """The columns of ``features`` (N, runs * num_outputs) a problem's stacker reads: all (``all``, no copy), or the
    runs' columns ``columns`` of the problem's own outputs (``own``: (N, runs * its outputs))."""
    if stack_features == "all":
        return features
    runs = features.shape[1] // task.num_outputs
    own = [run * task.num_outputs + c for run in range(runs) for c in range(columns.start, columns.stop)]
    return features[:, own]


def _fit(name: str, features: np.ndarray, targets: np.ndarray):
    return (make_stacker(name) if len(np.unique(targets)) > 1 else _Constant()).fit(features, targets)


def _columns(model, features: np.ndarray, classes: int, columns: slice) -> np.ndarray:
    probs = _probabilities(model, features, classes)
    return probs[:, 1:] if columns.stop - columns.start == 1 and classes == 2 else probs


def honest_oof(
    features: np.ndarray, targets: np.ndarray, folds: np.ndarray, task: Task, name: str, stack_features: str = "all"
) -> np.ndarray:
    """Each row's level-2 probabilities from stackers fitted on the other folds' rows only.

    Args:
        features: (N, runs * num_outputs) the runs' OOF probabilities side by side.
        targets: the rows' targets as `Task.encode` gives them: (N,) class indices, (N, C) multi-hot tags or
            (N, heads) class indices per head.
        folds: (N,) the fold each row was validated in.
        task: the task (`problems`).
        name: the stacker (`make_stacker`).
        stack_features: ``all`` or ``own`` (`resolve_features`): what each problem's stacker reads.

    Returns:
        (N, num_outputs) float64 probabilities, as the runs' (per head, per tag).

    Raises:
        ValueError: fewer than two folds.
    """
    if len(np.unique(folds)) < 2:
        raise ValueError("--method stack: the runs' oof.csv holds one fold; stacking needs the folds of --fold all")
    out = np.zeros((len(features), task.num_outputs))
    if stack_features == "all":
        for fold in np.unique(folds):  # the fold's rows are copied out once, not once per tag
            held = folds == fold
            train, test = features[~held], features[held]
            for labels, classes, columns in problems(task, targets):
                model = _fit(name, train, labels[~held])
                out[held, columns] = _columns(model, test, classes, columns)
        return out
    for labels, classes, columns in problems(task, targets):
        own = problem_features(features, task, columns, stack_features)
        for fold in np.unique(folds):
            held = folds == fold
            out[held, columns] = _columns(_fit(name, own[~held], labels[~held]), own[held], classes, columns)
    return out


def fit_predict(
    features: np.ndarray, targets: np.ndarray, test: np.ndarray, task: Task, name: str, stack_features: str = "all"
) -> np.ndarray:
    """Test probabilities (M, num_outputs) from stackers fitted on all OOF rows (``features`` (N, F), ``targets``
    and ``stack_features`` as in `honest_oof`), applied to ``test`` (M, F)."""
    out = np.zeros((len(test), task.num_outputs))
    for labels, classes, columns in problems(task, targets):
        model = _fit(name, problem_features(features, task, columns, stack_features), labels)
        out[:, columns] = _columns(model, problem_features(test, task, columns, stack_features), classes, columns)
    return out
