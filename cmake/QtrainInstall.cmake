# `cmake --install build [--prefix P]`: the server, the CLI and the demo in bin/; the C++ client
# library with its headers and a CMake package (find_package(qtrain)); the .proto contract in
# share/qtrain/proto for clients in other languages. The Python package installs from
# client/python/CMakeLists.txt.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

install(TARGETS qtrain-server qtrain qtrain-demo RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})

set(cmake_dir ${CMAKE_INSTALL_LIBDIR}/cmake/qtrain)
set_target_properties(qtrain_proto PROPERTIES EXPORT_NAME proto)
set_target_properties(qtrain_health_proto PROPERTIES EXPORT_NAME health_proto)
install(TARGETS qtrain_client qtrain_proto qtrain_health_proto EXPORT qtrainTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(FILES client/cpp/include/qtrain/client.h DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/qtrain)
install(DIRECTORY ${PROJECT_BINARY_DIR}/proto/qtrain/v1/
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/qtrain/v1 FILES_MATCHING PATTERN "*.pb.h")
install(DIRECTORY proto/qtrain DESTINATION ${CMAKE_INSTALL_DATADIR}/qtrain/proto
        FILES_MATCHING PATTERN "*.proto")
install(EXPORT qtrainTargets NAMESPACE qtrain:: DESTINATION ${cmake_dir})
configure_package_config_file(cmake/qtrainConfig.cmake.in
                              ${PROJECT_BINARY_DIR}/qtrainConfig.cmake
                              INSTALL_DESTINATION ${cmake_dir})
# 0.x releases may change the API between minor versions.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/qtrainConfigVersion.cmake
                                 COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/qtrainConfig.cmake
              ${PROJECT_BINARY_DIR}/qtrainConfigVersion.cmake DESTINATION ${cmake_dir})
