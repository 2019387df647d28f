# frozen_string_literal: true

require_relative "test_helper"

# Read-your-writes against a replica whose WAL replay is paused: every write is read back
# through the route picked for its key, and the paused replica is never picked for it.
class StickyTest < Minitest::Test
  include DLBTest

  PAUSED = 2
  CAUGHT_UP = 1
  TABLE = "dlb_ruby_tests"
  KEY = "repo:gitlab-org/container-registry"
  ITERATIONS = Integer(ENV.fetch("DLB_RUBY_STICKY_ITERATIONS", "200"))

  def setup
    @conns = {}
    @primary = PG.connect(PRIMARY)
    @primary.exec("SET client_min_messages = warning")
    @primary.exec("CREATE TABLE IF NOT EXISTS #{TABLE} (id bigserial PRIMARY KEY, key text NOT NULL, " \
                  "at timestamptz NOT NULL DEFAULT now())")
    @lb = DLB::Balancer.new(config)
    wait_healthy(@lb)
    @paused_port = replica_port(PAUSED)
    @caught_up_port = replica_port(CAUGHT_UP)
  end

  def teardown
    # Replicas must be left running and replaying, also when a test failed.
    testenv("resume-replica", PAUSED.to_s)
    @conns.each_value(&:close)
    @primary&.close
    @lb&.close
  end

  # Pauses replay on the replica (see DLBTest#pause_replica_replay).
  def pause_replica
    pause_replica_replay(PAUSED)
  end

  def conn_for(dsn)
    @conns[dsn] ||= PG.connect(dsn)
  end

  def insert(key)
    @primary.exec_params("INSERT INTO #{TABLE} (key) VALUES ($1) RETURNING id", [key]).getvalue(0, 0)
  end

  def visible?(route, id)
    conn_for(route.dsn).exec_params("SELECT 1 FROM #{TABLE} WHERE id = $1", [id]).ntuples == 1
  end

  # Never the paused replica; a replica only when caught up; else the primary.
  def check_route(route, what)
    refute_equal @paused_port, port_of(route.dsn), "#{what}: the paused replica was picked (#{route})"
    if route.replica?
      assert_equal @caught_up_port, port_of(route.dsn), what
      assert_includes %i[caught_up_cached caught_up_live], route.reason, what
    else
      assert_equal :not_caught_up, route.reason, what
      assert_equal @lb.primary_dsn, route.dsn
    end
    route.replica?
  end

  def test_read_your_writes_with_a_paused_replica
    paused_lsn = pause_replica
    on_replica = 0
    last_lsn = nil
    ITERATIONS.times do |i|
      id = insert(KEY)
      last_lsn = @lb.record_lsn(KEY)
      assert_operator lsn_to_i(last_lsn), :>, lsn_to_i(paused_lsn), "the write is past the paused replica"
      route = @lb.pick_replica(KEY)
      on_replica += 1 if check_route(route, "iteration #{i}")
      assert visible?(route, id), "iteration #{i}: row #{id} not visible via #{route}"

      # The LSN as a causal token, used directly or recorded for another key.
      route = @lb.pick_replica_min_lsn(last_lsn)
      check_route(route, "min_lsn #{last_lsn}")
      assert visible?(route, id), "iteration #{i}: row #{id} not visible via #{route} (min_lsn)"
      @lb.record_lsn_value("job:#{i}", last_lsn)
      route = @lb.pick_replica("job:#{i}")
      check_route(route, "job:#{i}")
      assert visible?(route, id), "iteration #{i}: row #{id} not visible via #{route} (job)"
    end

    # The caught-up replica serves the key once it replays (within milliseconds): the test
    # exercises the replica path, not only the primary fallback.
    route = wait_until("the caught-up replica to serve #{KEY}") do
      r = @lb.pick_replica(KEY)
      check_route(r, "after the loop")
      r if r.replica?
    end
    assert_equal @caught_up_port, port_of(route.dsn)
    if ENV["DLB_RUBY_VERBOSE"]
      puts "\n  read-your-writes: #{on_replica}/#{ITERATIONS} sticky reads on the caught-up replica " \
           "right after the write, the rest on the primary"
    end

    # The paused replica is still healthy and in the round-robin rotation, so the checks
    # above mean something.
    ports = Array.new(20) { port_of(@lb.pick_replica.dsn) }
    assert_includes ports, @paused_port, "the paused replica left the rotation; the test proves nothing"
  end

  def test_strict_policy_raises_while_not_caught_up
    pause_replica
    DLB::Balancer.open(config(no_caught_up_replica: "error")) do |strict|
      wait_healthy(strict)
      strict.record_lsn_value("future", "FFFFFFFF/0")
      err = assert_raises(DLB::NoCaughtUpReplicaError) { strict.pick_replica("future") }
      assert err.retryable?
      # A key the caught-up replica has: never the paused one.
      insert(KEY)
      strict.record_lsn(KEY)
      route = wait_until("the caught-up replica to serve #{KEY}") do
        strict.pick_replica(KEY)
      rescue DLB::NoCaughtUpReplicaError
        nil
      end
      assert_equal @caught_up_port, port_of(route.dsn)
    end
  end

  # A store that fails after the LSN was read (a Redis at a dead port): the StoreError
  # carries the LSN, which works as a causal token.
  def test_store_error_carries_the_lsn
    lb = DLB::Balancer.new(config(lsn_store: { redis: { url: "redis://127.0.0.1:1", op_timeout_ms: 200 } }))
    wait_healthy(lb)
    err = assert_raises(DLB::StoreError) { lb.record_lsn("ruby:store-down") }
    assert_predicate err, :retryable?
    assert_match(%r{\A\h{1,8}/\h{1,8}\z}, err.lsn)
    assert_includes err.message, err.lsn
    refute_equal :forced_primary, lb.pick_replica_min_lsn(err.lsn).reason
    # Other errors carry none; a StoreError of another call has no LSN.
    assert_raises(DLB::InvalidKeyError) { lb.record_lsn("") }
    err = assert_raises(DLB::StoreError) { lb.record_lsn_value("ruby:store-down", err.lsn) }
    assert_nil err.lsn
  ensure
    lb&.close
  end
end
