"""fusionnet-keras: FusionNet for EM connectomics segmentation in Keras 3."""

__version__ = "0.1.0"
