# bench_net_tests (label root): `hvbench --quick net` schema and nothing-left-behind check.
# Included from tests/bench/CMakeLists.txt.
hv_add_tests(bench_net_tests SOURCES net_smoke_test.cpp LIBS hv::test_support LABELS root
             PROPERTIES TIMEOUT 300)
target_compile_definitions(bench_net_tests PRIVATE HVBENCH_PATH="$<TARGET_FILE:hvbench>")
add_dependencies(bench_net_tests hvbench)
