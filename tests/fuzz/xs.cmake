# XenStore wire parser + dispatcher fuzzer. The core's sources are compiled into the fuzzer so
# they carry libFuzzer's coverage instrumentation.
hv_add_fuzzer(fuzz_xs ${CMAKE_CURRENT_LIST_DIR}/xs_fuzz.cpp hv::common hv::rings)
target_sources(fuzz_xs PRIVATE
  ${CMAKE_SOURCE_DIR}/xenstore/src/store.cpp
  ${CMAKE_SOURCE_DIR}/xenstore/src/core.cpp)
target_include_directories(fuzz_xs PRIVATE ${CMAKE_SOURCE_DIR}/xenstore/include)
