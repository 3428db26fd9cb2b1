"""Slicer-side layer of the DiffuX2CT extension: everything the module does to the MRML scene.

Small single-purpose modules that the module's Logic uses; each takes the scene and the module
logics it needs as arguments, so the whole layer runs headless against Slicer's MRML core (the
``slicer-core`` wheel) as well as inside the Slicer application. Nothing here imports Qt.
Heavy packages (torch, SimpleITK, numpy) are imported inside functions, never at file scope.
"""
