"""The MALIS share of a training step of the 3-D affinity network at the CPU-preset size.

In one process, on the same block:

* ``malis_weights`` (:func:`fusionnet_keras.malis_weights`, Kruskal + union-find
  with id histograms, numba), unconstrained and constrained, on the output block
  of the network: the network's own predicted affinities and real labels
  (fib-medulla, every 4th section: 10 x 10 x 40 nm, dense neuron ids; synthetic
  Voronoi labels when the data is missing);
* a full training step (``train_on_batch``: forward, loss, backward, Adam) of
  the preset network with the class-balanced BCE (no MALIS), with MALIS and
  with constrained MALIS (the host callback included);
* the share: ``malis_weights`` time / training-step time with that loss, and
  the extra time of a MALIS step over a BCE step.

Timings are the best of ``--repeats`` (after untimed warm-ups, which also
compile numba and trace the step); the three training steps are timed in turn,
round after round, so that load from other processes hits them alike. The CPU preset (``--nb-filters 8``,
``--input 33,140,140`` -> output (3, 52, 52)) is stated in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse

import numpy as np

import common

common.quiet_tensorflow()
common.ensure_repo_on_path()


def real_labels(shape, seed=0):
    """A block of fib-medulla labels, every 4th section; None if the data is not there."""
    from fusionnet_keras.settings import data_dir

    path = data_dir() / "fib-medulla" / "fib-medulla.h5"
    if not path.exists():
        return None
    import h5py

    with h5py.File(path, "r") as f:
        labels = f["labels"][::4]
    r = np.random.default_rng(seed)
    start = [int(r.integers(0, n - s + 1)) for n, s in zip(labels.shape, shape)]
    return labels[tuple(slice(a, a + s) for a, s in zip(start, shape))]


def voronoi_labels(shape, n=40, seed=0):
    from scipy import ndimage

    r = np.random.default_rng(seed)
    markers = np.zeros(shape, np.int32)
    points = tuple(r.integers(0, s, n) for s in shape)
    markers[points] = np.arange(1, n + 1)
    _, index = ndimage.distance_transform_edt(markers == 0, sampling=(4, 1, 1), return_indices=True)
    return markers[tuple(index)]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--architecture", default="unet3d", choices=["unet3d", "fusionnet3d"])
    p.add_argument("--nb-filters", type=int, default=8)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--input", default="33,140,140", help="input block z,y,x")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json-out", default=None)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import keras

    import fusionnet_keras as fk
    from fusionnet_keras.data.affinities import AffinityTargets
    from fusionnet_keras.training.affinity_losses import AFFINITY_LOSSES

    shape = tuple(int(s) for s in args.input.split(","))
    keras.utils.set_random_seed(0)
    net = fk.build_model(args.architecture, nb_filters=args.nb_filters, depth=args.depth)
    out = net.geometry.output_shape(shape)
    labels = real_labels(out)
    source = "fib-medulla (every 4th section)" if labels is not None else "synthetic Voronoi"
    if labels is None:
        labels = voronoi_labels(out)
    r = np.random.default_rng(0)
    x = r.random((args.batch_size, *shape, 1), dtype=np.float32)
    y_true = np.stack([AffinityTargets().y_true(labels)] * args.batch_size)
    print(f"{args.architecture} nb_filters {args.nb_filters} depth {args.depth}: input {shape} -> output {out}, "
          f"batch {args.batch_size}, labels: {source} ({len(np.unique(labels))} ids)", flush=True)

    result = {"machine": common.machine_info(), "architecture": args.architecture, "nb_filters": args.nb_filters,
              "depth": args.depth, "input": shape, "output": out, "batch_size": args.batch_size,
              "labels": source, "parameters": net.count_params()}
    # one compiled copy per loss, same weights; their steps are timed in turn, round after round, so
    # that load from other processes hits every loss alike
    models = {}
    for name in ("balanced_bce", "malis", "constrained_malis"):
        model = type(net).from_config(net.get_config())
        model.set_weights(net.get_weights())
        loss = AFFINITY_LOSSES[name]()
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss,
                      jit_compile="auto" if loss.xla_compatible else False)
        for _ in range(2):  # tracing and allocator warm-up
            model.train_on_batch(x, y_true)
        models[name] = model
    times = {name: [] for name in models}
    for _ in range(args.repeats):
        for name, model in models.items():
            with common.Timer() as t:
                model.train_on_batch(x, y_true)
            times[name].append(t.seconds)
    steps = {name: min(v) for name, v in times.items()}
    for name, v in times.items():
        print(f"  training step, {name:18s} best {min(v):.3f} s, median {np.median(v):.3f} s", flush=True)
    result["step_times_s"] = times

    prediction = np.moveaxis(np.asarray(net.predict(x[:1], verbose=0))[0], -1, 0)
    malis = {}
    for constrained in (False, True):
        best, _, _ = common.best_time(lambda: fk.malis_weights(prediction, labels, constrained), repeats=args.repeats)
        malis[constrained] = best * args.batch_size  # the loss runs it once per sample
        print(f"  malis_weights (constrained={constrained}) x {args.batch_size}: {malis[constrained] * 1e3:.1f} ms",
              flush=True)
    rows = []
    for name, constrained in (("malis", False), ("constrained_malis", True)):
        share = malis[constrained] / steps[name]
        extra = (steps[name] - steps["balanced_bce"]) / steps[name]
        rows.append([name, malis[constrained] * 1e3, steps[name], steps["balanced_bce"], 100 * share, 100 * extra])
        result[name] = {"malis_weights_s": malis[constrained], "step_s": steps[name],
                        "share_percent": 100 * share, "extra_over_bce_percent": 100 * extra}
    result["balanced_bce_step_s"] = steps["balanced_bce"]
    common.print_table(rows, ["loss", "malis_weights ms", "step s", "BCE step s", "MALIS share %",
                              "step over BCE %"], title="MALIS share of a training step")
    common.emit_json(result, args.json_out)


if __name__ == "__main__":
    main()
