"""k-fold cross-validation over the train + validation sections (the 2016 paper's protocol)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.training import config as cfg
from fusionnet_keras.training.inputs import load_pairs, split_sections
from fusionnet_keras.training.rundir import check_resume_overwrite
from fusionnet_keras.training.trainer import train
from fusionnet_keras.utils.atomic import atomic_write_text, remove_stale_temporaries


def cross_validate(config: dict, out, folds=3, resume=False, overwrite=False) -> dict:
    """k-fold cross-validation over the train + validation sections; per-fold and mean scores."""
    from fusionnet_keras.data.splits import kfold_splits
    from fusionnet_keras.evaluation import isbi_scores, pixel_error
    from fusionnet_keras.inference.predictor import predict
    from fusionnet_keras.models.loading import load_model

    check_resume_overwrite(resume, overwrite)
    config = cfg.validate(config)
    images, labels = load_pairs(config)
    train_idx, val_idx = split_sections(config, len(images))
    pool = np.concatenate([train_idx, val_idx])
    splits = kfold_splits(len(pool), k=folds, seed=config["train"]["seed"])
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FusionNetError(f"output exists and is not a directory: {out}")
    if out.exists() and any(out.iterdir()) and not (resume or overwrite):
        raise FusionNetError(f"output directory exists: {out} (use --resume to continue or --overwrite)")
    if overwrite and out.exists() and any(out.iterdir()):
        is_cv = (out / "cv.json").exists() or any((p / "config.json").exists() for p in out.glob("fold*"))
        if not is_cv:
            raise FusionNetError(f"{out} is not empty and is not a cross-validation directory (no cv.json or fold*/)")
        shutil.rmtree(out)
    if resume:
        remove_stale_temporaries(out)  # e.g. cv.json of a run killed while writing it
    results = []
    for i, (tr, va) in enumerate(splits):
        fold = {**config, "name": f"{config['name']}-fold{i + 1}"}
        fold["data"] = {
            **config["data"],
            "train_sections": ",".join(str(s + 1) for s in pool[tr]),
            "val_sections": ",".join(str(s + 1) for s in pool[va]),
        }
        summ = train(fold, out / f"fold{i + 1}", resume=resume)
        net = load_model(summ["best_model"])
        prob = predict(net, images[pool[va]], tta=config["predict"]["tta"], pad=config["predict"]["pad"])
        scores = isbi_scores(prob, labels[pool[va]])
        results.append(
            {
                "fold": i + 1,
                "val_sections": [int(s) + 1 for s in pool[va]],
                "vrand": scores["vrand"],
                "vinfo": scores["vinfo"],
                "pixel_error": pixel_error(prob, labels[pool[va]]),
            }
        )
        print(f"fold {i + 1}: V^Rand {scores['vrand']:.5f} V^Info {scores['vinfo']:.5f}", flush=True)
    mean = {k: float(np.mean([r[k] for r in results])) for k in ("vrand", "vinfo", "pixel_error")}
    report = {"folds": results, "mean": mean}
    atomic_write_text(out / "cv.json", json.dumps(report, indent=2) + "\n")
    return report

