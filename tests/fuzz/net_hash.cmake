# The rx flow hash input (netback/hash.hpp) over arbitrary host frames.
hv_add_fuzzer(fuzz_net_hash ${CMAKE_CURRENT_LIST_DIR}/net_hash_fuzz.cpp hv::netback)
