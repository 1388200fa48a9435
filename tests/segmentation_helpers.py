"""Synthetic neuron volumes for the segmentation tests: bodies, their affinities, degraded copies."""

import numpy as np
from scipy import ndimage


def bodies(shape, n, seed):
    """Dense 3-D bodies 1..n: Voronoi cells of random seeds, anisotropic (z steps count 3x)."""
    r = np.random.default_rng(seed)
    markers = np.zeros(shape, np.int32)
    pts = r.integers(0, shape, (n, 3))
    markers[tuple(pts.T)] = np.arange(1, n + 1)
    _, idx = ndimage.distance_transform_edt(markers == 0, sampling=(3, 1, 1), return_indices=True)
    return markers[tuple(idx)].astype(np.uint64)


def gt_affinities(gt):
    """Affinities (3, Z, Y, X) of a label volume: 1 where v and v - e_c share a non-zero label."""
    gt = np.asarray(gt)
    affs = np.zeros((3,) + gt.shape, np.float32)
    for c in range(3):
        here = [slice(None)] * 3
        there = [slice(None)] * 3
        here[c], there[c] = slice(1, None), slice(None, -1)
        affs[(c, *here)] = (gt[tuple(here)] == gt[tuple(there)]) & (gt[tuple(here)] != 0)
    return affs


def degrade(affs, seed, noise=0.15, blur=0.7):
    """Blurred, noisy affinities in [0, 1]."""
    r = np.random.default_rng(seed)
    x = ndimage.gaussian_filter(affs, (0, 0.5, blur, blur)) + r.normal(0, noise, affs.shape)
    return np.clip(x, 0, 1).astype(np.float32)


def same_partition(a, b):
    """True when two label volumes are the same partition up to renaming."""
    pairs = np.unique(np.stack([np.ravel(a), np.ravel(b)]), axis=1)
    return len(np.unique(pairs[0])) == pairs.shape[1] == len(np.unique(pairs[1]))


def run_cli(*args):
    """``fusionnet-keras ARGS`` in process (click's runner), stderr kept apart where click allows it."""
    import inspect

    from click.testing import CliRunner

    from fusionnet_keras.cli import main

    kwargs = {"mix_stderr": False} if "mix_stderr" in inspect.signature(CliRunner.__init__).parameters else {}
    return CliRunner(**kwargs).invoke(main, [str(a) for a in args], catch_exceptions=False)


def user_error(result, match):
    """The command failed with exit 2 and exactly one ``Error:`` line containing ``match``, no traceback."""
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and match in lines[0], result.stderr
    assert "Traceback" not in result.output
