"""A trained random forest as plain arrays: fast prediction of single boundaries, pickle-free files.

The learned agglomeration asks the classifier about a handful of boundaries
after every merge; scikit-learn's ``predict_proba`` costs milliseconds per call
whatever the batch size, so the trees of a fitted
``sklearn.ensemble.RandomForestClassifier`` are copied into flat arrays and
evaluated by a small compiled loop (numba), with scikit-learn's arithmetic
(features as float32, ``x <= threshold`` goes left, the mean of the trees' leaf
class fractions): the result equals ``predict_proba(X)[:, 1]``. The arrays are
also what the classifier file stores, so loading one never runs code.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fusionnet_keras.errors import FusionNetError

_ARRAYS = ("feature", "threshold", "left", "right", "prob", "roots")


@dataclass
class Forest:
    """Binary-classification forest: per node ``feature`` (-1 = leaf), ``threshold``, children, P(class 1)."""

    feature: np.ndarray
    threshold: np.ndarray
    left: np.ndarray
    right: np.ndarray
    prob: np.ndarray
    roots: np.ndarray
    n_features: int

    @classmethod
    def from_sklearn(cls, model) -> "Forest":
        """Copy a fitted binary ``RandomForestClassifier`` (classes 0 and 1)."""
        classes = [int(c) for c in model.classes_]
        if classes != [0, 1]:
            raise FusionNetError(f"the forest must be trained on both classes 0 and 1, got {classes}")
        parts = {k: [] for k in _ARRAYS}
        offset = 0
        for est in model.estimators_:
            t = est.tree_
            leaf = t.children_left < 0
            value = t.value[:, 0, :].astype(np.float64)
            parts["feature"].append(np.where(leaf, -1, t.feature).astype(np.int32))
            parts["threshold"].append(t.threshold.astype(np.float64))
            parts["left"].append(np.where(leaf, -1, t.children_left + offset).astype(np.int32))
            parts["right"].append(np.where(leaf, -1, t.children_right + offset).astype(np.int32))
            parts["prob"].append(value[:, 1] / value.sum(axis=1))
            parts["roots"].append(np.array([offset], np.int32))
            offset += t.node_count
        return cls(**{k: np.concatenate(v) for k, v in parts.items()}, n_features=int(model.n_features_in_))

    def arrays(self) -> dict:
        return {k: getattr(self, k) for k in _ARRAYS}

    @classmethod
    def from_arrays(cls, arrays: dict, n_features: int) -> "Forest":
        try:
            f = cls(**{k: np.asarray(arrays[k]) for k in _ARRAYS}, n_features=int(n_features))
        except KeyError as exc:
            raise FusionNetError(f"its forest arrays are incomplete (no {exc.args[0]!r})") from None
        n = f.feature.size
        ok = (
            all(getattr(f, k).shape == (n,) for k in _ARRAYS[:-1])
            and f.roots.ndim == 1 and f.roots.size > 0
            and np.all((f.roots >= 0) & (f.roots < n))
            and np.all(f.feature < f.n_features)
            and np.all((f.feature < 0) | ((f.left > 0) & (f.left < n) & (f.right > 0) & (f.right < n)))
        )
        if not ok:
            raise FusionNetError("its forest arrays are inconsistent")
        f.feature = f.feature.astype(np.int32)
        f.left = f.left.astype(np.int32)
        f.right = f.right.astype(np.int32)
        f.roots = f.roots.astype(np.int32)
        f.threshold = f.threshold.astype(np.float64)
        f.prob = f.prob.astype(np.float64)
        return f

    def predict(self, X) -> np.ndarray:
        """P(class 1) of each row of ``X`` ``(n, n_features)``."""
        X = np.ascontiguousarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise FusionNetError(f"forest expects {self.n_features} features, got shape {X.shape}")
        if X.shape[0] == 0:
            return np.zeros(0, np.float64)
        return _predict()(X, self.feature, self.threshold, self.left, self.right, self.prob, self.roots)


def _predict():
    from fusionnet_keras.segmentation._forest_kernel import forest_proba

    return forest_proba
