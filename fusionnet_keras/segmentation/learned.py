"""Learned agglomeration: a boundary classifier trained with the ground truth as oracle (GALA style).

The third paper (Parag et al.) agglomerates the z-watershed fragments with the
context-aware delayed agglomeration of Parag et al. 2015 (NeuroProof) without
its mitochondria context, which leaves the GALA scheme (Nunez-Iglesias et al.
2013): a random forest scores each boundary from features of the boundary
and its two regions (:mod:`~fusionnet_keras.segmentation.features`, all three
affinity channels); the agglomeration merges the boundary least likely to be
real first and recomputes the features of every boundary of the merged region
after each merge.

Training (:func:`train_classifier`) agglomerates the training volume with the
ground truth as the oracle: a boundary should merge when both regions belong
mostly to the same ground-truth body (regions without labelled voxels are
never merged nor used). Epoch 1 visits the boundaries in order of mean
affinity (no classifier yet); each later epoch visits them in the order of the
classifier trained so far. In every epoch the oracle decides each merge
(GALA's "strict" mode, so the states seen are those of a correct
agglomeration), every visited boundary becomes an example (its features at
that moment, the oracle's label), the examples accumulate over epochs and the
forest is retrained after each.

The classifier file (``.npz``, written atomically, no pickle) holds the
forest's arrays with a header naming the format, its version, the feature
names and the histogram bins; another file gives a one-line error.
"""

from __future__ import annotations

import json

import numpy as np

from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.segmentation.agglomeration import Agglomerator, MeanAffinity
from fusionnet_keras.segmentation import defaults
from fusionnet_keras.segmentation.features import edge_features, feature_names
from fusionnet_keras.segmentation.forest import Forest

#: ``format`` field of a classifier file.
CLASSIFIER_FORMAT = "fusionnet-keras-agglomeration-classifier"
#: Version written; files of a newer version are refused.
CLASSIFIER_VERSION = 1


