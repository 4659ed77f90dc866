# fuzz_rings: a shared ring page + hostile indices -> BackRing (owner: rings/).
hv_add_fuzzer(fuzz_rings ${CMAKE_CURRENT_LIST_DIR}/rings_fuzz.cpp hv::rings)
