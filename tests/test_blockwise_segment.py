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
        blockwise = zarr.open_array(f"{tmp_path}/seg.zarr", path=out.split(":")[1] + "/0")[:]
        assert same_partition(blockwise, whole[t])
    assert same_partition(zarr.open_array(f"{tmp_path}/seg.zarr", path="t6/0")[:], gt)  # no body split at a face
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
            "--block", "6,24,24", "--workers", "1", "--context", "2,8,8"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    whole = dict(segment(affs, "mean", [0.6], watershed_options=WatershedOptions(size=20)))[0.6]
    assert same_partition(zarr.open_array(str(out), path="0")[:], whole)
    bad = CliRunner().invoke(main, args[:3] + ["--threshold", "0.6", "--block", "6,24,24", "--fragments", "x.h5"])
    assert bad.exit_code == 2 and "--fragments" in bad.output
    bad = CliRunner().invoke(main, args[:3] + ["--context", "2,8,8"])
    assert bad.exit_code == 2 and "--context is for blockwise" in bad.output
    bad = CliRunner().invoke(main, args[:3] + ["--block", "6,24,24", "--context", "2,8"])
    assert bad.exit_code == 2 and "--context must be 3 positive integers" in bad.output


def _size_merged(affs, basins, size, keys):
    from fusionnet_keras.segmentation.graph import region_graph
    from fusionnet_keras.segmentation.zwatershed import size_merge

    graph = region_graph(affs, basins)
    roots = size_merge(graph, size, 0.0, keys(basins, graph.nodes))
    lut = np.zeros(int(basins.max()) + 1, np.uint64)
    lut[graph.nodes.astype(np.int64)] = graph.nodes[roots]
    return lut[basins]


def test_size_merging_does_not_depend_on_the_numbering_of_the_basins():
    """A boundary map's affinities repeat its values, so equally strong edges are common: ties go by first voxel."""
    from scipy import ndimage

    from fusionnet_keras.segmentation.zwatershed import first_voxels, watershed

    rng = np.random.default_rng(5)
    boundary = ndimage.gaussian_filter(rng.random((6, 40, 40)), (0, 1.5, 1.5)).astype(np.float32)
    affs = boundary_to_affinities((boundary - boundary.min()) / np.ptp(boundary))
    basins = watershed(affs, size=0)
    perm = np.concatenate([[0], rng.permutation(int(basins.max())) + 1]).astype(np.uint64)
    merged = _size_merged(affs, basins, 30, first_voxels)
    assert len(np.unique(merged)) < 0.8 * len(np.unique(basins))  # the size merging did something
    assert same_partition(merged, watershed(affs, size=30))
    assert same_partition(_size_merged(affs, perm[basins], 30, first_voxels), merged)
    by_id = lambda labels, nodes: nodes.astype(np.int64)  # noqa: E731 - ties broken by the (permuted) ids
    assert not same_partition(_size_merged(affs, perm[basins], 30, by_id), merged)  # the ties matter here


@pytest.mark.parametrize("block", [(6, 16, 16), (5, 13, 17)])
def test_blockwise_fragments_equal_the_whole_volumes(volume, tmp_path, block):
    """The blocks' basins, stitched on their rims, then size-merged globally: the whole volume's fragments."""
    from fusionnet_keras.segmentation.zwatershed import watershed

    root, gt, affs = volume
    whole = watershed(affs, size=20)
    segment_volume(str(root / "affs.zarr"), [f"{tmp_path}/ws.zarr"], method="watershed",
                   watershed_options=WatershedOptions(size=20), block=block, context=(2, 8, 8), workers=0,
                   progress=False)
    basins = zarr.open_array(f"{tmp_path}/ws.zarr.work/fragments.zarr")[:]
    assert len(np.unique(basins)) > len(np.unique(whole))  # the blocks cut the fragments, size merging was global
    assert same_partition(zarr.open_array(f"{tmp_path}/ws.zarr", path="0")[:], whole)


def test_rim_is_the_face_layer_around_the_block():
    from fusionnet_keras.blockwise.stitch import rim_mask

    rim = rim_mask((4, 5, 6), (slice(1, 3), slice(1, 4), slice(0, 6)))
    assert rim.sum() == 2 * 3 * 6 + 2 * 2 * 6  # two z layers and two y layers; x is the array's edge
    assert not rim[0, 0].any() and not rim[1:3, 1:4].any()
    full = rim_mask((4, 5, 6), (slice(1, 3), slice(1, 4), slice(0, 6)), faces_only=False)
    assert full.sum() == 4 * 5 * 6 - 2 * 3 * 6 and full[0, 0].all()
