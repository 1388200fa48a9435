"""Looking at the results: meshes of a segmentation (zmesh) and a local neuroglancer viewer.

* :mod:`~fusionnet_keras.viewing.meshes`: a mesh per label of a block
  (zmesh marching cubes and simplification, in nm), neuroglancer's precomputed
  legacy mesh directory (fragments, manifests, ``info``), PLY/OBJ per label;
  the blockwise job is :mod:`fusionnet_keras.blockwise.meshes`.
* :mod:`~fusionnet_keras.viewing.viewer`: EM, predictions, affinities and a
  segmentation (with its meshes) as layers of a neuroglancer viewer served by
  the ``neuroglancer`` package, and its screenshot in a headless browser.
"""
