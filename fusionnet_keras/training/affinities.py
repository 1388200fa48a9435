"""The 3-D task of the trainer: nearest-neighbour affinities of UNet3D and FusionNet3D.

The run directory, resume, checkpoints and logs are the trainer's
(:mod:`fusionnet_keras.training.trainer`); the resume point is the network with
its optimizer (``checkpoints/last.keras``).

Targets: the training part of ``data.dataset``
(:mod:`fusionnet_keras.data.volumes3d`); each step's samples come from
:class:`~fusionnet_keras.data.augment3d.AffinityAugment` on the host (xy
orientations, per-section elastic fields, optional misalignment, missing
section, noise; targets from the transformed labels), seeded by
``(train.seed, epoch, step)``, so a resumed run draws the samples the
uninterrupted run would have drawn.

Validation (every ``train.validate_every`` epochs and after the last): the
whole validation part is predicted (:func:`fusionnet_keras.inference.affinities.predict_affinities`,
mirrored at its borders) and scored: masked class-balanced BCE and the affinity
F-score of boundary edges (affinity < 0.5) against the targets, and the VI of
the z-watershed + mean agglomeration at the best of ``train.val_thresholds``
against the ground truth (:func:`fusionnet_keras.evaluation.instance_scores`).

Losses: MALIS (Turaga et al. 2009), constrained MALIS (Funke et al. 2018) or class-balanced BCE;
``train.pretrain_bce_epochs`` first epochs with BCE, then ``train.loss`` (the optimizer goes on).
``best.keras`` is the network with the lowest validation VI (among the epochs trained with
``train.loss``, after the ``train.pretrain_bce_epochs`` of BCE pre-training, which are validated and
logged but not kept).
"""

from __future__ import annotations

import numpy as np

from fusionnet_keras.training import config as cfg
from fusionnet_keras.training.networks import build_network, compile_network, read_resume_point


def make_augment(config: dict, output_shape):
    """The :class:`~fusionnet_keras.data.augment3d.AffinityAugment` of ``config``."""
    from fusionnet_keras.data.augment3d import AffinityAugment

    a = config["augment"]
    return AffinityAugment(tuple(config["train"]["input_shape"]), tuple(output_shape),
                           orientations=a["orientations"], elastic_amplitude=a["elastic_amplitude"],
                           elastic_grid=a["elastic_grid"], noise_sigma=a["noise_sigma"],
                           missing_section=a["missing_section"], misalign=a["misalign"],
                           misalign_max=a["misalign_max"], label_zero=config["data"]["label_zero"])


def loss_name(config: dict, epoch: int) -> str:
    """The loss of epoch ``epoch`` (0-based): ``"bce"`` during the ``train.pretrain_bce_epochs`` first
    epochs, ``train.loss`` after them."""
    t = config["train"]
    return "bce" if epoch < t["pretrain_bce_epochs"] else t["loss"]


def make_loss(config: dict, epoch: int = 10**9):
    """The loss of epoch ``epoch`` (default: ``train.loss``): MALIS, constrained MALIS or class-balanced BCE."""
    from fusionnet_keras.training.affinity_losses import BalancedBCELoss, MalisLoss

    name = loss_name(config, epoch)
    if name == "bce":
        return BalancedBCELoss()
    return MalisLoss(kind=config["train"]["malis_error"], constrained=name == "constrained_malis")


def compile_for_epoch(net, config: dict, epoch: int = 0, optimizer=None) -> None:
    """Compile ``net`` with the loss of ``epoch``; ``optimizer`` (the network's own, when the loss changes
    or after a resume) keeps its moments and step count, so the learning-rate schedule goes on."""
    compile_network(net, config, make_loss(config, epoch), config["train"]["steps_per_epoch"], optimizer=optimizer)


def samples(config: dict, augment, image, labels, epoch: int = 0):
    """The ``keras.utils.PyDataset`` of training batches (one epoch = ``train.steps_per_epoch`` batches)."""
    import keras

    t = config["train"]

    class AffinitySamples(keras.utils.PyDataset):
        """Batch ``i`` of epoch ``e``: the samples of ``default_rng([seed, e, i])`` (``epoch`` is set by the
        trainer's callback at the start of every epoch)."""

        def __init__(self):
            workers = t["workers"]
            super().__init__(workers=workers, use_multiprocessing=False, max_queue_size=2 * workers)
            self.epoch = epoch

        def __len__(self):
            return t["steps_per_epoch"]

        def __getitem__(self, index):
            rng = np.random.default_rng([t["seed"], self.epoch, int(index)])
            return augment.batch(image, labels, rng, t["batch_size"])

    return AffinitySamples()


# ---------------------------------------------------------------------------
# validation


def affinity_fscore(affs, y_true_affs, mask, threshold: float = 0.5) -> float:
    """F-score of the boundary edges (affinity < ``threshold``) within ``mask`` ((3, Z, Y, X) arrays)."""
    m = mask > 0
    pred = affs[m] < threshold
    true = y_true_affs[m] < 0.5
    tp = float(np.sum(pred & true))
    denominator = float(np.sum(pred) + np.sum(true))
    return 2 * tp / denominator if denominator else 1.0


def balanced_bce(affs, y_true_affs, mask) -> float:
    """Masked class-balanced BCE of (3, Z, Y, X) affinities (the value of :class:`BalancedBCELoss`)."""
    p = np.clip(affs.astype(np.float64), 1e-7, 1 - 1e-7)
    m = mask > 0
    pos, neg = m & (y_true_affs > 0.5), m & (y_true_affs <= 0.5)
    terms = [-np.log(p[pos]).mean() if pos.any() else None, -np.log(1 - p[neg]).mean() if neg.any() else None]
    terms = [t for t in terms if t is not None]
    return float(np.mean(terms)) if terms else 0.0


