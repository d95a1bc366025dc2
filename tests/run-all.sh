#!/bin/bash
# run-all.sh - sets up a fresh Debian 12 machine and runs every test:
# installs packages, builds with -Werror and runs ctest; builds the Debian
# package and tests it in a fresh Debian 12 root (as root; ~4 minutes);
# builds again with ASan+UBSan and runs the same tests; builds and runs
# each libFuzzer target for FUZZ_SECONDS (default 20); checks formatting
# against .clang-format.
# Usage: bash tests/run-all.sh        (from anywhere; builds in build-ci*/)
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
jobs=${JOBS:-$(nproc)}
fuzz_seconds=${FUZZ_SECONDS:-20}
t0=$(date +%s)
step() { printf '\n=== %s (%ds)\n' "$*" $(($(date +%s) - t0)); }

step "installing packages"
sh tools/install-deps.sh --test

step "format check (.clang-format)"
sh tools/format.sh --check

step "build (gcc, -Werror)"
cmake -S . -B build-ci -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
ninja -C build-ci
step "tests"
ctest --test-dir build-ci --output-on-failure -j "$jobs"

step "Debian package in a fresh Debian 12 root (tests/pkg/test-deb.sh)"
bash tests/pkg/test-deb.sh build-ci-deb

step "build (ASan+UBSan)"
cmake -S . -B build-ci-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug \
    -DRELAYQ_SANITIZE=ON >/dev/null
ninja -C build-ci-asan
step "tests under ASan+UBSan"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 RELAYQ_SANITIZE=1 \
    ctest --test-dir build-ci-asan --output-on-failure -j "$jobs"

if command -v clang >/dev/null; then
	step "fuzzers (${fuzz_seconds}s each)"
	cmake -S . -B build-ci-fuzz -G Ninja -DCMAKE_C_COMPILER=clang \
	    -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRELAYQ_FUZZ=ON \
	    -DRELAYQ_WERROR=OFF >/dev/null
	targets=$(ninja -C build-ci-fuzz -t targets all |
	    sed -n 's/^\(fuzz_[a-z0-9_]*\): .*/\1/p' | sort -u)
	ninja -C build-ci-fuzz $targets
	for name in $targets; do
		f=$(find build-ci-fuzz -name "$name" -type f -perm -u+x | head -1)
		corpus=build-ci-fuzz/corpus-$name
		mkdir -p "$corpus"
		seeds=tests/fuzz/seeds/$name
		[ -d "$seeds" ] || seeds=
		echo "--- $name"
		if ! "$f" -max_total_time="$fuzz_seconds" -print_final_stats=1 \
		    -max_len=8192 -timeout=10 "$corpus" $seeds \
		    >"build-ci-fuzz/$name.log" 2>&1; then
			tail -50 "build-ci-fuzz/$name.log"
			echo "$name FAILED"
			exit 1
		fi
		grep -E "^stat::number_of_executed_units|DONE" \
		    "build-ci-fuzz/$name.log" || true
	done
fi
step "all tests passed"
