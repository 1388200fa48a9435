"""MALIS pair counts against a brute-force maximin search; the affinity losses."""

import numpy as np
import pytest

import fusionnet_keras as fk
from fusionnet_keras.errors import FusionNetError


# ---------------------------------------------------------------------- brute force
def grid_edges(shape):
    """Every edge of the convention: (flat index in (3, Z, Y, X), voxel, predecessor voxel)."""
    edges = []
    for c, offset in enumerate([(1, 0, 0), (0, 1, 0), (0, 0, 1)]):
        for v in np.ndindex(shape):
            u = tuple(np.subtract(v, offset))
            if min(u) >= 0:
                edges.append((np.ravel_multi_index((c, *v), (3, *shape)), np.ravel_multi_index(v, shape),
                              np.ravel_multi_index(u, shape)))
    return edges


def brute_force_counts(affinities, labels):
    """For every labelled pair, its maximin edge by a max-min Floyd-Warshall over edge ranks.

    Edges are ranked by affinity, ties by flat index (lower index = stronger), so every path has a
    unique weakest edge and every pair a unique maximin edge.
    """
    shape = labels.shape
    n = labels.size
    flat_aff = affinities.reshape(-1)
    edges = grid_edges(shape)
    ranked = sorted(edges, key=lambda e: (-flat_aff[e[0]], e[0]))  # strongest first
    strength = np.full((n, n), -1.0)
    edge_of = {}
    for position, (index, v, u) in enumerate(ranked):
        s = len(ranked) - position
        strength[u, v] = strength[v, u] = s
        edge_of[s] = index
    np.fill_diagonal(strength, np.inf)
    for k in range(n):
        strength = np.maximum(strength, np.minimum(strength[:, k : k + 1], strength[k : k + 1, :]))
    positive = np.zeros(affinities.size)
    negative = np.zeros(affinities.size)
    ids = labels.reshape(-1)
    for i in range(n):
        for j in range(i + 1, n):
            if ids[i] and ids[j]:
                target = positive if ids[i] == ids[j] else negative
                target[edge_of[strength[i, j]]] += 1
    return positive.reshape(affinities.shape), negative.reshape(affinities.shape)


def gt_affinities(labels):
    """The target affinities written out edge by edge (independent of fusionnet_keras.data)."""
    out = np.zeros((3, *labels.shape))
    flat = labels.reshape(-1)
    for index, v, u in grid_edges(labels.shape):
        out.reshape(-1)[index] = float(flat[v] != 0 and flat[v] == flat[u])
    return out


def random_graph(rng, case):
    shape = tuple(rng.integers(1, 5, 3))
    if np.prod(shape) < 2:
        shape = (1, 2, 3)
    labels = rng.integers(0, 4, shape) * rng.choice([1, 1000])
    if case % 3 == 0:
        affinities = rng.integers(0, 3, (3, *shape)) / 2.0  # many ties
    elif case % 3 == 1:
        affinities = rng.random((3, *shape))
    else:
        affinities = np.full((3, *shape), 0.5)  # all tied
    return affinities.astype(np.float32), labels


@pytest.mark.parametrize("constrained", [False, True])
def test_malis_equals_brute_force(rng, constrained):
    for case in range(60):
        affinities, labels = random_graph(rng, case)
        positive, negative = fk.malis_weights(affinities, labels, constrained=constrained)
        assert positive.shape == negative.shape == affinities.shape
        if constrained:
            gt = gt_affinities(labels).astype(np.float32)
            expected = (brute_force_counts(np.minimum(affinities, gt), labels)[0],
                        brute_force_counts(np.maximum(affinities, gt), labels)[1])
        else:
            expected = brute_force_counts(affinities, labels)
        np.testing.assert_array_equal(positive, expected[0], err_msg=f"case {case}")
        np.testing.assert_array_equal(negative, expected[1], err_msg=f"case {case}")


