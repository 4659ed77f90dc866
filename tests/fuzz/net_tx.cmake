# netif tx parsing (and rx slot planning) over arbitrary bytes.
hv_add_fuzzer(fuzz_net_tx ${CMAKE_CURRENT_LIST_DIR}/net_tx_fuzz.cpp hv::netback)
