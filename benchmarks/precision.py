"""Inference precision: bfloat16 / float16 against float32, speed and accuracy, in one run.

Measures, on the Keras backend in use and whatever device it runs on:

1. **Matmul peak** in float32 and in each low precision (``n x n`` ``keras.ops.matmul``,
   :func:`common.matmul_gflops`): the yardstick of the GFLOP/s below.
2. **Speed** of the paper model (FusionNet 64/4, random weights; throughput
   does not depend on them) predicting one ``--size`` (512) px section (ISBI
   section 1) with the predictor of ``fusionnet_keras.predict`` (tta 1, 64 px
   mirror padding: a 640 px window, the folded inference graph of
   :mod:`fusionnet_keras.models.inference_graph`): median of ``--repeats``
   after one untimed call that compiles, every variant taking its turn in every
   repeat (A B C A B C ...); the ratios; executed GFLOP/s (forward FLOPs of the
   window / time) as a fraction of the matmul peak of the same precision.
   With the **PyTorch peer** (``benchmarks/torch_peer.py``: the same
   architecture in plain PyTorch, channels-last, autocast for bfloat16; skipped
   with a message when torch is absent, ``--no-peer``) timed in the same turns;
   ``--unfolded``: also our network as trained (batch norms not folded);
   ``--forward``: also the plain forward pass of one ``--size`` input.
3. **Accuracy** with a trained model (``--weights``, default the CPU-preset
   FusionNet of ``make isbi2012``): ISBI 2012 sections 21-30 predicted with
   8 orientations in each precision, V^Rand / V^Info (``fusionnet-keras
   evaluate``'s scores), max and mean abs difference of the probabilities to
   float32, time. (Output differences of an untrained network say nothing:
   random weights either saturate the sigmoid or, with calibrated batch norm,
   amplify rounding through near-dead channels.)
4. **Where the bfloat16 error comes from** (``--ablation``, with ``--weights``):
   the same prediction with the input block in bfloat16 too (what a global
   ``mixed_bfloat16`` policy gave before the input block was kept in float32),
   and with the network's last block in float32 as well.

Targets (issue 24): bfloat16 >= 1.8x our float32 and >= 1.1x the peer's
bfloat16 on the 512 px section, float32 >= 1.0x the peer's float32; V^Rand
within 0.001 of float32. Prints tables, PASS/FAIL and a ``RESULT {json}`` line
(``--json-out`` writes it too). The machine's load average before and after is
recorded: on shared cores the speed ratio is only indicative.

    python benchmarks/precision.py --weights isbi2012-fusionnet --tta 1
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

import common

common.quiet_tensorflow()
common.ensure_repo_on_path()

RATIO_TARGET = 1.8  # issue 24: our bfloat16 against our float32
PEER_BF16_TARGET = 1.1  # our bfloat16 against the PyTorch peer's
PEER_FP32_TARGET = 1.0  # our float32 against the PyTorch peer's
VRAND_TARGET = 0.001
DEFAULT_WEIGHTS = "results/isbi2012/fusionnet/best.keras"
SECTIONS = slice(20, 30)  # ISBI 2012 sections 21-30 (the validation sections of make isbi2012)


def matmul_peaks(precisions, n):
    return {p: common.matmul_gflops(n, dtype=p, numpy=False)["backend_gflops"] for p in precisions}


def _section(size):
    """A ``size`` px EM section: ISBI 2012 section 1 (tiled by mirroring if needed), else random noise."""
    from fusionnet_keras.data import datasets
    from fusionnet_keras.data.io import load_image
    from fusionnet_keras.inference.tiling import read_block

    try:
        image = load_image(datasets.isbi2012(download=False) / "train-volume.tif")[0]
    except Exception:  # noqa: BLE001 (no data: speed does not depend on the pixels)
        return np.random.default_rng(0).random((size, size), dtype=np.float32)
    return np.ascontiguousarray(read_block(image, (slice(0, size), slice(0, size))), dtype=np.float32)


def speed(precisions, size, nb_filters, depth, repeats, jit, forward=False, peer=True, unfolded=False):
    """Predict time of one ``size`` px section (tta 1) per precision; with ``forward`` also the plain
    forward of one ``size`` input, with ``peer`` the PyTorch peer's prediction (:mod:`torch_peer`),
    with ``unfolded`` fusionnet-keras without its folded inference graph (the model as trained).

    Every variant runs once in every repeat, in turn (A B C A B C ...), so a load that changes
    during the run weighs on all of them alike; the median is reported (and the best).
    """
    import keras

    import fusionnet_keras as fk
    from fusionnet_keras.inference.predictor import SectionPredictor
    from fusionnet_keras.models import flops_per_pixel
    from fusionnet_keras.models.precision import with_precision

    keras.utils.set_random_seed(0)
    image = _section(size)
    base = fk.FusionNet(nb_filters=nb_filters, depth=depth)
    fpp = flops_per_pixel(base)
    window = SectionPredictor(base, tta=1).schedule((size, size))
    window_px = sum(n * h * w for n, h, w in window)
    x = image[None, :, :, None]
    calls = {}
    jit_used = {}
    for p in precisions:
        predictor = SectionPredictor(with_precision(base, p), tta=1)
        jit_used[p] = common.apply_jit(predictor.network, jit)
        calls[f"ours {p}"] = lambda sp=predictor: sp.predict(image)
        if forward:
            calls[f"ours {p} forward"] = lambda m=predictor.network: m.predict_on_batch(x)
        if unfolded:
            plain = SectionPredictor(with_precision(base, p), tta=1)
            plain.network = plain.model
            common.apply_jit(plain.network, jit)
            calls[f"unfolded {p}"] = lambda sp=plain: sp.predict(image)
    peer_note = None
    if peer:
        import torch_peer

        peer_note = torch_peer.available()
        if peer_note:
            print(f"  {peer_note}", flush=True)
        else:
            torch_net = torch_peer.Peer(nb_filters, depth)
            for p in precisions:
                if p in ("float32", "bfloat16"):
                    calls[f"torch {p}"] = lambda p=p: torch_net.predict(image, p)
    for name, call in calls.items():
        call()  # compiles / warms up
    times = {name: [] for name in calls}
    for _ in range(max(1, repeats)):
        for name, call in calls.items():
            with common.Timer() as t:
                call()
            times[name].append(t.seconds)
    med = {name: float(np.median(t)) for name, t in times.items()}
    rows = {}
    for name, t in times.items():
        rows[name] = {"median_s": med[name], "best_s": min(t), "all_s": t,
                      "gflops": fpp * window_px / med[name] / 1e9}
        print(f"  {name}: median {med[name]:.2f} s (best {min(t):.2f}), {rows[name]['gflops']:.0f} GFLOP/s",
              flush=True)
    ratios = {}
    for p in precisions:
        ratios[f"ours {p} vs ours float32"] = med["ours float32"] / med[f"ours {p}"]
        if f"torch {p}" in med:
            ratios[f"ours {p} vs torch {p}"] = med[f"torch {p}"] / med[f"ours {p}"]
        if f"unfolded {p}" in med:
            ratios[f"ours {p} vs unfolded {p}"] = med[f"unfolded {p}"] / med[f"ours {p}"]
        if f"torch {p}" in med and "torch float32" in med:
            ratios[f"torch {p} vs torch float32"] = med["torch float32"] / med[f"torch {p}"]
    return {"size": size, "nb_filters": nb_filters, "depth": depth, "parameters": base.count_params(),
            "flops_per_pixel": fpp, "window": window, "runs": rows, "speedups": ratios,
            "jit_compile": jit_used, "peer": peer_note or "torch"}


def _naive_low_precision(model, precision, float32_layers=("output",)):
    """``model`` with every layer in ``precision`` except ``float32_layers`` (the global-policy way)."""
    import keras

    from fusionnet_keras.models.precision import policy_name

    policy = policy_name(precision)

    def clone(layer):
        dtype = "float32" if layer.name in float32_layers else policy
        return layer.__class__.from_config({**layer.get_config(), "dtype": dtype})

    clone_ = keras.models.clone_model(model, clone_function=clone)
    clone_.set_weights(model.get_weights())
    return clone_


def accuracy(weights, precisions, tta, ablation):
    """ISBI scores of sections 21-30 in each precision (and the ablation variants)."""
    import time

    import fusionnet_keras as fk
    from fusionnet_keras.data import datasets
    from fusionnet_keras.data.io import load_image, read_volume
    from fusionnet_keras.evaluation import isbi_scores
    from fusionnet_keras.models.precision import with_precision

    folder = datasets.isbi2012()
    images = load_image(folder / "train-volume.tif")[SECTIONS]
    labels = read_volume(folder / "train-labels.tif")[SECTIONS]
    from fusionnet_keras.pretrained.resolve import model_for

    net = with_precision(model_for(weights, "membranes-2d"), "float32")  # a path or a registry name
    variants = {p: with_precision(net, p) for p in precisions}
    if ablation:
        last = net.layers[-2].name  # the block before the output convolution
        variants["bfloat16, input block bfloat16"] = _naive_low_precision(net, "bfloat16")
        variants["bfloat16, input and last block float32"] = _naive_low_precision(
            net, "bfloat16", ("output", net.layers[1].name, last))
    rows, ref = {}, None
    for name, model in variants.items():
        t0 = time.perf_counter()
        prob = fk.predict(model, images, tta=tta)
        seconds = time.perf_counter() - t0
        ref = prob if ref is None else ref
        s = isbi_scores(prob, labels)
        diff = np.abs(prob - ref)
        rows[name] = {"vrand": s["vrand"], "vinfo": s["vinfo"], "vrand_delta": s["vrand"] - rows.get(
            "float32", s)["vrand"], "max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
            "predict_s": seconds}
        print(f"  {name}: V^Rand {s['vrand']:.5f} V^Info {s['vinfo']:.5f} max |diff| {diff.max():.4f} "
              f"({seconds:.0f} s)", flush=True)
    return {"weights": str(weights), "sections": "21-30", "tta": tta, "runs": rows}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=DEFAULT_WEIGHTS, help="trained model for the accuracy part ('' = skip)")
    parser.add_argument("--precisions", default="float32,bfloat16", help="comma-separated; float32 first")
    parser.add_argument("--size", type=int, default=512, help="section size of the speed part (px)")
    parser.add_argument("--nb-filters", type=int, default=64)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5, help="timed predictions per variant (median kept)")
    parser.add_argument("--no-peer", dest="peer", action="store_false", help="without the PyTorch peer")
    parser.add_argument("--forward", action="store_true", help="also the plain forward pass of one --size input")
    parser.add_argument("--unfolded", action="store_true",
                        help="also fusionnet-keras without its folded inference graph (the model as trained)")
    parser.add_argument("--no-matmul", dest="matmul", action="store_false", help="skip the matmul peaks")
    parser.add_argument("--matmul-n", type=int, default=2048)
    parser.add_argument("--tta", type=int, choices=[1, 8], default=8, help="orientations of the accuracy part")
    parser.add_argument("--ablation", action="store_true", help="also the bfloat16 variants of the accuracy part")
    parser.add_argument("--jit-compile", type=common.parse_jit, default="auto")
    parser.add_argument("--json-out", default=None)
    args = parser.parse_args(argv)
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    if precisions[0] != "float32":
        precisions.insert(0, "float32")

    result = {"machine": common.machine_info(), "load_before": common.load_average()}
    print(f"load average before: {result['load_before']}", flush=True)
    if args.matmul:
        print("== matmul peak ==", flush=True)
        result["matmul_gflops"] = matmul_peaks(precisions, args.matmul_n)
    print("== speed: paper model, one section ==", flush=True)
    result["speed"] = speed(precisions, args.size, args.nb_filters, args.depth, args.repeats, args.jit_compile,
                            forward=args.forward, peer=args.peer, unfolded=args.unfolded)
    if args.matmul:
        peaks_after = matmul_peaks(precisions, args.matmul_n)  # the better of the two, as the other benchmarks do
        peaks = result["matmul_gflops"] = {p: max(result["matmul_gflops"][p], peaks_after[p]) for p in precisions}
        for name, r in result["speed"]["runs"].items():
            p = name.split()[1]
            if name.startswith("ours") and p in peaks:
                r["pct_matmul_same"] = 100 * r["gflops"] / peaks[p]
                r["pct_matmul_fp32"] = 100 * r["gflops"] / peaks["float32"]
    if args.weights and (Path(args.weights).exists() or not args.weights.endswith(".keras")):
        print(f"== accuracy: {args.weights}, ISBI sections 21-30, tta {args.tta} ==", flush=True)
        result["accuracy"] = accuracy(args.weights, precisions, args.tta, args.ablation)
    elif args.weights:
        print(f"(no accuracy part: {args.weights} not found)", flush=True)
    result["load_after"] = common.load_average()

    sp = result["speed"]["runs"]
    common.print_table(
        [[name, r["median_s"], r["best_s"], r["gflops"], f"{r.get('pct_matmul_same', float('nan')):.0f} %"]
         for name, r in sp.items()],
        ["variant", f"predict {args.size}px median (s)", "best (s)", "GFLOP/s", "% of matmul (same)"],
        title=f"Speed (FusionNet {args.nb_filters}/{args.depth}, random weights, tta 1, backend "
              f"{result['machine'].get('backend')})")
    speedups = result["speed"]["speedups"]
    common.print_table([[k, f"{v:.2f}x"] for k, v in speedups.items()], ["ratio (median times)", "speedup"])
    verdicts = [common.verdict("bfloat16 predict speedup", speedups.get("ours bfloat16 vs ours float32"),
                               RATIO_TARGET)]
    if "ours bfloat16 vs torch bfloat16" in speedups:
        verdicts.append(common.verdict("bfloat16 vs the PyTorch peer's bfloat16",
                                       speedups["ours bfloat16 vs torch bfloat16"], PEER_BF16_TARGET))
    if "ours float32 vs torch float32" in speedups:
        verdicts.append(common.verdict("float32 vs the PyTorch peer's float32",
                                       speedups["ours float32 vs torch float32"], PEER_FP32_TARGET))
    if "accuracy" in result:
        acc = result["accuracy"]["runs"]
        common.print_table(
            [[name, f"{r['vrand']:.5f}", f"{r['vinfo']:.5f}", f"{r['vrand_delta']:+.5f}", f"{r['max_abs_diff']:.4f}",
              f"{r['mean_abs_diff']:.5f}", r["predict_s"]] for name, r in acc.items()],
            ["precision", "V^Rand", "V^Info", "V^Rand - float32", "max abs diff", "mean abs diff", "time (s)"],
            title=f"Accuracy ({args.weights}, sections 21-30, tta {args.tta})")
        if "bfloat16" in acc:
            verdicts.append(common.verdict("abs(V^Rand bfloat16 - float32)", abs(acc["bfloat16"]["vrand_delta"]),
                                           VRAND_TARGET, op="<="))
    common.print_verdicts(verdicts)
    print(f"load average before / after: {result['load_before']} / {result['load_after']}")
    result["verdicts"] = verdicts
    common.emit_json(result, args.json_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
