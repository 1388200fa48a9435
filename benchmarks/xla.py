"""XLA compilation on and off: prediction and a training step, for the Keras backend in use.

For FusionNet (``--nb-filters`` / ``--depth``, random weights) on the backend
``KERAS_BACKEND`` selects, each with ``jit_compile`` off and on:

* **predict**: ``fusionnet_keras.predict`` of one ``--size`` px section (tta 1,
  64 px mirror padding), in each of ``--precisions``; best of ``--repeats``
  after an untimed call that compiles;
* **train**: one step of the training graph (``trainer.build_training_model``:
  augmentation inside the model, pair loss, Adam) on a batch of
  ``--train-batch`` ``--train-size`` px images (``train_on_batch``), built
  under the dtype policy of each precision as ``train.precision`` does; median
  of ``--steps`` after two untimed steps.

Keras' default (``jit_compile="auto"``) is XLA everywhere except TensorFlow on a
machine without GPUs; the figures decide whether the package keeps it. Run it
once per backend:

    KERAS_BACKEND=tensorflow python benchmarks/xla.py
    KERAS_BACKEND=jax python benchmarks/xla.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np

import common

common.quiet_tensorflow()
common.ensure_repo_on_path()


def time_predict(base, image, precision, jit, repeats):
    import fusionnet_keras as fk
    from fusionnet_keras.models.precision import with_precision

    model = with_precision(base, precision)
    if model is base:  # a separate copy per setting: the compiled function is cached on the model
        model = base.__class__.from_config(base.get_config())
        model.set_weights(base.get_weights())
    model.jit_compile = jit
    best, _, _ = common.best_time(lambda: fk.predict(model, image, tta=1), repeats=repeats)
    return best


def time_train(nb_filters, depth, size, batch, jit, steps, precision):
    import keras

    from fusionnet_keras.models import FusionNet
    from fusionnet_keras.models.precision import policy_name
    from fusionnet_keras.training import config as cfg
    from fusionnet_keras.training.membranes import build_training_model, compile_wrapper

    keras.utils.set_random_seed(0)
    config = cfg.validate(cfg.defaults())
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy_name(precision))  # as the trainer does (train.precision)
    try:
        net = FusionNet(nb_filters=nb_filters, depth=depth)
        model = build_training_model(net, size, config)
        compile_wrapper(model, config, steps_per_epoch=10)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    model.jit_compile = jit
    r = np.random.default_rng(0)
    x = r.random((batch, size, size, 1), dtype=np.float32)
    y = (r.random((batch, size, size, 1)) > 0.5).astype(np.float32)
    times = []
    for i in range(steps + 2):
        t0 = time.perf_counter()
        loss = model.train_on_batch((x, y), y)
        float(np.asarray(loss).ravel()[0])  # wait for the step
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nb-filters", type=int, default=64)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--size", type=int, default=512, help="predicted section (px)")
    parser.add_argument("--precisions", default="float32,bfloat16")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--train-size", type=int, default=256, help="training input (px)")
    parser.add_argument("--train-batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--skip-predict", action="store_true")
    parser.add_argument("--json-out", default=None)
    args = parser.parse_args(argv)

    import keras

    import fusionnet_keras as fk

    result = {"machine": common.machine_info(), "load_before": common.load_average(), "predict": {}, "train": {}}
    keras.utils.set_random_seed(0)
    base = fk.FusionNet(nb_filters=args.nb_filters, depth=args.depth)
    image = np.random.default_rng(0).random((args.size, args.size), dtype=np.float32)
    rows = []
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    for precision in [] if args.skip_predict else precisions:
        times = {jit: time_predict(base, image, precision, jit, args.repeats) for jit in (False, True)}
        result["predict"][precision] = {"off_s": times[False], "on_s": times[True]}
        rows.append([f"predict {args.size}px, {precision}", times[False], times[True], times[False] / times[True]])
        print(f"  predict {precision}: off {times[False]:.2f} s, on {times[True]:.2f} s", flush=True)
    for precision in [] if args.skip_train else precisions:
        times = {jit: time_train(args.nb_filters, args.depth, args.train_size, args.train_batch, jit, args.steps,
                                 precision) for jit in (False, True)}
        result["train"][precision] = {"off_s": times[False], "on_s": times[True], "size": args.train_size,
                                      "batch": args.train_batch}
        rows.append([f"train step {args.train_batch}x{args.train_size}px, {precision}", times[False], times[True],
                     times[False] / times[True]])
        print(f"  train {precision}: off {times[False]:.2f} s, on {times[True]:.2f} s", flush=True)
    result["load_after"] = common.load_average()
    common.print_table(rows, ["what", "XLA off (s)", "XLA on (s)", "speedup of XLA"],
                       title=f"XLA, backend {keras.backend.backend()}, FusionNet {args.nb_filters}/{args.depth}")
    print(f"load average before / after: {result['load_before']} / {result['load_after']}")
    common.emit_json(result, args.json_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
