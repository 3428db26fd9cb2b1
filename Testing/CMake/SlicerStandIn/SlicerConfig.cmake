# ---------------------------------------------------------------------------------------------
# TEST-ONLY STAND-IN. This is NOT 3D Slicer's SlicerConfig.cmake.
#
# Written for DiffuX2CT's packaging test (Testing/Python/test_packaging.py), which configures,
# builds and installs the extension without a Slicer build:
#
#     cmake -S <repo> -B <build> -DSlicer_DIR=<repo>/Testing/CMake/SlicerStandIn
#
# It imitates only the part of Slicer's CMake package that DiffuX2CT's CMakeLists.txt use:
#   Slicer_USE_FILE                              -> UseSlicer.cmake (macros, BUILD_TESTING)
#   Slicer_EXTENSION_GENERATE_CONFIG             -> writes a summary of what was registered
#   Slicer_EXTENSION_CPACK                       -> no-op
#   Slicer_QTSCRIPTEDMODULES_LIB_DIR             build-tree folder of scripted modules (relative
#                                                to CMAKE_BINARY_DIR, as in Slicer)
#   Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR     install folder of scripted modules (relative to
#                                                the install prefix, as in Slicer)
# The version numbers only shape the folder names (lib/Slicer-5.13/qt-scripted-modules).
# ---------------------------------------------------------------------------------------------

set(Slicer_FOUND TRUE)
set(Slicer_IS_STAND_IN TRUE)

set(Slicer_VERSION_MAJOR 5)
set(Slicer_VERSION_MINOR 13)
set(Slicer_VERSION_PATCH 0)
set(Slicer_VERSION "${Slicer_VERSION_MAJOR}.${Slicer_VERSION_MINOR}.${Slicer_VERSION_PATCH}")

set(Slicer_LIB_DIR "lib/Slicer-${Slicer_VERSION_MAJOR}.${Slicer_VERSION_MINOR}")
set(Slicer_QTSCRIPTEDMODULES_SUBDIR "qt-scripted-modules")
set(Slicer_QTSCRIPTEDMODULES_LIB_DIR "${Slicer_LIB_DIR}/${Slicer_QTSCRIPTEDMODULES_SUBDIR}")
set(Slicer_INSTALL_LIB_DIR "${Slicer_LIB_DIR}")
set(Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR "${Slicer_INSTALL_LIB_DIR}/${Slicer_QTSCRIPTEDMODULES_SUBDIR}")

set(Slicer_USE_FILE "${CMAKE_CURRENT_LIST_DIR}/UseSlicer.cmake")
set(Slicer_EXTENSION_GENERATE_CONFIG "${CMAKE_CURRENT_LIST_DIR}/SlicerStandInExtensionGenerateConfig.cmake")
set(Slicer_EXTENSION_CPACK "${CMAKE_CURRENT_LIST_DIR}/SlicerStandInNoOp.cmake")
