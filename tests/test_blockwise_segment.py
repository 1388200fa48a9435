"""Blockwise segmentation agrees with whole-volume segmentation; objects cut by block faces stay whole."""

import numpy as np
import pytest
import zarr
from click.testing import CliRunner

from fusionnet_keras.blockwise.segment import contract, read_affinities, segment_volume
from fusionnet_keras.cli import main
from fusionnet_keras.segmentation.inputs import boundary_to_affinities
from fusionnet_keras.segmentation.pipeline import WatershedOptions, segment

from tests.segmentation_helpers import bodies, degrade, gt_affinities, same_partition


@pytest.fixture(scope="module")
def volume(tmp_path_factory):
    """Bodies larger than the blocks (every one crosses block faces), their noisy affinities as zarr."""
    root = tmp_path_factory.mktemp("bseg")
    gt = bodies((12, 48, 48), 6, seed=3)
    affs = degrade(gt_affinities(gt), seed=4, noise=0.05, blur=0.5)
    zarr.create_array(store=str(root / "affs.zarr"), data=affs, chunks=(3, 6, 24, 24))
    return root, gt, affs


def test_blockwise_equals_whole_volume_segmentation_with_blocks_cutting_objects(volume, tmp_path):
    root, gt, affs = volume
    options = WatershedOptions(size=20)
    whole = dict(segment(affs, "mean", [0.3, 0.6], watershed_options=options))
    outs = [f"{tmp_path}/seg.zarr:t3", f"{tmp_path}/seg.zarr:t6"]
    info = segment_volume(str(root / "affs.zarr"), outs, thresholds=[0.3, 0.6], watershed_options=options,
                          block=(6, 16, 16), context=(2, 8, 8), workers=0, progress=False)
    assert info["blocks"] == 18
    fragments = zarr.open_array(f"{tmp_path}/seg.zarr.work/fragments.zarr")[:]
    assert len(np.unique(fragments)) > len(np.unique(whole[0.6]))  # the blocks cut the bodies into fragments
    for t, out in zip([0.3, 0.6], outs):
        blockwise = zarr.open_array(f"{tmp_path}/seg.zarr", path=out.split(":")[1])[:]
        assert same_partition(blockwise, whole[t])
    assert same_partition(zarr.open_array(f"{tmp_path}/seg.zarr", path="t6")[:], gt)  # no body split at a face
    # resumed: nothing left to do, same result
    again = segment_volume(str(root / "affs.zarr"), outs, thresholds=[0.3, 0.6], watershed_options=options,
                           block=(6, 16, 16), context=(2, 8, 8), workers=0, progress=False)
    assert again["segments"] == info["segments"]


def test_boundary_map_affinities_of_a_block_equal_the_whole_volumes():
    b = np.random.default_rng(0).random((6, 9, 11)).astype(np.float32)
    whole = boundary_to_affinities(b)
    region = (slice(2, 5), slice(0, 4), slice(3, 11))
    np.testing.assert_array_equal(read_affinities(b, region), whole[(slice(None),) + region])


def test_contract_merges_stitched_fragments_and_keeps_statistics():
    from fusionnet_keras.segmentation.graph import region_graph

    frag = np.array([[[1, 1, 2, 3, 3, 4]]], np.uint64)
    affs = np.random.default_rng(1).random((3, 1, 1, 6)).astype(np.float32)
    reps, c = contract(region_graph(affs, frag), np.array([[2, 3]], np.uint64))
    merged = region_graph(affs, np.where(frag == 3, 2, frag).astype(np.uint64))
    assert reps.tolist() == [1, 2, 2, 4]
    for name in ("nodes", "size", "u", "v", "count", "inner_count"):
        np.testing.assert_array_equal(getattr(c, name), getattr(merged, name))
    np.testing.assert_allclose(c.sum, merged.sum)
    np.testing.assert_allclose(c.inner_sum, merged.inner_sum)


def test_segment_cli_blockwise_with_a_worker(volume, tmp_path):
    root, gt, affs = volume
    out = tmp_path / "seg.zarr"
    args = ["segment", str(root / "affs.zarr"), str(out), "--threshold", "0.6", "--ws-size", "20",
            "--block", "6,24,24", "--workers", "1"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    whole = dict(segment(affs, "mean", [0.6], watershed_options=WatershedOptions(size=20)))[0.6]
    assert same_partition(zarr.open_array(str(out))[:], whole)
    bad = CliRunner().invoke(main, args[:3] + ["--threshold", "0.6", "--block", "6,24,24", "--fragments", "x.h5"])
    assert bad.exit_code == 2 and "--fragments" in bad.output
