"""bfloat16 against float32 training steps on this machine: is bf16 native here or emulated?

Builds the same network under the ``float32`` and ``mixed_bfloat16`` dtype
policies in one process and times ``train_on_batch`` (after one warm-up step)
by CPU time and wall time, the two policies taking turns (A B A B ...), medians.
``--model convs`` (default): a small conv net (6 x Conv2D 32, no batch norm);
``--model fusionnet``: FusionNet ``--nb-filters``/``--depth`` with its batch
norms, compiled as the trainer compiles it (XLA where
:func:`fusionnet_keras.utils.hardware.training_jit_compile` says so: float32
on TensorFlow CPUs, not bfloat16), so the ratio is the one a training run sees.
Sizes ``--size`` x ``--size``, batch ``--batch``, Adam, BCE. The ratio is what ``train.precision = "auto"``
(:func:`fusionnet_keras.models.precision.policy_name`) decides on: on a CPU
with AVX512-BF16 / AMX-BF16 bf16 is faster, on an AVX2-only CPU it is emulated
and several times slower. One line ``RESULT {json}`` at the end.

    python benchmarks/train_precision.py [--steps 5]
    python benchmarks/train_precision.py --model fusionnet --nb-filters 16 --depth 4 --size 256 --batch 4
"""

from __future__ import annotations

import argparse
import time

import common


def build(policy: str, model: str, size: int, nb_filters: int, depth: int):
    """The compiled network under ``policy`` (``model``: ``convs`` or ``fusionnet``)."""
    import keras

    from fusionnet_keras.utils.hardware import training_jit_compile

    keras.mixed_precision.set_global_policy(policy)
    keras.utils.set_random_seed(0)
    if model == "fusionnet":
        import fusionnet_keras as fk

        net = fk.FusionNet(nb_filters=nb_filters, depth=depth, dtype=policy)
        jit = training_jit_compile(policy)
    else:
        inputs = keras.Input((size, size, 1))
        x = inputs
        for i in range(6):
            x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name=f"conv{i}")(x)
        outputs = keras.layers.Conv2D(1, 1, activation="sigmoid", dtype="float32", name="out")(x)
        net, jit = keras.Model(inputs, outputs), "auto"
    net.compile("adam", "binary_crossentropy", jit_compile=jit)
    keras.mixed_precision.set_global_policy("float32")
    return net


def step_times(models: dict, steps: int, size: int, batch: int) -> dict:
    """Median (CPU seconds, wall seconds) per training step of every model, the models taking turns."""
    import numpy as np

    rng = np.random.default_rng(0)
    xb = rng.random((batch, size, size, 1), dtype=np.float32)
    yb = (xb > 0.5).astype(np.float32)
    for model in models.values():
        model.train_on_batch(xb, yb)  # compiles
    times = {name: [] for name in models}
    for _ in range(steps):
        for name, model in models.items():
            cpu, wall = time.process_time(), time.perf_counter()
            model.train_on_batch(xb, yb)
            times[name].append((time.process_time() - cpu, time.perf_counter() - wall))
    return {name: tuple(float(v) for v in np.median(np.array(t), axis=0)) for name, t in times.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--model", choices=["convs", "fusionnet"], default="convs")
    parser.add_argument("--nb-filters", type=int, default=16)
    parser.add_argument("--depth", type=int, default=4)
    args = parser.parse_args(argv)
    common.quiet_tensorflow()
    common.ensure_repo_on_path()
    from fusionnet_keras.models.precision import policy_name
    from fusionnet_keras.utils.hardware import cpu_low_precision

    models = {p: build(p, args.model, args.size, args.nb_filters, args.depth) for p in ("float32", "mixed_bfloat16")}
    times = step_times(models, args.steps, args.size, args.batch)
    f32, bf16 = times["float32"], times["mixed_bfloat16"]
    rows = [["float32", common.fmt(f32[0]), common.fmt(f32[1])],
            ["mixed_bfloat16", common.fmt(bf16[0]), common.fmt(bf16[1])]]
    what = "6 x Conv2D 32" if args.model == "convs" else f"FusionNet {args.nb_filters}/{args.depth}"
    common.print_table(rows, ["policy", "CPU s/step", "wall s/step"],
                       title=f"training step, {what}, {args.batch} x {args.size}^2, XLA: "
                             f"{', '.join(f'{p} {m.jit_compile}' for p, m in models.items())}")
    ratio = bf16[0] / f32[0]
    print(f"bf16 / float32 CPU time: {ratio:.2f}x (bf16 speedup {1 / ratio:.2f}x, wall {f32[1] / bf16[1]:.2f}x); "
          f"CPU bf16 instructions: {cpu_low_precision() or 'none'}; train.precision auto -> {policy_name('auto')}")
    common.emit_json({"model": what, "float32": f32, "mixed_bfloat16": bf16, "bf16_over_fp32_cpu": ratio,
                      "cpu_low_precision": cpu_low_precision(), "auto": policy_name("auto"),
                      "machine": common.machine_info(), "load_average": common.load_average()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
