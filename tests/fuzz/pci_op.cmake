# pciback's dispatcher of untrusted ops: a sequence of xen_pci_op on the emulated model.
hv_add_fuzzer(fuzz_pci_op ${CMAKE_CURRENT_LIST_DIR}/pci_op_fuzz.cpp hv::pciback_ops)
target_include_directories(fuzz_pci_op PRIVATE ${CMAKE_SOURCE_DIR})
