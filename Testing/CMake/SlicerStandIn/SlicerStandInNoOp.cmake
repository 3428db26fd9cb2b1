# TEST-ONLY STAND-IN (not part of 3D Slicer): included where Slicer's SlicerExtensionCPack.cmake
# would be. Packaging an extension needs a real Slicer build, so this file does nothing.
