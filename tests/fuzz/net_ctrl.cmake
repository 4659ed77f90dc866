# netif control ring requests (hash algorithm/flags/key/mapping) over arbitrary bytes.
hv_add_fuzzer(fuzz_net_ctrl ${CMAKE_CURRENT_LIST_DIR}/net_ctrl_fuzz.cpp hv::netback)
