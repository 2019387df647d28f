#!/usr/bin/env bash
# C tests of dlb's C API (include/dlb.h), against the real test cluster.
#
# Usage (from any directory):
#   bash ffi-tests/run.sh         build the library (cargo, with the test-only
#                                 ffi-test-hooks feature) and every C program, then run each
#                                 test linked statically (libdlb.a + native static libs) and
#                                 dynamically (libdlb.so, -rpath), an AddressSanitizer+UBSan
#                                 build, and the static build under valgrind; also the header
#                                 as C++ and examples/c
#   bash ffi-tests/run.sh bench   release build; runs ffi-tests/bench_pick (C ABI pick cost)
#
# Brings the test environment up first (scripts/testenv.sh up, idempotent). The sticky test
# pauses WAL replay on replica 2 while it runs and resumes it afterwards (also on failure).
#
# Environment:
#   CC, CXX                     compilers (default cc, c++)
#   DLB_FFI_VALGRIND=0          skip the valgrind runs (they are part of the suite by default)
#   DLB_FFI_ASAN=0              skip the sanitizer runs
#   DLB_FFI_BENCH_ITERATIONS    picks measured by `bench` (default 5000000)
#
# Output: one line per test run, the log of each failure, and last
# "ffi-tests: N passed, M failed". Exits non-zero on any failure.
set -euo pipefail

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"
MODE=${1:-test}
BUILD=ffi-tests/build
CC=${CC:-cc}
CXX=${CXX:-c++}
CFLAGS=(-std=c99 -Wall -Wextra -Wpedantic -Werror -g -O1 -Iinclude -Iffi-tests -pthread)
# shellcheck disable=SC2054 # the commas belong to -fsanitize=address,undefined
SANITIZE=(-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all)
# Every test program with its sources (besides the shared test_util.c).
TESTS=(test_api test_round_robin test_sticky test_concurrent test_log test_two_tu test_bounds test_tls test_fork test_events)
PAUSED_REPLICA=2

passed=0
failed=0
failures=()

say() { printf 'ffi-tests: %s\n' "$*"; }
die() {
    printf 'ffi-tests: error: %s\n' "$*" >&2
    exit 1
}

case $MODE in
test | bench) ;;
-h | --help | help)
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
    exit 0
    ;;
*) die "unknown mode '$MODE' (expected: test, bench)" ;;
esac

mkdir -p "$BUILD/logs"

# --- test environment -------------------------------------------------------------------
if ! bash scripts/testenv.sh up >"$BUILD/logs/testenv-up.log" 2>&1; then
    cat "$BUILD/logs/testenv-up.log" >&2
    die "scripts/testenv.sh up failed"
fi
eval "$(bash scripts/testenv.sh env)"

# --- the Rust library -------------------------------------------------------------------
# build_lib PROFILE_DIR [CARGO_ARGS...]: builds libdlb.{a,so} and sets NATIVE_LIBS to what a
# static link needs (rustc's --print native-static-libs; cargo replays it when up to date).
build_lib() {
    local dir=$1 log="$BUILD/logs/cargo-$1.log"
    shift
    say "building the library ($dir): cargo rustc --lib $*"
    if ! cargo rustc --lib "$@" -- --print native-static-libs >"$log" 2>&1; then
        cat "$log" >&2
        die "cargo build failed"
    fi
    NATIVE_LIBS=$(sed -n 's/^.*native-static-libs: //p' "$log" | tail -n 1)
    if [[ -z $NATIVE_LIBS ]]; then
        NATIVE_LIBS="-lgcc_s -lutil -lrt -lpthread -lm -ldl -lc"
        say "rustc printed no native-static-libs; assuming: $NATIVE_LIBS"
    fi
    LIBDIR="$ROOT/target/$dir"
    [[ -f $LIBDIR/libdlb.a && -f $LIBDIR/libdlb.so ]] || die "no libdlb.a/libdlb.so in $LIBDIR"
}

# --- helpers ------------------------------------------------------------------------------
record() { # NAME STATUS LOG
    if (($2 == 0)); then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        failures+=("$1")
        printf '  FAIL %s (exit %s); log %s:\n' "$1" "$2" "$3"
        tail -n 40 -- "$3" | sed 's/^/    | /'
    fi
}

# compile NAME LOG CMD...: a compile step; a failure is counted (its run is not).
compile() {
    local name=$1 log=$2
    shift 2
    if "$@" >"$log" 2>&1; then
        return 0
    fi
    record "compile $name" 1 "$log"
    return 1
}

