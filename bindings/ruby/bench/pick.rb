# frozen_string_literal: true

# Picks per second through the Ruby binding (ffi), against the test cluster.
#
#   bash scripts/testenv.sh up && eval "$(bash scripts/testenv.sh env)"
#   cargo build --release --lib
#   ruby bindings/ruby/bench/pick.rb              # DLB_BENCH_SECONDS per case (default 2)
#
# Cases: pick_replica(nil) (round-robin: no lock, no I/O, the GVL kept); pick_replica(key)
# for a key whose LSN every replica has replayed (caught_up_cached: a blocking call, the GVL
# released and re-acquired); pick_replica_min_lsn; and, for scale, the bare C call through
# DLB::Native with preallocated buffers (the binding's own overhead is the difference), and
# pick_replica(nil) from several threads (the GVL serializes them).
#
# Holds the tests' cluster lock (/tmp/dlb-tests.lock) while it measures, so that no test
# pauses or stops a replica meanwhile (unless DLB_TESTS_LOCKED=1: the caller holds it).

require_relative "helper"

THREADS = Integer(ENV.fetch("DLB_BENCH_THREADS", "4"))

def report(name, rates)
  best = rates.max
  median = rates.sort[rates.size / 2]
  printf("  %-50s %10.0f picks/s %7.0f ns/pick  (median %9.0f/s)\n", name, best, 1e9 / best, median)
end

lock_cluster
lb = open_balancer
begin
  key = replayed_key(lb)

  puts "dlb #{DLB::VERSION} (libdlb #{DLB.library_version}, #{DLB.library_path}), " \
       "#{RUBY_DESCRIPTION}, ffi #{FFI::VERSION}"
  puts "#{SECONDS_PER_CASE} s per case in #{ROUNDS} rounds, best round (and median); one thread unless noted:"

  handle = lb.instance_variable_get(:@handle)
  buf = FFI::MemoryPointer.new(:char, 256)
  len = FFI::MemoryPointer.new(:size_t)
  route = FFI::MemoryPointer.new(:uint32, 2)
  report("C call only (DLB::Native, no key)", measure do |n|
    n.times { DLB::Native.lb_pick_replica_round_robin(handle, nil, buf, 256, len, route) }
  end)
  report("pick_replica(nil)", measure { |n| n.times { lb.pick_replica } })
  report("pick_replica(nil).dsn", measure { |n| n.times { lb.pick_replica.dsn } })
  report("C call only (DLB::Native, key, blocking: true)", measure do |n|
    n.times { DLB::Native.lb_pick_replica(handle, key, buf, 256, len, route) }
  end)
  report("pick_replica(key) [caught_up_cached]", measure { |n| n.times { lb.pick_replica(key) } })
  report("pick_replica_min_lsn(\"0/1\") [caught_up_cached]", measure { |n| n.times { lb.pick_replica_min_lsn("0/1") } })
  [[nil, "pick_replica(nil)"], [key, "pick_replica(key)"]].each do |k, name|
    rate = measure(THREADS * 1000) do |n|
      Array.new(THREADS) { Thread.new { (n / THREADS).times { lb.pick_replica(k) } } }.each(&:join)
    end
    report("#{name}, #{THREADS} threads (total)", rate)
  end
ensure
  lb.close
end
