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

run_suite() {  # dir, extra cmake args...
  local dir=$1; shift
  echo "== configure $dir"
  cmake -S . -B "$dir" -G Ninja "$@" >/dev/null
  echo "== build $dir"
  cmake --build "$dir" -j "$jobs"
  echo "== test $dir"
  # Tests that touch host-wide resources (loop devices, LVM, hugepages) take ctest resource
  # locks, so running two at a time is safe.
  (cd "$dir" && ctest --output-on-failure -j 2 --timeout 600)
}

run_suite build -DCMAKE_BUILD_TYPE=RelWithDebInfo
if ((asan)); then
  export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
  export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
  run_suite build-asan -DCMAKE_BUILD_TYPE=Debug -DHV_SANITIZE=ON
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