def score_affinities(affs, labels, thresholds, ws_size: int | None = None, label_zero: str = "background") -> dict:
    """Validation scores of predicted affinities ``(3, Z, Y, X)`` against instance ``labels``:
    ``bce``, ``fscore`` (targets by ``label_zero``'s convention) and the VI (split, merge) of the
    z-watershed (size threshold ``ws_size``, default the segmentation's) + mean agglomeration at its best
    threshold."""
    from fusionnet_keras.data.affinities import affinities_from_labels
    from fusionnet_keras.evaluation import instance_scores
    from fusionnet_keras.segmentation.pipeline import WatershedOptions, segment

    target, mask = affinities_from_labels(labels, label_zero)
    out = {"bce": balanced_bce(affs, target, mask), "fscore": affinity_fscore(affs, target, mask)}
    rows = [dict(instance_scores(seg, labels), threshold=t)
            for t, seg in segment(affs, "mean", thresholds, watershed_options=WatershedOptions() if ws_size is None else WatershedOptions(size=ws_size))]
    best = min(rows, key=lambda r: r["vi"])
    out.update(vi=best["vi"], vi_split=best["vi_split"], vi_merge=best["vi_merge"], vi_threshold=best["threshold"])
    return out


def predict_block(net, config: dict, volume, progress: bool = False) -> np.ndarray:
    """Affinities ``(3, Z, Y, X)`` of ``volume`` by the network in ``predict.precision`` (blockwise, exact)."""
    from fusionnet_keras.inference.affinities import predict_affinities

    p = config["predict"]
    return predict_affinities(net, volume, block=tuple(p["block"]) or None, precision=p["precision"],
                              progress=progress)


def first_candidate(config: dict) -> int:
    """Epochs before which no checkpoint becomes ``best.keras``: the BCE pre-training's (the best network is
    one trained with ``train.loss``, as the paper picks an iteration of the MALIS training), 0 without it."""
    t = config["train"]
    return t["pretrain_bce_epochs"] if t["pretrain_bce_epochs"] < t["epochs"] and t["loss"] != "bce" else 0


def _phases(config: dict, epoch: int) -> list[tuple[int, int]]:
    """The ``(first, last)`` epoch ranges still to train from ``epoch``, one per loss: the BCE pre-training
    (``train.pretrain_bce_epochs``), then ``train.loss``."""
    t = config["train"]
    switch = min(t["pretrain_bce_epochs"], t["epochs"])
    bounds = [b for b in (0, switch, t["epochs"]) if b >= epoch]
    bounds = sorted({epoch, *bounds})
    return [(a, b) for a, b in zip(bounds, bounds[1:]) if b > a]


class AffinityTask:
    """The 3-D networks' data, losses, validation and epochs for :func:`fusionnet_keras.training.trainer.train`."""

    initial_state = {"epoch": 0, "best_vi": None, "best_epoch": 0, "history": []}
    best_keys = ("best_vi", "best_scores")

    def __init__(self, config: dict):
        """Read the training and validation parts and check the sizes (before anything is written)."""
        from fusionnet_keras.data.volumes3d import load_parts

        self.config = config
        self.parts = load_parts(config["data"]["dataset"], ("train", "validation"))
        self.augment = make_augment(config, cfg.output_shape(config))
        self.augment.check_volume(self.parts["train"][0].shape)

    def networks(self, run, state: dict):
        """``([network], network)``: resumed from the checkpoint, or built (compiled per loss by :meth:`fit`)."""
        net = read_resume_point(run, state) if state["epoch"] > 0 else build_network(self.config)
        return [net], net

    def data(self, state: dict):
        return samples(self.config, self.augment, *self.parts["train"], epoch=state["epoch"])

    def validation(self):
        """Scores of the whole validation part; best = lowest VI, not counting the BCE pre-training's epochs."""
        from fusionnet_keras.training.callbacks import Validation

        config, (volume, labels) = self.config, self.parts["validation"]
        t = config["train"]

        def score(net):
            return score_affinities(predict_block(net, config, volume), labels, t["val_thresholds"],
                                    t["val_ws_size"], config["data"]["label_zero"])

        def report(s):
            return (f"VI {s['vi']:.3f} (split {s['vi_split']:.3f}, merge {s['vi_merge']:.3f} at "
                    f"{s['vi_threshold']:g}), affinity F-score {s['fscore']:.3f}, BCE {s['bce']:.4f}")

        return Validation(score, better=lambda s, state: state["best_vi"] is None or s["vi"] < state["best_vi"],
                          best=lambda s: {"best_vi": float(s["vi"]), "best_scores": s},
                          first_candidate=first_candidate(config), report=report)

    def callbacks(self, run, net, state: dict, data) -> dict:
        """Keyword arguments of :func:`~fusionnet_keras.training.callbacks.make_callbacks`: a first callback
        that keeps the samples' epoch counter on the epoch ``fit`` runs (also after a resume)."""
        import keras

        class SampleEpoch(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                data.epoch = epoch

        return {"first": [SampleEpoch()]}

    def fit(self, run, models, net, data, callbacks, state: dict, fit_kwargs: dict) -> None:
        """One ``fit`` per loss: the BCE pre-training, then ``train.loss``, the optimizer going on."""
        t = self.config["train"]
        for first, last in _phases(self.config, state["epoch"]):
            if t["pretrain_bce_epochs"]:
                print(f"[{run.name}] epochs {first + 1}-{last}: {loss_name(self.config, first)} loss", flush=True)
            compile_for_epoch(net, self.config, first, optimizer=getattr(net, "optimizer", None))
            net.fit(data, epochs=last, initial_epoch=first, callbacks=callbacks, **fit_kwargs)
