# fuzz_pci_sysfs: hv-guest's /sys/bus/pci file contents from a hostile backend's config-space
# answers (frontends/hv_guest/pci_sysfs.cpp, pure: no FUSE, no pcifront). Seeds in
# corpus/pci_sysfs/.
hv_add_fuzzer(fuzz_pci_sysfs ${CMAKE_CURRENT_SOURCE_DIR}/pci_sysfs_fuzz.cpp)
target_sources(fuzz_pci_sysfs PRIVATE ${CMAKE_SOURCE_DIR}/frontends/hv_guest/pci_sysfs.cpp)
target_include_directories(fuzz_pci_sysfs PRIVATE ${CMAKE_SOURCE_DIR}/frontends/hv_guest)
