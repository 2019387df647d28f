# frozen_string_literal: true

# The cost of DLB::Balancer#with_replica against a plain pooled PG::Connection, same run,
# against the test cluster:
#
#   bash scripts/testenv.sh up && eval "$(bash scripts/testenv.sh env)"
#   cargo build --release --lib
#   ruby bindings/ruby/bench/pools.rb          # DLB_BENCH_SECONDS per case (default 2)
#
# Baselines: a ConnectionPool of PG::Connection per replica (what an app without dlb keeps),
# replica 1's alone and both in turn.
# dlb: with_replica (a pick, then the picked host's ConnectionPool), without and with a
# sticking key (whose LSN every replica has replayed: caught_up_cached). Each case checks out
# a connection and runs SELECT 1 on it, and, to show the bookkeeping alone, checks out and
# runs nothing. The four ways are interleaved call by call (each call timed), in ROUNDS
# rounds; the ratio is the median of the per-round ratios dlb / both plain pools in turn.
# DLB_BENCH_RESET=always measures the pools' reset: :always (the default, :auto, resets only a
# connection that shows it may carry state: none does here).

require_relative "helper"
require "connection_pool"
require "pg"

lock_cluster
lb = open_balancer
# DLB_BENCH_RESET=always: the pools reset every connection given back (one more round trip).
reset = ENV.fetch("DLB_BENCH_RESET", "")
lb.configure_pools(reset: reset.to_sym) unless reset.empty?
begin
  key = replayed_key(lb)

  # Baselines: one ConnectionPool per replica, as an app without dlb keeps; one pool only,
  # and both pools in turn (dlb spreads the reads over both replicas, so does this one).
  plains = env!("DLB_TEST_REPLICAS").split(",").map do |replica|
    host, port = replica.split(":")
    dsn = env!("DLB_TEST_PRIMARY").split.reject { |kv| kv.start_with?("host=", "port=") }
    dsn.push("host=#{host}", "port=#{port}")
    ConnectionPool.new(size: DLB::Pools::DEFAULT_SIZE, timeout: 5) { PG.connect(dsn.join(" ")) }
  end
  turn = 0
  alternate = ->(&blk) { plains[(turn += 1) % plains.size].with(&blk) }

  query = ->(conn) { conn.exec("SELECT 1").getvalue(0, 0) }
  cases = {
    "SELECT 1" => [-> { plains[0].with(&query) }, -> { alternate.call(&query) }, -> { lb.with_replica(&query) },
                   -> { lb.with_replica(key, &query) }],
    "checkout only" => [-> { plains[0].with { |c| c } }, -> { alternate.call { |c| c } }, -> { lb.with_replica { |c| c } },
                        -> { lb.with_replica(key) { |c| c } }]
  }
  puts "dlb #{DLB::VERSION} (libdlb #{DLB.library_version}), #{RUBY_DESCRIPTION}, pg #{PG::VERSION}, " \
       "connection_pool #{ConnectionPool::VERSION}, pools reset: #{reset.empty? ? 'auto' : reset}"
  puts "#{SECONDS_PER_CASE} s per case in #{ROUNDS} rounds, calls interleaved, one thread; medians (ratio: of " \
       "per-round ratios to the two plain pools in turn)"
  puts
  puts "| per call | plain, 1 pool ops/s | plain, 2 pools in turn ops/s | with_replica ops/s | ratio | " \
       "with_replica(key) ops/s | ratio | with_replica overhead |"
  puts "|---|---:|---:|---:|---:|---:|---:|---:|"
  median = ->(list) { list.sort[list.size / 2] }
  # The cases' operations interleaved one call each, timed call by call: load on the machine
  # (2 cores shared with builds) then hits every case alike.
  interleaved = lambda do |ops, seconds|
    spent = Array.new(ops.size, 0.0)
    calls = 0
    stop = now + seconds
    while now < stop
      ops.each_with_index do |op, i|
        start = now
        op.call
        spent[i] += now - start
      end
      calls += 1
    end
    spent.map { |t| calls / t }
  end
  cases.each do |name, ops|
    interleaved.call(ops, 0.1) # warm-up: every pool connected
    rates = Array.new(ROUNDS) { interleaved.call(ops, SECONDS_PER_CASE / ROUNDS) }
    one, two, rr, keyed = (0..3).map { |i| median.call(rates.map { |row| row[i] }) }
    ratio_rr = median.call(rates.map { |row| row[2] / row[1] })
    ratio_keyed = median.call(rates.map { |row| row[3] / row[1] })
    printf("| %s | %.0f | %.0f | %.0f | %.2f | %.0f | %.2f | %.1f µs |\n", name, one, two, rr, ratio_rr, keyed, ratio_keyed,
           (1e6 / rr) - (1e6 / two))
  end
ensure
  plains&.each { |pool| pool.shutdown(&:close) }
  lb.close
end
