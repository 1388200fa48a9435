"""Reading and writing EM images, volumes and predictions.

Supported inputs
----------------
* TIFF (``.tif``/``.tiff``), single- or multi-page (one page per section).
* PNG (``.png``), a single 2-D section.
* A directory of PNG/TIFF sections, one 2-D section per file, stacked in
  natural order (``s2.png`` comes before ``s10.png``).
* HDF5 (``.h5``/``.hdf5``/``.hdf``) as ``file.h5:dataset``. Without a dataset
  name, the file's only dataset is used (an error lists them if there are more).
* Zarr (``.zarr`` directory) as ``volume.zarr`` (an array) or
  ``volume.zarr:group/array`` (an array inside a group).

Outputs can be written as TIFF, HDF5 (default dataset ``data``, gzip
compressed) or zarr (chunked). Every write is atomic: data go to a temporary
file or directory next to the output, which is then renamed into place, so an
interrupted write never leaves a half-written output or destroys the old one.

Intensity normalisation rule (:func:`normalize`)
------------------------------------------------
Images are converted to ``float32`` in ``[0, 1]`` as follows:

* ``bool``: ``False`` -> 0, ``True`` -> 1.
* ``uint8``: divided by 255; ``uint16``: divided by 65535; any other unsigned
  integer type: divided by the maximum of its dtype.
* signed integers: divided by the maximum of their dtype when no value is
  negative; otherwise min-max rescaled (as for floats below).
* floating point: kept as is when all values already lie in ``[0, 1]``;
  otherwise min-max rescaled, ``(x - min) / (max - min)``. A constant image
  outside ``[0, 1]`` becomes all zeros. NaN or infinite values are an error.

The rule depends only on the dtype (and, for floats and negative integers, on
the values of the whole array), so normalise a whole volume at once, not
chunk by chunk, when values outside ``[0, 1]`` are possible.

All problems caused by the input raise
:class:`~fusionnet_keras.errors.FusionNetError` with a one-line message.
"""

from fusionnet_keras.data.io.images import load_image, normalize, open_image, read_image
from fusionnet_keras.data.io.paths import (
    DEFAULT_H5_DATASET,
    natural_sort_key,
    parse_path,
)
from fusionnet_keras.data.io.volumes import Volume, open_volume, read_volume
from fusionnet_keras.data.io.writers import check_output, check_outputs, write_volume, write_volumes

__all__ = [
    "Volume",
    "parse_path",
    "open_volume",
    "open_image",
    "read_volume",
    "read_image",
    "normalize",
    "load_image",
    "check_output",
    "check_outputs",
    "write_volume",
    "write_volumes",
    "natural_sort_key",
    "DEFAULT_H5_DATASET",
]
