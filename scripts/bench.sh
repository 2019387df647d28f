#!/usr/bin/env bash
# Runs every dlb benchmark in one go against the test environment and writes BENCHMARKS.md.
#
#   bash scripts/bench.sh            all benchmarks; rewrites BENCHMARKS.md
#   DLB_BENCH_QUICK=1 bash scripts/bench.sh   smoke run (fewer iterations; numbers not for reporting)
#
# Each benchmark measures dlb next to its baseline in the same process and the same run, and
# reports ratios; the sections are:
#   1. cargo bench --bench pick          pick without a key vs a mutex-guarded round-robin
#   2. cargo bench --bench sticky        sticky picks vs one live replica query per read
#   3. cargo bench --bench redis_store   sticky picks with the Redis stores vs the embedded one
#   4. ffi-tests/run.sh bench            lb_pick_replica through the C ABI (vs section 1's Rust call)
#   5. bindings/go                       a pick through cgo vs the same picks in a C loop
#   6. bindings/ruby/bench/pick.rb       a pick through Ruby FFI (vs section 4's C call)
#   7. cargo bench --bench tls           read_conn over TLS vs plain TCP
#   8. cargo bench --bench readpath      read_conn vs direct r2d2 pools (defaults, tuned), pgpool-II
#                                        and the primary alone; the first sticky read after a write
#   9. bindings/ruby/bench/pools.rb      with_replica vs a plain pooled PG::Connection (Ruby)
# The measuring commands run under `nice -n -5` when allowed (the machine may be shared).
# The "Chaos soak" section at the end of BENCHMARKS.md comes from scripts/soak.sh, not from here:
# it is copied over unchanged.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/bootstrap.sh >/dev/null
bash scripts/testenv.sh up >/dev/null
eval "$(bash scripts/testenv.sh env)"

# pgpool-II (Debian's pgpool2), for section 8 only: installed here, not by bootstrap.sh (no
# test needs it).
if ! command -v pgpool >/dev/null; then
    apt-get install -y --no-install-recommends pgpool2 >/dev/null
fi
# Higher priority for the measuring processes when allowed; plain otherwise.
nice_bench=()
if nice -n -5 true 2>/dev/null; then
    nice_bench=(nice -n -5)
fi

out=$(mktemp)
pgpool_dir=$(mktemp -d)
pgpool_conf="$pgpool_dir/pgpool.conf"
stop_pgpool() {
    if [[ -f $pgpool_dir/pgpool.pid ]]; then
        pgpool -f "$pgpool_conf" -F "$pgpool_dir/pcp.conf" -m fast stop >/dev/null 2>&1 || true
    fi
    rm -rf "$pgpool_dir"
}
trap 'rm -f "$out"; stop_pgpool' EXIT

# pgpool-II in front of the test environment's primary and replicas, statement-level load
# balancing over the replicas (the primary has weight 0), on its own loopback port. Prints its
# DSN once it answers.
start_pgpool() {
    local pg_port=${DLB_TESTENV_PG_PORT:-55432}
    local port=$((pg_port + 30))
    local replicas
    IFS=, read -r -a replicas <<<"$DLB_TEST_REPLICAS"
    {
        printf "%s\n" "backend_clustering_mode = 'streaming_replication'" \
            "listen_addresses = '127.0.0.1'" "port = $port" \
            "pcp_listen_addresses = ''" "pcp_port = $((port + 1))" \
            "unix_socket_directories = '$pgpool_dir'" "pcp_socket_dir = '$pgpool_dir'" \
            "pid_file_name = '$pgpool_dir/pgpool.pid'" "logdir = '$pgpool_dir'" \
            "backend_hostname0 = '127.0.0.1'" "backend_port0 = $pg_port" "backend_weight0 = 0" \
            "backend_flag0 = 'ALWAYS_PRIMARY|DISALLOW_TO_FAILOVER'" \
            "load_balance_mode = on" "statement_level_load_balance = on" \
            "sr_check_period = 0" "health_check_period = 0" "enable_pool_hba = off" \
            "num_init_children = 32" "max_pool = 4" "failover_on_backend_error = off"
        local i=1 r
        for r in "${replicas[@]}"; do
            printf "%s\n" "backend_hostname$i = '${r%:*}'" "backend_port$i = ${r##*:}" \
                "backend_weight$i = 1" "backend_flag$i = 'DISALLOW_TO_FAILOVER'"
            i=$((i + 1))
        done
    } >"$pgpool_conf"
    : >"$pgpool_dir/pcp.conf"
    pgpool -n -f "$pgpool_conf" -F "$pgpool_dir/pcp.conf" >"$pgpool_dir/log" 2>&1 &
    local dsn="host=127.0.0.1 port=$port user=postgres dbname=dlb_test"
    for _ in $(seq 1 100); do
        if psql "$dsn" -Atc 'SELECT 1' >/dev/null 2>&1; then
            echo "$dsn"
            return 0
        fi
        sleep 0.1
    done
    echo "bench: pgpool-II did not start (see below); section 8 goes without it" >&2
    tail -5 "$pgpool_dir/log" >&2
}
section() { printf '\n==> %s\n' "$*" >&2; }

