"""One test harness for every custom Keras layer of the package (after keras-hub's ``run_layer_test``).

:func:`run_layer_test` checks, for one layer class and one set of arguments:

1. build and call on a tiny input: output shape(s) and ``compute_output_shape``;
2. weight counts (trainable and non-trainable), and that every nested layer
   carries a name given by the package (no Keras auto-name);
3. ``get_config`` holds every constructor argument (with the values given),
   and the ``from_config`` round trip gives an equal config and equal outputs
   once the clone holds the same weights;
4. serialisation through a ``.keras`` file (the layer wrapped in a functional
   model, loaded without ``custom_objects``): equal config and equal outputs;
5. the dtype policy: built with ``dtype="mixed_bfloat16"`` every nested layer
   computes in bfloat16 with float32 variables, and the policy survives
   ``from_config`` and the ``.keras`` round trip.

Randomised layers are compared with an explicit call seed (``call_kwargs``),
which makes them deterministic. The 3-D networks' blocks can reuse it as is.
"""

from __future__ import annotations

import inspect
import re

import keras
import numpy as np

_AUTO_NAME = re.compile(r"^[a-z_0-9]+?_\d+$")  # Keras' default names: conv2d_3, batch_normalization_12


def _numpy(tree):
    return keras.tree.map_structure(lambda t: np.asarray(keras.ops.convert_to_numpy(t), dtype=np.float32), tree)


def _shapes(tree):
    return keras.tree.map_structure(lambda t: tuple(t.shape), tree)


def _assert_close(a, b, atol):
    keras.tree.assert_same_structure(a, b)
    for x, y in zip(keras.tree.flatten(a), keras.tree.flatten(b)):
        np.testing.assert_allclose(x, y, atol=atol)


def _nested_layers(layer):
    return list(layer._flatten_layers(include_self=False, recursive=True))


def _inputs_like(input_data):
    return keras.tree.map_structure(lambda t: keras.Input(shape=t.shape[1:], dtype=str(t.dtype)), input_data)


def run_layer_test(
    cls,
    init_kwargs,
    input_data,
    expected_output_shape,
    expected_num_trainable_weights=0,
    expected_num_non_trainable_weights=0,
    call_kwargs=None,
    tmp_path=None,
    atol=1e-6,
    run_mixed_precision_check=True,
):
    """Run the checks of the module docstring for ``cls(**init_kwargs)``; fail with an assertion.

    Args:
        cls: the layer class (registered with Keras).
        init_kwargs: constructor arguments (without ``name``/``dtype``).
        input_data: a numpy batch, or a tuple of batches for layers called on
            ``(image, label)``.
        expected_output_shape: the output shape, or a tuple of shapes.
        expected_num_trainable_weights / expected_num_non_trainable_weights: counts.
        call_kwargs: extra call arguments, e.g. ``{"training": True, "seed": 3}``.
        tmp_path: a folder for the ``.keras`` round trip (pytest's ``tmp_path``).
        atol: tolerance of the output comparisons.
        run_mixed_precision_check: check the ``mixed_bfloat16`` policy (step 5).
    """
    call_kwargs = dict(call_kwargs or {})

    # 1. build and call
    layer = cls(**init_kwargs, name="under_test")
    output = layer(input_data, **call_kwargs)
    assert _shapes(output) == expected_output_shape
    if isinstance(expected_output_shape[0], tuple):
        symbolic = keras.tree.map_structure(lambda t: t.shape, input_data)
        assert tuple(map(tuple, layer.compute_output_shape(symbolic))) == expected_output_shape
    else:
        assert tuple(layer.compute_output_shape(input_data.shape)) == expected_output_shape

    # 2. weights and names
    assert len(layer.trainable_weights) == expected_num_trainable_weights
    assert len(layer.non_trainable_weights) == expected_num_non_trainable_weights
    for sub in _nested_layers(layer):
        assert not _AUTO_NAME.match(sub.name), f"nested layer {sub.name!r} of {cls.__name__} has no name of its own"

    # 3. get_config (complete: every constructor argument, with the given values) / from_config
    config = layer.get_config()
    arguments = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "kwargs")]
    assert not [p for p in arguments if p not in config], f"{cls.__name__}.get_config() misses arguments"
    assert {k: config[k] for k in init_kwargs} == init_kwargs
    clone = cls.from_config(config)
    assert clone.get_config() == config
    clone(input_data, **call_kwargs)
    clone.set_weights(layer.get_weights())
    _assert_close(_numpy(clone(input_data, **call_kwargs)), _numpy(output), atol)

    # 4. through a .keras file
    if tmp_path is not None:
        inputs = _inputs_like(input_data)
        model = keras.Model(inputs, layer(inputs))
        path = tmp_path / f"{cls.__name__}.keras"
        model.save(path)
        loaded = keras.saving.load_model(path).get_layer("under_test")
        assert type(loaded) is cls and loaded.get_config() == config
        _assert_close(_numpy(loaded(input_data, **call_kwargs)), _numpy(output), atol)

    # 5. the dtype policy
    if run_mixed_precision_check:
        mixed = cls(**init_kwargs, dtype="mixed_bfloat16", name="under_test_mixed")
        mixed(input_data, **call_kwargs)
        for sub in [mixed, *_nested_layers(mixed)]:
            assert sub.dtype_policy.name == "mixed_bfloat16", f"{sub.name} computes in {sub.dtype_policy.name}"
        assert all(v.dtype == "float32" for v in mixed.weights)
        assert cls.from_config(mixed.get_config()).dtype_policy.name == "mixed_bfloat16"
    return layer
