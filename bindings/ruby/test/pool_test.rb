# frozen_string_literal: true

require_relative "test_helper"

# with_replica / with_primary over per-host pools of PG::Connection, on the real cluster.
class PoolTest < Minitest::Test
  include DLBTest

  TABLE = "dlb_ruby_pool_tests"

  def setup
    @lb = DLB::Balancer.new(config)
    wait_healthy(@lb)
    @lb.with_primary do |conn|
      conn.exec("SET client_min_messages = warning")
      conn.exec("CREATE TABLE IF NOT EXISTS #{TABLE} (id bigserial PRIMARY KEY, key text NOT NULL)")
    end
  end

  def teardown
    resume_replicas
    @lb&.close
  end

  def port(conn)
    conn.exec("SELECT inet_server_port()").getvalue(0, 0)
  end

  def reported_failures
    @lb.metrics[/^dlb_reported_failures_total (\d+)$/, 1].to_i
  end

  def test_reads_go_to_replicas_and_writes_to_the_primary
    primary_port = port_of(PRIMARY)
    assert_equal(primary_port, @lb.with_primary { |conn| port(conn) })
    ports = Array.new(10) { @lb.with_replica { |conn| port(conn) } }
    assert_equal REPLICAS.map { |r| r.split(":").last }.sort, ports.uniq.sort
    # Pooled: ten reads over two replicas opened at most one connection per replica.
    backends = Array.new(10) { @lb.with_replica { |conn| [port(conn), conn.backend_pid] } }.uniq
    assert_equal 2, backends.size
  end

  # Read-your-writes through the pools: with replica 2 paused, a keyed read after the write
  # never reaches it, and sees the row.
  def test_keyed_reads_see_the_write
    pause_replica_replay(2)
    20.times do |i|
      key = "pool:#{i}"
      id = @lb.with_primary do |conn|
        conn.exec_params("INSERT INTO #{TABLE} (key) VALUES ($1) RETURNING id", [key]).getvalue(0, 0)
      end
      @lb.record_lsn(key)
      rows = @lb.with_replica(key) do |conn|
        refute_equal replica_port(2), port(conn), "the paused replica served #{key}"
        conn.exec_params("SELECT 1 FROM #{TABLE} WHERE id = $1", [id]).ntuples
      end
      assert_equal 1, rows, "row #{id} not visible"
    end
  end

  # A connection killed under the block: the host is reported, the connection discarded,
  # and the block runs once more on a new pick.
  def test_connection_error_reports_discards_and_retries_once
    killer = PG.connect(replica_dsn(1))
    victim_port = replica_port(1)
    before = reported_failures
    runs = []
    value = @lb.with_replica do |conn|
      runs << port(conn)
      if runs.size == 1 && runs.first == victim_port
        killer.exec_params("SELECT pg_terminate_backend($1, 5000)", [conn.backend_pid])
      elsif runs.size == 1
        # Landed on replica 2: kill that one instead (through its own admin connection).
        PG.connect(replica_dsn(2)).tap { |c| c.exec_params("SELECT pg_terminate_backend($1, 5000)", [conn.backend_pid]) }.close
      end
      conn.exec("SELECT 42").getvalue(0, 0)
    end
    assert_equal "42", value
    assert_equal 2, runs.size, "the block ran #{runs.size} times"
    assert_operator reported_failures, :>, before, "the failed host was not reported"
    # The dead connection was discarded: every pooled connection answers.
    10.times { assert_equal("1", @lb.with_replica { |conn| conn.exec("SELECT 1").getvalue(0, 0) }) }
  ensure
    killer&.close
  end

  # No retry once the block wrote; other errors pass through and keep the connection.
  def test_no_retry_after_a_write_and_statement_errors_keep_the_connection
    runs = 0
    err = assert_raises(PG::Error) do
      @lb.with_replica do |conn|
        runs += 1
        @lb.with_primary { |w| w.exec("SELECT 1") }
        conn.exec("SELECT pg_terminate_backend(pg_backend_pid())")
      end
    end
    assert_kind_of DLB::ConnectionLost, err
    assert_equal 1, runs, "retried after a write"

    pids = []
    assert_raises(PG::UndefinedTable) do
      @lb.with_replica do |conn|
        pids << conn.backend_pid
        conn.exec("SELECT * FROM no_such_table_here")
      end
    end
    pid = nil
    wait_until("the same replica connection again") do
      @lb.with_replica { |conn| pid = conn.backend_pid }
      pid == pids.first
    end
  end

  def test_pool_size_bounds_connections_per_host
    lb = DLB::Balancer.new(config(replicas: { hosts: [REPLICAS.first] })).configure_pools(size: 2, checkout_timeout_ms: 50)
    wait_healthy(lb, 1)
    held = Queue.new
    release = Queue.new
    holders = Array.new(2) do
      Thread.new do
        lb.with_replica do
          held << 1
          release.pop
        end
      end
    end
    2.times { held.pop }
    assert_raises(ConnectionPool::TimeoutError) { lb.with_replica { flunk "a third connection" } }
    2.times { release << 1 }
    holders.each(&:join)
    assert_equal("1", lb.with_replica { |conn| conn.exec("SELECT 1").getvalue(0, 0) })
  ensure
    lb&.close
  end
end
