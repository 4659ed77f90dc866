# blkback parsers of untrusted bytes: blkif ring slots (+ indirect pages) and LVM reports.
# The parser sources are compiled into each fuzzer (not linked from hv::blkback_*) so that
# libFuzzer's coverage instrumentation sees them.
set(blk_fuzz_src ${CMAKE_SOURCE_DIR}/blkback)
find_library(BLK_FUZZ_URING NAMES uring REQUIRED)
find_library(BLK_FUZZ_LVM2CMD NAMES lvm2cmd REQUIRED)

hv_add_fuzzer(fuzz_blk_request ${CMAKE_CURRENT_LIST_DIR}/blk_request_fuzz.cpp hv::common hv::rings)
target_sources(fuzz_blk_request PRIVATE ${blk_fuzz_src}/request.cpp ${blk_fuzz_src}/engine.cpp)

hv_add_fuzzer(fuzz_blk_lvm_report ${CMAKE_CURRENT_LIST_DIR}/blk_lvm_report_fuzz.cpp hv::common
              ${BLK_FUZZ_URING} ${BLK_FUZZ_LVM2CMD})
target_sources(fuzz_blk_lvm_report PRIVATE ${blk_fuzz_src}/lvm.cpp ${blk_fuzz_src}/engine.cpp
                                           ${blk_fuzz_src}/engine_uring.cpp)

foreach(t fuzz_blk_request fuzz_blk_lvm_report)
  target_include_directories(${t} PRIVATE ${CMAKE_SOURCE_DIR})
endforeach()
