# blkback parsers of untrusted bytes: blkif ring slots (+ indirect pages) and LVM reports.
# Built from sources (not hv::blkback_* / hv::common) with blk_fuzz_compat.hpp force-included,
# because clang 14 lacks std::source_location that common's assert needs.
set(blk_fuzz_src ${CMAKE_SOURCE_DIR}/blkback)
set(blk_fuzz_common ${CMAKE_SOURCE_DIR}/common/src/log.cpp ${CMAKE_SOURCE_DIR}/common/src/assert.cpp)
find_library(BLK_FUZZ_URING NAMES uring REQUIRED)
find_library(BLK_FUZZ_LVM2CMD NAMES lvm2cmd REQUIRED)

hv_add_fuzzer(fuzz_blk_request ${CMAKE_CURRENT_LIST_DIR}/blk_request_fuzz.cpp)
target_sources(fuzz_blk_request PRIVATE ${blk_fuzz_src}/request.cpp ${blk_fuzz_src}/engine.cpp
                                        ${blk_fuzz_common})

hv_add_fuzzer(fuzz_blk_lvm_report ${CMAKE_CURRENT_LIST_DIR}/blk_lvm_report_fuzz.cpp)
target_sources(fuzz_blk_lvm_report PRIVATE ${blk_fuzz_src}/lvm.cpp ${blk_fuzz_src}/engine.cpp
                                           ${blk_fuzz_src}/engine_uring.cpp ${blk_fuzz_common})
target_link_libraries(fuzz_blk_lvm_report PRIVATE ${BLK_FUZZ_URING} ${BLK_FUZZ_LVM2CMD}
                                                  Threads::Threads)

foreach(t fuzz_blk_request fuzz_blk_lvm_report)
  target_include_directories(${t} PRIVATE ${CMAKE_SOURCE_DIR} ${CMAKE_SOURCE_DIR}/common/include
                                          ${CMAKE_SOURCE_DIR}/rings/include)
  target_compile_options(${t} PRIVATE -include ${CMAKE_CURRENT_LIST_DIR}/blk_fuzz_compat.hpp)
endforeach()
