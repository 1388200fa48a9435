"""Tests of the synthetic nucleus-volume generator (small volumes only)."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from fusionnet_keras.data import synthetic
from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.data.synthetic import make_dataset_volumes, make_nucleus_volume

SMALL = dict(shape=(24, 72, 72), size_scale=0.3)  # nuclei ~21-32 voxels across


@pytest.fixture(scope="module")
def small():
    return make_nucleus_volume(seed=3, return_info=True, **SMALL)


def test_types_and_sequential_labels(small):
    image, labels, info = small
    assert image.shape == labels.shape == SMALL["shape"]
    assert image.dtype == np.uint8 and labels.dtype == np.int32
    ids = np.unique(labels)
    assert ids[0] == 0 and len(ids) > 2
    np.testing.assert_array_equal(ids, np.arange(len(ids)))  # 1..N without gaps
    assert len(info["centres_nm"]) == labels.max()
    assert info["offsets"].shape == (SMALL["shape"][0], 2)


def test_deterministic_for_seed(small):
    image, labels, _ = small
    image2, labels2 = make_nucleus_volume(seed=3, **SMALL)
    np.testing.assert_array_equal(image, image2)
    np.testing.assert_array_equal(labels, labels2)
    image3, labels3 = make_nucleus_volume(seed=4, **SMALL)
    assert not np.array_equal(image, image3)
    assert not np.array_equal(labels, labels3)


def _rims_and_cores(labels, rim=2, core=5):
    """Per-section (2-D) rim of each nucleus and its deeper interior."""
    rims = np.zeros(labels.shape, bool)
    cores = np.zeros(labels.shape, bool)
    for z in range(labels.shape[0]):
        m = labels[z] > 0
        # erode each instance separately so touching faces count as rim too
        edges = ndi.grey_erosion(labels[z], size=3) != ndi.grey_dilation(labels[z], size=3)
        inner = m & ~edges
        rims[z] = m & ~ndi.binary_erosion(inner, iterations=rim - 1)
        cores[z] = ndi.binary_erosion(inner, iterations=core)
    return rims, cores


def test_labels_match_image(small):
    image, labels, _ = small
    img = image.astype(float)
    rims, cores = _rims_and_cores(labels)
    background = ndi.binary_erosion(labels == 0, iterations=3)
    assert cores.sum() > 500 and rims.sum() > 500 and background.sum() > 500
    nucleoplasm, envelope, neuropil = img[cores].mean(), img[rims].mean(), img[background].mean()
    assert nucleoplasm > neuropil + 15  # light nuclei on mid-grey neuropil
    assert envelope < nucleoplasm - 40  # dark nuclear envelope
    assert envelope < neuropil


def test_realistic_nucleus_size():
    vs = synthetic.DEFAULT_VOXEL_SIZE
    _, labels, info = make_nucleus_volume((12, 224, 224), seed=0, return_info=True)
    diam_vox = 2 * info["semi_axes_nm"].prod(axis=1) ** (1 / 3) / vs[1]
    assert len(diam_vox) >= 3
    assert np.all((diam_vox > 4000 / vs[1] * 0.99) & (diam_vox < 6000 / vs[1] * 1.01))  # ~71-106 voxels
    # the in-plane extents of the labelled nuclei are of that size too
    extents = [max(s[1].stop - s[1].start, s[2].stop - s[2].start) for s in ndi.find_objects(labels)]
    assert 60 < max(extents) < 140
    # n_nuclei=0: only background
    image0, labels0 = make_nucleus_volume((8, 40, 40), seed=0, n_nuclei=0)
    assert not labels0.any() and image0.std() > 5


def test_packed_nuclei_touch():
    _, labels = make_nucleus_volume((24, 96, 96), seed=1, size_scale=0.3, density=0.45)
    assert (labels > 0).mean() > 0.25
    a, b = labels[:, :, :-1], labels[:, :, 1:]
    assert np.any((a > 0) & (b > 0) & (a != b))  # distinct ids share a face


def test_jitter_keeps_labels_aligned():
    image, labels, info = make_nucleus_volume(
        (16, 72, 72), seed=5, size_scale=0.3, max_jitter=3, jitter_prob=1.0, noise=0.5, return_info=True
    )
    off = info["offsets"]
    assert np.abs(off).max() > 0 and len(np.unique(off, axis=0)) > 3  # the sections really move
    img = image.astype(float)
    rims, _ = _rims_and_cores(labels, rim=3)
    shifts = [(dy, dx) for dy in range(-3, 4) for dx in range(-3, 4)]
    best_at_zero = 0
    for z in range(labels.shape[0]):
        if rims[z].sum() < 50:
            continue
        # the dark envelope sits exactly under the label rim: any shift of the
        # label rim makes it brighter
        means = [img[z][np.roll(rims[z], s, axis=(0, 1))].mean() for s in shifts]
        best_at_zero += shifts[int(np.argmin(means))] == (0, 0)
    assert best_at_zero >= 0.9 * sum(rims[z].sum() >= 50 for z in range(labels.shape[0]))
    # mis-shifting the labels by the jitter again breaks the alignment
    shifted = np.stack([np.roll(rims[z], tuple(off[z] - off[0] + 2), axis=(0, 1)) for z in range(len(off))])
    assert img[shifted].mean() > img[rims].mean() + 10


def test_bad_arguments():
    with pytest.raises(FusionNetError):
        make_nucleus_volume((8, 32, 32), voxel_size=(60, 0, 56.4))
    with pytest.raises(FusionNetError):
        make_nucleus_volume((8, 32), voxel_size=(60, 56.4, 56.4))
    with pytest.raises(FusionNetError):
        make_nucleus_volume((8, 32, 32), density=2.0)
    with pytest.raises(FusionNetError):
        make_dataset_volumes("huge")


def test_dataset_presets(monkeypatch):
    assert synthetic.PRESETS["paper"] == {
        "train": [(512, 512, 512), (256, 512, 512)],
        "test": (512, 512, 512),
        "voxel_size": (60.0, 56.4, 56.4),
    }
    assert synthetic.PRESETS["cpu"]["train"] == [(96, 256, 256), (64, 256, 256)]
    tiny = {"train": [(8, 40, 40), (6, 40, 40)], "test": (8, 40, 40)}
    monkeypatch.setitem(synthetic.PRESETS, "cpu", tiny)
    data = make_dataset_volumes("cpu", seed=2, size_scale=0.25)
    assert [im.shape for im, _ in data["train"]] == tiny["train"]
    assert data["test"][0].shape == data["test"][1].shape == tiny["test"]
    assert data["voxel_size"] == (60.0, 56.4, 56.4)
    # the volumes differ from one another and are reproducible
    assert not np.array_equal(data["train"][0][0], data["test"][0])
    again = make_dataset_volumes("cpu", seed=2, size_scale=0.25)
    np.testing.assert_array_equal(again["test"][1], data["test"][1])


def test_cpu_test_block_holds_30_whole_nuclei():
    """The CPU preset's test volume (seed 0, as make zebrafish draws it) has >= 30 nuclei not cut by its border."""
    from scipy import ndimage

    spec = synthetic.PRESETS["cpu"]
    seed = int(np.random.SeedSequence(0).generate_state(3)[2])  # make_dataset_volumes' seed of the test volume
    _, labels = make_nucleus_volume(spec["test"], voxel_size=spec["voxel_size"], seed=seed)
    boxes = [b for b in ndimage.find_objects(labels) if b is not None]
    whole = [b for b in boxes if all(0 < s.start and s.stop < n for s, n in zip(b, labels.shape))]
    assert len(whole) >= 30
    # real-size nuclei: 4-6 um across, i.e. 35-53 voxels of 112.8 nm
    sizes = [np.mean([(s.stop - s.start) * v for s, v in zip(b, spec["voxel_size"])]) for b in whole]
    assert 3000 < np.median(sizes) < 6500
