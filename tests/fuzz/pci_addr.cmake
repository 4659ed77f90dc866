# fuzz_pci_addr: hvctl's PCI address spellings — the backend-written vdev-i, the dev-i and
# registry names hvctl reads back, and BDF arguments. Pure functions; compiled in with the
# spec parser they call.
hv_add_fuzzer(fuzz_pci_addr ${CMAKE_CURRENT_SOURCE_DIR}/pci_addr_fuzz.cpp)
target_sources(fuzz_pci_addr PRIVATE ${CMAKE_SOURCE_DIR}/tools/hvctl/pci_addr.cpp
                                     ${CMAKE_SOURCE_DIR}/tools/xlcfg_specs.cpp)
target_include_directories(fuzz_pci_addr PRIVATE ${CMAKE_SOURCE_DIR}/tools
                                                 ${CMAKE_SOURCE_DIR}/tools/hvctl
                                                 ${CMAKE_SOURCE_DIR}/common/include)
