# frozen_string_literal: true

require_relative "test_helper"
require "rack"
require "rack/test"
require "securerandom"
require_relative "../../../examples/ruby/rack_app"

# DLB::RackMiddleware: read-your-writes across two worker processes, each with its own
# balancer and embedded LSN store, the causal token travelling in the signed cookie of a
# redirect-after-POST; and the token's signature.
class RackTest < Minitest::Test
  include DLBTest

  TABLE = "dlb_ruby_rack_tests"
  SECRET = "rack-test-secret-0123456789"
  ROUNDS = Integer(ENV.fetch("DLB_RUBY_RACK_ROUNDS", "30"))
  # The example app (a registry on Rack, with a Sidekiq job), in its worker mode.
  Worker = RackExample::WorkerProcess

  def setup
    PG.connect(PRIMARY).tap do |conn|
      conn.exec("SET client_min_messages = warning")
      conn.exec("CREATE TABLE IF NOT EXISTS #{TABLE} (id bigserial PRIMARY KEY, key text NOT NULL)")
    end.close
    # The paused replica stays in the rotation however far behind (no lag or stall
    # quarantine): only the token keeps reads off it, and the control below sees stale reads.
    cfg = config(max_replay_stall_ms: 0, max_lag_bytes: 1 << 40, max_lag_ms: 3_600_000)
    env = { "DLB_WORKER_CONFIG" => JSON.generate(cfg), "DLB_WORKER_SECRET" => SECRET, "DLB_WORKER_TABLE" => TABLE }
    @writer = Worker.new(env)
    @reader = Worker.new(env)
    # A third process serving only the reads without the token: the control.
    @control = Worker.new(env)
    refute_equal @writer.pid, @reader.pid
    [@writer, @reader, @control].each do |w|
      wait_until("worker #{w.pid} to see every replica healthy") do
        JSON.parse(w.request("GET", "/health")["body"])["healthy_replicas"] == REPLICAS.size
      end
    end
  end

  def teardown
    resume_replicas
    @writer&.close
    @reader&.close
    @control&.close
  end

  def cookie_of(response)
    set_cookie = Array(response["headers"]["set-cookie"] || response["headers"]["Set-Cookie"]).join("\n")
    set_cookie[/dlb_lsn=[^;\n]+/]
  end

  # Replica 2 paused: a write is never there. The GET after the redirect goes to the other
  # process, whose store knows nothing of the write: only the token keeps it off replica 2.
  def test_read_your_writes_across_two_processes
    pause_replica_replay(2)
    stale_without_token = 0
    control_ports = []
    ROUNDS.times do |i|
      repo = "r#{i}-#{SecureRandom.hex(8)}"
      post = @writer.request("POST", "/repos/#{repo}")
      assert_equal 303, post["status"]
      cookie = cookie_of(post)
      refute_nil cookie, "no token cookie after the POST"
      assert_match(%r{\A\h+/\h+--\h{64}\z}, post["headers"]["X-DLB-LSN"])

      # The GET without the token, in a process that knows nothing of the write: it may
      # pick the paused replica.
      plain = JSON.parse(@control.request("GET", "/repos/#{repo}")["body"])
      stale_without_token += 1 if plain["ids"].empty?
      control_ports << plain["port"]

      get = @reader.request("GET", post["headers"]["location"], cookie: cookie)
      assert_equal 200, get["status"]
      body = JSON.parse(get["body"])
      assert_equal 1, body["ids"].size, "round #{i}: the write is not visible via port #{body['port']}"
      refute_equal replica_port(2), body["port"]
    end
    # Without the token, some reads were stale: the test above can fail.
    assert_operator stale_without_token, :>, 0,
                    "every read without the token was fresh (ports #{control_ports.tally}; the control sees " \
                    "#{@control.request('GET', '/health')['body']}): the test proves nothing"
  end

  def test_the_header_carries_the_token_too
    pause_replica_replay(2)
    repo = "h-#{SecureRandom.hex(8)}"
    token = @writer.request("POST", "/repos/#{repo}")["headers"]["X-DLB-LSN"]
    10.times do
      body = JSON.parse(@reader.request("GET", "/repos/#{repo}", header: token)["body"])
      assert_equal 1, body["ids"].size
    end
  end

  # (c) One request writes, then reads what it wrote by key, replay paused on both replicas
  # and a new client (no token) and key each request: the read goes to the primary. Old
  # code: with_primary only marked the context, the LSN was recorded when the request
  # ended, and the read went round-robin to a replica: 40 stale of 40.
  def test_a_request_reads_its_own_write
    lb = DLB::Balancer.new(config(max_replay_stall_ms: 0, max_lag_bytes: 1 << 40, max_lag_ms: 3_600_000))
    wait_healthy(lb)
    REPLICAS.each_index { |i| pause_replica_replay(i + 1) }
    app = lambda do |_env|
      key = DLB::Context.current.keys.first
      id = lb.with_primary do |conn|
        conn.exec_params("INSERT INTO #{TABLE} (key) VALUES ($1) RETURNING id", [key]).getvalue(0, 0)
      end
      body = lb.with_replica(key) do |conn|
        { rows: conn.exec_params("SELECT 1 FROM #{TABLE} WHERE id = $1", [id]).ntuples,
          port: conn.exec("SELECT inet_server_port()").getvalue(0, 0) }
      end
      [200, { "content-type" => "application/json" }, [JSON.generate(body)]]
    end
    mw = DLB::RackMiddleware.new(app, balancer: lb, secret: SECRET, keys: ->(req) { "repo:#{req.path}" })
    stale = 0
    40.times do |i|
      session = Rack::Test::Session.new(Rack::MockSession.new(mw)) # a new client: no token
      session.post("/own-#{i}-#{SecureRandom.hex(8)}")
      assert_equal 200, session.last_response.status, session.last_response.body
      body = JSON.parse(session.last_response.body)
      stale += 1 if body["rows"].zero?
    end
    puts "\n  write then read in one request: #{stale} stale of 40" if ENV["DLB_RUBY_VERBOSE"]
    assert_equal 0, stale, "#{stale} of 40 requests did not read their own write"
  ensure
    lb&.close
  end

  # In-process, with rack-test: forged or unsigned tokens are ignored, GETs record nothing.
  def test_token_signature
    lb = DLB::Balancer.new(config)
    seen = []
    app = lambda do |_env|
      seen << DLB::Context.current.lsn
      [200, {}, ["ok"]]
    end
    mw = DLB::RackMiddleware.new(app, balancer: lb, secret: SECRET, keys: ->(_req) { "k" })
    session = Rack::Test::Session.new(Rack::MockSession.new(mw))
    session.get("/")
    assert_nil session.last_response.headers["X-DLB-LSN"], "a GET recorded an LSN"
    session.post("/")
    token = session.last_response.headers["X-DLB-LSN"]
    lsn = token.split("--").first
    assert_equal lsn, mw.verify(token)
    session.get("/")
    assert_equal lsn, seen.last, "the cookie's token was not honoured"
    [nil, "", lsn, "#{lsn}--#{'0' * 64}", "0/1--#{token.split('--').last}", "x--y"].each do |bad|
      assert_nil mw.verify(bad), "accepted #{bad.inspect}"
    end
    other = DLB::RackMiddleware.new(app, balancer: lb, secret: "another-secret-0123456789")
    assert_nil other.verify(token), "a token signed with another secret was accepted"
  ensure
    lb&.close
  end

  # A GET that wrote (with_primary, an ActiveRecord write) sends the token too. Old code: only
  # non-GET requests did.
  def test_a_get_that_wrote_sends_the_token
    lb = DLB::Balancer.new(config)
    app = lambda do |env|
      DLB::Context.current.wrote! if env["PATH_INFO"] == "/write"
      [200, {}, ["ok"]]
    end
    session = Rack::Test::Session.new(Rack::MockSession.new(DLB::RackMiddleware.new(app, balancer: lb, secret: SECRET)))
    session.get("/read")
    assert_nil session.last_response.headers["X-DLB-LSN"]
    session.get("/write")
    assert_match(%r{\A\h+/\h+--\h{64}\z}, session.last_response.headers["X-DLB-LSN"].to_s)
  ensure
    lb&.close
  end
end
