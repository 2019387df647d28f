# frozen_string_literal: true

require_relative "test_helper"
require "securerandom"
require "open3"
require "rack/test"
require_relative "support/dnsmasq"
require_relative "../examples/rails_app"

# DLB::ActiveRecord against the real cluster, through the example Rails-style app
# (examples/rails_app.rb: models, a Rack app, a Sidekiq job; dlb only in its initializer).
# Which server answered a read: inet_server_port().
class ActiveRecordTest < Minitest::Test
  include DLBTest

  # Paused replicas stay in the rotation however far behind (no lag or stall quarantine):
  # only tokens keep reads off them, and reads without one are stale.
  LAG_BLIND = { max_replay_stall_ms: 0, max_lag_bytes: 1 << 40, max_lag_ms: 3_600_000 }.freeze
  EXAMPLE = File.expand_path("../examples/rails_app.rb", __dir__)

  def teardown
    resume_replicas
    ::Sidekiq.client_middleware(&:clear)
    ::Sidekiq::Testing.server_middleware(&:clear)
    ::Sidekiq::Worker.clear_all
    CountPostsJob.results.clear
    DLB::ActiveRecord.uninstall
    @lb&.close
    @dns&.close
  end

  def boot(config: {}, healthy: REPLICAS.size)
    @app, @lb = RailsExample.build(dlb: true, config: config)
    wait_healthy(@lb, healthy)
  end

  def replica_ports
    REPLICAS.each_index.map { |i| replica_port(i + 1).to_i }
  end

  def primary_port
    port_of(PRIMARY).to_i
  end

  def client
    Rack::Test::Session.new(Rack::MockSession.new(@app)) # a new browser: no cookie
  end

  def get_json(session, path, headers = {})
    headers.each { |k, v| session.header(k, v) }
    session.get(path)
    assert_equal 200, session.last_response.status, session.last_response.body
    JSON.parse(session.last_response.body)
  end

  # A read in a unit of work, as the app's code does it.
  def server_port
    ApplicationRecord.server_port
  end

  def in_request(&block)
    DLB::Context.with(DLB::Context.new, &block)
  end

  # Reads spread over both replicas (requests without a token), never the primary; writes
  # go to the primary (the replicas would refuse them). Without the integration: every read
  # on the primary.
  def test_reads_spread_over_both_replicas
    boot
    ports = Array.new(20) { get_json(client, "/server")["server_port"] }
    assert_equal replica_ports.sort, ports.uniq.sort, "reads by port: #{ports.tally}"
    session = client
    session.post("/posts?author=spread-#{SecureRandom.hex(4)}&title=t")
    assert_equal 303, session.last_response.status, session.last_response.body
    # Model reads too (a relation, pluck, count, exists?), each to a replica.
    in_request do
      assert_includes replica_ports, Post.limit(1).pluck(Arel.sql("inet_server_port()")).first || server_port
      Post.count
      Post.where(id: 0).exists?
      assert_includes replica_ports, server_port
    end
  end

  # A read that changes its session (set_config through select_value) runs on the app's own
  # connection, as without dlb; on a replica's pool its setting would stay with that pooled
  # connection for later reads. Old code: it ran on a replica.
  def test_a_read_that_changes_the_session_stays_on_the_primary
    boot
    conn = ApplicationRecord.connection
    in_request do
      assert_includes replica_ports, server_port
      port = conn.select_value("SELECT inet_server_port() FROM (SELECT set_config('work_mem', '7MB', false)) AS s")
      assert_equal primary_port, port.to_i
    end
  ensure
    conn&.execute("RESET work_mem")
  end

  # Replay paused on both replicas: every write is past them. A post is read fresh in the
  # next request (the token in the cookie, or in the header for API clients) and in the job
  # it enqueued, from the primary; the same reads without a token go to the (stale)
  # replicas. Without the integration: the controls read the primary (fresh), and the job
  # carries no token (the write did not mark the request).
  def test_a_write_is_read_fresh_in_the_next_request_and_its_job
    boot(config: LAG_BLIND)
    REPLICAS.each_index { |i| pause_replica_replay(i + 1) }
    stale_controls = 0
    5.times do |i|
      author = "fresh-#{i}-#{SecureRandom.hex(6)}"
      session = client
      session.post("/posts?author=#{author}&title=t#{i}") # the app checks its own read after the write
      assert_equal 303, session.last_response.status, session.last_response.body
      token = session.last_response.headers["X-DLB-LSN"]
      refute_nil token, "no token after the write"
      job = CountPostsJob.jobs.last
      refute_nil job["dlb_lsn"], "the job enqueued after the write carries no token"

      by_cookie = get_json(session, "/posts?author=#{author}")
      assert_equal ["t#{i}"], by_cookie["titles"], "round #{i}: stale read with the cookie (port #{by_cookie['server_port']})"
      assert_equal primary_port, by_cookie["server_port"]
      by_header = get_json(client, "/posts?author=#{author}", "X-DLB-LSN" => token)
      assert_equal ["t#{i}"], by_header["titles"], "round #{i}: stale read with the header"
      control = get_json(client, "/posts?author=#{author}")
      stale_controls += 1 if control["titles"].empty?

      CountPostsJob.drain
      assert_equal({ "count" => 1, "server_port" => primary_port }, CountPostsJob.results.last)
    end
    assert_equal 5, stale_controls, "reads without a token were fresh: they did not go to the paused replicas"
  end

  # connected_to(role: :reading) routed by dlb and still read-only; while_preventing_writes
  # still raising; transactions on the primary, and a commit counts as a write. Without the
  # integration: the reading role reads the primary.
  def test_reading_role_preventing_writes_and_transactions
    boot
    in_request do
      assert_includes replica_ports, ActiveRecord::Base.connected_to(role: :reading) { server_port }
      assert_raises(ActiveRecord::ReadOnlyError) do
        ActiveRecord::Base.connected_to(role: :reading) { Post.create!(author: "ro", title: "ro") }
      end
      ActiveRecord::Base.while_preventing_writes do
        assert_includes replica_ports, server_port
        assert_raises(ActiveRecord::ReadOnlyError) { Post.create!(author: "ro", title: "ro") }
      end
      assert_includes replica_ports, server_port, "a refused write counted as a write"
      assert_equal(primary_port, ActiveRecord::Base.transaction { server_port })
      assert_equal primary_port, server_port, "a read after a commit left the primary"
    end
    in_request do
      assert_includes replica_ports, server_port
      Post.create!(author: "rw", title: "rw")
      assert_equal primary_port, server_port, "a read after a write left the primary"
    end
    # Outside a unit of work (a console, a migration): the primary.
    assert_equal primary_port, server_port
  end

  # Replica 1 stopped while the app holds a pooled connection to it, before dlb's monitor
  # (a 5 s interval here) notices: the read that meets the dead connection reports the
  # replica and runs again elsewhere; later reads avoid it. Without the integration:
  # nothing reaches replica 1, nothing is reported.
  def test_a_killed_replica_leaves_rotation
    boot(config: { replica_check_interval_ms: 5000 })
    in_request { wait_until("pooled connections on both replicas") { Array.new(4) { server_port }.uniq.size == 2 } }
    testenv("stop-replica", "1")
    ports = in_request { Array.new(10) { server_port } }
    refute_includes ports, replica_port(1).to_i, "reads by port: #{ports.tally}"
    assert_operator @lb.metrics[/^dlb_reported_failures_total (\d+)$/, 1].to_i, :>=, 1, "the dead replica was not reported"
    refute_equal "healthy", @lb.status["replicas"].find { |r| r["addr"].end_with?(":#{replica_port(1)}") }["state"]
  ensure
    testenv("start-replica", "1")
  end

  # Replicas found through DNS: one listed at first, the second added later is read from
  # without a restart, and the first, removed from DNS and drained by dlb, has its
  # ActiveRecord pool closed. Without the integration: every read on the primary.
  def test_discovered_replicas_are_used_and_drained_ones_closed
    records = ->(ports) { ["host-record=pg.test,127.0.0.1"] + ports.map { |p| "srv-host=replica.pg.test,pg.test,#{p}" } }
    @dns = Dnsmasq.new(records.call([replica_ports.first]))
    dns = { record: "replica.pg.test", nameserver: "127.0.0.1", port: @dns.port, record_type: "SRV", refresh_interval_ms: 200 }
    boot(config: { replicas: { dns: dns, drain_timeout_ms: 500 } }, healthy: 1)
    in_request do
      assert_equal [replica_ports.first], Array.new(4) { server_port }.uniq
      first_host = DLB::ActiveRecord.router.host_ids.first
      @dns.records = records.call(replica_ports)
      wait_until("reads on the discovered replica") { server_port == replica_ports.last }
      @dns.records = records.call([replica_ports.last])
      wait_until("the drained replica's pool to close") { !DLB::ActiveRecord.router.host_ids.include?(first_host) }
      assert_equal [replica_ports.last], Array.new(4) { server_port }.uniq
    end
  end

  # The same app with the integration removed (the initializer not run: dlb never loaded)
  # runs, every read on the primary.
  def test_the_app_runs_without_dlb
    out, err, status = Open3.capture3({ "DLB_EXAMPLE_WITHOUT_DLB" => "1" }, RbConfig.ruby, EXAMPLE)
    assert status.success?, "the app without dlb failed:\n#{out}\n#{err}"
    summary = JSON.parse(out.lines.last)
    refute summary["dlb_loaded"], "dlb was loaded"
    ports = summary["read_ports"] + summary.values_at("list_port", "job_port", "reading_port")
    assert_equal [primary_port], ports.uniq
  end
end
