# bench_blk_tests (label root, lock lvm): `hvbench --quick blk` schema and nothing-left-behind
# check. Included from tests/bench/CMakeLists.txt.
hv_add_tests(bench_blk_tests SOURCES blk_smoke_test.cpp LIBS hv::test_support LABELS root
             PROPERTIES TIMEOUT 120 RESOURCE_LOCK lvm)
target_compile_definitions(bench_blk_tests PRIVATE HVBENCH_PATH="$<TARGET_FILE:hvbench>")
add_dependencies(bench_blk_tests hvbench)
