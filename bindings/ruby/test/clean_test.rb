# frozen_string_literal: true

require_relative "test_helper"

# with_replica / with_primary hand every connection out clean: a transaction a block left
# (open or aborted) is rolled back, session state it changed is reset. One connection per
# host (pool size 1), so that the next block gets the very connection the previous one left.
class CleanTest < Minitest::Test
  include DLBTest

  TABLE = "dlb_ruby_clean_tests"
  READS = 30
  DEFAULT_SEARCH_PATH = "\"$user\", public"

  def setup
    @lb = open_lb
    @lb.with_primary do |conn|
      conn.exec("SET client_min_messages = warning")
      conn.exec("CREATE TABLE IF NOT EXISTS #{TABLE} (id bigserial PRIMARY KEY, key text NOT NULL)")
    end
  end

  def teardown
    resume_replicas
    @lb&.close
    @other&.close
  end

  def open_lb(**pools)
    lb = DLB::Balancer.new(config).configure_pools(size: 1, **pools)
    wait_healthy(lb)
    lb
  end

  def replica_ports
    REPLICAS.map { |r| r.split(":").last }
  end

  # A block that fails.
  class Failure < StandardError; end

  # Runs the block in with_replica until it ran on every replica (round-robin); +raising+:
  # the block then raises {Failure} out of with_replica.
  def on_every_replica(lb = @lb, raising: false)
    done = []
    wait_until("a block on every replica") do
      begin
        lb.with_replica do |conn|
          port = conn.exec("SELECT inet_server_port()").getvalue(0, 0)
          next if done.include?(port)

          done << port
          yield conn
          raise Failure, "the block fails" if raising
        end
      rescue Failure
        nil
      end
      done.sort == replica_ports.sort
    end
  end

  # Waits until every replica replayed +lsn+ (asked directly).
  def wait_replayed(lsn)
    REPLICAS.each_index do |i|
      conn = PG.connect(replica_dsn(i + 1))
      begin
        wait_until("replica #{i + 1} to replay #{lsn}") do
          conn.exec_params("SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn", [lsn]).getvalue(0, 0) == "t"
        end
      ensure
        conn.close
      end
    end
  end

  def committed?(id)
    conn = PG.connect(PRIMARY)
    conn.exec_params("SELECT 1 FROM #{TABLE} WHERE id = $1", [id]).ntuples == 1
  ensure
    conn&.close
  end

  # (a) A block leaves a REPEATABLE READ transaction open (a snapshot taken) and raises. Old
  # code: the next borrowers of that connection kept reading the old snapshot, 30 stale of
  # 30 keyed reads although every replica had replayed the write.
  def test_a_transaction_left_open_by_a_raising_block_is_rolled_back
    on_every_replica(raising: true) do |conn|
      conn.exec("BEGIN ISOLATION LEVEL REPEATABLE READ")
      conn.exec("SELECT count(*) FROM #{TABLE}") # takes the snapshot
    end
    stale = in_transaction = 0
    READS.times do |i|
      key = "clean:a:#{i}:#{rand(1 << 30)}"
      id = @lb.with_primary do |conn|
        conn.exec_params("INSERT INTO #{TABLE} (key) VALUES ($1) RETURNING id", [key]).getvalue(0, 0)
      end
      wait_replayed(@lb.record_lsn(key))
      rows, status = @lb.with_replica(key) do |conn|
        [conn.exec_params("SELECT 1 FROM #{TABLE} WHERE id = $1", [id]).ntuples, conn.transaction_status]
      end
      stale += 1 if rows.zero?
      in_transaction += 1 unless status == PG::PQTRANS_IDLE
    end
    puts "\n  left-open REPEATABLE READ: #{stale} stale of #{READS}" if ENV["DLB_RUBY_VERBOSE"]
    assert_equal 0, stale, "#{stale} of #{READS} reads stale after every replica replayed the write"
    assert_equal 0, in_transaction, "#{in_transaction} of #{READS} reads handed a connection inside a transaction"
  end

  # The same block without the raise: the transaction it leaves open is rolled back too.
  def test_a_transaction_left_open_by_a_returning_block_is_rolled_back
    on_every_replica do |conn|
      conn.exec("BEGIN ISOLATION LEVEL REPEATABLE READ")
      conn.exec("SELECT count(*) FROM #{TABLE}")
    end
    on_every_replica { |conn| assert_equal PG::PQTRANS_IDLE, conn.transaction_status }
  end

  # (b) with_primary: a write in a transaction nobody commits is rolled back when the
  # connection goes back, and later writes commit. Old code: the later writes landed in
  # that transaction (never committed); after an aborted one, every statement failed.
  def test_with_primary_never_swallows_later_writes
    lost = @lb.with_primary do |conn|
      conn.exec("BEGIN")
      conn.exec("INSERT INTO #{TABLE} (key) VALUES ('clean:b:uncommitted') RETURNING id").getvalue(0, 0)
    end
    ids = Array.new(5) do |i|
      @lb.with_primary do |conn|
        conn.exec_params("INSERT INTO #{TABLE} (key) VALUES ($1) RETURNING id", ["clean:b:#{i}"]).getvalue(0, 0)
      end
    end
    refute committed?(lost), "a transaction left open was committed"
    swallowed = ids.count { |id| !committed?(id) }
    assert_equal 0, swallowed, "#{swallowed} of #{ids.size} later writes landed in the transaction left open"

    # An aborted transaction, the error rescued inside the block.
    @lb.with_primary do |conn|
      conn.exec("BEGIN")
      assert_raises(PG::DivisionByZero) { conn.exec("SELECT 1/0") }
    end
    assert_equal("1", @lb.with_primary { |conn| conn.exec("SELECT 1").getvalue(0, 0) })
  end

  # (d) Session state does not leak: a block that raises after SET search_path, and one that
  # changes a parameter the server reports (TimeZone, application_name), in the default
  # mode; any state with reset: :always. Old code: every one leaked to the next borrower.
  def test_session_state_does_not_leak
    on_every_replica(raising: true) { |conn| conn.exec("SET search_path = pg_catalog") }
    on_every_replica { |conn| assert_equal DEFAULT_SEARCH_PATH, conn.exec("SHOW search_path").getvalue(0, 0) }

    zone = @lb.with_replica { |conn| conn.exec("SHOW TimeZone").getvalue(0, 0) }
    on_every_replica do |conn|
      conn.exec("SET TimeZone = 'Pacific/Chatham'")
      conn.exec("SET application_name = 'borrower'")
    end
    on_every_replica do |conn|
      assert_equal zone, conn.exec("SHOW TimeZone").getvalue(0, 0)
      refute_equal "borrower", conn.exec("SHOW application_name").getvalue(0, 0)
    end
  end

  # Runs +dirty+ (SQL, or a block taking the connection) once on the primary and once on
  # every replica (unless +primary_only+: hot standbys refuse temporary tables and LISTEN),
  # returning normally, in the default reset: :auto; then +READS+ blocks on every host run
  # +probe+ (SQL: its first value is what the next borrower sees) and compare it with
  # +clean+. Each host's next borrower must get the very connection the dirty block left
  # (pool size 1), not a new one. Returns how many reads saw the state left behind.
  def leaked(dirty, probe, clean, primary_only)
    run = dirty.respond_to?(:call) ? dirty : ->(conn) { conn.exec(dirty) }
    pids = [@lb.with_primary { |conn| run.call(conn) && conn.backend_pid }]
    on_every_replica { |conn| pids << (run.call(conn) && conn.backend_pid) } unless primary_only
    wrong = 0
    READS.times do
      hosts = primary_only ? [@lb.method(:with_primary)] : [@lb.method(:with_primary), @lb.method(:with_replica)]
      hosts.each do |with|
        with.call do |conn|
          assert_includes pids, conn.backend_pid, "the next borrower got another connection"
          wrong += 1 unless conn.exec(probe).getvalue(0, 0) == clean
        end
      end
    end
    wrong
  end

  # Asserts that {#leaked} found no read that saw the state (VERBOSE: the count).
  def assert_no_leak(what, dirty, probe, clean, primary_only: false)
    wrong = leaked(dirty, probe, clean, primary_only)
    reads = primary_only ? READS : 2 * READS
    puts "\n  #{what}: #{wrong} of #{reads} reads saw it" if ENV["DLB_RUBY_VERBOSE"]
    assert_equal 0, wrong, "#{wrong} of #{reads} reads saw the #{what} a block left and returned"
  end

  # The value of +setting+ on a connection no block changed.
  def default_of(setting)
    conn = PG.connect(PRIMARY)
    conn.exec("SHOW #{setting}").getvalue(0, 0)
  ensure
    conn&.close
  end

  # A block that returns after SET search_path (not reported to the client before
  # PostgreSQL 18): the next borrowers resolved the unqualified table in another schema. Old
  # code (no reset after a returning block unless a reported parameter changed): every read
  # on PostgreSQL 15 went to the wrong table.
  def test_search_path_set_by_a_returning_block_does_not_leak
    other = "dlb_ruby_clean_other"
    @lb.with_primary do |conn|
      conn.exec("CREATE SCHEMA IF NOT EXISTS #{other}")
      conn.exec("CREATE TABLE IF NOT EXISTS #{other}.#{TABLE} (id bigint)")
      wait_replayed(conn.exec("SELECT pg_current_wal_lsn()").getvalue(0, 0))
    end
    assert_no_leak("search_path", "SET search_path = #{other}, public",
                   "SELECT relnamespace::regnamespace::text FROM pg_class WHERE oid = '#{TABLE}'::regclass",
                   "public")
  end

  def test_other_unreported_settings_do_not_leak
    assert_no_leak("SET SESSION statement_timeout", "SET SESSION statement_timeout = 1234",
                   "SHOW statement_timeout", default_of("statement_timeout"))
    assert_no_leak("set_config", ->(conn) { conn.exec_params("SELECT set_config('work_mem', $1, false)", ["7MB"]) },
                   "SHOW work_mem", default_of("work_mem"))
  end

  def test_set_role_does_not_leak
    assert_no_leak("SET ROLE", "SET ROLE pg_read_all_data", "SELECT current_user", "postgres")
  end

  def test_a_temporary_table_does_not_leak
    assert_no_leak("temporary table", "CREATE TEMP TABLE dlb_clean_temp (x int)",
                   "SELECT to_regclass('pg_temp.dlb_clean_temp')", nil, primary_only: true)
  end

  # An advisory lock left held: the next borrower's session holds it (and no one else can
  # take it until the connection closes).
  def test_an_advisory_lock_does_not_leak
    assert_no_leak("advisory lock", "SELECT pg_advisory_lock(4242)",
                   "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()", "0")
  end

  def test_listen_does_not_leak
    assert_no_leak("LISTEN", "LISTEN dlb_clean", "SELECT count(*) FROM pg_listening_channels()", "0",
                   primary_only: true)
  end

  # Prepared statements, of SQL (PREPARE) and of the protocol (PG::Connection#prepare): left
  # behind, the next borrower's prepare of the same name failed (42P05, already exists).
  def test_prepared_statements_do_not_leak
    count = "SELECT count(*) FROM pg_prepared_statements"
    assert_no_leak("PREPARE", "PREPARE dlb_clean_stmt AS SELECT 1", count, "0")
    assert_no_leak("prepared statement", ->(conn) { conn.prepare("dlb_clean_stmt", "SELECT 1") }, count, "0")
  end

  # The PG::Connection object's own settings: a block that typed its results (a basic type
  # map) gave the next borrowers Integers where they expected Strings. Old code: all of them.
  def test_settings_of_the_connection_object_do_not_leak
    assert_no_leak("type map", ->(conn) { conn.type_map_for_results = PG::BasicTypeMapForResults.new(conn) },
                   "SELECT 1", "1")
  end

  # A block of plain reads costs nothing at check-in: the backend's last statement (seen from
  # another connection) is the block's own, no reset ran after it.
  def test_a_block_of_plain_reads_is_not_reset
    observer = PG.connect(PRIMARY)
    last = lambda do |pid|
      observer.exec_params("SELECT query FROM pg_stat_activity WHERE pid = $1", [pid]).getvalue(0, 0)
    end
    sql = "SELECT count(*) FROM #{TABLE} WHERE key = $1"
    pid = @lb.with_primary do |conn|
      conn.exec("SELECT 1")
      conn.exec_params(sql, ["clean:plain"])
      conn.backend_pid
    end
    assert_equal sql, last.call(pid)
    # A statement that changes the session: reset when the block ends.
    @lb.with_primary { |conn| conn.exec("SET search_path = pg_catalog") }
    assert_equal DLB::Pools::RESET_SQL, last.call(pid)
  ensure
    observer&.close
  end

  # Any session state, with reset: :always, on the primary (temporary tables, LISTEN) and the
  # replicas (hot standbys allow neither).
  def test_reset_always_undoes_any_session_state
    @other = open_lb(reset: :always)
    dirty = lambda do |conn, primary|
      conn.exec("SET search_path = pg_catalog")
      conn.exec("SET statement_timeout = 1234")
      conn.exec("SELECT pg_advisory_lock(4242)")
      conn.exec("PREPARE dlb_clean_stmt AS SELECT 1")
      conn.exec("CREATE TEMP TABLE dlb_clean_temp (x int)") if primary
      conn.exec("LISTEN dlb_clean") if primary
    end
    check = lambda do |conn|
      assert_equal DEFAULT_SEARCH_PATH, conn.exec("SHOW search_path").getvalue(0, 0)
      refute_equal "1234ms", conn.exec("SHOW statement_timeout").getvalue(0, 0)
      locks = conn.exec("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()")
      assert_equal "0", locks.getvalue(0, 0)
      assert_equal "0", conn.exec("SELECT count(*) FROM pg_prepared_statements").getvalue(0, 0)
      assert_nil conn.exec("SELECT to_regclass('pg_temp.dlb_clean_temp')").getvalue(0, 0)
      assert_equal 0, conn.exec("SELECT pg_listening_channels()").ntuples
    end
    pid = @other.with_primary do |conn|
      dirty.call(conn, true)
      conn.backend_pid
    end
    @other.with_primary do |conn|
      assert_equal pid, conn.backend_pid, "the connection was not kept"
      check.call(conn)
    end
    on_every_replica(@other) { |conn| dirty.call(conn, false) }
    on_every_replica(@other) { |conn| check.call(conn) }
  end

  # A reset that fails discards the connection; the next block gets a new one.
  def test_a_failed_reset_discards_the_connection
    pids = []
    assert_raises(RuntimeError) do
      @lb.with_primary do |conn|
        pids << conn.backend_pid
        conn.exec("BEGIN")
        # The server ends the session under the block: the rollback fails.
        killer = PG.connect(PRIMARY)
        killer.exec_params("SELECT pg_terminate_backend($1, 5000)", [conn.backend_pid])
        killer.close
        raise "after the session ended"
      end
    end
    @lb.with_primary do |conn|
      refute_equal pids.first, conn.backend_pid
      assert_equal "1", conn.exec("SELECT 1").getvalue(0, 0)
    end
  end

  # A reset after a statement that changed the session (no transaction) that fails discards
  # the connection too. Old code: no reset ran, the connection stayed pooled (:clean).
  def test_a_failed_reset_of_a_changed_session_discards_the_connection
    slot = DLB::Pools::Slot.new(PRIMARY, ->(dsn) { PG.connect(dsn) })
    conn = slot.connection
    conn.exec("SET search_path = pg_catalog")
    killer = PG.connect(PRIMARY)
    killer.exec_params("SELECT pg_terminate_backend($1, 5000)", [conn.backend_pid])
    killer.close
    assert_equal :discarded, slot.check_in(false)
    refute_same conn, slot.connection
  ensure
    slot&.discard
  end

  # What a check-in does after each kind of statement, on the primary (no other block in
  # between: the slot alone).
  def test_check_in_resets_only_after_a_statement_that_is_not_a_plain_read
    slot = DLB::Pools::Slot.new(PRIMARY, ->(dsn) { PG.connect(dsn) })
    {
      ->(c) { c.exec("SELECT 1") } => :clean,
      ->(c) { c.query("SHOW search_path") } => :clean,
      ->(c) { c.exec_params("SELECT $1::int", [1]) } => :clean,
      ->(c) { c.sync_exec("VALUES (1)") } => :clean,
      ->(c) { [c.send_query("TABLE pg_am"), c.get_last_result] } => :clean,
      ->(c) { c.exec("SET search_path = pg_catalog") } => :reset,
      ->(c) { c.async_exec("SELECT 1; SET work_mem = '7MB'") } => :reset,
      ->(c) { c.exec_params("SELECT set_config('work_mem', $1, false)", ["7MB"]) } => :reset,
      ->(c) { [c.send_query_params("SELECT pg_advisory_lock($1)", [1]), c.get_last_result] } => :reset,
      ->(c) { c.prepare("dlb_clean_slot", "SELECT 1") } => :reset,
      ->(c) { c.transaction { c.exec("SELECT 1") } } => :reset,
      ->(c) { c.exec("SELECT 1") && c.mark_session_changed } => :reset,
      ->(c) { c.exec("SELECT 1") } => :clean # and clean again after a reset
    }.each do |run, expected|
      conn = slot.connection
      run.call(conn)
      assert_equal expected, slot.check_in(false), run.source_location.inspect
      assert_same conn, slot.connection, "the connection was not kept"
    end
  ensure
    slot&.discard
  end

  # Every method the pools look at exists under that name (pg renames would go unseen).
  def test_tracked_methods_are_those_of_pg
    missing = DLB::Pools::Tracked::STATEMENTS + DLB::Pools::Tracked::CHANGES - PG::Connection.instance_methods
    assert_empty missing
  end

  def test_reset_option_is_checked
    lb = DLB::Balancer.new(config)
    assert_raises(ArgumentError) { lb.configure_pools(reset: :sometimes) }
  ensure
    lb&.close
  end
end
