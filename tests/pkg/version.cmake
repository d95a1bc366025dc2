# version.cmake - checks that the version set once, in project(VERSION)
# of CMakeLists.txt, is the one `relayq --version` prints, the man pages'
# .TH lines name, and debian/changelog's newest entry carries (its
# upstream part: the Debian revision after a '-', if any, may differ).
# Run by ctest (label unit, so also during the package build):
#   cmake -DVERSION=x.y.z -DSRC=<source dir> -DBIN=<relayq> -P version.cmake
set(bad "")

execute_process(COMMAND ${BIN} --version OUTPUT_VARIABLE out
  RESULT_VARIABLE rc OUTPUT_STRIP_TRAILING_WHITESPACE)
if(NOT rc EQUAL 0 OR NOT out STREQUAL "relayq ${VERSION}")
  string(APPEND bad "relayq --version says \"${out}\" (exit ${rc}), "
    "not \"relayq ${VERSION}\"\n")
endif()

foreach(page doc/relayq.8 doc/relayq.conf.5)
  file(STRINGS ${SRC}/${page} th REGEX "^\\.TH ")
  if(NOT th MATCHES "\"relayq ${VERSION}\"")
    string(APPEND bad "${page}: .TH line \"${th}\" does not name "
      "\"relayq ${VERSION}\"\n")
  endif()
endforeach()

if(EXISTS ${SRC}/debian/changelog)
  file(STRINGS ${SRC}/debian/changelog head LIMIT_COUNT 1)
  if(NOT head MATCHES "^relayq \\(([0-9][^ )]*)\\) ")
    string(APPEND bad "debian/changelog: no version in \"${head}\"\n")
  else()
    set(debver "${CMAKE_MATCH_1}")
    string(REGEX REPLACE "-[^-]*$" "" upstream "${debver}")
    string(REGEX REPLACE "^[0-9]+:" "" upstream "${upstream}")
    if(NOT upstream STREQUAL VERSION)
      string(APPEND bad "debian/changelog: newest entry is ${debver}"
        ", upstream version ${upstream}, not ${VERSION} (add an entry: "
        "dch -v ${VERSION})\n")
    endif()
  endif()
endif()

if(bad)
  message(FATAL_ERROR "version mismatch with project(VERSION ${VERSION}) "
    "in CMakeLists.txt:\n${bad}")
endif()
message(STATUS "version ${VERSION}: --version, man pages and "
  "debian/changelog agree")
