# frozen_string_literal: true

require_relative "test_helper"

# The DSNs handed out keep the TLS keys of the configuration: libpq (the pg gem) connects with
# them over TLS, verifying as they say (the TLS-only cluster of scripts/testenv.sh).
class TLSTest < Minitest::Test
  include DLBTest

  def setup
    @primary = ENV.fetch("DLB_TEST_TLS_PRIMARY", "")
    skip "DLB_TEST_TLS_PRIMARY is not set (scripts/testenv.sh env)" if @primary.empty?
    @lb = DLB::Balancer.new(
      primary: "#{@primary} sslmode=verify-full sslrootcert=#{ENV.fetch('DLB_TEST_TLS_CA')}",
      replicas: { hosts: ENV.fetch("DLB_TEST_TLS_REPLICAS").split(",").first(1) },
      replica_check_interval_ms: 100,
      probe_timeout_ms: 2000
    )
    wait_healthy(@lb, 1)
  end

  def teardown
    @lb&.close
  end

  def test_handed_out_dsns_connect_over_tls
    [@lb.primary_dsn, @lb.pick_replica.dsn].each do |dsn|
      assert_includes dsn, "sslmode=verify-full"
      conn = PG.connect(dsn)
      begin
        assert_equal "t", conn.exec("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").getvalue(0, 0)
      ensure
        conn.close
      end
    end
  end
end
