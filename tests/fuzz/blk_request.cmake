# blkback parsers of untrusted bytes: blkif ring slots (+ indirect pages) and LVM reports.
hv_add_fuzzer(fuzz_blk_request ${CMAKE_CURRENT_LIST_DIR}/blk_request_fuzz.cpp hv::blkback_request)
hv_add_fuzzer(fuzz_blk_lvm_report ${CMAKE_CURRENT_LIST_DIR}/blk_lvm_report_fuzz.cpp
              hv::blkback_engines)
foreach(t fuzz_blk_request fuzz_blk_lvm_report)
  target_include_directories(${t} PRIVATE ${CMAKE_SOURCE_DIR})
endforeach()
