# fuzz_xlcfg: the xl.cfg parser and the disk/vif/pci/vdev/rate spec parsers. The parser
# sources are compiled into the fuzzer so libFuzzer's coverage instrumentation sees them;
# they need only common/'s headers, not the hv::common library.
hv_add_fuzzer(fuzz_xlcfg ${CMAKE_CURRENT_SOURCE_DIR}/xlcfg_fuzz.cpp)
target_sources(fuzz_xlcfg PRIVATE ${CMAKE_SOURCE_DIR}/tools/xlcfg.cpp
                                  ${CMAKE_SOURCE_DIR}/tools/xlcfg_specs.cpp)
target_include_directories(fuzz_xlcfg PRIVATE ${CMAKE_SOURCE_DIR}/tools
                                              ${CMAKE_SOURCE_DIR}/common/include)
