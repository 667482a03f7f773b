"""Helpers of the HippoSNN Slicer module, one job per file (the core package ``hipposnn`` does the work).

``widget``: the user interface (parameter-node bound widgets, actions, progress, Cancel, log box).
``segmentationLogic``: MRML volume -> core segmentation -> terminology-coded segments, in Slicer's process.
``trainingLogic``: conversion and fine-tuning in a child process (``PythonSlicer -m hipposnn``), polled
by a timer. ``teachingLogic``: the teaching view. ``dependencies``: torch (PyTorch extension) and pip
packages, installed on first use. ``geometry`` and ``terminology`` import no Slicer and are tested with
plain pytest: MRML volume geometry <-> the core's (i, j, k) array + voxel-to-RAS affine, and the
segments' names, colours and DICOM terminology codes.
"""
