# qtrain_cc_library / qtrain_cc_test / qtrain_cc_binary: every folder's CMakeLists.txt reads as a
# manifest of NAME / HDRS / SRCS / DEPS (after Abseil's AbseilHelpers.cmake).

# qtrain_cc_library(NAME n [HDRS ...] SRCS ... [DEPS ...] [PRIVATE_DEPS ...])
# Creates qtrain_<n> with alias qtrain::<n>; the project root is the include root.
function(qtrain_cc_library)
  cmake_parse_arguments(Q "" "NAME" "HDRS;SRCS;DEPS;PRIVATE_DEPS" ${ARGN})
  set(target qtrain_${Q_NAME})
  add_library(${target} STATIC ${Q_SRCS} ${Q_HDRS})
  add_library(qtrain::${Q_NAME} ALIAS ${target})
  target_include_directories(${target} PUBLIC
    $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}> $<BUILD_INTERFACE:${PROJECT_BINARY_DIR}>)
  target_link_libraries(${target} PUBLIC ${Q_DEPS} PRIVATE ${Q_PRIVATE_DEPS})
endfunction()

# qtrain_cc_test(NAME n SRCS ... [DEPS ...] [LABELS ...] [PER_ISA])
# A GoogleTest binary registered with ctest; tests run from the project root so that
# ../shared/golden resolves as documented. PER_ISA: also run once per lower ISA level
# (cmake/QtrainIsaTests.cmake), each run checking that it really ran at that level.
function(qtrain_cc_test)
  if(NOT BUILD_TESTING)
    return()
  endif()
  cmake_parse_arguments(Q "PER_ISA" "NAME" "SRCS;DEPS;LABELS" ${ARGN})
  if(Q_PER_ISA)
    list(APPEND Q_SRCS ${PROJECT_SOURCE_DIR}/kernels/tests/isa_environment.cc)
    list(APPEND Q_DEPS qtrain::kernels)
  endif()
  add_executable(${Q_NAME} ${Q_SRCS})
  target_link_libraries(${Q_NAME} PRIVATE ${Q_DEPS} GTest::gtest GTest::gmock GTest::gtest_main)
  target_include_directories(${Q_NAME} PRIVATE ${PROJECT_SOURCE_DIR})
  # GCC 12 reports false maybe-uninitialized warnings on GoogleTest parameter tables.
  target_compile_options(${Q_NAME} PRIVATE -Wno-maybe-uninitialized)
  set_target_properties(${Q_NAME} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
  add_test(NAME ${Q_NAME} COMMAND ${Q_NAME} WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
  if(Q_LABELS)
    set_tests_properties(${Q_NAME} PROPERTIES LABELS "${Q_LABELS}")
  endif()
  if(Q_PER_ISA)
    qtrain_isa_variants(TEST ${Q_NAME} COMMAND ${Q_NAME} LABELS ${Q_LABELS})
  endif()
endfunction()

# qtrain_cc_binary(NAME n SRCS ... [DEPS ...]): an executable in build/bin.
function(qtrain_cc_binary)
  cmake_parse_arguments(Q "" "NAME" "SRCS;DEPS" ${ARGN})
  add_executable(${Q_NAME} ${Q_SRCS})
  target_link_libraries(${Q_NAME} PRIVATE ${Q_DEPS})
  target_include_directories(${Q_NAME} PRIVATE ${PROJECT_SOURCE_DIR})
endfunction()
