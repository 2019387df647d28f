# frozen_string_literal: true

require_relative "test_helper"
require "open3"
require "rbconfig"

# The binding's contract: version, errors and their classes and messages, arguments,
# close/open, secrets, the Route value object.
class ApiTest < Minitest::Test
  include DLBTest

  def setup
    @lb = DLB::Balancer.new(config)
  end

  def teardown
    @lb&.close
  end

  # --- version and constants --------------------------------------------------------------

  # test.sh runs the suite against the gem it built and installed (DLB_TEST_GEM_HOME):
  # dlb and its library must come from there, not from this repository.
  def test_loaded_from_the_installed_gem
    gem_home = ENV.fetch("DLB_TEST_GEM_HOME", "")
    skip "run by hand from the source tree (test.sh installs the gem)" if gem_home.empty?

    assert dlb_lib_dir.start_with?(File.realpath(gem_home)) || dlb_lib_dir.start_with?(gem_home), dlb_lib_dir
    assert DLB.library_path.start_with?(gem_home), "libdlb loaded from #{DLB.library_path}"
    assert_equal DLB::VERSION, Gem.loaded_specs.fetch("dlb").version.to_s
  end

  def test_version_matches_the_library
    assert_equal DLB.library_version, DLB::VERSION
    assert_match(/\A\d+\.\d+\.\d+\z/, DLB::VERSION)
    # The source tree's version (read, not loaded: the installed gem's constant is defined).
    source = File.read(File.expand_path("../lib/dlb/version.rb", __dir__))[/VERSION = "([^"]+)"/, 1]
    assert_equal DLB::VERSION, source
  end

  # The C header's value of every +#define PREFIX...+ (e.g. "LB_ERR_"), by name without the
  # prefix.
  def header_constants(prefix)
    header = File.read(File.expand_path("../../../include/dlb.h", __dir__))
    header.scan(/^#define #{prefix}(\w+) (\d+)$/).to_h { |name, value| [name, Integer(value)] } # rubocop:disable Style/HashTransformValues -- an Array of pairs
  end

  def named_constants(mod)
    mod.constants.to_h { |c| [c.to_s, mod.const_get(c)] }
  end

  def test_named_constants_match_the_header
    statuses = header_constants("LB_").select { |name, _| name == "OK" || name.start_with?("ERR_") }
    assert_equal statuses, named_constants(DLB::Status)
    assert_equal header_constants("LB_ROLE_"), named_constants(DLB::Role)
    assert_equal header_constants("LB_REASON_"), named_constants(DLB::Reason)
  end

  def test_every_status_code_has_an_error_class
    codes = DLB::Status.constants.map { |c| DLB::Status.const_get(c) } - [DLB::Status::OK]
    assert_equal (1..15).to_a, codes.sort
    codes.each do |code|
      refute_equal "unknown status", DLB::Native.lb_status_str(code), "code #{code}"
      klass = DLB::ERRORS_BY_CODE.fetch(code)
      assert_operator klass, :<, DLB::Error
      assert_equal DLB::Native.lb_status_is_retryable(code), klass.include?(DLB::Retryable),
                   "retryable mismatch for #{klass}"
    end
    assert_equal "ok", DLB::Native.lb_status_str(DLB::Status::OK)
    # A code added to the C API without a class here would show up as known.
    assert_equal "unknown status", DLB::Native.lb_status_str(codes.max + 1)
    err = DLB::Error.from_status(9999)
    assert_instance_of DLB::Error, err
    assert_equal 9999, err.code
  end

  def test_reasons_and_roles_match_the_library
    DLB::Route::REASONS.each { |code, sym| assert_equal sym.to_s, DLB::Native.lb_reason_str(code) }
    DLB::Reason.constants.each { |c| assert_equal c.to_s.downcase.to_sym, DLB::Route::REASONS.fetch(DLB::Reason.const_get(c)) }
    DLB::Role.constants.each { |c| assert_equal c.to_s.downcase.to_sym, DLB::Route::ROLES.fetch(DLB::Role.const_get(c)) }
    assert_equal "unknown", DLB::Native.lb_reason_str(DLB::Route::REASONS.size),
                 "the C library has a reason this binding does not name"
    DLB::Route::ROLES.each { |code, sym| assert_equal sym.to_s, DLB::Native.lb_role_str(code) }
    route = DLB::Route.from_c("host=h port=1", DLB::Role::REPLICA, 9999)
    assert_equal :unknown, route.reason
    assert route.replica?
  end

  # --- configuration errors ---------------------------------------------------------------

  def test_malformed_json_is_an_invalid_config_error
    err = assert_raises(DLB::InvalidConfigError) { DLB::Balancer.new("{") }
    assert_equal DLB::Status::ERR_INVALID_CONFIG, err.code
    assert_includes err.message, "invalid configuration"
    refute err.retryable?
  end

  def test_unknown_field_is_named
    err = assert_raises(DLB::InvalidConfigError) { DLB::Balancer.new(config(bogus_field: 1)) }
    assert_includes err.message, "bogus_field"
  end

  def test_invalid_field_is_named_with_its_path
    err = assert_raises(DLB::InvalidConfigError) { DLB::Balancer.new(config(pool: { max_size: 0 })) }
    assert_includes err.message, "pool.max_size"
    err = assert_raises(DLB::InvalidConfigError) { DLB::Balancer.new(config(replicas: { hosts: ["a:1", "a:1"] })) }
    assert_includes err.message, "replicas.hosts[1]"
    err = assert_raises(DLB::InvalidConfigError) { DLB::Balancer.new({}) }
    assert_includes err.message, "primary"
  end

  def test_config_error_hides_the_password
    err = assert_raises(DLB::InvalidConfigError) { DLB::Balancer.new(config(replica_check_interval_ms: 1)) }
    assert_includes err.message, "replica_check_interval_ms"
    refute_includes err.message, PASSWORD
  end

  def test_config_must_be_a_hash_or_string
    assert_raises(TypeError) { DLB::Balancer.new(42) }
    assert_raises(TypeError) { DLB::Balancer.new(nil) }
    err = assert_raises(DLB::InvalidArgumentError) { DLB::Balancer.new("{\"primary\": \"a\0b\"}") }
    assert_includes err.message, "NUL"
    err = assert_raises(DLB::InvalidArgumentError) { DLB::Balancer.new((+"{\"primary\": \"\xFF\"}").force_encoding("BINARY")) }
    assert_includes err.message, "not valid UTF-8"
    assert_raises(DLB::InvalidConfigError) { DLB::Balancer.new(config(max_lag_bytes: Float::NAN)) }
  end

  def test_json_string_config_is_passed_as_is
    DLB::Balancer.open(JSON.generate(config)) do |lb|
      assert_match(/password=#{PASSWORD}/o, lb.primary_dsn)
    end
  end

  # --- argument errors --------------------------------------------------------------------

  def test_bad_lsn_is_an_invalid_lsn_error
    err = assert_raises(DLB::InvalidLsnError) { @lb.record_lsn_value("k", "16-B374D848") }
    assert_equal DLB::Status::ERR_INVALID_LSN, err.code
    assert_includes err.message, "invalid LSN"
    assert_includes err.message, "16-B374D848"
    assert_raises(DLB::InvalidLsnError) { @lb.record_lsn_value("k", "") }
    assert_raises(DLB::InvalidLsnError) { @lb.record_lsn_value("k", "123456789/0") }
    err = assert_raises(DLB::InvalidLsnError) { @lb.pick_replica_min_lsn("G/0") }
    assert_includes err.message, "G/0"
    assert_nil @lb.record_lsn_value("k", "16/B374D848")
  end

  def test_empty_and_long_keys_are_invalid_key_errors
    err = assert_raises(DLB::InvalidKeyError) { @lb.pick_replica("") }
    assert_equal DLB::Status::ERR_INVALID_KEY, err.code
    assert_includes err.message, "key is empty"
    assert_raises(DLB::InvalidKeyError) { @lb.record_lsn("") }
    assert_raises(DLB::InvalidKeyError) { @lb.record_lsn_value("", "0/1") }
    err = assert_raises(DLB::InvalidKeyError) { @lb.record_lsn_value("k" * (DLB::MAX_KEY_LENGTH + 1), "0/1") }
    assert_includes err.message, "1025 bytes"
    assert_nil @lb.record_lsn_value("k" * DLB::MAX_KEY_LENGTH, "0/1")
  end

  def test_bad_key_strings
    err = assert_raises(DLB::InvalidArgumentError) { @lb.pick_replica("a\0b") }
    assert_includes err.message, "key contains a NUL byte"
    err = assert_raises(DLB::InvalidArgumentError) { @lb.pick_replica("user:\xC3\x28") }
    assert_includes err.message, "`key` is not valid UTF-8"
    assert_raises(TypeError) { @lb.pick_replica(42) }
    assert_raises(TypeError) { @lb.record_lsn(:sym) }
    assert_raises(TypeError) { @lb.pick_replica_min_lsn(nil) }
    # Other encodings are converted to UTF-8.
    route = @lb.pick_replica("caf\u00e9".encode("ISO-8859-1"))
    assert_equal :no_lsn_recorded, route.reason
  end

  def test_unknown_host
    err = assert_raises(DLB::UnknownHostError) do
      @lb.report_failure("host=nowhere.invalid port=1 user=x password=#{PASSWORD}")
    end
    assert_equal DLB::Status::ERR_UNKNOWN_HOST, err.code
    assert_includes err.message, "neither the DSN nor the host:port"
    refute_includes err.message, PASSWORD
    refute_includes err.message, "nowhere.invalid"
    assert_nil @lb.report_failure(@lb.primary_dsn)
    assert_nil @lb.report_failure(PRIMARY.then { |p| "#{p[/host=(\S+)/, 1]}:#{port_of(p)}" })
  end

  def test_force_primary
    @lb.force_primary("user:44", 60)
    route = @lb.pick_replica("user:44")
    assert route.primary?
    assert_equal :forced_primary, route.reason
    assert_equal @lb.primary_dsn, route.dsn
    err = assert_raises(DLB::InvalidArgumentError) { @lb.force_primary("user:44", 0) }
    assert_includes err.message, "ttl"
    assert_raises(TypeError) { @lb.force_primary("user:44", "60") }
  end

  def test_no_caught_up_replica
    route = @lb.pick_replica_min_lsn("FFFFFFFF/0")
    assert route.primary?
    assert_equal :not_caught_up, route.reason
    DLB::Balancer.open(config(no_caught_up_replica: "error", sticky_check_budget_ms: 0)) do |strict|
      err = assert_raises(DLB::NoCaughtUpReplicaError) { strict.pick_replica_min_lsn("FFFFFFFF/0") }
      assert_equal DLB::Status::ERR_NO_CAUGHT_UP_REPLICA, err.code
      assert err.retryable?
      assert_kind_of DLB::Retryable, err
      assert_includes err.message, "FFFFFFFF/0"
    end
  end

  def test_primary_unavailable
    bad = config(primary: "host=127.0.0.1 port=1 user=postgres dbname=x password=#{PASSWORD}",
                 replicas: nil, pool: { connect_timeout_ms: 500, checkout_timeout_ms: 500 })
    DLB::Balancer.open(bad) do |lb|
      err = assert_raises(DLB::PrimaryUnavailableError) { lb.record_lsn("k") }
      assert err.retryable?
      refute_includes err.message, PASSWORD
      route = lb.pick_replica
      assert_equal %i[primary no_replicas_configured], [route.role, route.reason]
    end
  end

  def test_buffers_grow_for_long_dsns
    long_name = "a" * 600
    cfg = config(primary: "#{PRIMARY} application_name=#{long_name} password=#{PASSWORD}")
    DLB::Balancer.open(cfg) do |lb|
      wait_healthy(lb)
      # A fresh thread: its scratch buffers start small (256 bytes) and must grow.
      routes = Thread.new do
        [lb.primary_dsn, lb.pick_replica, lb.pick_replica("k"), lb.pick_replica_min_lsn("0/1"), lb.pick_replica]
      end.value
      primary = routes.shift
      assert_operator primary.bytesize, :>, 600
      assert_includes primary, long_name
      routes.each do |route|
        assert_includes route.dsn, "application_name=#{long_name}"
        assert route.dsn.end_with?("password=#{PASSWORD}"), "the whole DSN is returned"
      end
      assert_operator lb.metrics.bytesize, :>, 0
    end
  end

  def test_texts_larger_than_the_first_buffer
    # metrics and status start with a 4 KiB buffer and grow; both must be complete.
    metrics = @lb.metrics
    assert metrics.end_with?("\n")
    assert_equal metrics.lines.size, metrics.count("\n")
    JSON.parse(@lb.status_json)
  end

  # --- close and open ---------------------------------------------------------------------

  def test_close_is_idempotent_and_later_calls_raise
    refute @lb.closed?
    assert_nil @lb.close
    assert @lb.closed?
    assert_nil @lb.close
    assert_equal "#<DLB::Balancer closed>", @lb.inspect
    calls = {
      pick_replica: [], pick_replica_key: ["k"], pick_replica_min_lsn: ["0/1"], record_lsn: ["k"],
      record_lsn_value: ["k", "0/1"], force_primary: ["k", 1], primary_dsn: [],
      report_failure: ["x:1"], metrics: [], status: [], status_json: []
    }
    calls.each do |name, args|
      method = name == :pick_replica_key ? :pick_replica : name
      err = assert_raises(DLB::ClosedError, name.to_s) { @lb.public_send(method, *args) }
      assert_nil err.code
      assert_includes err.message, "closed"
    end
  end

  def test_open_with_a_block_closes
    kept = nil
    value = DLB::Balancer.open(config) do |lb|
      kept = lb
      refute lb.closed?
      lb.pick_replica
      :the_value
    end
    assert_equal :the_value, value
    assert kept.closed?

    assert_raises(RuntimeError) do
      DLB::Balancer.open(config) do |lb|
        kept = lb
        raise "boom"
      end
    end
    assert kept.closed?

    lb = DLB::Balancer.open(config)
    refute lb.closed?
    lb.close
  end

  def test_forked_child_never_frees_the_parents_balancer
    # The child has no monitor thread: lb_balancer_free there could wait for it forever. Both
    # an explicit close and the finalizers at exit must return; the parent's balancer keeps
    # working.
    wait_healthy(@lb)
    %i[close exit].each do |how|
      pid = fork do
        @lb.close if how == :close
        exit!(0) if how == :close
        exit(0) # runs finalizers
      end
      status = begin
        wait_until("the forked child (#{how}) to exit", timeout: 30) { Process.wait2(pid, Process::WNOHANG)&.last }
      rescue Minitest::Assertion
        Process.kill(:KILL, pid)
        Process.wait(pid)
        raise
      end
      assert status.success?, "child (#{how}): #{status.inspect}"
    end
    assert @lb.pick_replica.replica?
  end

  # --- secrets ----------------------------------------------------------------------------

  def test_password_only_in_handed_out_dsns
    wait_healthy(@lb)
    assert_includes @lb.primary_dsn, "password=#{PASSWORD}"
    route = @lb.pick_replica
    assert_includes route.dsn, "password=#{PASSWORD}"
    @lb.record_lsn("user:1")
    [@lb.pick_replica("user:1"), @lb.pick_replica_min_lsn("0/1")].each do |r|
      assert_includes r.dsn, "password=#{PASSWORD}"
      refute_includes r.to_s, PASSWORD
      refute_includes r.inspect, PASSWORD
    end
    [@lb.metrics, @lb.status_json, JSON.generate(@lb.status), @lb.inspect].each do |text|
      refute_includes text, PASSWORD
    end
    assert_includes @lb.status_json, "password=********"
  end

  def test_metrics_and_status
    wait_healthy(@lb)
    @lb.pick_replica
    metrics = @lb.metrics
    assert_match(/^dlb_picks_total\{role="replica",reason="round_robin"\} [1-9]/, metrics)
    assert_equal metrics.encoding, Encoding::UTF_8
    status = @lb.status
    assert_equal REPLICAS.size, status["replicas"].size
    assert_equal REPLICAS.sort, status["replicas"].map { |r| r["addr"] }.sort
    assert(status["replicas"].all? { |r| r["state"] == "healthy" })
    assert_equal REPLICAS.size, status["healthy_replicas"]
    assert_kind_of Integer, status["checks"]
    assert_operator status["version"], :>=, 2
    assert_equal %w[ok up], status.values_at("status", "primary_state")
    assert_match(/\A\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\z/, status["last_check_at"])
  end

  # --- Route and DSN helpers --------------------------------------------------------------

  def test_route_is_a_value_object
    wait_healthy(@lb)
    route = @lb.pick_replica
    assert route.frozen?
    assert route.dsn.frozen?
    assert route.replica?
    refute route.primary?
    assert_equal :round_robin, route.reason
    assert_equal({ dsn: route.dsn, role: :replica, reason: :round_robin }, route.to_h)
    same = DLB::Route.new(route.dsn, :replica, :round_robin)
    assert_equal route, same
    assert_equal route.hash, same.hash
    assert_includes REPLICAS, route.address
    assert_equal "replica #{route.address} (round_robin)", route.to_s
  end

  def test_dsn_redaction_and_address
    kv = "host=db1 port=5433 user=app password='s3 cr\\'t' dbname=app"
    assert_equal "host=db1 port=5433 user=app password=******** dbname=app", DLB::DSN.redact(kv)
    assert_equal "db1:5433", DLB::DSN.address(kv)
    url = "postgres://app:pa%40ss@[::1]:5434/app?sslmode=disable&password=x"
    assert_equal "postgres://app:********@[::1]:5434/app?sslmode=disable&password=********", DLB::DSN.redact(url)
    assert_equal "[::1]:5434", DLB::DSN.address(url)
    assert_equal "db:5432", DLB::DSN.address("host=db")
    assert_nil DLB::DSN.address("host=db bogus=1")
    # The library redacts: what it cannot parse comes back hidden whole.
    assert_equal DLB::DSN::REDACTED, DLB::DSN.redact("host=db1 password=#{PASSWORD} port=x")
    assert_equal DLB::DSN::REDACTED, DLB::DSN.redact("")
    long = "host=db1 application_name=#{'a' * 500} password=#{PASSWORD}"
    assert_equal "host=db1 application_name=#{'a' * 500} password=********", DLB::DSN.redact(long)
    assert_raises(DLB::InvalidArgumentError) { DLB::DSN.redact("host=db1\0") }
    assert_raises(TypeError) { DLB::DSN.redact(nil) }
  end

  # --- loading ----------------------------------------------------------------------------

  # The rule is the C library's (lb_is_plain_read, src/server/session.rs, tested there):
  # reached with a String's own bytes, in any encoding, frozen or not.
  def test_plain_read_rule
    assert DLB.plain_read?("SELECT 1")
    assert DLB.plain_read?("SELECT value FROM settings WHERE setup_id = 1") # set_config, not "set..."
    assert DLB.plain_read?(+"  select v FROM t WHERE id = $1;")
    assert DLB.plain_read?("SELECT 'caf\xE9'".b)
    assert DLB.plain_read?("SHOW search_path".encode(Encoding::UTF_16LE).encode(Encoding::UTF_8))
    ["SET search_path = x", "BEGIN", "SELECT 1; LISTEN c", "SELECT pg_advisory_lock(1)", "", "SELECT ';'",
     "CREATE TEMP TABLE t (x int)", "PREPARE p AS SELECT 1", "SELECT nextval('s')", 42, nil].each do |sql|
      refute DLB.plain_read?(sql), sql.inspect
    end
  end

  def test_library_lookup
    lib = File.expand_path("../lib", __dir__)
    code = "require 'dlb'; print DLB.library_path"
    out, err, st = Open3.capture3({ "DLB_LIB_PATH" => "/nonexistent/libdlb.so" },
                                  RbConfig.ruby, "-I", lib, "-e", code)
    refute st.success?, out
    assert_includes err, "DLB_LIB_PATH=/nonexistent/libdlb.so is not a file"
    out, err, st = Open3.capture3({ "DLB_LIB_PATH" => DLB.library_path }, RbConfig.ruby, "-I", lib, "-e", code)
    assert st.success?, err
    assert_equal DLB.library_path, out
  end
end
