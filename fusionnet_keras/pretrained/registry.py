"""The registry of shipped models: one folder per entry under ``fusionnet_keras/pretrained/models/``.

An entry is found by its folder (``NAME/card.toml`` beside ``NAME/model.keras``),
so adding a model is adding its folder: nothing else is listed anywhere. The
registry's location is the package folder; ``registry=`` (a folder) or the
environment variable ``FUSIONNET_REGISTRY`` point elsewhere (the tests use a
temporary one).

Every file is checked against its card's sha256 before it is used
(:func:`verified_file`); a mismatch is refused, naming the file.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.pretrained.card import TASKS, read_card

REGISTRY_ENV = "FUSIONNET_REGISTRY"


def registry_dir(registry=None) -> Path:
    """The registry folder: ``registry``, else ``$FUSIONNET_REGISTRY``, else the package's ``models/``."""
    if registry is None:
        registry = os.environ.get(REGISTRY_ENV) or Path(__file__).resolve().parent / "models"
    return Path(registry)


@dataclass(frozen=True)
class Entry:
    """One registry entry: its folder and its checked card (a dict, see :mod:`.card`)."""

    folder: Path
    card: dict

    @property
    def name(self) -> str:
        return self.card["name"]

    @property
    def task(self) -> str:
        return self.card["task"]

    @property
    def path(self) -> Path:
        """The ``.keras`` file."""
        return self.folder / self.card["file"]

    @property
    def classifier_path(self) -> Path | None:
        """The agglomeration classifier of a 3-D entry, else None."""
        seg = self.card.get("segmentation") if self.task == "affinities-3d" else None
        return None if seg is None else self.folder / seg["classifier"]

    @property
    def size(self) -> int:
        """Bytes of the files a user loads (network and classifier)."""
        return sum(p.stat().st_size for p in (self.path, self.classifier_path) if p is not None)

    @property
    def headline(self) -> str:
        """The card's headline score, e.g. ``V_rand=0.9731``."""
        scores = self.card["scores"]
        return f"{scores['headline']}={scores['values'][scores['headline']]:g}"


def sha256_file(path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def entries(registry=None) -> list[Entry]:
    """Every entry of the registry, sorted by name (a bad card raises its one-line error)."""
    folder = registry_dir(registry)
    if not folder.is_dir():
        return []
    found = [Entry(sub, read_card(sub)) for sub in sorted(folder.iterdir())
             if sub.is_dir() and not sub.name.startswith((".", "_"))]
    for task in TASKS:
        defaults = [e.name for e in found if e.task == task and e.card.get("default", False)]
        if len(defaults) > 1:
            raise FusionNetError(f"registry {folder}: several default models for {task}: {', '.join(defaults)}")
    return found


def names(registry=None) -> list[str]:
    """The names of the registry's entries."""
    return [e.name for e in entries(registry)]


def _known(found) -> str:
    return ", ".join(e.name for e in found) if found else "none yet"


def get(name: str, registry=None) -> Entry:
    """The entry called ``name``; an unknown name raises an error listing the names."""
    found = entries(registry)
    for entry in found:
        if entry.name == name:
            return entry
    raise FusionNetError(f"unknown model {name!r} (registry models: {_known(found)}; "
                         "see 'fusionnet-keras models')")


def default_for(task: str, registry=None) -> Entry:
    """The entry marked ``default = true`` for ``task``; without one, an error asking for ``--weights``."""
    if task not in TASKS:
        raise FusionNetError(f"unknown task {task!r} (tasks: {', '.join(TASKS)})")
    for entry in entries(registry):
        if entry.task == task and entry.card.get("default", False):
            return entry
    raise FusionNetError(f"no shipped {task} model in this installation yet: pass --weights "
                         "(a .keras file, a registry name or an https:// URL#sha256=...)")


def verified_file(path, expected: str, card_path) -> Path:
    """``path`` if its sha256 is ``expected`` (from the card ``card_path``), else a refusal naming the file."""
    try:
        actual = sha256_file(path)
    except FileNotFoundError:
        raise FusionNetError(f"registry file missing: {path}") from None
    if actual != expected:
        raise FusionNetError(f"refusing {path}: its sha256 {actual} does not match the card {card_path} "
                             f"({expected})")
    return Path(path)


def model_file(entry: Entry) -> Path:
    """The entry's ``.keras`` file, after checking its sha256 against the card."""
    return verified_file(entry.path, entry.card["sha256"], entry.folder / "card.toml")


def classifier_file(entry: Entry) -> Path:
    """The entry's agglomeration classifier (3-D entries), after checking its sha256."""
    if entry.classifier_path is None:
        raise FusionNetError(f"model {entry.name} has task {entry.task} and no agglomeration classifier")
    return verified_file(entry.classifier_path, entry.card["segmentation"]["classifier_sha256"],
                         entry.folder / "card.toml")


def load_entry(entry: Entry):
    """The entry's network (float32 variables, whatever dtype the file stores)."""
    from fusionnet_keras.models.loading import load_model
    from fusionnet_keras.pretrained.card import TASK_DIMS

    return load_model(model_file(entry), spatial_dims=TASK_DIMS[entry.task])


def run_entry(entry: Entry, model, image):
    """What the entry's network gives for ``image`` with the card's ``[test] settings`` (float32).

    ``membranes-2d``: :func:`fusionnet_keras.inference.predictor.predict` (settings: tta,
    pad, tile); ``affinities-3d``: :func:`fusionnet_keras.inference.affinities.predict_affinities`
    (settings: orientations, block).
    """
    settings = dict(entry.card["test"].get("settings", {}))
    if entry.task == "membranes-2d":
        from fusionnet_keras.inference.predictor import predict

        return predict(model, image, precision="float32", **settings)
    from fusionnet_keras.inference.affinities import predict_affinities

    return predict_affinities(model, image, precision="float32", **settings)


def check_entry(entry: Entry, atol: float = 1e-4) -> float:
    """Load the entry (sha256 checked), run it on its test input; the largest difference from the
    stored expected output, or an error when above ``atol``."""
    import numpy as np

    from fusionnet_keras.pretrained.storage import stored_dtype

    model = load_entry(entry)
    stored = stored_dtype(entry.path)
    if stored != entry.card["weights_dtype"]:
        raise FusionNetError(f"model {entry.name}: {entry.path} stores its weights as {stored}, its card says "
                             f"{entry.card['weights_dtype']}")
    test = entry.card["test"]
    image = np.load(entry.folder / test["input"], allow_pickle=False)
    expected = np.load(entry.folder / test["output"], allow_pickle=False)
    out = np.asarray(run_entry(entry, model, image))
    if out.shape != expected.shape:
        raise FusionNetError(f"model {entry.name}: output shape {out.shape} differs from the expected "
                             f"{expected.shape}")
    diff = float(np.max(np.abs(out - expected))) if out.size else 0.0
    if not diff <= atol:
        raise FusionNetError(f"model {entry.name}: output differs from {test['output']} by {diff:.3g} "
                             f"(tolerance {atol:g})")
    return diff