class BoundaryClassifier:
    """Random forest scoring boundaries: ``predict(X)`` = P(the boundary is real, i.e. do not merge).

    Args:
        forest: the trees (:class:`~fusionnet_keras.segmentation.forest.Forest`).
        bins: histogram bins of the region graph the features come from.
        info: free metadata (training settings and figures), saved with it.
    """

    def __init__(self, forest: Forest, bins: int = defaults.BINS, info: dict | None = None):
        self.forest = forest
        self.bins = int(bins)
        self.feature_names = feature_names()
        self.info = dict(info or {})
        if forest.n_features != len(self.feature_names):
            raise FusionNetError(f"forest has {forest.n_features} features, expected {len(self.feature_names)}")

    def predict(self, X) -> np.ndarray:
        return self.forest.predict(X)

    def save(self, path, overwrite: bool = False) -> None:
        """Write the classifier atomically (``.npz``); an existing file only with ``overwrite``."""
        from pathlib import Path

        from fusionnet_keras.errors import OutputExistsError
        from fusionnet_keras.utils.atomic import atomic_path

        if Path(path).exists() and not overwrite:
            raise OutputExistsError(f"output exists: {path} (use --overwrite)")
        header = {
            "format": CLASSIFIER_FORMAT, "version": CLASSIFIER_VERSION, "bins": self.bins,
            "feature_names": self.feature_names, "n_features": self.forest.n_features, "info": self.info,
        }
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(fh, header=np.array(json.dumps(header)), **self.forest.arrays())

    @classmethod
    def load(cls, path) -> "BoundaryClassifier":
        """Read a file written by :meth:`save`; anything else raises a one-line FusionNetError."""
        from fusionnet_keras.utils.npz import read_npz

        what = f"{path} is not an agglomeration classifier of fusionnet-keras"
        arrays = read_npz(path, "agglomeration classifier")
        if "header" not in arrays:
            raise FusionNetError(f"{what} (no header)")
        try:
            header = json.loads(str(arrays.pop("header")))
        except (ValueError, TypeError):
            raise FusionNetError(f"{what} (unreadable header)") from None
        if not isinstance(header, dict) or header.get("format") != CLASSIFIER_FORMAT:
            raise FusionNetError(what)
        version = header.get("version")
        if not isinstance(version, int) or version > CLASSIFIER_VERSION:
            raise FusionNetError(
                f"{path}: classifier version {version} is newer than this fusionnet-keras reads ({CLASSIFIER_VERSION})"
            )
        if header.get("feature_names") != feature_names():
            raise FusionNetError(f"{path}: classifier was trained on other features; train it again")
        try:  # a damaged file with a good header: the arrays or the settings do not fit
            forest = Forest.from_arrays(arrays, header.get("n_features", -1))
            return cls(forest, bins=int(header.get("bins", defaults.BINS)), info=header.get("info"))
        except (FusionNetError, TypeError, ValueError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise FusionNetError(f"agglomeration classifier {path} is damaged ({reason}); train it again") from None


class LearnedScore:
    """Agglomeration scorer: the classifier's probability that a boundary is real (features of both regions)."""

    uses_regions = True
    name = "learned"

    def __init__(self, classifier: BoundaryClassifier):
        self.classifier = classifier

    def __call__(self, agg, edges):
        return self.classifier.predict(edge_features(agg, edges))


def body_overlaps(graph, fragments, labels) -> list[dict]:
    """For each node of ``graph``: ``{ground-truth body: voxels}`` of the fragment (gt 0 left out)."""
    frag = np.asarray(fragments).ravel()
    gt = np.asarray(labels).ravel()
    keep = (frag != 0) & (gt != 0)
    rows = graph.node_index(frag[keep])
    bodies, gt_code = np.unique(gt[keep], return_inverse=True)
    keys, counts = np.unique(rows.astype(np.int64) * max(bodies.size, 1) + gt_code, return_counts=True)
    overlap = [dict() for _ in range(graph.num_nodes)]
    for r, b, c in zip((keys // max(bodies.size, 1)).tolist(), bodies[keys % max(bodies.size, 1)].tolist(),
                       counts.tolist()):
        overlap[r][b] = c
    return overlap


class Oracle:
    """Ground-truth oracle: merge when both regions' majority bodies (gt > 0) agree; records examples.

    Args:
        overlaps: :func:`body_overlaps` of the fragments (copied, not modified).
    """

    def __init__(self, overlaps: list[dict]):
        self.overlap = [dict(d) for d in overlaps]
        self.body = [max(d, key=d.get) if d else None for d in self.overlap]
        self.features: list[np.ndarray] = []
        self.labels: list[int] = []

    def __call__(self, agg, e: int) -> bool:
        a, b = int(agg.eu[e]), int(agg.ev[e])
        if self.body[a] is None or self.body[b] is None:
            return False
        merge = self.body[a] == self.body[b]
        self.features.append(edge_features(agg, [e])[0])
        self.labels.append(0 if merge else 1)
        if merge:  # after the merge either row may be the region's: give both the combined overlap
            big, small = (a, b) if len(self.overlap[a]) >= len(self.overlap[b]) else (b, a)
            combined = self.overlap[big]
            for body, c in self.overlap[small].items():
                combined[body] = combined.get(body, 0) + c
            self.overlap[small] = combined
            self.body[a] = self.body[b] = max(combined, key=combined.get)
        return merge


def fit_forest(X, y, trees: int = 100, seed: int = 0, jobs: int = 1):
    """A scikit-learn random forest on boundary examples (y = 1: real boundary), as a Forest."""
    from sklearn.ensemble import RandomForestClassifier

    y = np.asarray(y)
    if np.unique(y).size < 2:
        raise FusionNetError(
            "the training volume gave examples of one kind only (all merges or all boundaries); "
            "use a larger volume or finer fragments"
        )
    model = RandomForestClassifier(n_estimators=trees, min_samples_leaf=2, max_features="sqrt",
                                   n_jobs=jobs, random_state=seed)
    model.fit(np.asarray(X, np.float32), y)
    return Forest.from_sklearn(model)


def train_classifier(affs, fragments, labels, epochs: int = 4, trees: int = 100, bins: int = defaults.BINS,
                     seed: int = 0, jobs: int = 1, log=None) -> BoundaryClassifier:
    """Train the boundary classifier on a volume with ground truth (GALA epochs, see the module).

    Args:
        affs: ``(3, Z, Y, X)`` affinities in [0, 1].
        fragments: ``(Z, Y, X)`` over-segmentation (e.g. the z-watershed's).
        labels: ``(Z, Y, X)`` ground-truth bodies (0 = unlabelled, ignored).
        epochs: agglomerations of the training volume (1 = mean-affinity order only).
        trees: trees of the random forest.
        bins: histogram bins of the features' quantiles.
        log: optional callable receiving one line of progress per epoch.

    Examples:
        >>> gt = np.repeat(np.repeat([[1, 1, 2, 2]], 4, 0), 4, 1)[None].repeat(3, 0)  # two bodies
        >>> frag = gt * 2 - (np.arange(16) % 8 < 4)                                   # four fragments
        >>> affs = np.full((3,) + gt.shape, 0.8, np.float32); affs[2, :, :, 8] = 0.1
        >>> clf = train_classifier(affs, frag, gt, epochs=1, trees=5)
        >>> clf.info["examples"], clf.info["merge_examples"]
        (3, 2)
    """
    from fusionnet_keras.segmentation.graph import region_graph
    from fusionnet_keras.utils.validate import check_int

    epochs = check_int("epochs", epochs, minimum=1)
    trees = check_int("trees", trees, minimum=1)
    graph = region_graph(affs, fragments, bins=bins)
    if graph.num_edges == 0:
        raise FusionNetError("the fragments have no boundaries to learn from")
    overlaps = body_overlaps(graph, fragments, labels)
    X, y = [], []
    classifier = None
    for epoch in range(1, epochs + 1):
        oracle = Oracle(overlaps)
        scorer = MeanAffinity() if classifier is None else LearnedScore(classifier)
        agg = Agglomerator(graph, scorer, may_merge=oracle)
        agg.merge_until(np.inf)
        X += oracle.features
        y += oracle.labels
        forest = fit_forest(np.array(X), np.array(y), trees=trees, seed=seed, jobs=jobs)
        classifier = BoundaryClassifier(forest, bins=bins, info={
            "epochs": epoch, "trees": trees, "examples": len(y), "merge_examples": int(len(y) - np.sum(y)),
            "fragments": graph.num_nodes, "boundaries": graph.num_edges,
        })
        if log is not None:
            log(f"epoch {epoch}: {len(oracle.labels)} boundaries visited, {agg.merges} merges; "
                f"{len(y)} examples in all")
    return classifier
