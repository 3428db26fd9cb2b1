# ---------------------------------------------------------------------------------------------
# TEST-ONLY STAND-IN. This is NOT 3D Slicer's UseSlicer.cmake (see SlicerConfig.cmake beside it).
#
# It provides, in simplified form, what DiffuX2CT's CMakeLists.txt call:
#   BUILD_TESTING                     an option (default ON); enable_testing() when ON.
#   slicerMacroBuildScriptedModule()  NAME, SCRIPTS, RESOURCES, WITH_GENERIC_TESTS. Like Slicer's
#                                     macro it copies the scripts and resources, relative paths
#                                     kept, into <build>/${Slicer_QTSCRIPTEDMODULES_LIB_DIR} at
#                                     build time and installs them into
#                                     ${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR}. It neither
#                                     byte-compiles the scripts nor adds the generic tests; it
#                                     records the module and WITH_GENERIC_TESTS.
#   slicer_add_python_unittest()      SCRIPT; only records the script (running it needs Slicer).
# The records are written to <build>/SlicerStandInSummary.txt by
# SlicerStandInExtensionGenerateConfig.cmake.
# ---------------------------------------------------------------------------------------------

option(BUILD_TESTING "Build the extension's tests (Slicer stand-in)" ON)
if(BUILD_TESTING)
  enable_testing()
endif()

# Copy FILES (paths relative to the current source directory, or absolute paths inside it) into
# the build tree's scripted-module folder through a custom target TARGET, and install them.
function(_slicer_standin_copy_and_install TARGET)
  set(_outputs)
  foreach(_file IN LISTS ARGN)
    if(IS_ABSOLUTE "${_file}")
      file(RELATIVE_PATH _rel "${CMAKE_CURRENT_SOURCE_DIR}" "${_file}")
    else()
      set(_rel "${_file}")
    endif()
    if(_rel MATCHES "^\\.\\./" OR _rel MATCHES "/\\.\\./")
      message(FATAL_ERROR "Slicer stand-in: ${_file} is not inside ${CMAKE_CURRENT_SOURCE_DIR}")
    endif()
    set(_src "${CMAKE_CURRENT_SOURCE_DIR}/${_rel}")
    if(NOT EXISTS "${_src}")
      message(FATAL_ERROR "Slicer stand-in: ${TARGET}: file ${_src} does not exist")
    endif()
    set(_dst "${CMAKE_BINARY_DIR}/${Slicer_QTSCRIPTEDMODULES_LIB_DIR}/${_rel}")
    add_custom_command(
      OUTPUT "${_dst}"
      COMMAND ${CMAKE_COMMAND} -E copy_if_different "${_src}" "${_dst}"
      DEPENDS "${_src}"
      COMMENT "Copying ${_rel}"
      VERBATIM)
    list(APPEND _outputs "${_dst}")
    get_filename_component(_rel_dir "${_rel}" DIRECTORY)
    install(FILES "${_src}"
      DESTINATION "${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR}/${_rel_dir}"
      COMPONENT RuntimeLibraries)
  endforeach()
  add_custom_target(${TARGET} ALL DEPENDS ${_outputs})
endfunction()

macro(slicerMacroBuildScriptedModule)
  cmake_parse_arguments(_SSI "WITH_GENERIC_TESTS" "NAME" "SCRIPTS;RESOURCES" ${ARGN})
  if(_SSI_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "Slicer stand-in: slicerMacroBuildScriptedModule: arguments not imitated: ${_SSI_UNPARSED_ARGUMENTS}")
  endif()
  if(NOT _SSI_NAME)
    message(FATAL_ERROR "Slicer stand-in: slicerMacroBuildScriptedModule: NAME is required")
  endif()
  if(NOT _SSI_SCRIPTS)
    message(FATAL_ERROR "Slicer stand-in: slicerMacroBuildScriptedModule: SCRIPTS is required")
  endif()
  # As in Slicer, a script given without suffix means <script>.py.
  set(_ssi_scripts)
  foreach(_ssi_script IN LISTS _SSI_SCRIPTS)
    if(NOT _ssi_script MATCHES "\\.py$")
      set(_ssi_script "${_ssi_script}.py")
    endif()
    list(APPEND _ssi_scripts "${_ssi_script}")
  endforeach()
  _slicer_standin_copy_and_install(Copy${_SSI_NAME}PythonScriptFiles ${_ssi_scripts})
  if(_SSI_RESOURCES)
    _slicer_standin_copy_and_install(Copy${_SSI_NAME}PythonResourceFiles ${_SSI_RESOURCES})
  endif()
  set_property(GLOBAL APPEND PROPERTY SlicerStandIn_SCRIPTED_MODULES "${_SSI_NAME}")
  if(_SSI_WITH_GENERIC_TESTS)
    set_property(GLOBAL APPEND PROPERTY SlicerStandIn_GENERIC_TESTS "${_SSI_NAME}")
  endif()
endmacro()

function(slicer_add_python_unittest)
  cmake_parse_arguments(_SSI "" "SCRIPT;TESTNAME_PREFIX" "SLICER_ARGS" ${ARGN})
  if(NOT _SSI_SCRIPT)
    message(FATAL_ERROR "Slicer stand-in: slicer_add_python_unittest: SCRIPT is required")
  endif()
  if(IS_ABSOLUTE "${_SSI_SCRIPT}")
    file(RELATIVE_PATH _script "${PROJECT_SOURCE_DIR}" "${_SSI_SCRIPT}")
  else()
    file(RELATIVE_PATH _script "${PROJECT_SOURCE_DIR}" "${CMAKE_CURRENT_SOURCE_DIR}/${_SSI_SCRIPT}")
  endif()
  set_property(GLOBAL APPEND PROPERTY SlicerStandIn_PYTHON_UNITTESTS "${_script}")
endfunction()
