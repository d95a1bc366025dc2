# labels.cmake - fails when a test has neither the label "unit" nor "e2e"
# (tests/CMakeLists.txt gives them by directory): the Debian package build
# runs `ctest -L unit` and would skip such a test without a word.
#   cmake -DCTEST=<ctest> -DBUILD=<build dir> -P labels.cmake
execute_process(COMMAND ${CTEST} --test-dir ${BUILD} -N -LE "^(unit|e2e)$"
  OUTPUT_VARIABLE out RESULT_VARIABLE rc)
if(NOT rc EQUAL 0 OR NOT out MATCHES "Total Tests: ([0-9]+)")
  message(FATAL_ERROR "ctest -N failed (${rc}):\n${out}")
endif()
if(NOT CMAKE_MATCH_1 EQUAL 0)
  message(FATAL_ERROR "tests with neither label unit nor e2e (give them "
    "one in tests/CMakeLists.txt or with set_tests_properties):\n${out}")
endif()
message(STATUS "every test is labelled unit or e2e")
