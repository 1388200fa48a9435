"""Tests of the nucleus morphology analysis on analytic shapes."""

import csv
import math

import numpy as np
import pytest

from fusionnet_keras.evaluation import figures
from fusionnet_keras.evaluation import morphology as morph
from fusionnet_keras.evaluation import population
from fusionnet_keras.errors import FusionNetError, OutputExistsError

UM = (1000.0, 1000.0, 1000.0)  # 1 um isotropic voxels, given in nm


def ball(r, pad=3):
    n = 2 * r + 1 + 2 * pad
    c = (n - 1) / 2
    z, y, x = np.ogrid[:n, :n, :n]
    return ((z - c) ** 2 + (y - c) ** 2 + (x - c) ** 2) <= r * r


def test_sphere():
    r = 20
    (rec,) = morph.measure_nuclei(ball(r), UM)
    assert rec["volume_um3"] == pytest.approx(4 / 3 * math.pi * r**3, rel=0.02)
    assert rec["surface_area_um2"] == pytest.approx(4 * math.pi * r**2, rel=0.05)
    assert rec["sphericity"] >= 0.95
    c = r + 3.0  # the ball's centre voxel
    assert rec["centroid_z_vox"] == pytest.approx(c) and rec["centroid_x_um"] == pytest.approx(c)
    assert not rec["touches_border"]
    assert rec["sphericity"] == pytest.approx(float(morph.sphericity(rec["volume_um3"], rec["surface_area_um2"])))


def test_cube_sphericity():
    labels = np.zeros((44, 44, 44), np.uint16)
    labels[2:42, 2:42, 2:42] = 7
    (rec,) = morph.measure_nuclei(labels, UM, binary=False)
    assert rec["label"] == 7 and rec["n_voxels"] == 40**3
    assert rec["sphericity"] == pytest.approx((math.pi / 6) ** (1 / 3), abs=0.03)  # 0.806


def test_anisotropic_voxels_and_centroid():
    box = np.zeros((10, 12, 14), bool)
    box[2:6, 3:9, 4:12] = True  # 4 x 6 x 8 voxels
    (iso,) = morph.measure_nuclei(box, UM)
    (aniso,) = morph.measure_nuclei(box, (2000.0, 1000.0, 1000.0))
    assert iso["volume_um3"] == pytest.approx(4 * 6 * 8)
    assert aniso["volume_um3"] == pytest.approx(2 * iso["volume_um3"])
    assert aniso["surface_area_um2"] > iso["surface_area_um2"]
    assert aniso["centroid_z_vox"] == pytest.approx(3.5)
    assert aniso["centroid_z_um"] == pytest.approx(7.0)
    assert aniso["centroid_y_um"] == pytest.approx(5.5) and aniso["centroid_x_um"] == pytest.approx(7.5)
    # nm in, um out: the paper's voxels
    (em,) = morph.measure_nuclei(box, (60.0, 56.4, 56.4))
    assert em["volume_um3"] == pytest.approx(192 * 0.06 * 0.0564 * 0.0564)


def test_binary_components_and_sparse_ids():
    vol = np.zeros((12, 12, 12), np.uint8)
    vol[1:4, 1:4, 1:4] = 1
    vol[4:7, 4:7, 4:7] = 1  # touches the first cube only at a corner
    vol[8:11, 8:11, 8:11] = 1
    assert len(morph.measure_nuclei(vol, UM)) == 2  # 26-connectivity (default)
    assert len(morph.measure_nuclei(vol, UM, connectivity=6)) == 3
    inst = vol.astype(np.int64)
    inst[8:11, 8:11, 8:11] = 10**9
    recs = morph.measure_nuclei(inst, UM, binary=False)
    assert [r["label"] for r in recs] == [1, 10**9]
    assert recs[0]["n_voxels"] == 54 and recs[1]["n_voxels"] == 27


def test_kmeans_deterministic_and_ordered():
    rng = np.random.default_rng(0)
    centres = np.array([[50.0, 70.0, 0.9], [150.0, 160.0, 0.8], [300.0, 280.0, 0.7]])
    x = np.concatenate([c + rng.normal(0, [5, 5, 0.01], (20, 3)) for c in centres[[2, 0, 1]]])
    a = morph.cluster(x, k=3, seed=1)
    b = morph.cluster(x, k=3, seed=1)
    np.testing.assert_array_equal(a, b)
    # clusters are numbered by increasing volume
    np.testing.assert_array_equal(a, np.repeat([2, 0, 1], 20))
    assert morph.cluster(x[:2], k=3).shape == (2,)  # fewer nuclei than clusters
    assert morph.cluster(np.zeros((0, 3)), k=3).shape == (0,)


