# fuzz_hypercall: arbitrary datagrams into hv-min's decoder and, through a real socket, into
# the in-process core's dispatcher (grant map/unmap/copy, event channels, memory ops) as dom0.
# hv-min's sources are compiled into the fuzzer so they carry coverage instrumentation.
hv_add_fuzzer(fuzz_hypercall ${CMAKE_CURRENT_LIST_DIR}/hypercall_fuzz.cpp hv::common hv::rings)
target_sources(fuzz_hypercall PRIVATE
  ${CMAKE_SOURCE_DIR}/hv-min/src/core.cpp
  ${CMAKE_SOURCE_DIR}/hv-min/src/client.cpp
  ${CMAKE_SOURCE_DIR}/hv-min/src/transport.cpp)
target_include_directories(fuzz_hypercall PRIVATE ${CMAKE_SOURCE_DIR}/hv-min/include
                                                  ${CMAKE_SOURCE_DIR}/hv-min/src)
target_compile_options(fuzz_hypercall PRIVATE
  -include ${CMAKE_CURRENT_LIST_DIR}/rings_fuzz_compat.hpp)
