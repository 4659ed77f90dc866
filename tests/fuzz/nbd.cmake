# NBD server parser (hv-guest's exports): handshake, options and commands from an untrusted
# client. nbd.cpp is compiled into the fuzzer so it carries libFuzzer's coverage.
hv_add_fuzzer(fuzz_nbd ${CMAKE_CURRENT_LIST_DIR}/nbd_fuzz.cpp hv::common)
target_sources(fuzz_nbd PRIVATE ${CMAKE_SOURCE_DIR}/frontends/nbd.cpp)
target_include_directories(fuzz_nbd PRIVATE ${CMAKE_SOURCE_DIR}/frontends/include
                                            ${CMAKE_SOURCE_DIR}/tests/frontends)
