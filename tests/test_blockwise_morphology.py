"""Blockwise morphology: the single-process table, gathered from blocks that cut the objects."""

import numpy as np
import pytest
import zarr
from click.testing import CliRunner
from scipy import ndimage as ndi

from fusionnet_keras.blockwise.morphology import measure_volume
from fusionnet_keras.cli import main
from fusionnet_keras.evaluation import morphology as morph
from fusionnet_keras.errors import FusionNetError, OutputExistsError

VS = (60.0, 56.4, 56.4)
EXACT = [f for f in morph.MEASURE_FIELDS if f not in ("surface_area_um2", "sphericity")]


def blobs(shape=(19, 37, 33), seed=1):
    """Irregular objects, several larger than the blocks; a lone voxel (its smoothed mask never reaches 0.5)."""
    rng = np.random.default_rng(seed)
    mask = ndi.gaussian_filter(rng.random(shape), 2) > 0.51
    mask[2:5, 4:7, 6:9] = False
    mask[3, 5, 7] = True
    return mask


@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    root = tmp_path_factory.mktemp("bmorph")
    mask = blobs()
    inst, _ = ndi.label(mask)
    inst = (inst * 7).astype(np.uint32)  # ids that are not 1..N
    zarr.create_array(store=str(root / "inst.zarr"), data=inst, chunks=(8, 16, 16))
    zarr.create_array(store=str(root / "mask.zarr"), data=mask.astype(np.uint8) * 255, chunks=(8, 16, 16))
    return root, mask, inst


def assert_same_table(blockwise, whole, at_least=5):
    assert len(blockwise) == len(whole) >= at_least
    for b, w in zip(blockwise, whole):
        assert {f: b[f] for f in EXACT} == {f: w[f] for f in EXACT}  # volume, centroid, box: exactly
        assert b["surface_area_um2"] == pytest.approx(w["surface_area_um2"], rel=1e-6, abs=1e-9)
        assert b["sphericity"] == pytest.approx(w["sphericity"], rel=1e-6)


@pytest.mark.parametrize("block,sigma", [((8, 16, 16), 0.5), ((5, 7, 9), 0.5), ((1, 37, 33), 0.5),
                                         ((6, 11, 10), 0.0), ((7, 13, 12), 1.0)])
def test_blockwise_equals_the_whole_volume_table_for_instances(volumes, tmp_path, block, sigma):
    root, _, inst = volumes
    whole = morph.measure_nuclei(inst, VS, binary=False, smooth_sigma=sigma)
    records, info = measure_volume(str(root / "inst.zarr"), VS, smooth_sigma=sigma, out=tmp_path / "t.csv",
                                   block=block, workers=0, progress=False)
    assert not info["binary"] and info["blocks"] > 1
    assert_same_table(records, whole)
    crossing = [r for r in records if any(r[f"bbox_{a}0"] // b != (r[f"bbox_{a}1"] - 1) // b
                                          for a, b in zip("zyx", info["block"]))]
    assert len(crossing) >= 3  # objects cut by the blocks
    assert not (tmp_path / "t.csv.work").exists()  # work files removed


@pytest.mark.parametrize("connectivity", [26, 6])
def test_binary_mask_components_joined_across_blocks(volumes, tmp_path, connectivity):
    root, mask, _ = volumes
    whole = morph.measure_nuclei(mask, VS, connectivity=connectivity)
    records, info = measure_volume(str(root / "mask.zarr"), VS, connectivity=connectivity, out=tmp_path / "t.csv",
                                   block=(7, 13, 12), workers=0, progress=False)
    assert info["binary"]
    assert_same_table(records, whole)  # labels too: components numbered in scan order, as ndimage.label does


def test_objects_touching_only_at_a_block_corner(tmp_path):
    mask = np.zeros((4, 4, 4), np.uint8)
    mask[1, 1, 1] = mask[2, 2, 2] = mask[0, 3, 3] = 1  # the first two meet at the corner of the (2, 2, 2) blocks
    zarr.create_array(store=str(tmp_path / "m.zarr"), data=mask)
    for connectivity, sizes in [(26, [1, 2]), (6, [1, 1, 1])]:
        records, _ = measure_volume(str(tmp_path / "m.zarr"), VS, connectivity=connectivity, out=tmp_path / "t.csv",
                                    block=(2, 2, 2), workers=0, progress=False, overwrite=True)
        assert [r["n_voxels"] for r in records] == sizes
        assert_same_table(records, morph.measure_nuclei(mask, VS, connectivity=connectivity), at_least=1)


