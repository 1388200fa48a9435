"""Default settings of the segmentation (no imports: the command line's ``--help`` reads them)."""

#: The methods of ``segment``.
METHODS = ("watershed", "mean", "learned", "multicut", "lifted-multicut", "mws")
#: The methods that solve a graph partitioning for each boundary bias beta (their --thresholds are betas).
BETA_METHODS = ("multicut", "lifted-multicut", "mws")
#: The methods that take a boundary classifier (the multicuts take their costs from it).
CLASSIFIER_METHODS = ("learned", "multicut", "lifted-multicut")
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
#: Boundary bias beta of the multicut and mutex watershed when none is given (no bias).
BETA = 0.5
#: Lifted edges of the lifted multicut join fragments up to this many boundaries apart.
LIFTED_HOPS = 2
#: Edge weightings of the multicuts: "none" (every boundary counts once) or "size" (each cost times the
#: boundary's contact area over the mean contact area; lifted edges from long-range affinities likewise by
#: their voxel pairs).
MULTICUT_WEIGHTINGS = ("none", "size")
#: The weighting of each multicut when none is given, chosen on the validation parts of four long-range
#: networks (docs/postprocessing.md): size won for the lifted multicut in all eight comparisons (hop-lifted
#: and affinity-lifted edges), for the multicut in one of four.
MULTICUT_WEIGHTING = {"multicut": "none", "lifted-multicut": "size"}
