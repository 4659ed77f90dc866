#!/usr/bin/env bash
# Command 2: install what is needed, build, and run the whole test suite twice — a release
# build, then an ASan+UBSan build — plus a short run of every libFuzzer target.
#   scripts/test.sh [--no-asan] [--no-fuzz] [--jobs N]
set -euo pipefail
cd "$(dirname "$0")/.."
asan=1 fuzz=1 jobs=$(nproc)
while (($#)); do
  case $1 in
    --no-asan) asan=0 ;;
    --no-fuzz) fuzz=0 ;;
    --jobs) jobs=$2; shift ;;
    *) echo "usage: $0 [--no-asan] [--no-fuzz] [--jobs N]" >&2; exit 2 ;;
  esac
  shift
done

if [[ $(id -u) -eq 0 ]]; then
  scripts/install-deps.sh
fi

build_suite() {  # niceness, dir, extra cmake args...
  local prio=$1 dir=$2; shift 2
  echo "== configure $dir"
  cmake -S . -B "$dir" -G Ninja "$@" >/dev/null
  echo "== build $dir"
  nice -n "$prio" cmake --build "$dir" -j "$jobs"
}
test_suite() {  # dir
  echo "== test $1"
  # Tests that touch host-wide resources (loop devices, LVM, hugepages) take ctest resource
  # locks, so running two at a time is safe.
  (cd "$1" && ctest --output-on-failure -j 2 --timeout 600)
}

build_suite 0 build -DCMAKE_BUILD_TYPE=RelWithDebInfo
if ((asan)); then
  # The release suite runs while the ASan build compiles beside it at a lower priority: most of
  # the suite's time is spent waiting (on domains, timeouts, other processes), not on a CPU, and
  # the compiler takes what the tests leave. Its log is printed once the ASan build is done.
  release_log=$(mktemp)
  test_suite build >"$release_log" 2>&1 &
  release_pid=$!
  export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
  export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
  asan_rc=0
  build_suite 10 build-asan -DCMAKE_BUILD_TYPE=Debug -DHV_SANITIZE=ON || asan_rc=$?
  release_rc=0
  wait "$release_pid" || release_rc=$?
  cat "$release_log"
  rm -f "$release_log"
  ((release_rc == 0)) || { echo "release suite failed"; exit 1; }
  ((asan_rc == 0)) || { echo "ASan build failed"; exit 1; }
  test_suite build-asan
else
  test_suite build
fi
if ((fuzz)) && command -v clang++ >/dev/null; then
  echo "== fuzz smoke"
  CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DHV_FUZZ=ON >/dev/null
  cmake --build build-fuzz -j "$jobs" --target fuzz_all
  shopt -s nullglob
  fuzz_one() {  # target: 20 s from a fresh corpus (and its seeds); its log's tail if it fails
    local f=$1 corpus seeds rc=0
    corpus=$(mktemp -d)
    # Checked-in seeds (tests/fuzz/corpus/<name without fuzz_>/) are read, never written.
    seeds=tests/fuzz/corpus/$(basename "$f" | sed 's/^fuzz_//')
    [[ -d $seeds ]] || seeds=
    echo "-- $f (20 s)${seeds:+, seeds $seeds}"
    "$f" -max_total_time=20 -rss_limit_mb=2048 "$corpus" ${seeds:+"$seeds"} >"$corpus.log" 2>&1 \
      || { rc=$?; echo "-- $f failed ($rc):"; tail -40 "$corpus.log"; }
    rm -rf "$corpus" "$corpus.log"
    return "$rc"
  }
  # Two targets at a time: a libFuzzer run is one process on one core, so on two cores each
  # still has its 20 s of a core, in half the wall time.
  targets=(build-fuzz/bin/fuzz_*)
  for ((i = 0; i < ${#targets[@]}; i += 2)); do
    pids=()
    for f in "${targets[@]:i:2}"; do
      fuzz_one "$f" &
      pids+=($!)
    done
    failed=0
    for p in "${pids[@]}"; do
      wait "$p" || failed=1
    done
    ((failed == 0)) || exit 1
  done
fi
echo "all suites passed"
