"""Slicer-free helpers of the HippoSNN module (importable, and tested, without 3D Slicer).

``geometry``: the one place where MRML volume geometry (KJI arrays, IJKToRAS and parent-transform
vtkMatrix4x4) is converted to and from the core's (i, j, k) array + voxel-to-RAS affine convention.
``terminology``: segment names, colours and DICOM terminology codes of the two hippocampi.
"""
