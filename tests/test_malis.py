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


def brute_force_maximin(affinities, labels):
    """For every labelled pair ``(i, j)``, its maximin edge by a max-min Floyd-Warshall over edge ranks:
    a list of ``(same_id, flat edge index)``.

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
    ids = labels.reshape(-1)
    return [(ids[i] == ids[j], edge_of[strength[i, j]]) for i in range(n) for j in range(i + 1, n)
            if ids[i] and ids[j]]


def brute_force_counts(affinities, labels):
    """Positive and negative pair counts per edge from :func:`brute_force_maximin`."""
    positive = np.zeros(affinities.size)
    negative = np.zeros(affinities.size)
    for same, edge in brute_force_maximin(affinities, labels):
        (positive if same else negative)[edge] += 1
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
        if constrained:  # Funke et al.: passes on the capped / floored graphs, counts kept on edges of their target
            gt = gt_affinities(labels).astype(np.float32)
            expected = (brute_force_counts(np.minimum(affinities, gt), labels)[0] * (gt == 1),
                        brute_force_counts(np.maximum(affinities, gt), labels)[1] * (gt == 0))
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
    # constrained: pairs whose maximin edge lands on an edge of the other target are dropped
    assert 0 < cpos.sum() < positive.sum() and 0 < cneg.sum() <= negative.sum()
    gt = gt_affinities(labels)
    assert np.all(gt[cpos > 0] == 1) and np.all(gt[cneg > 0] == 0)


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


def malis_reference(y_pred, labels, mask, constrained, kind):
    """Turaga et al.'s MALIS loss per sample and its gradient, pair by pair from the brute-force maximin
    edges: a positive pair pulls its maximin edge to 1, a negative pair to 0; each family's pairs share
    weight 1 (the mean of the families present). Constrained (Funke et al.): positive pairs on
    ``min(pred, gt)``, kept when their maximin edge has target 1; negative pairs on ``max(pred, gt)``,
    kept on target 0. Pairs whose maximin edge is masked out are dropped."""
    losses, grads = [], []
    for b in range(len(y_pred)):
        pred = np.moveaxis(y_pred[b], -1, 0).astype(np.float64)
        m = np.moveaxis(mask[b], -1, 0).reshape(-1)
        gt = gt_affinities(labels[b])
        if constrained:
            pairs = [(True, e) for same, e in brute_force_maximin(np.minimum(pred, gt), labels[b])
                     if same and gt.reshape(-1)[e] == 1]
            pairs += [(False, e) for same, e in brute_force_maximin(np.maximum(pred, gt), labels[b])
                      if not same and gt.reshape(-1)[e] == 0]
        else:
            pairs = brute_force_maximin(pred, labels[b])
        pairs = [(same, e) for same, e in pairs if m[e]]
        families = {same: sum(1 for s_, _ in pairs if s_ == same) for same in (True, False)}
        families = {same: n for same, n in families.items() if n}
        loss, grad = 0.0, np.zeros(pred.size)
        a = pred.reshape(-1)
        for same, e in pairs:
            w = 1.0 / (families[same] * len(families))
            t = 1.0 if same else 0.0
            p = np.clip(a[e], 1e-6, 1 - 1e-6)
            if kind == "mse":
                loss += w * (a[e] - t) ** 2
                grad[e] += w * 2 * (a[e] - t)
            else:
                loss += -w * (t * np.log(p) + (1 - t) * np.log(1 - p))
                grad[e] += -w * (t / p - (1 - t) / (1 - p))
        losses.append(loss)
        grads.append(np.moveaxis(grad.reshape(pred.shape), 0, -1))
    return np.array(losses), np.stack(grads)


def loss_and_gradient(loss, y_true, y_pred):
    import tensorflow as tf

    y = tf.Variable(y_pred)
    with tf.GradientTape() as tape:
        value = loss(y_true, y)
    return np.asarray(value), tape.gradient(value, y).numpy()


@pytest.mark.parametrize("constrained,kind", [(False, "mse"), (True, "mse"), (True, "bce"), (False, "bce")])
def test_malis_loss_equals_pair_by_pair_reference(rng, constrained, kind):
    """The loss and its gradient per edge against the brute-force pair loss (labels with 0 layers:
    background, trained)."""
    from fusionnet_keras.training.affinity_losses import MalisLoss

    y_true, labels = packed(rng, 3, (2, 4, 5))
    y_pred = rng.uniform(0.05, 0.95, (3, 2, 4, 5, 3)).astype(np.float32)
    loss = MalisLoss(kind=kind, constrained=constrained, reduction=None)
    got, grad = loss_and_gradient(loss, y_true, y_pred)
    ref, ref_grad = malis_reference(y_pred, labels, y_true[..., 3:6], constrained, kind)
    np.testing.assert_allclose(got, ref, rtol=1e-5)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-4, atol=1e-7)
    assert np.all(got > 0)


def line(labels, x_affinities):
    """A 1 x 1 x n volume: packed y_true and y_pred with the given x affinities (the rest 0.5)."""
    from fusionnet_keras.data.affinities import AffinityTargets

    labels = np.array(labels)[None, None]
    y_pred = np.full((1, *labels.shape, 3), 0.5, np.float32)
    y_pred[0, 0, 0, :, 2] = x_affinities
    return AffinityTargets().y_true(labels)[None], y_pred


@pytest.mark.parametrize("constrained", [False, True])
def test_malis_pushes_a_positive_pairs_maximin_edge_up(constrained):
    """Labels [1, 2, 1]: the positive pair (v0, v2) has its maximin edge on the weaker boundary edge
    (v0-v1, 0.3). Turaga's MALIS pulls that edge up (1 positive pair) more than its 1 of 2 negative pairs
    pull it down; constrained MALIS drops the positive pair (its path must leave the object) and only
    pushes the boundaries down."""
    from fusionnet_keras.training.affinity_losses import MalisLoss

    y_true, y_pred = line([1, 2, 1], [0.5, 0.3, 0.6])
    _, grad = loss_and_gradient(MalisLoss(constrained=constrained, reduction=None), y_true, y_pred)
    g = grad[0, 0, 0, :, 2]
    if constrained:
        assert g[1] > 0 and g[2] > 0  # both boundary edges pushed down
    else:
        # positive pair (weight 1) pulls 2 (0.3 - 1); one of two negative pairs (weight 1/2) pushes 2 * 0.3
        assert g[1] == pytest.approx(0.5 * 2 * (0.3 - 1) + 0.25 * 2 * 0.3) and g[1] < 0
        assert g[2] == pytest.approx(0.25 * 2 * 0.6) and g[2] > 0


def test_malis_trains_the_edges_into_background():
    """Labels [1, 1, 0, 2, 2]: 0 is background, so the four negative pairs (1, 2) push their maximin edge
    (the weaker edge next to the 0) down; with label 0 "unknown" those edges are masked and nothing is
    left of the negative pairs."""
    from fusionnet_keras.data.affinities import AffinityTargets
    from fusionnet_keras.training.affinity_losses import MalisLoss

    y_true, y_pred = line([1, 1, 0, 2, 2], [0.5, 0.9, 0.4, 0.7, 0.9])
    _, grad = loss_and_gradient(MalisLoss(reduction=None), y_true, y_pred)
    g = grad[0, 0, 0, :, 2]
    assert g[2] > 0 and g[1] < 0 and g[4] < 0 and g[3] == 0  # 0.4 is the maximin edge of all 4 negatives
    unknown = AffinityTargets("unknown").y_true(np.array([1, 1, 0, 2, 2])[None, None])[None]
    np.testing.assert_array_equal(unknown[0, 0, 0, :, 5], [0, 1, 0, 0, 1])  # the edges touching 0 are masked
    _, grad = loss_and_gradient(MalisLoss(reduction=None), unknown, y_pred)
    assert np.all(grad[0, 0, 0, :, 2] <= 0)  # only positive pairs are left


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
