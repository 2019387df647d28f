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
#   8. bindings/ruby/bench/pools.rb      with_replica vs a plain pooled PG::Connection (Ruby)
# The "Chaos soak" section at the end of BENCHMARKS.md comes from scripts/soak.sh, not from here:
# it is copied over unchanged.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/bootstrap.sh >/dev/null
bash scripts/testenv.sh up >/dev/null
eval "$(bash scripts/testenv.sh env)"

out=$(mktemp)
trap 'rm -f "$out"' EXIT
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
    cargo bench --quiet --bench pick 2>/dev/null

    section "sticky"
    printf '\n# 2. Sticky picks (issue: primary sticking)\n'
    cargo bench --quiet --bench sticky 2>/dev/null

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
        (cd bindings/go && GOFLAGS=-mod=mod GOPROXY=off go test -tags dlb_dev -run '^$' -bench PickReplica -benchtime 2000000x . 2>&1) |
            grep -E '^(Benchmark|goos|goarch|cpu)' || true
        printf '```\n'
        printf '\n## Read-your-writes reads through dlbsql vs opening connections directly\n\n'
        printf '`BenchmarkUpToDateReplica`: a sticky pick and `SELECT 1`, through `dlbsql` (pooled `*sql.DB` per host) vs\n'
        printf '`sql.Open` on the picked DSN for every read (same run).\n\n```text\n'
        (cd bindings/go && GOFLAGS=-mod=mod GOPROXY=off go test -tags dlb_dev -run '^$' -bench UpToDateReplica -benchtime 3000x . 2>&1) |
            grep -E '^Benchmark' || true
        printf '```\n'
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

    if [[ -f bindings/ruby/bench/pools.rb ]]; then
        section "Ruby pools"
        printf '\n# 8. with_replica through the Ruby pools (issue: Ruby adoption)\n\n'
        printf 'Baselines in the same run: ConnectionPools of PG::Connection per replica, no dlb.\n\n'
        ruby bindings/ruby/bench/pools.rb 2>&1 || true
    fi

    cat <<'NOTES'

# Notes

- Section 1: with one thread an uncontended `Mutex<usize>` costs less than dlb's pick, which
  pins an epoch, reads the snapshot, advances its cursor stripe, counts the pick and clones
  a host handle for the returned `Route`. With two threads the mutex is contended while dlb's
  threads write only to their own stripes (cursor, counters, cache-aligned host handles), so
  dlb scales with the threads and the baseline does not.
- Section 2: dlb's sticky picks at steady state issue no replica query at all; right after a
  write the first pick asks the healthy replicas live, once and in parallel (the monitor's
  cache is behind by construction), and the next picks are served from the updated cache.
- Section 3: with Redis each sticky pick is one `GET` round trip on loopback; picks without a
  key never touch Redis.
- Section 7: on pooled connections TLS costs little (encryption of small messages on
  loopback); the handshake (certificate chain and name verification, key exchange) is paid
  once per pooled connection, so it shows in the first connection and after
  `pool.max_lifetime_s`. Compare the plain/TLS ratio within a row: with one thread on a small
  machine both sides are slow (not investigated; likely wake-up latency).
NOTES
    # The chaos soak's section is not produced here (scripts/soak.sh runs it): kept as it was.
    if [[ -f BENCHMARKS.md ]]; then
        awk '/^# Chaos soak/ { keep = 1; print "" } keep' BENCHMARKS.md
    fi
} >"$out"

cp "$out" BENCHMARKS.md
echo "bench: wrote BENCHMARKS.md" >&2
