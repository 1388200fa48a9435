"""What the segmentation models share: hyper-parameter checks, config and the input-size check."""

from __future__ import annotations

import keras


def _check_int(name, value, minimum):
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_input_shape(input_shape, depth):
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (height, width, channels), got {input_shape!r}")
    multiple = 2**depth
    for axis, size in zip(("height", "width"), input_shape[:2]):
        if size is not None and size % multiple:
            raise ValueError(
                f"input {axis} {size} is not divisible by 2**depth = {multiple}; "
                f"pad the image to a multiple of {multiple} (fusionnet_keras.predict does this)"
            )


class _SegmentationModel(keras.Model):
    """What the segmentation models share: their config and the input size check."""

    def _set_hyperparameters(self, nb_filters, depth, input_shape, kernel_initializer, bn_momentum):
        self.nb_filters = nb_filters
        self.depth = depth
        self.image_shape = input_shape
        self.kernel_initializer = kernel_initializer
        self.bn_momentum = bn_momentum

    def get_config(self):
        return {
            "nb_filters": self.nb_filters,
            "depth": self.depth,
            "input_shape": list(self.image_shape),
            "kernel_initializer": self.kernel_initializer,
            "bn_momentum": self.bn_momentum,
            "name": self.name,
            "trainable": self.trainable,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


    @property
    def size_multiple(self):
        """Input height and width must be multiples of this (2**depth)."""
        return 2 ** self.depth

    def call(self, inputs, training=None, mask=None):
        shape = getattr(inputs, "shape", None)
        if shape is not None and len(shape) == 4:
            multiple = 2**self.depth
            for axis, size in zip(("height", "width"), shape[1:3]):
                if size is not None and size % multiple:
                    raise ValueError(
                        f"input {axis} {size} is not divisible by 2**depth = {multiple}; "
                        f"pad the image to a multiple of {multiple} (fusionnet_keras.predict does this)"
                    )
        return super().call(inputs, training=training, mask=mask)

