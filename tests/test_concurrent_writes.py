"""Concurrent writers into one container (issue 16): real processes, many rounds, nothing lost.

Four processes write four different datasets into one HDF5 file (or zarr
group) at the same moment (a barrier releases them together), 20 rounds each;
every dataset must be present and intact afterwards. Before the container lock
(the HDF5 write copied the file, added its dataset and renamed the copy over
the original) the last writer won and datasets went missing.
"""

import multiprocessing

import h5py
import numpy as np
import pytest

from fusionnet_keras.data.io import read_volume, write_volume

WRITERS = 4
ROUNDS = 20
SHAPE = (4, 128, 128)  # 256 KiB of float32 each: long enough writes to overlap

_barrier = None


def _init(barrier):
    global _barrier
    _barrier = barrier


def _expected(round_, writer):
    return np.random.default_rng(1000 * round_ + writer).random(SHAPE, dtype=np.float32)


def _write(job):
    spec, round_, writer = job
    data = _expected(round_, writer)
    _barrier.wait(timeout=60)
    write_volume(f"{spec}:w{writer}", data)
    return writer


@pytest.fixture(scope="module")
def pool():
    ctx = multiprocessing.get_context("spawn")  # no fork of a process that may hold TensorFlow threads
    barrier = ctx.Barrier(WRITERS)
    with ctx.Pool(WRITERS, initializer=_init, initargs=(barrier,)) as p:
        yield p


@pytest.mark.parametrize("ext", [".h5", ".zarr"])
def test_concurrent_writers_lose_nothing(pool, tmp_path, ext):
    for round_ in range(ROUNDS):
        spec = tmp_path / f"round{round_}{ext}"
        done = pool.map(_write, [(str(spec), round_, w) for w in range(WRITERS)], chunksize=1)
        assert sorted(done) == list(range(WRITERS))
        for w in range(WRITERS):
            np.testing.assert_array_equal(read_volume(f"{spec}:w{w}"), _expected(round_, w))
        if ext == ".h5":
            with h5py.File(spec, "r") as f:
                assert sorted(f) == [f"w{w}" for w in range(WRITERS)], f"round {round_}: {sorted(f)}"
        else:
            assert sorted(p.name for p in spec.iterdir() if not p.name.startswith("zarr")) == \
                [f"w{w}" for w in range(WRITERS)]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"round{r}{ext}" for r in range(ROUNDS))