def test_outliers_and_annotate():
    x = np.column_stack([np.linspace(90, 110, 30), np.linspace(110, 130, 30)[::-1], np.linspace(0.8, 0.9, 30)])
    x[3, 0] = 400  # huge (merged) nucleus
    x[7, 2] = 0.4  # very irregular
    flags = morph.flag_outliers(x)
    assert set(np.flatnonzero(flags)) == {3, 7}
    recs = [dict(zip(morph.FEATURES, row), centroid_x_um=float(i)) for i, row in enumerate(x)]
    morph.annotate(recs, k=2, seed=0)
    assert recs[3]["outlier"] and not recs[0]["outlier"]
    assert {r["cluster"] for r in recs} <= {0, 1}


def test_kmeans_fits_all_whole_nuclei_and_isolates_the_outliers():
    """The paper's way: the fit includes the outliers, which then form their own cluster (the magenta one);
    pre-flagging them (the project's option) leaves them out of the fit instead."""
    rng = np.random.default_rng(4)
    small = np.column_stack([rng.normal(60, 4, 25), rng.normal(75, 4, 25), rng.normal(0.9, 0.01, 25)])
    large = np.column_stack([rng.normal(140, 6, 25), rng.normal(130, 6, 25), rng.normal(0.85, 0.01, 25)])
    merged = np.array([[420.0, 330.0, 0.55], [450.0, 350.0, 0.52], [400.0, 320.0, 0.58]])  # sphericity < 0.6
    x = np.concatenate([small, large, merged])
    recs = [dict(zip(morph.FEATURES, row), touches_border=False) for row in x]
    recs.append(dict(zip(morph.FEATURES, (5.0, 20.0, 0.5)), touches_border=True))  # a cut nucleus: not fitted
    morph.annotate(recs, k=3, seed=0)
    ids = np.array([r["cluster"] for r in recs[:-1]])
    assert set(ids[-3:]) == {2} and 2 not in set(ids[:-3])  # the outliers are the largest cluster, alone
    assert set(ids[:25]) == {0} and set(ids[25:50]) == {1}
    assert all(recs[i]["outlier"] for i in (50, 51, 52))
    morph.annotate(recs, k=3, seed=0, exclude_outliers=True)  # the pre-flagging: fitted without them
    ids = np.array([r["cluster"] for r in recs[:-1]])
    assert len(set(ids[:50])) == 3  # the three clusters now split the ordinary nuclei
    sil = population.silhouettes(recs, ks=(2, 3, 4))
    assert set(sil) == {2, 3, 4} and sil[3] > 0.5


