"""The commands' work as library calls: files in, files out, in memory or block by block.

Each entry point checks its options and outputs before any work and chooses
between the in-memory computation and the blockwise job on Dask: blockwise
when any of ``workers``, ``block``, ``scheduler`` is given
(:func:`~fusionnet_keras.blockwise.job.blockwise_requested`), the same rule
for every command; a blockwise job resumes when it is run again. The command
line's commands only turn their options into one such call.

Modules: ``segment`` (:func:`~fusionnet_keras.workflows.segment.segment_path`),
``morphology`` (:func:`~fusionnet_keras.workflows.morphology.measure_path`),
``neurons`` (raw EM to neuron labels: :func:`~fusionnet_keras.workflows.neurons.neurons`,
:func:`~fusionnet_keras.workflows.neurons.neurons_volume`).
This package sits above ``blockwise`` and the packages it uses, so none of
them imports it.
"""
