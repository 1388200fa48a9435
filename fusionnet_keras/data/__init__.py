"""Data: readers and writers (:mod:`.io`), orientations, targets, splits, the ``tf.data`` pipeline,
augmentation layers, public datasets and synthetic volumes.

Importing this package needs only numpy; TensorFlow and Keras are imported by
:mod:`.pipeline` and :mod:`.augment` when used.
"""

from fusionnet_keras.data.orient import NUM_ORIENTATIONS, Orientation, orient, orientations, unorient  # noqa: F401
from fusionnet_keras.data.splits import kfold_splits, section_range  # noqa: F401
from fusionnet_keras.data.targets import binarize_labels, check_pair  # noqa: F401
