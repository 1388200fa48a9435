"""bfloat16 against float32 training steps on this machine: is bf16 native here or emulated?

Builds the same small conv net (6 x Conv2D 32 on 256 x 256, batch 4, Adam,
BCE) under the ``float32`` and ``mixed_bfloat16`` dtype policies in one
process and times ``train_on_batch`` (after one warm-up step) by CPU time and
wall time. The ratio is what ``train.precision = "auto"``
(:func:`fusionnet_keras.models.precision.policy_name`) decides on: on a CPU
with AVX512-BF16 / AMX-BF16 bf16 is faster, on an AVX2-only CPU it is emulated
and several times slower. One line ``RESULT {json}`` at the end.

    python benchmarks/train_precision.py [--steps 5]
"""

from __future__ import annotations

import argparse
import time

import common


def step_times(policy: str, steps: int, size: int) -> tuple[float, float]:
    """(CPU seconds, wall seconds) per training step under ``policy``."""
    import keras
    import numpy as np

    keras.mixed_precision.set_global_policy(policy)
    inputs = keras.Input((size, size, 1))
    x = inputs
    for i in range(6):
        x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name=f"conv{i}")(x)
    outputs = keras.layers.Conv2D(1, 1, activation="sigmoid", dtype="float32", name="out")(x)
    model = keras.Model(inputs, outputs)
    model.compile("adam", "binary_crossentropy")
    rng = np.random.default_rng(0)
    xb = rng.random((4, size, size, 1), dtype=np.float32)
    yb = (xb > 0.5).astype(np.float32)
    model.train_on_batch(xb, yb)
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(xb, yb)
    return (time.process_time() - cpu) / steps, (time.perf_counter() - wall) / steps


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args(argv)
    common.quiet_tensorflow()
    common.ensure_repo_on_path()
    from fusionnet_keras.models.precision import policy_name
    from fusionnet_keras.utils.hardware import cpu_low_precision

    f32 = step_times("float32", args.steps, args.size)
    bf16 = step_times("mixed_bfloat16", args.steps, args.size)
    rows = [["float32", common.fmt(f32[0]), common.fmt(f32[1])],
            ["mixed_bfloat16", common.fmt(bf16[0]), common.fmt(bf16[1])]]
    common.print_table(rows, ["policy", "CPU s/step", "wall s/step"], title="training step, 6 x Conv2D 32")
    ratio = bf16[0] / f32[0]
    print(f"bf16 / float32 CPU time: {ratio:.2f}x; CPU bf16 instructions: {cpu_low_precision() or 'none'}; "
          f"train.precision auto -> {policy_name('auto')}")
    common.emit_json({"float32": f32, "mixed_bfloat16": bf16, "bf16_over_fp32_cpu": ratio,
                      "cpu_low_precision": cpu_low_precision(), "auto": policy_name("auto"),
                      "machine": common.machine_info(), "load_average": common.load_average()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
