# fuzz_hypercall: arbitrary datagrams into hv-min's decoder and, through a real socket, into
# the in-process core's dispatcher (grant map/unmap/copy, event channels, memory ops) as dom0.
# hv-min's sources (and common's logger) are compiled into the fuzzer so they carry coverage
# instrumentation; hv::common's assert.cpp needs std::source_location, which clang 14 lacks.
hv_add_fuzzer(fuzz_hypercall ${CMAKE_CURRENT_LIST_DIR}/hypercall_fuzz.cpp Threads::Threads)
target_sources(fuzz_hypercall PRIVATE
  ${CMAKE_SOURCE_DIR}/common/src/log.cpp
  ${CMAKE_SOURCE_DIR}/common/src/spin.cpp
  ${CMAKE_SOURCE_DIR}/common/src/fd_passing.cpp
  ${CMAKE_SOURCE_DIR}/hv-min/src/core.cpp
  ${CMAKE_SOURCE_DIR}/hv-min/src/console.cpp
  ${CMAKE_SOURCE_DIR}/hv-min/src/client.cpp
  ${CMAKE_SOURCE_DIR}/hv-min/src/console_guest.cpp
  ${CMAKE_SOURCE_DIR}/hv-min/src/transport.cpp
  ${CMAKE_SOURCE_DIR}/hv-min/src/domain_procs.cpp
  ${CMAKE_SOURCE_DIR}/hv-min/src/iomem.cpp)
target_include_directories(fuzz_hypercall PRIVATE ${CMAKE_SOURCE_DIR}/hv-min/include
                                                  ${CMAKE_SOURCE_DIR}/hv-min/src
                                                  ${CMAKE_SOURCE_DIR}/rings/include
                                                  ${CMAKE_SOURCE_DIR}/common/include)
