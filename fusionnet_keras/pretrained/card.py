"""Model cards of the registry: read ``card.toml`` and check it, with one-line errors.

Every registry entry is a folder ``NAME/`` holding the network (``model.keras``), a
Markdown card for people (``card.md``), the machine-readable card (``card.toml``,
described by ``fusionnet_keras/pretrained/models/README.md``) and a small test input
with the output the network gives for it. :func:`read_card` parses and checks the
TOML part; any problem is a :class:`~fusionnet_keras.errors.FusionNetError` naming the
card file and the key, e.g. ``model card .../card.toml: [scores] needs 'command'``.
"""

from __future__ import annotations

import re
from pathlib import Path

from fusionnet_keras.errors import FusionNetError

#: The tasks a registry entry may have, and the command that runs a network of each.
TASKS = {"membranes-2d": "fusionnet-keras predict", "affinities-3d": "fusionnet-keras affinities"}
#: The number of spatial dimensions of a task's networks (2-D sections or 3-D volumes).
TASK_DIMS = {"membranes-2d": 2, "affinities-3d": 3}
#: How the weights may be stored in the ``.keras`` file (loaded as float32 either way).
WEIGHT_DTYPES = ("float32", "float16")

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")

# (key, type, required) of each table; "" is the card's top level
_STR, _INT, _BOOL, _NUM, _TABLE, _LIST = str, int, bool, (int, float), dict, list
SCHEMA = {
    "": [("name", _STR, True), ("task", _STR, True), ("summary", _STR, True), ("file", _STR, True),
         ("sha256", _STR, True), ("weights_dtype", _STR, True), ("package_version", _STR, True),
         ("seed", _INT, True), ("regenerate", _STR, True), ("default", _BOOL, False)],
    "training": [("data", _STR, True), ("split", _STR, True), ("config", _STR, True), ("time", _STR, True),
                 ("hardware", _STR, True)],
    "scores": [("command", _STR, True), ("headline", _STR, True), ("values", _TABLE, True)],
    "data": [("licence", _STR, True), ("credit", _STR, True)],
    "test": [("input", _STR, True), ("output", _STR, True), ("settings", _TABLE, False)],
    "segmentation": [("classifier", _STR, True), ("classifier_sha256", _STR, True), ("threshold", _NUM, True),
                     ("ws_size", _INT, True), ("chosen_on", _STR, True), ("validation_curve", _LIST, True)],
}
#: The ``[test] settings`` of each task (arguments of fk.predict / fk.predict_affinities).
TEST_SETTINGS = {"membranes-2d": ("tta", "pad", "tile", "overlap", "batch_size"),
                 "affinities-3d": ("orientations", "block")}
#: The tables every card has, and those of the 3-D entries only.
TABLES = ("training", "scores", "data", "test")
TABLES_3D = ("segmentation",)


def _fail(path, message):
    raise FusionNetError(f"model card {path}: {message}")


def _check_table(path, table: dict, section: str) -> None:
    where = f"[{section}] " if section else ""
    for key, kind, required in SCHEMA[section]:
        if key not in table:
            if required:
                _fail(path, f"{where}needs '{key}'")
            continue
        value = table[key]
        ok = isinstance(value, kind) and not (kind in (_INT, _NUM) and isinstance(value, bool))
        if not ok:
            names = {_STR: "a string", _INT: "an integer", _BOOL: "true or false", _NUM: "a number",
                     _TABLE: "a table", _LIST: "a list"}
            _fail(path, f"{where}'{key}' must be {names[kind]}, got {value!r}"[:300])


def _load_toml(path: Path) -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise FusionNetError(f"model card not found: {path}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        _fail(path, f"not valid TOML ({str(e).splitlines()[0] if str(e) else type(e).__name__})")


def check_card(card: dict, path, folder_name: str | None = None) -> dict:
    """Check a parsed card (``path`` names it in errors); return it. See the module's docstring."""
    _check_table(path, card, "")
    if folder_name is not None and card["name"] != folder_name:
        _fail(path, f"name {card['name']!r} differs from its folder {folder_name!r}")
    if not _NAME.match(card["name"]):
        _fail(path, f"name {card['name']!r} must be lower-case letters, digits, '.', '_' or '-'")
    if card["task"] not in TASKS:
        _fail(path, f"unknown task {card['task']!r} (tasks: {', '.join(TASKS)})")
    if not _SHA256.match(card["sha256"]):
        _fail(path, "'sha256' must be 64 lower-case hex digits")
    if card["weights_dtype"] not in WEIGHT_DTYPES:
        _fail(path, f"'weights_dtype' must be one of {', '.join(WEIGHT_DTYPES)}, got {card['weights_dtype']!r}")
    if not card["file"].endswith(".keras"):
        _fail(path, f"'file' must name a .keras file, got {card['file']!r}")
    tables = TABLES + (TABLES_3D if card["task"] == "affinities-3d" else ())
    for section in tables:
        if not isinstance(card.get(section), dict):
            _fail(path, f"needs a [{section}] table")
        _check_table(path, card[section], section)
    scores = card["scores"]
    if scores["headline"] not in scores["values"]:
        _fail(path, f"[scores] headline {scores['headline']!r} is not one of its values")
    for key, value in scores["values"].items():
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            _fail(path, f"[scores.values] {key} must be a number, got {value!r}")
    unknown = sorted(set(card["test"].get("settings", {})) - set(TEST_SETTINGS[card["task"]]))
    if unknown:
        _fail(path, f"[test] settings {', '.join(unknown)} unknown for {card['task']} "
                    f"(known: {', '.join(TEST_SETTINGS[card['task']])})")
    if card["task"] == "affinities-3d":
        _check_segmentation(path, card["segmentation"])
    return card


def _check_segmentation(path, seg: dict) -> None:
    if not _SHA256.match(seg["classifier_sha256"]):
        _fail(path, "[segmentation] 'classifier_sha256' must be 64 lower-case hex digits")
    if not 0 <= seg["threshold"] <= 1:
        _fail(path, f"[segmentation] threshold must be in [0, 1], got {seg['threshold']}")
    if seg["ws_size"] < 0:
        _fail(path, f"[segmentation] ws_size must be >= 0, got {seg['ws_size']}")
    curve = seg["validation_curve"]
    if not curve or not all(isinstance(p, list) and len(p) == 2 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in p) for p in curve):
        _fail(path, "[segmentation] validation_curve must be a non-empty list of [threshold, score] pairs")


def read_card(folder) -> dict:
    """The checked ``card.toml`` of the registry entry in ``folder``; the files it names must exist."""
    folder = Path(folder)
    path = folder / "card.toml"
    card = check_card(_load_toml(path), path, folder.name)
    files = [card["file"], card["test"]["input"], card["test"]["output"]]
    if card["task"] == "affinities-3d":
        files.append(card["segmentation"]["classifier"])
    for name in files:
        if Path(name).name != name:
            _fail(path, f"{name!r} must be a file name in the entry's folder, not a path")
        if not (folder / name).is_file():
            _fail(path, f"names {name}, which is missing from {folder}")
    if not (folder / "card.md").is_file():
        raise FusionNetError(f"registry entry {folder} has no card.md (the model card for people)")
    return card
