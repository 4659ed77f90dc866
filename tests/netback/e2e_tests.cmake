# netback end to end (device/e2e tests): the real hv-min core in-process, the netback Backend with
# loop engines, and frontend domains (hv_hypercall_donor hands its channel to the test) driving
# libnetfront. Included from tests/netback/CMakeLists.txt.
if(TARGET hv::netback AND TARGET hv::netfront AND TARGET hv::hvmin_core)
  # The harness (e2e_harness.hpp), compiled once for the three e2e programs.
  add_library(hv_test_netback_e2e STATIC e2e_harness.cpp)
  target_include_directories(hv_test_netback_e2e PUBLIC ${CMAKE_CURRENT_SOURCE_DIR})
  target_link_libraries(hv_test_netback_e2e PUBLIC
    hv::netback hv::netfront hv::hvmin_core hv::hvmin_client hv::xenbus hv::xs_client
    hv::test_support Catch2::Catch2)
  target_compile_definitions(hv_test_netback_e2e PRIVATE
    NETBACK_E2E_DONOR="$<TARGET_FILE:hv_hypercall_donor>")
  # One e2e test program: the harness, the libraries it drives and the donor it starts.
  function(netback_e2e_tests name)
    cmake_parse_arguments(E "" "" "SOURCES;LABELS;PROPERTIES" ${ARGN})
    hv_add_tests(${name}
      SOURCES ${E_SOURCES}
      LIBS hv_test_netback_e2e hv::test_netframes
      LABELS ${E_LABELS}
      PROPERTIES ${E_PROPERTIES})
    add_dependencies(${name} hv_hypercall_donor)
  endfunction()
  netback_e2e_tests(netback_e2e_tests
    SOURCES e2e_test.cpp e2e_hostile_test.cpp e2e_map_poll_test.cpp e2e_zero_copy_test.cpp
            e2e_mcast_test.cpp e2e_ctrl_test.cpp e2e_hash_test.cpp e2e_stress_test.cpp e2e_xdp_test.cpp
            e2e_holdoff_test.cpp)
  # Tap vifs end to end in a private network namespace (root): hotplug at probe, rx GSO.
  netback_e2e_tests(netback_e2e_root_tests
    SOURCES e2e_tap_root_test.cpp e2e_hash_root_test.cpp
    LABELS root
    PROPERTIES TIMEOUT 120)
  # A DPDK vif end to end: its own process (one EAL), label root like the other DPDK tests.
  netback_e2e_tests(netback_e2e_dpdk_tests
    SOURCES e2e_dpdk_root_test.cpp
    LABELS root
    PROPERTIES TIMEOUT 120)
endif()

# System test (label root): hv-guest domains with NICs on a bridge in a private namespace.
if(TARGET hv::netback AND TARGET hv-guest AND TARGET hv::hvmin_core)
  hv_add_tests(netback_system_tests
    SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/../system/net_guest_test.cpp
    LIBS hv::netback hv::hvmin_core hv::hvmin_client hv::xenbus hv::xs_client hv::test_support
    LABELS root
    PROPERTIES TIMEOUT 180)
  add_dependencies(netback_system_tests hv-guest)
  target_compile_definitions(netback_system_tests PRIVATE
    HV_BIN_DIR="${CMAKE_RUNTIME_OUTPUT_DIRECTORY}")
endif()
