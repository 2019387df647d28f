# frozen_string_literal: true

require_relative "../test_helper"

# Handle lifecycle under GC.stress (a full GC at every allocation): balancers created, used
# (pools and their event thread included) and dropped without close (freed by their
# FFI::AutoPointer finalizers once the event thread stopped), closed, and closed from block
# form, with every output-buffer and error path exercised. Nothing may crash,
# and dropped balancers must really be freed (their native threads end).
#
# Slow by nature: run it alone (test.sh does), with few iterations
# (DLB_GC_STRESS_ITERATIONS, default 6).
class GCStressTest < Minitest::Test
  include DLBTest

  ITERATIONS = Integer(ENV.fetch("DLB_GC_STRESS_ITERATIONS", "6"))

  # Every balancer has one "dlb-monitor" native thread, joined by lb_balancer_free. (Its
  # pools' "dlb-pool-N" threads end on their own, up to 30 s later: not counted.)
  def monitor_threads
    Dir.children("/proc/self/task").count do |tid|
      File.read("/proc/self/task/#{tid}/comm").strip == "dlb-monitor"
    rescue SystemCallError
      false # the thread ended meanwhile
    end
  end

  # Everything a caller does with a balancer, errors included.
  # With +pools+, also a pooled query (slow under GC.stress: a few balancers only).
  def exercise(lb, pools: false)
    lb.pick_replica
    lb.record_lsn_value("gc:key", "0/1")
    lb.pick_replica("gc:key")
    lb.pick_replica_min_lsn("0/1")
    lb.primary_dsn
    lb.status
    lb.metrics
    lb.pick("gc:key", budget_ms: 50)
    # Pools, and their host event thread (which keeps the C handle alive until it stops).
    lb.with_replica { |conn| conn.exec("SELECT 1") } if pools
    assert_raises(DLB::InvalidLsnError) { lb.record_lsn_value("gc:key", "not-an-lsn") }
    assert_raises(DLB::InvalidKeyError) { lb.pick_replica("") }
    assert_raises(DLB::UnknownHostError) { lb.report_failure("nowhere:1") }
  end

  # Creates and uses balancers, dropping them without close. In a method of its own so that
  # no local variable keeps them alive afterwards.
  def create_and_drop(count, cfg)
    count.times { |i| exercise(DLB::Balancer.new(cfg), pools: i.zero?) }
    nil
  end

  def test_handle_lifecycle_under_gc_stress
    # Short probes: every balancer checks the hosts once before it is returned.
    cfg = config(probe_timeout_ms: 5000)
    assert_equal 0, monitor_threads
    GC.stress = true
    begin
      create_and_drop(ITERATIONS, cfg)
      lb = DLB::Balancer.new(cfg)
      exercise(lb, pools: true)
      lb.close
      lb.close
      assert_raises(DLB::ClosedError) { lb.pick_replica }
      DLB::Balancer.open(cfg) { |b| exercise(b) }
      assert_raises(DLB::InvalidConfigError) { DLB::Balancer.new(cfg.merge(bogus: 1)) }
    ensure
      GC.stress = false
    end

    # The dropped balancers are freed by their finalizers (lb_balancer_free joins their
    # monitor thread). Conservative stack scanning may keep one or two alive for a while;
    # half of them is plenty of proof.
    wait_until("dropped balancers to be freed by GC", timeout: 60, interval: 0.1) do
      GC.start(full_mark: true, immediate_sweep: true)
      monitor_threads <= ITERATIONS / 2
    end
    puts "\n  monitor threads of #{ITERATIONS + 3} balancers left: #{monitor_threads}" if ENV["DLB_RUBY_VERBOSE"]
  end
end