def test_resume_computes_only_missing_blocks(volumes, tmp_path):
    root, _, inst = volumes
    out = tmp_path / "t.csv"
    kw = dict(out=out, block=(8, 16, 16), workers=0, progress=False)
    measure_volume(str(root / "inst.zarr"), VS, keep_work=True, **kw)
    parts = out.parent / "t.csv.work" / "parts"
    for block_id in (0, 5):  # as if the run had been killed before these blocks
        (parts / f"{block_id}.npz").unlink()
        (parts / ".blocks" / f"{block_id}.json").unlink()
    kept = {p.name: p.stat().st_mtime_ns for p in parts.glob("*.npz")}
    records, _ = measure_volume(str(root / "inst.zarr"), VS, keep_work=True, **kw)
    assert {p.name: p.stat().st_mtime_ns for p in parts.glob("*.npz") if p.name in kept} == kept
    assert (parts / "0.npz").exists() and (parts / "5.npz").exists()
    assert_same_table(records, morph.measure_nuclei(inst, VS, binary=False))
    with pytest.raises(OutputExistsError, match="another run"):  # other settings, same work folder
        measure_volume(str(root / "inst.zarr"), VS, smooth_sigma=1.0, **kw)
    with pytest.raises(FusionNetError, match="connectivity"):
        measure_volume(str(root / "inst.zarr"), VS, connectivity=8, **kw)


def test_cli_blockwise_on_a_running_scheduler_writes_the_same_csv(volumes, tmp_path):
    import logging

    from distributed import LocalCluster

    root, _, _ = volumes
    base = ["morphology", str(root / "mask.zarr"), "--voxel-size", "60,56.4,56.4", "--clusters", "2"]
    whole = CliRunner().invoke(main, base + ["--out", str(tmp_path / "whole.csv")])
    assert whole.exit_code == 0, whole.output
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0",
                      silence_logs=logging.ERROR) as cluster:
        args = base + ["--out", str(tmp_path / "b.csv"), "--scheduler", cluster.scheduler_address,
                       "--block", "10,19,17", "--figures", str(tmp_path / "figs")]
        result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "b.csv").read_text() == (tmp_path / "whole.csv").read_text()
    assert (tmp_path / "figs" / "fig9_overlay.png").stat().st_size > 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.csv", "figs", "whole.csv"]  # no work files left
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 2 and "output exists" in again.output


def test_measure_path_in_memory_and_blockwise_write_the_same_table_and_summary(volumes, tmp_path):
    """The morphology command's entry point: --block alone means blockwise, and the outputs are the same."""
    from fusionnet_keras.workflows.morphology import measure_path

    root, _, _ = volumes
    lines = {}
    for name, kw in (("whole", {}), ("blocks", {"block": "8,16,16", "workers": 0})):
        lines[name] = []
        records = measure_path(str(root / "mask.zarr"), "60,56.4,56.4", tmp_path / f"{name}.csv", clusters=2,
                               figures=tmp_path / f"fig-{name}", progress=False, report=lines[name].append, **kw)
        assert len(records) >= 5 and (tmp_path / f"fig-{name}" / "fig10_features.png").exists()
    assert (tmp_path / "blocks.csv").read_text() == (tmp_path / "whole.csv").read_text()
    assert lines["blocks"][:-2] == lines["whole"][:-2] and lines["blocks"][0].endswith("60 x 56.4 x 56.4 nm")
    assert not (tmp_path / "blocks.csv.work").exists()  # removed once the table and figures are written
    with pytest.raises(OutputExistsError, match="output exists"):  # every output checked before any work
        measure_path(str(root / "mask.zarr"), VS, tmp_path / "new.csv", figures=tmp_path / "fig-whole",
                     block=(8, 16, 16), workers=0)
    assert not (tmp_path / "new.csv").exists() and not (tmp_path / "new.csv.work").exists()
