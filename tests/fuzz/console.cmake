# fuzz_console: hv-min's console ring consumer (hv-min/src/console_ring.hpp) fed arbitrary
# guest indices and bytes.
hv_add_fuzzer(fuzz_console ${CMAKE_CURRENT_LIST_DIR}/console_fuzz.cpp)
target_include_directories(fuzz_console PRIVATE ${CMAKE_SOURCE_DIR}/hv-min/src
                                                ${CMAKE_SOURCE_DIR}/rings/include)
