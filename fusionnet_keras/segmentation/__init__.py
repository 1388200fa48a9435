"""3-D neuron segmentation from affinities or boundary maps (the third paper: Parag et al.).

z-watershed fragments (Zlateski & Seung 2015), a region adjacency graph with
mergeable statistics, and hierarchical agglomeration by mean affinity (waterz's
baseline) or by a learned boundary classifier (GALA / NeuroProof style)::

    from fusionnet_keras import segmentation as sg
    affs = sg.load_affinities("affs.h5:affinities")          # or a (Z, Y, X) boundary map
    for t, labels in sg.segment(affs, "mean", [0.3, 0.5]):  # one pass over the thresholds
        ...
    clf = sg.train_classifier(affs, fragments, gt, epochs=3); clf.save("clf.npz")

Modules: ``inputs`` (reading, conventions, checks), ``zwatershed``, ``graph``
(region graph), ``agglomeration`` (the merging engine, mean affinity),
``features`` and ``learned`` (the classifier, its training, its file),
``forest`` (fast forest evaluation), ``multicut`` (multicut and lifted
multicut of the region graph), ``mws`` (mutex watershed), ``pipeline`` (:func:`segment`),
``nuclei`` (nucleus instances of a probability volume and their scores),
``defaults``. Names are imported lazily (the command line's ``--help`` stays fast).
"""

import importlib

_LAZY = {
    "Agglomerator": "agglomeration", "MeanAffinity": "agglomeration", "agglomerate": "agglomeration",
    "map_ids": "agglomeration", "RegionGraph": "graph", "merge_graphs": "graph", "region_graph": "graph",
    "as_affinities": "inputs", "boundary_to_affinities": "inputs", "load_affinities": "inputs",
    "load_labels": "inputs", "segment": "pipeline", "WatershedOptions": "pipeline", "watershed": "zwatershed",
    "train_classifier": "learned", "BoundaryClassifier": "learned", "LearnedScore": "learned",
    "multicut_graph": "multicut", "solve_multicut": "multicut", "lifted_edges": "multicut",
    "mutex_watershed": "mws", "segment_nuclei": "nuclei", "nucleus_scores": "nuclei",
    "nucleus_table3_scores": "nuclei",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    try:
        module = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
