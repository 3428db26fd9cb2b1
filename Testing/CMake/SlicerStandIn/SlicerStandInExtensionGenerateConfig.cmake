# TEST-ONLY STAND-IN (not part of 3D Slicer): included where Slicer's
# SlicerExtensionGenerateConfig.cmake would be. Instead of an <Extension>Config.cmake it writes
# <build>/SlicerStandInSummary.txt, one "key value..." line per registration made through the
# stand-in macros of UseSlicer.cmake, so that a test can check what the CMakeLists asked for.

get_property(_standin_modules GLOBAL PROPERTY SlicerStandIn_SCRIPTED_MODULES)
get_property(_standin_generic GLOBAL PROPERTY SlicerStandIn_GENERIC_TESTS)
get_property(_standin_unittests GLOBAL PROPERTY SlicerStandIn_PYTHON_UNITTESTS)

set(_standin_summary "extension ${PROJECT_NAME}\n")
string(APPEND _standin_summary "build_testing ${BUILD_TESTING}\n")
foreach(_item IN LISTS _standin_modules)
  string(APPEND _standin_summary "scripted_module ${_item}\n")
endforeach()
foreach(_item IN LISTS _standin_generic)
  string(APPEND _standin_summary "generic_tests ${_item}\n")
endforeach()
foreach(_item IN LISTS _standin_unittests)
  string(APPEND _standin_summary "python_unittest ${_item}\n")
endforeach()
file(WRITE "${CMAKE_BINARY_DIR}/SlicerStandInSummary.txt" "${_standin_summary}")