def test_counts_cover_every_pair_once(rng):
    labels = rng.integers(0, 6, (3, 20, 20))
    affinities = rng.random((3, *labels.shape)).astype(np.float32)
    positive, negative = fk.malis_weights(affinities, labels)
    _, sizes = np.unique(labels[labels > 0], return_counts=True)
    assert positive.sum() == (sizes * (sizes - 1) // 2).sum()
    assert negative.sum() == (sizes.sum() ** 2 - (sizes**2).sum()) // 2
    cpos, cneg = fk.malis_weights(affinities, labels, constrained=True)
    assert cpos.sum() == positive.sum() and cneg.sum() == negative.sum()


def test_constrained_counts_sit_on_edges_of_their_target(rng):
    """With objects connected in the block, positive pairs never leave their object (their maximin
    edge has target 1) and a negative pair's maximin edge is a boundary (target 0)."""
    labels = np.zeros((3, 12, 12), int)
    labels[:, :, :5], labels[:, :6, 6:], labels[:, 7:, 6:] = 1, 2, 3  # 0 between them
    affinities = rng.random((3, *labels.shape)).astype(np.float32)
    positive, negative = fk.malis_weights(affinities, labels, constrained=True)
    gt = gt_affinities(labels)
    assert np.all(gt[positive > 0] == 1) and np.all(gt[negative > 0] == 0)
    loose_positive, _ = fk.malis_weights(affinities, labels)
    assert np.any(gt[loose_positive > 0] == 0)  # unconstrained: positive paths leave their object


def test_malis_weights_bad_input():
    with pytest.raises(FusionNetError, match="affinities must be"):
        fk.malis_weights(np.zeros((3, 2, 2, 2)), np.zeros((2, 2, 3), int))
    with pytest.raises(FusionNetError, match="finite"):
        fk.malis_weights(np.full((3, 1, 2, 2), np.nan), np.ones((1, 2, 2), int))


# ---------------------------------------------------------------------- losses
def packed(rng, batch, shape, n_ids=4):
    from fusionnet_keras.data.affinities import AffinityTargets

    labels = rng.integers(0, n_ids, (batch, *shape))
    return np.stack([AffinityTargets().y_true(lab) for lab in labels]), labels


def malis_reference(y_pred, labels, mask, target, constrained, kind):
    """The MALIS loss per sample, written out in numpy from the pair counts."""
    out = []
    for b in range(len(y_pred)):
        pred = np.moveaxis(y_pred[b], -1, 0).astype(np.float64)
        m = np.moveaxis(mask[b], -1, 0)
        t = np.moveaxis(target[b], -1, 0)
        pos, neg = fk.malis_weights(pred.astype(np.float32), labels[b], constrained=constrained)
        weights = np.zeros_like(pred)
        terms = 0
        for counts in (pos, neg):
            if (m * counts).sum() > 0:
                weights += m * counts / (m * counts).sum()
                terms += 1
        weights /= max(terms, 1)
        p = np.clip(pred, 1e-6, 1 - 1e-6)
        err = (pred - t) ** 2 if kind == "mse" else -(t * np.log(p) + (1 - t) * np.log(1 - p))
        out.append((weights * err).sum())
    return np.array(out)


@pytest.mark.parametrize("constrained,kind", [(False, "mse"), (True, "mse"), (True, "bce")])
def test_malis_loss_equals_numpy_reference(rng, constrained, kind):
    from fusionnet_keras.training.affinity_losses import MalisLoss

    y_true, labels = packed(rng, 3, (2, 6, 7))
    y_pred = rng.random((3, 2, 6, 7, 3)).astype(np.float32)
    loss = MalisLoss(kind=kind, constrained=constrained, reduction=None)
    got = np.asarray(loss(y_true, y_pred))
    ref = malis_reference(y_pred, labels, y_true[..., 3:6], y_true[..., :3], constrained, kind)
    np.testing.assert_allclose(got, ref, rtol=1e-5)
    assert np.all(got > 0)


def test_balanced_bce_equals_numpy_reference(rng):
    from fusionnet_keras.training.affinity_losses import BalancedBCELoss

    y_true, _ = packed(rng, 2, (2, 5, 5))
    y_true[1, ..., 0:3] = 0  # sample 1: negatives only -> they carry all the weight
    y_pred = rng.random((2, 2, 5, 5, 3)).astype(np.float32)
    got = np.asarray(BalancedBCELoss(reduction=None)(y_true, y_pred))
    for b in range(2):
        t, m, p = y_true[b, ..., :3], y_true[b, ..., 3:6], y_pred[b].astype(np.float64)
        bce = -(t * np.log(p) + (1 - t) * np.log(1 - p))
        pos, neg = m * t, m * (1 - t)
        if pos.sum() and neg.sum():
            expected = 0.5 * (pos * bce).sum() / pos.sum() + 0.5 * (neg * bce).sum() / neg.sum()
        else:
            expected = (neg * bce).sum() / neg.sum()
        assert got[b] == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("name", ["balanced_bce", "malis", "constrained_malis"])
def test_gradients_flow(rng, name):
    import tensorflow as tf

    from fusionnet_keras.models import UNet3D
    from fusionnet_keras.training.affinity_losses import AFFINITY_LOSSES

    model = UNet3D(nb_filters=2, depth=1)
    x = rng.random((1, 17, 24, 24, 1)).astype(np.float32)
    y_true, _ = packed(rng, 1, (3, 8, 8))
    with tf.GradientTape() as tape:
        loss = AFFINITY_LOSSES[name]()(y_true, model(x, training=True))
    grads = tape.gradient(loss, model.trainable_weights)
    assert float(loss) > 0
    assert all(g is not None for g in grads)
    assert np.abs(grads[0].numpy()).sum() > 0 and np.abs(grads[-1].numpy()).sum() > 0


@pytest.mark.parametrize(
    "architecture,name",
    [("unet3d", "malis"), ("fusionnet3d", "constrained_malis"), ("unet3d", "balanced_bce")],
)
def test_fit_two_steps(rng, architecture, name):
    from fusionnet_keras.models import build_model
    from fusionnet_keras.training.affinity_losses import AFFINITY_LOSSES

    model = build_model(architecture, nb_filters=2, depth=1)
    loss = AFFINITY_LOSSES[name]()
    shape = model.geometry.input_shape_for((3, 8, 8))
    x = rng.random((2, *shape, 1)).astype(np.float32)
    y_true, _ = packed(rng, 2, (3, 8, 8))
    before = [w.copy() for w in model.get_weights()]
    model.compile(optimizer="adam", loss=loss, jit_compile="auto" if loss.xla_compatible else False)
    history = model.fit(x, y_true, batch_size=1, epochs=1, steps_per_epoch=2, verbose=0)
    assert np.isfinite(history.history["loss"][0]) and history.history["loss"][0] > 0
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


JAX_FIT = """
import numpy as np, keras
assert keras.backend.backend() == "jax"
from fusionnet_keras.models import build_model
from fusionnet_keras.data.affinities import AffinityTargets
from fusionnet_keras.training.affinity_losses import MalisLoss
rng = np.random.default_rng(0)
model = build_model("unet3d", nb_filters=2, depth=1)
x = rng.random((1, 17, 24, 24, 1)).astype("float32")
y = AffinityTargets().y_true(rng.integers(0, 4, (3, 8, 8)))[None]
before = [w.copy() for w in model.get_weights()]
model.compile(optimizer="adam", loss=MalisLoss(constrained=True))
loss = model.fit(x, y, epochs=1, steps_per_epoch=2, verbose=0).history["loss"][0]
assert model.jit_compile and np.isfinite(loss) and loss > 0
assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
print("ok")
"""


def test_malis_fit_on_jax(tmp_path):
    """The host callback also runs inside a jitted JAX training step (jax.pure_callback)."""
    import importlib.util
    import os
    import subprocess
    import sys

    if importlib.util.find_spec("jax") is None:
        pytest.skip("jax is not installed")
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    proc = subprocess.run([sys.executable, "-c", JAX_FIT], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-2000:]
