"""Default settings of the segmentation (no imports: the command line's ``--help`` reads them)."""

#: The methods of ``segment``.
METHODS = ("watershed", "mean", "learned")
#: z-watershed thresholds (waterz's): links <= LOW are cut, links >= HIGH always join.
WATERSHED_LOW = 0.0001
WATERSHED_HIGH = 0.9999
#: z-watershed size threshold (voxels) and the weakest basin-graph edge it applies to.
WATERSHED_SIZE = 100
WATERSHED_MERGE_AFFINITY = 0.0
#: Agglomeration threshold when none is given: merge while mean affinity > 0.5 / P(real boundary) < 0.5.
THRESHOLD = 0.5
#: Histogram bins of the learned agglomeration's features.
BINS = 32
