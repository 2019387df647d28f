# frozen_string_literal: true

require_relative "test_helper"

# Picks against the real cluster: round-robin over both replicas, keys, LSNs, and one
# balancer shared by several Ruby threads.
class RoutingTest < Minitest::Test
  include DLBTest

  def setup
    @lb = DLB::Balancer.new(config)
    wait_healthy(@lb)
  end

  def teardown
    @lb&.close
  end

  def test_round_robin_over_both_replicas
    picks = 2000
    counts = Hash.new(0)
    primary = @lb.primary_dsn
    picks.times do
      route = @lb.pick_replica
      assert_equal %i[replica round_robin], [route.role, route.reason]
      counts[route.dsn] += 1
    end
    assert_equal REPLICAS.size, counts.size, "both replicas are picked: #{counts.keys.map { |d| DLB::DSN.redact(d) }}"
    ports = REPLICAS.each_index.map { |i| replica_port(i + 1) }
    counts.each do |dsn, n|
      assert_includes ports, port_of(dsn)
      refute_equal primary, dsn
      assert_includes dsn, "password=#{PASSWORD}", "the DSN handed out is the real one"
      # Strict alternation while both stay healthy; allow a health change mid-run.
      assert_operator n, :>=, picks / 4, "picks per replica: #{counts.values}"
    end
  end

  def test_picked_dsns_connect_to_their_replica
    REPLICAS.size.times do
      route = @lb.pick_replica
      conn = PG.connect(route.dsn)
      begin
        assert_equal "t", conn.exec("SELECT pg_is_in_recovery()").getvalue(0, 0)
        assert_equal port_of(route.dsn), conn.exec("SHOW port").getvalue(0, 0)
      ensure
        conn.close
      end
    end
  end

  def test_key_without_a_recorded_lsn_is_round_robin
    route = @lb.pick_replica("no-lsn-for-this-key")
    assert_equal %i[replica no_lsn_recorded], [route.role, route.reason]
  end

  def test_key_every_replica_replayed
    @lb.record_lsn_value("replayed", "0/1")
    route = @lb.pick_replica("replayed")
    assert_equal %i[replica caught_up_cached], [route.role, route.reason]
    route = @lb.pick_replica_min_lsn("0/1")
    assert_equal %i[replica caught_up_cached], [route.role, route.reason]
  end

  def test_record_lsn_returns_increasing_lsns
    first = @lb.record_lsn("user:1")
    assert_match(%r{\A\h{1,8}/\h{1,8}\z}, first)
    assert_equal Encoding::UTF_8, first.encoding
    conn = PG.connect(PRIMARY)
    begin
      conn.exec("SELECT txid_current()") # a write: the WAL moves
    ensure
      conn.close
    end
    second = @lb.record_lsn("user:1")
    assert_operator lsn_to_i(second), :>=, lsn_to_i(first)
    # The recorded LSN is a causal token; a replica that replayed it serves it.
    route = wait_until("a replica replaying #{second}") do
      r = @lb.pick_replica_min_lsn(second)
      r if r.replica?
    end
    assert_includes %i[caught_up_cached caught_up_live], route.reason
  end

  def test_threads_share_one_balancer
    threads = 8
    iterations = 500
    @lb.record_lsn_value("replayed", "0/1")
    replica_dsns = Array.new(REPLICAS.size) { @lb.pick_replica.dsn }.sort
    primary = @lb.primary_dsn
    workers = Array.new(threads) do |t|
      Thread.new do
        seen = Hash.new(0)
        iterations.times do |i|
          route = @lb.pick_replica
          raise "unexpected route #{route}" unless route.replica? && route.reason == :round_robin
          raise "unknown DSN" unless replica_dsns.include?(route.dsn)

          seen[route.dsn] += 1
          next unless (i % 16).zero?

          sticky = @lb.pick_replica("replayed")
          raise "unexpected sticky route #{sticky}" unless sticky.reason == :caught_up_cached

          # This thread's error message, whatever the other threads do meanwhile.
          bad = "bad-lsn-of-thread-#{t}-#{i}"
          begin
            @lb.record_lsn_value("thread:#{t}", bad)
            raise "no error for #{bad}"
          rescue DLB::InvalidLsnError => e
            raise "thread #{t} got another thread's error: #{e.message}" unless e.message.include?(bad)
          end
          @lb.report_failure(primary) if (i % 128).zero?
          text = i.even? ? @lb.metrics : @lb.status_json
          raise "secret in #{i.even? ? 'metrics' : 'status'}" if text.include?(PASSWORD)
        end
        seen
      end
    end
    totals = workers.map(&:value).each_with_object(Hash.new(0)) { |seen, acc| seen.each { |d, n| acc[d] += n } }
    assert_equal threads * iterations, totals.values.sum
    assert_equal replica_dsns, totals.keys.sort
  end

  def test_sticky_picks_not_caught_up_from_threads
    # Sticky picks on several threads at once (blocking calls: the GVL is released), with
    # keys whose LSN no replica has replayed, while the main thread keeps picking.
    workers = Array.new(4) do |t|
      Thread.new do
        key = "future:#{t}"
        @lb.record_lsn_value(key, "FFFFFFFF/0")
        Array.new(5) { @lb.pick_replica(key) }
      end
    end
    roles = Hash.new(0)
    loop do
      roles[@lb.pick_replica.role] += 1
      break unless workers.any?(&:alive?)
    end
    assert_equal [:replica], roles.keys
    workers.each do |w|
      w.value.each { |r| assert_equal %i[primary not_caught_up], [r.role, r.reason] }
    end
  end

  def test_close_while_other_threads_pick
    lb = DLB::Balancer.new(config)
    wait_healthy(lb)
    started = Queue.new
    workers = Array.new(6) do |t|
      Thread.new do
        n = 0
        begin
          loop do
            t.even? ? lb.pick_replica : lb.pick_replica("k#{t}")
            n += 1
            started << true if n == 10
          end
        rescue DLB::ClosedError
          n
        end
      end
    end
    workers.size.times { started.pop }
    lb.close
    assert(workers.map(&:value).all?(&:positive?))
    assert lb.closed?
    assert_raises(DLB::ClosedError) { lb.pick_replica }
  end
end