sources() { # TEST: its C sources
    case $1 in
    test_two_tu) echo "ffi-tests/test_two_tu.c ffi-tests/two_tu_other.c" ;;
    *) echo "ffi-tests/$1.c ffi-tests/test_util.c" ;;
    esac
}

resume_paused() {
    bash scripts/testenv.sh resume-replica "$PAUSED_REPLICA" >/dev/null 2>&1 || true
}

# with_paused_replica CMD...: runs CMD while replica $PAUSED_REPLICA does not replay WAL and
# the primary has written past it; DLB_FFI_PAUSED_LSN is that replica's replay position.
with_paused_replica() {
    local state rc=0
    trap resume_paused EXIT
    bash scripts/testenv.sh pause-replica "$PAUSED_REPLICA" >/dev/null
    state=$(bash scripts/testenv.sh psql "$PAUSED_REPLICA" -Atqc "SELECT pg_get_wal_replay_pause_state()")
    [[ $state == paused ]] || {
        echo "replica $PAUSED_REPLICA replay state: $state (expected paused)"
        resume_paused
        return 1
    }
    bash scripts/testenv.sh psql primary -Atqc \
        "CREATE TABLE IF NOT EXISTS dlb_ffi_tests (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now());
         INSERT INTO dlb_ffi_tests DEFAULT VALUES"
    DLB_FFI_PAUSED_LSN=$(bash scripts/testenv.sh psql "$PAUSED_REPLICA" -Atqc "SELECT pg_last_wal_replay_lsn()")
    DLB_FFI_PAUSED_REPLICA=$PAUSED_REPLICA DLB_FFI_PAUSED_LSN=$DLB_FFI_PAUSED_LSN "$@" || rc=$?
    resume_paused
    trap - EXIT
    return "$rc"
}

# run_test NAME LOG CMD...: runs one test program (the sticky one with a paused replica).
run_test() {
    local name=$1 log=$2 rc=0 start=$SECONDS
    shift 2
    if [[ $name == */test_sticky ]]; then
        with_paused_replica timeout 600 "$@" >"$log" 2>&1 || rc=$?
    else
        timeout 600 "$@" >"$log" 2>&1 || rc=$?
    fi
    if ((rc == 0)); then
        printf '  ok   %-32s %3ds\n' "$name" $((SECONDS - start))
    fi
    record "$name" "$rc" "$log"
}

# --- bench --------------------------------------------------------------------------------
if [[ $MODE == bench ]]; then
    build_lib release --release
    mkdir -p "$BUILD/release"
    # shellcheck disable=SC2086 # CC may be a command with arguments; NATIVE_LIBS is a list of flags
    $CC -std=c99 -Wall -Wextra -Wpedantic -Werror -O2 -Iinclude -Iffi-tests -pthread \
        -o "$BUILD/release/bench_pick" ffi-tests/bench_pick.c ffi-tests/test_util.c \
        "$LIBDIR/libdlb.a" $NATIVE_LIBS
    "$BUILD/release/bench_pick" "${DLB_FFI_BENCH_ITERATIONS:-5000000}"
    exit 0
fi

# --- build --------------------------------------------------------------------------------
# The test-only entry points (lb_test_panic, for test_bounds) are in this build only.
build_lib debug --features ffi-test-hooks
VARIANTS=(static shared)
[[ ${DLB_FFI_ASAN:-1} == 0 ]] || VARIANTS+=(asan)
mkdir -p "$BUILD"/{static,shared,asan,examples}
declare -A built=()
for t in "${TESTS[@]}"; do
    read -r -a src <<<"$(sources "$t")"
    for v in "${VARIANTS[@]}"; do
        out="$BUILD/$v/$t"
        log="$BUILD/logs/compile-$v-$t.log"
        # shellcheck disable=SC2054,SC2206 # NATIVE_LIBS is a list of flags; -Wl,-rpath,DIR has commas
        case $v in
        static) link=("$LIBDIR/libdlb.a" $NATIVE_LIBS) extra=() ;;
        shared) link=(-L"$LIBDIR" -ldlb -Wl,-rpath,"$LIBDIR") extra=() ;;
        asan) link=("$LIBDIR/libdlb.a" $NATIVE_LIBS) extra=("${SANITIZE[@]}") ;;
        esac
        # shellcheck disable=SC2086 # CC may be a command with arguments (e.g. "ccache cc")
        if compile "$v/$t" "$log" $CC "${CFLAGS[@]}" "${extra[@]}" -o "$out" "${src[@]}" "${link[@]}"; then
            built[$v/$t]=1
        fi
    done
