"""Pretrained models that ship with the package: a registry of named entries with model cards.

    import fusionnet_keras as fk
    fk.pretrained.names()                       # the registry's entries
    net = fk.pretrained.load("isbi2012-fusionnet")   # sha256 checked against the card
    net = fk.pretrained.from_preset("isbi2012-fusionnet")   # the same (keras-hub spelling)
    net = fk.pretrained.load("https://host/m.keras#sha256=...")   # downloaded once, verified
    fk.pretrained.default_for("membranes-2d")   # the entry 'predict' uses without --weights

Entries live in ``fusionnet_keras/pretrained/models/NAME/`` (see the README.md there
for the card format); ``fusionnet-keras models`` lists them. Modules: :mod:`.card`
(model cards), :mod:`.registry` (entries, sha256 checks), :mod:`.download` (URLs and the
cache), :mod:`.resolve` (what ``--weights`` may be), :mod:`.storage` (float16 files),
:mod:`.regenerate` (``make pretrained``). Imported lazily: nothing here loads Keras.
"""

import importlib

_LAZY = {
    "load": ("resolve", "load"),
    "from_preset": ("resolve", "load"),
    "resolve_weights": ("resolve", "resolve_weights"),
    "resolve_classifier": ("resolve", "resolve_classifier"),
    "entries": ("registry", "entries"),
    "names": ("registry", "names"),
    "get": ("registry", "get"),
    "default_for": ("registry", "default_for"),
    "check_entry": ("registry", "check_entry"),
    "fetch": ("download", "fetch"),
    "save_compact": ("storage", "save_compact"),
    "TASKS": ("card", "TASKS"),
}

__all__ = list(_LAZY)


def __getattr__(name):
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'fusionnet_keras.pretrained' has no attribute {name!r}") from None
    return getattr(importlib.import_module(f"{__name__}.{module}"), attr)


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