def _mirrored_volume(shape=(24, 40, 96), seed=0, mirror=True):
    """Balls of random radii in the left half of x; the right half is its mirror image (or the same
    balls enlarged by 2 voxels when ``mirror`` is False)."""
    rng = np.random.default_rng(seed)
    lab = np.zeros(shape, np.int32)
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    half = shape[2] // 2
    centres = [(12, 10 + 20 * (i % 2), 8 + 10 * (i // 2)) for i in range(8)]
    for i, (cz, cy, cx) in enumerate(centres):
        r = int(rng.integers(3, 6))
        lab[(z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2 <= r * r] = i + 1
        r2 = r if mirror else r + 2
        mx = shape[2] - 1 - cx
        lab[(z - cz) ** 2 + (y - cy) ** 2 + (x - mx) ** 2 <= r2 * r2] = i + 9
    assert not lab[:, :, half - 1 : half + 1].any()
    return lab


def test_symmetry_of_a_mirrored_volume():
    lab = _mirrored_volume()
    np.testing.assert_array_equal(lab[:, :, ::-1] > 0, lab > 0)
    recs = morph.measure_nuclei(lab, UM)
    sym = population.symmetry(recs, midline_x_um=(lab.shape[2] - 1) / 2)
    assert sym["n_left"] == sym["n_right"] == 8
    for name in population.SYMMETRY_FEATURES:
        f = sym["features"][name]
        assert f["median_left"] == pytest.approx(f["median_right"], rel=1e-6), name
        assert f["ks"] == pytest.approx(0.0, abs=1e-9) and f["p"] == pytest.approx(1.0), name
    # right-hand nuclei 2 voxels larger in radius: the volumes differ, the positions still mirror
    recs = morph.measure_nuclei(_mirrored_volume(mirror=False), UM)
    sym = population.symmetry(recs, midline_x_um=(lab.shape[2] - 1) / 2)
    assert sym["features"]["volume_um3"]["ks"] > 0.8 and sym["features"]["volume_um3"]["p"] < 0.01
    assert sym["features"]["midline_distance_um"]["p"] > 0.5
    # nuclei cut by the border are left out; one empty side gives no comparison
    assert population.symmetry(recs, midline_x_um=1000.0)["features"] == {}


def test_csv_atomic_with_header(tmp_path):
    vol = np.zeros((20, 20, 20), np.int32)
    vol[2:8, 2:8, 2:8] = 1
    vol[10:18, 10:18, 10:18] = 2
    recs = morph.analyze_nuclei(vol, UM, k=2, seed=0)
    path = morph.write_csv(recs, tmp_path / "out" / "nuclei.csv")
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == morph.CSV_FIELDS
    assert len(rows) == 3 and rows[1][0] == "1" and float(rows[2][2]) == pytest.approx(512)
    assert sorted(p.name for p in path.parent.iterdir()) == ["nuclei.csv"]  # no temp file left
    with pytest.raises(OutputExistsError):
        morph.write_csv(recs, path, overwrite=False)


def test_empty_volume(tmp_path):
    vol = np.zeros((8, 16, 16), np.uint8)
    recs = morph.analyze_nuclei(vol, (60, 56.4, 56.4))
    assert recs == []
    path = morph.write_csv(recs, tmp_path / "empty.csv")
    assert path.read_text().splitlines() == [",".join(morph.CSV_FIELDS)]
    image = np.random.default_rng(0).integers(0, 255, vol.shape, dtype=np.uint8)
    ov = figures.plot_overlay(image, vol, recs, tmp_path / "overlay.png", voxel_size=(60, 56.4, 56.4))
    ft = figures.plot_features(recs, tmp_path / "features.png")
    assert ov.stat().st_size > 1000 and ft.stat().st_size > 1000


def test_figures(tmp_path):
    vol = np.zeros((16, 32, 32), np.int32)
    vol[4:12, 4:14, 4:14] = 1
    vol[6:10, 18:28, 16:30] = 2
    image = np.where(vol > 0, 200, 120).astype(np.uint8)
    recs = morph.analyze_nuclei(vol, (60, 56.4, 56.4), k=2)
    ov = figures.plot_overlay(image, vol, recs, tmp_path / "fig9.png", voxel_size=(60, 56.4, 56.4))
    ft = figures.plot_features(recs, tmp_path / "fig10.pdf")
    assert ov.read_bytes()[:4] == b"\x89PNG" and ft.read_bytes()[:4] == b"%PDF"
    with pytest.raises(FusionNetError):
        figures.plot_overlay(image[:-1], vol, recs, tmp_path / "bad.png")


def test_features_figure_marks_border_nuclei_apart(tmp_path, monkeypatch):
    """Nuclei cut by the border are not in the K-means fit: Fig. 10 draws them apart (no cluster colour,
    no outlier cross), so it shows what the report's tables count."""
    recs = [dict(volume_um3=v, surface_area_um2=2 * v, sphericity=0.8, centroid_x_um=x, cluster=0, outlier=o,
                 touches_border=b) for v, x, o, b in ((10, 1.0, False, False), (12, 2.0, False, False),
                                                      (3, 0.1, True, True), (4, 5.0, False, True))]
    drawn = {}

    def keep(fig, path, overwrite=True):
        drawn["fig"] = fig
        return path

    monkeypatch.setattr(figures, "save_figure", keep)
    figures.plot_features(recs, tmp_path / "fig10.png")
    ax = drawn["fig"].axes[0]
    sizes = {c.get_label(): len(c.get_offsets()) for c in ax.collections}
    assert sizes == {"cut by the border (not in the fit)": 2, "cluster 0": 2}


@pytest.mark.parametrize("vs", [(1, 2), (0, 1, 1), (-60, 56.4, 56.4), ("a", 1, 1), (float("nan"), 1, 1), None])
def test_bad_voxel_size(vs):
    with pytest.raises(FusionNetError):
        morph.measure_nuclei(np.ones((3, 3, 3), bool), vs)


def test_bad_labels():
    with pytest.raises(FusionNetError):
        morph.measure_nuclei(np.ones((3, 3), bool), UM)
    with pytest.raises(FusionNetError):
        morph.measure_nuclei(np.full((3, 3, 3), -1), UM)
    with pytest.raises(FusionNetError):
        morph.measure_nuclei(np.full((3, 3, 3), 0.5), UM)