done
# (ldd's output is read whole: `ldd | grep -q` fails under pipefail when grep exits first and
# ldd gets SIGPIPE.)
if [[ -n ${built[shared/test_api]-} && $(ldd "$BUILD/shared/test_api") != *"$LIBDIR/libdlb.so"* ]]; then
    record "shared/test_api links libdlb.so" 1 /dev/null
fi

# --- run ----------------------------------------------------------------------------------
say "running against primary ${DLB_TEST_PRIMARY%% user=*}, replicas $DLB_TEST_REPLICAS"
for v in "${VARIANTS[@]}"; do
    for t in "${TESTS[@]}"; do
        [[ -n ${built[$v/$t]-} ]] || continue
        if [[ $v == asan ]]; then
            ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:strict_string_checks=1 \
                LSAN_OPTIONS=suppressions="$ROOT/ffi-tests/lsan.supp":print_suppressions=0 \
                UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 DLB_FFI_SCALE=4 \
                run_test "$v/$t" "$BUILD/logs/run-$v-$t.log" "$BUILD/$v/$t"
        else
            run_test "$v/$t" "$BUILD/logs/run-$v-$t.log" "$BUILD/$v/$t"
        fi
    done
done

if [[ ${DLB_FFI_VALGRIND:-1} != 0 ]]; then
    if command -v valgrind >/dev/null 2>&1; then
        for t in "${TESTS[@]}"; do
            [[ -n ${built[static/$t]-} ]] || continue
            # test_fork: its child leaks the balancer it inherited, by design (freeing it there
            # must not close the parent's connections): valgrind would report that as a leak.
            # test_tls: ring's assembly AES-GCM reads and writes bytes memcheck cannot follow
            # (false "uninitialised" reports); the ASan run covers it.
            [[ $t == test_fork || $t == test_tls ]] && continue
            DLB_FFI_SCALE=20 run_test "valgrind/$t" "$BUILD/logs/run-valgrind-$t.log" \
                valgrind -q --error-exitcode=1 --leak-check=full \
                --errors-for-leak-kinds=definite,indirect --show-leak-kinds=definite,indirect \
                --fair-sched=try "$BUILD/static/$t"
        done
    else
        record "valgrind (not installed: run scripts/bootstrap.sh, or DLB_FFI_VALGRIND=0)" 1 /dev/null
    fi
fi

# The header as C++ (cpp_compat).
log="$BUILD/logs/compile-header_cxx.log"
# shellcheck disable=SC2086 # CXX may be a command with arguments; NATIVE_LIBS is a list of flags
if compile "header_cxx" "$log" $CXX -std=c++11 -Wall -Wextra -Wpedantic -Werror -Iinclude \
    -o "$BUILD/static/header_cxx" ffi-tests/header_cxx.cpp "$LIBDIR/libdlb.a" $NATIVE_LIBS; then
    run_test "static/header_cxx" "$BUILD/logs/run-header_cxx.log" "$BUILD/static/header_cxx"
fi

# examples/c, built with the lines it documents, run against the test cluster.
example_config="{\"primary\": \"$DLB_TEST_PRIMARY\", \"replicas\": {\"hosts\": [\"${DLB_TEST_REPLICAS//,/\", \"}\"]}}"
log="$BUILD/logs/compile-example-static.log"
# shellcheck disable=SC2086 # CC may be a command with arguments; NATIVE_LIBS is a list of flags
if compile "examples/c (static)" "$log" $CC -std=c99 -Wall -Wextra -Wpedantic -Werror -Iinclude \
    examples/c/dlb_example.c "$LIBDIR/libdlb.a" $NATIVE_LIBS -o "$BUILD/examples/dlb_example"; then
    run_test "examples/dlb_example" "$BUILD/logs/run-example-static.log" \
        "$BUILD/examples/dlb_example" "$example_config"
fi
log="$BUILD/logs/compile-example-shared.log"
# shellcheck disable=SC2086 # CC may be a command with arguments (e.g. "ccache cc")
if compile "examples/c (shared)" "$log" $CC -std=c99 -Wall -Wextra -Wpedantic -Werror -Iinclude \
    examples/c/dlb_example.c -L"$LIBDIR" -ldlb -Wl,-rpath,"$LIBDIR" \
    -o "$BUILD/examples/dlb_example_shared"; then
    DLB_CONFIG_JSON=$example_config run_test "examples/dlb_example_shared" \
        "$BUILD/logs/run-example-shared.log" "$BUILD/examples/dlb_example_shared"
fi

if ((failed > 0)); then
    say "failed: ${failures[*]}"
fi
echo "ffi-tests: $passed passed, $failed failed"
((failed == 0))
