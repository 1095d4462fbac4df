# Installation: fmhost, libfmcore, the public headers, the plugins, the Lua
# scripts, and the plugin SDK (fmcore.pc, find_package(fmcore), the guide and
# its example).  Included at the end of the top-level CMakeLists.txt.
#
# Every destination is relative to the prefix, and every installed file that
# names a directory finds it from its own location (fmhost: RPATH
# $ORIGIN/../lib; fmcore.pc: ${pcfiledir}; fmcoreConfig.cmake:
# PACKAGE_PREFIX_DIR), so `cmake --install build --prefix DIR` gives a
# working SDK in DIR, and the tree can be moved after installing.
include(CMakePackageConfigHelpers)

# The plugin ABI version, read from the header so that the .pc file and the
# CMake package can never disagree with it.
file(STRINGS ${CMAKE_SOURCE_DIR}/core/include/fm/fm_plugin.h _fm_abi_lines
  REGEX "^#define FM_PLUGIN_ABI_(MAJOR|MINOR) +[0-9]+")
foreach(part MAJOR MINOR)
  set(FM_PLUGIN_ABI_${part} "")
  foreach(line ${_fm_abi_lines})
    if(line MATCHES "^#define FM_PLUGIN_ABI_${part} +([0-9]+)")
      set(FM_PLUGIN_ABI_${part} ${CMAKE_MATCH_1})
    endif()
  endforeach()
  if(FM_PLUGIN_ABI_${part} STREQUAL "")
    message(FATAL_ERROR "core/include/fm/fm_plugin.h: no '#define FM_PLUGIN_ABI_${part} N' line")
  endif()
endforeach()

set(FM_SCRIPT_INSTALL_RELDIR "${CMAKE_INSTALL_DATADIR}/fmhost/scripts")
set(FM_SAMPLE_INSTALL_RELDIR "${CMAKE_INSTALL_DATADIR}/fmhost/data/sample")
set(FM_CMAKE_INSTALL_RELDIR "${CMAKE_INSTALL_LIBDIR}/cmake/fmcore")
set(FM_PKGCONFIG_INSTALL_RELDIR "${CMAKE_INSTALL_LIBDIR}/pkgconfig")

# ---- the programs, the library, the headers, the scripts ----
install(TARGETS fmcore EXPORT fmcoreTargets LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(DIRECTORY core/include/fm DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
  FILES_MATCHING PATTERN "*.h")
if(TARGET fmhost)
  install(TARGETS fmhost EXPORT fmcoreTargets RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
endif()
install(DIRECTORY scripts/ DESTINATION ${FM_SCRIPT_INSTALL_RELDIR}
  FILES_MATCHING PATTERN "*.lua")
# The plugins install themselves (fm_add_plugin) into FM_PLUGIN_INSTALL_RELDIR.

# ---- the guide, its example and the data sample, so the SDK stands on its own ----
file(GLOB FM_DOC_PAGES ${CMAKE_SOURCE_DIR}/docs/*.md)
install(FILES ${FM_DOC_PAGES} DESTINATION ${CMAKE_INSTALL_DOCDIR})
install(FILES plugins/template/CMakeLists.txt plugins/template/lenet.c
  DESTINATION ${CMAKE_INSTALL_DOCDIR}/template)
# 3,000 training and 500 test images (1.5 MB): a smoke run needs no dataset package.
install(DIRECTORY data/sample/ DESTINATION ${FM_SAMPLE_INSTALL_RELDIR}
  FILES_MATCHING PATTERN "*-ubyte.gz")

# ---- find_package(fmcore) ----
install(EXPORT fmcoreTargets NAMESPACE fmcore:: DESTINATION ${FM_CMAKE_INSTALL_RELDIR})
configure_package_config_file(cmake/fmcoreConfig.cmake.in
  ${CMAKE_BINARY_DIR}/cmake/fmcoreConfig.cmake
  INSTALL_DESTINATION ${FM_CMAKE_INSTALL_RELDIR}
  PATH_VARS CMAKE_INSTALL_INCLUDEDIR FM_PLUGIN_INSTALL_RELDIR FM_SCRIPT_INSTALL_RELDIR
    FM_SAMPLE_INSTALL_RELDIR)
# 0.x: any 0.y satisfies find_package(fmcore 0.1); the plugin ABI has its own
# version, checked by the loader.
write_basic_package_version_file(${CMAKE_BINARY_DIR}/cmake/fmcoreConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMajorVersion)
install(FILES ${CMAKE_BINARY_DIR}/cmake/fmcoreConfig.cmake
  ${CMAKE_BINARY_DIR}/cmake/fmcoreConfigVersion.cmake
  DESTINATION ${FM_CMAKE_INSTALL_RELDIR})

# ---- pkg-config ----
# "${prefix}/DIR" for a relative install directory, DIR itself for an absolute one.
function(fm_pc_dir out dir)
  if(IS_ABSOLUTE "${dir}")
    set(${out} "${dir}" PARENT_SCOPE)
  else()
    set(${out} "\${prefix}/${dir}" PARENT_SCOPE)
  endif()
endfunction()
file(RELATIVE_PATH FM_PC_PREFIX_FROM_PCDIR
  "${CMAKE_INSTALL_PREFIX}/${FM_PKGCONFIG_INSTALL_RELDIR}" "${CMAKE_INSTALL_PREFIX}")
fm_pc_dir(FM_PC_LIBDIR "${CMAKE_INSTALL_LIBDIR}")
fm_pc_dir(FM_PC_INCLUDEDIR "${CMAKE_INSTALL_INCLUDEDIR}")
fm_pc_dir(FM_PC_PLUGINDIR "${FM_PLUGIN_INSTALL_RELDIR}")
fm_pc_dir(FM_PC_SCRIPTDIR "${FM_SCRIPT_INSTALL_RELDIR}")
fm_pc_dir(FM_PC_SAMPLEDIR "${FM_SAMPLE_INSTALL_RELDIR}")
# A plugin needs no RPATH under fmhost (libfmcore is already loaded and
# matches by soname), but one lets it load anywhere else too (ldd, a test
# program); a system directory needs none.
if(CMAKE_INSTALL_FULL_LIBDIR IN_LIST CMAKE_C_IMPLICIT_LINK_DIRECTORIES)
  set(FM_PC_RPATH "")
else()
  set(FM_PC_RPATH " -Wl,-rpath,\${libdir}")
endif()
configure_file(cmake/fmcore.pc.in ${CMAKE_BINARY_DIR}/cmake/fmcore.pc @ONLY)
install(FILES ${CMAKE_BINARY_DIR}/cmake/fmcore.pc DESTINATION ${FM_PKGCONFIG_INSTALL_RELDIR})