{
    cat <<EOF
# Benchmarks

Produced by \`bash scripts/bench.sh\` (which rewrote this file) on $(date -u +%Y-%m-%d), on a
machine with $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')),
$(free -g | awk '/^Mem/ {print $2}') GiB of memory, against the local test environment
(\`scripts/testenv.sh\`: PostgreSQL $(psql --version | awk '{print $3}') primary + 2 streaming
replicas, Redis, a Redis Cluster of 3 masters, all on loopback). Every number is paired with a
baseline measured in the same run; compare ratios, not absolute numbers, across machines.
EOF
    [[ ${DLB_BENCH_QUICK:-0} != 0 ]] && printf '\n**Smoke run (DLB_BENCH_QUICK=1): not for reporting.**\n'

    section "pick"
    printf '\n# 1. Pick without a key (issue: core balancer)\n'
    "${nice_bench[@]}" cargo bench --quiet --bench pick 2>/dev/null

    section "sticky"
    printf '\n# 2. Sticky picks (issue: primary sticking)\n'
    "${nice_bench[@]}" cargo bench --quiet --bench sticky 2>/dev/null

    section "redis_store"
    printf '\n# 3. LSN stores (issue: Redis LSN store)\n'
    cargo bench --quiet --bench redis_store 2>/dev/null

    section "C ABI"
    printf '\n# 4. A pick through the C ABI (issue: C ABI)\n\n'
    printf 'Compare with the 1-thread dlb row of section 1 (the Rust call, same run). The C call\n'
    printf 'also copies the DSN into the caller'"'"'s buffer and fills the route.\n\n```text\n'
    bash ffi-tests/run.sh bench 2>/dev/null | grep -E 'ns/pick|warning' || true
    printf '```\n'

    # shellcheck disable=SC2016 # the backquotes in the printf formats are Markdown
    if [[ -f bindings/go/go.mod ]]; then
        section "Go"
        printf '\n# 5. A pick through cgo (issue: bindings)\n\n'
        printf '`BenchmarkPickReplica`: one cgo call per pick through the Go binding.\n'
        printf '`BenchmarkPickReplicaC`: the same picks in a C loop inside one cgo call (the C cost).\n\n```text\n'
        # lib/pq (the tests' driver) from Debian's source, offline: a generated go.work.
        gowork=$(mktemp --suffix=.work)
        bash bindings/go/gowork.sh "$gowork"
        (cd bindings/go && GOWORK=$gowork GOFLAGS='' GOPROXY=off go test -tags dlb_dev -run '^$' -bench PickReplica -benchtime 2000000x . 2>&1) |
            grep -E '^(Benchmark|goos|goarch|cpu)' || true
        printf '```\n'
        printf '\n## Read-your-writes reads through dlbsql vs opening connections directly\n\n'
        printf '`BenchmarkUpToDateReplica`: a sticky pick and `SELECT 1`, through `dlbsql` (pooled `*sql.DB` per host) vs\n'
        printf '`sql.Open` on the picked DSN for every read (same run).\n\n```text\n'
        (cd bindings/go && GOWORK=$gowork GOFLAGS='' GOPROXY=off go test -tags dlb_dev -run '^$' -bench UpToDateReplica -benchtime 3000x . 2>&1) |
            grep -E '^Benchmark' || true
        printf '```\n'
        rm -f "$gowork" "$gowork.sum"
    fi

    if [[ -f bindings/ruby/bench/pick.rb ]]; then
        section "Ruby"
        printf '\n# 6. A pick through Ruby FFI (issue: bindings)\n\n'
        printf 'Compare with the C ABI call of section 4 (same run).\n\n```text\n'
        ruby bindings/ruby/bench/pick.rb 2>&1 || true
        printf '```\n'
    fi
    section "tls"
    printf '\n# 7. TLS to PostgreSQL (issue: TLS)\n'
    cargo bench --quiet --bench tls 2>/dev/null

    section "readpath"
    printf '\n# 8. The read path: pooled reads and the first sticky read after a write (issue: read path)\n'
    DLB_BENCH_PGPOOL=$(start_pgpool) "${nice_bench[@]}" cargo bench --quiet --bench readpath 2>/dev/null

    if [[ -f bindings/ruby/bench/pools.rb ]]; then
        section "Ruby pools"
        printf '\n# 9. with_replica through the Ruby pools (issue: Ruby adoption)\n\n'
        printf 'Baselines in the same run: ConnectionPools of PG::Connection per replica, no dlb.\n\n'
        ruby bindings/ruby/bench/pools.rb 2>&1 || true
    fi

    cat <<'NOTES'

# Notes

- Section 1: a keyless pick announces the snapshot in its thread's hazard slot (a plain store;
  no fence where `membarrier` is available), advances its stripe's cursor and counts the pick
  on its stripe (loads and stores: a thread owns its stripe while it lives, so no atomic
  read-modify-write is needed), and clones its stripe's host handle for the returned `Route`
  (one increment, one decrement when the route is dropped): two atomic read-modify-writes,
  against four for the baseline (lock, unlock, `Arc` clone and drop). With two threads the
  mutex is contended while dlb's threads write only to their own stripes, so dlb scales with
  the threads and the baseline does not — when both threads really run at once: read the
  CPU/wall column (on a shared machine it can be far below the thread count, and then
  neither side is contended).
