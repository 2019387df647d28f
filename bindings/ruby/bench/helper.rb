# frozen_string_literal: true

# Shared by the Ruby benchmarks (pick.rb, pools.rb): settings, timing and the cluster lock.

$LOAD_PATH.unshift(File.expand_path("../lib", __dir__))
require "dlb"
require "json"

SECONDS_PER_CASE = Float(ENV.fetch("DLB_BENCH_SECONDS", "2"))
ROUNDS = Integer(ENV.fetch("DLB_BENCH_ROUNDS", "5"))

def env!(name)
  value = ENV.fetch(name, "")
  abort "#{name} is not set: bash scripts/testenv.sh up && eval \"$(bash scripts/testenv.sh env)\"" if value.empty?
  value
end

def now
  Process.clock_gettime(Process::CLOCK_MONOTONIC)
end

# Runs the block in batches for +seconds+ (after a short warm-up), split in ROUNDS rounds;
# returns the operations/s of every round (the best one is the least disturbed by other
# load on the machine).
def measure(batch = 1000, seconds: SECONDS_PER_CASE, rounds: ROUNDS)
  warm_until = now + [seconds / 10, 0.05].max
  yield batch while now < warm_until
  Array.new(rounds) do
    count = 0
    start = now
    stop = start + (seconds / rounds)
    while now < stop
      yield batch
      count += batch
    end
    count / (now - start)
  end
end

# Holds the tests' cluster lock while it measures, so that no test pauses or stops a replica
# meanwhile (unless DLB_TESTS_LOCKED=1: the caller holds it).
def lock_cluster
  return if ENV["DLB_TESTS_LOCKED"] == "1"

  lock_path = ENV.fetch("DLB_TESTS_LOCK", "/tmp/dlb-tests.lock")
  $dlb_bench_lock = File.open(lock_path, File::RDWR | File::CREAT, 0o666) # rubocop:disable Style/GlobalVars -- held until exit
  return if $dlb_bench_lock.flock(File::LOCK_EX | File::LOCK_NB) # rubocop:disable Style/GlobalVars

  warn "waiting for the cluster lock #{lock_path} (tests running?)"
  $dlb_bench_lock.flock(File::LOCK_EX) # rubocop:disable Style/GlobalVars
end

# The test cluster's configuration, once every replica is healthy (at most 30 s).
def open_balancer(extra = {})
  config = { primary: env!("DLB_TEST_PRIMARY"), replicas: { hosts: env!("DLB_TEST_REPLICAS").split(",") },
             replica_check_interval_ms: 100 }.merge(extra)
  lb = DLB::Balancer.new(config)
  deadline = now + 30
  until lb.status["healthy_replicas"] == config[:replicas][:hosts].size
    abort "replicas not healthy after 30 s: #{lb.status_json}" if now > deadline
    sleep 0.02
  end
  lb
end

# A sticking key whose recorded LSN every replica has replayed (0/1): its picks are
# caught_up_cached.
def replayed_key(lb)
  key = "bench:replayed"
  lb.record_lsn_value(key, "0/1")
  raise "unexpected route" unless lb.pick_replica(key).reason == :caught_up_cached

  key
end
