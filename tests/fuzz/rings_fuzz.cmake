# fuzz_rings: a shared ring page + hostile indices -> BackRing (owner: rings/). Header-only code,
# so it needs common's and rings' headers but not the hv::common library; the fuzzer provides
# hv::detail::assert_fail itself (HV_RINGS_FUZZ_STANDALONE). rings_fuzz_compat.hpp covers
# clang 14's missing std::source_location.
hv_add_fuzzer(fuzz_rings ${CMAKE_CURRENT_LIST_DIR}/rings_fuzz.cpp)
target_include_directories(fuzz_rings PRIVATE ${CMAKE_SOURCE_DIR}/rings/include
                                              ${CMAKE_SOURCE_DIR}/common/include)
target_compile_definitions(fuzz_rings PRIVATE HV_RINGS_FUZZ_STANDALONE=1)
target_compile_options(fuzz_rings PRIVATE -include ${CMAKE_CURRENT_LIST_DIR}/rings_fuzz_compat.hpp)
