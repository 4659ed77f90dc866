# bench_net_tests (label root, lock hugepages): `hvbench --quick net` schema and
# nothing-left-behind check. Included from tests/bench/CMakeLists.txt. Every test that raises the
# hugepage pool takes the ctest lock `hugepages`.
hv_add_tests(bench_net_tests SOURCES net_smoke_test.cpp LIBS hv::test_support LABELS root
             PROPERTIES TIMEOUT 300 RESOURCE_LOCK hugepages)
target_compile_definitions(bench_net_tests PRIVATE HVBENCH_PATH="$<TARGET_FILE:hvbench>")
add_dependencies(bench_net_tests hvbench)
