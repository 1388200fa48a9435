"""Scores and post-processing: ISBI 2012 V^Rand / V^Info, pixel metrics, volume metrics, morphology.

``fusionnet_keras.metrics`` is this package (the public name of the metrics).
"""

from fusionnet_keras.evaluation.isbi import (  # noqa: F401
    DEFAULT_THRESHOLDS,
    isbi_scores,
    vrand_vinfo_section,
)
from fusionnet_keras.evaluation.pixel import dice, pixel_error  # noqa: F401
from fusionnet_keras.evaluation.thinning import label_components, thin_borders  # noqa: F401
from fusionnet_keras.evaluation.volume import (  # noqa: F401
    adapted_rand_error,
    instance_scores,
    variation_of_information,
    vrand_vinfo_3d,
)

__all__ = [
    "DEFAULT_THRESHOLDS",
    "isbi_scores",
    "vrand_vinfo_section",
    "thin_borders",
    "label_components",
    "pixel_error",
    "dice",
    "variation_of_information",
    "adapted_rand_error",
    "instance_scores",
    "vrand_vinfo_3d",
]