- Section 2: dlb's sticky picks at steady state issue no replica query at all; right after a
  write the first pick checks the round-robin candidate on an idle connection of its live
  checker, on the caller's thread (one round trip; no thread started or woken), then the
  others only if it is behind (the monitor's cache is behind by construction), and the next
  picks are served from the updated cache.
- Section 3: with Redis each sticky pick is one `GET` round trip on loopback; picks without a
  key never touch Redis.
- Section 7: on pooled connections TLS costs little (encryption of small messages on
  loopback); the handshake (certificate chain and name verification, key exchange) is paid
  once per pooled connection, so it shows in the first connection and after
  `pool.max_lifetime_s`. Compare the plain/TLS ratio within a row: with one thread on a small
  machine both sides are slow (not investigated; likely wake-up latency).
- Section 8 (a): every side runs the same client code (`query_one` of a point `SELECT`, so a
  prepare and an execute: two round trips) on 8 threads; only the way a connection is had
  differs. "Tuned direct pools" is what a caller who hand-tunes r2d2 gets (no test query on
  checkout, connections opened up front): the baseline dlb's `read_conn` is held against,
  with the same pool sizes. "Client CPU per read" (user + system) is the bench process's CPU time (all its
  threads) over its reads: where the time goes on this side of the socket. The last dlb row
  is not the same client code: `Conn::prepare_cached` keeps the statement prepared on each
  pooled connection, so a read is one round trip instead of two.
  r2d2's defaults add a test query per checkout. The sticky `read_conn` checks its connection
  in the round trip that proves it has replayed the key's LSN (and rolls back a transaction
  an earlier borrower left open), so it costs one round trip more than the keyless one.
  pgpool-II (statement-level load balancing, `scripts/bench.sh` starts it on its own port)
  adds a process hop and its own parsing on every statement. "Primary only" reads without
  load balancing at all: on one machine the replicas and the primary share the same two
  cores, so spreading reads does not add capacity here; it is the reference for what load
  balancing costs, not for what it gains. Ratios are per round against the tuned pools of the
  same round; the spread (min..max) says how much the shared machine moved them.
- Section 8 (b): the time from a sticky read's call to a routed answer right after
  `record_lsn` (the cache cannot know the new LSN yet), against the one-query baseline of
  section 2 (c): `read_conn(Some(key))` includes its checkout and the check on the very
  connection it hands out (one simple-protocol round trip); `pick_replica(Some(key))` checks
  the round-robin candidate on an idle connection of its live checker, on the caller's
  thread (one simple-protocol round trip, no thread wake-up). The baseline makes three round
  trips (r2d2's test query, then a prepare and an execute); right after a write the replica
  is busy replaying it, so every round trip here is slower than on an idle replica.
NOTES
    # The chaos soak's section is not produced here (scripts/soak.sh runs it): kept as it was.
    if [[ -f BENCHMARKS.md ]]; then
        awk '/^# Chaos soak/ { keep = 1; print "" } keep' BENCHMARKS.md
    fi
} >"$out"

cp "$out" BENCHMARKS.md
echo "bench: wrote BENCHMARKS.md" >&2
