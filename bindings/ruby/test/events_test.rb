# frozen_string_literal: true

require_relative "test_helper"
require_relative "support/dnsmasq"

# Pools follow dlb's host events: a replica that leaves the DNS list is drained by dlb, and
# its pool is closed (its connections end) by the Ruby event thread; the others stay.
class EventsTest < Minitest::Test
  include DLBTest

  def srv_records(ports)
    ["host-record=pg.test,127.0.0.1"] + ports.map { |p| "srv-host=replica.pg.test,pg.test,#{p}" }
  end

  def setup
    @ports = REPLICAS.each_index.map { |i| replica_port(i + 1) }
    @dns = Dnsmasq.new(srv_records(@ports))
    @lb = DLB::Balancer.new(config(replicas: {
                                     dns: { record: "replica.pg.test", nameserver: "127.0.0.1", port: @dns.port,
                                            record_type: "SRV", refresh_interval_ms: 200 },
                                     drain_timeout_ms: 500
                                   }))
    wait_healthy(@lb)
  end

  def teardown
    @lb&.close
    @dns&.close
  end

  def test_a_drained_replica_has_its_pool_closed
    # A pooled connection on each replica.
    conns = {}
    wait_until("a pooled connection on both replicas") do
      @lb.with_replica { |conn| conns[conn.exec("SELECT inet_server_port()").getvalue(0, 0)] = conn }
      conns.size == 2
    end
    gone = @ports.last
    kept = @ports.first
    gone_id = host_id_of(gone)

    @dns.records = srv_records([kept])
    wait_until("the pool of #{gone} to be closed after its drain") { conns[gone].finished? }
    events = pump.recent.select { |e| e["host_id"] == gone_id }.map { |e| e["event"] }
    assert_includes events, "drained"
    refute_predicate conns[kept], :finished?, "the kept replica's pool was closed too"
    refute_includes @lb.send(:pools).host_ids, gone_id
    # Reads go on, on the kept replica's pooled connection.
    ports = Array.new(5) { @lb.with_replica { |conn| conn.exec("SELECT inet_server_port()").getvalue(0, 0) } }
    assert_equal [kept], ports.uniq
  end

  private

  def pump
    @lb.instance_variable_get(:@pump)
  end

  # The host id dlb gives the replica at +port+ (from a route to it).
  def host_id_of(port)
    wait_until("a route to #{port}") do
      route = @lb.pick
      route.host_id if port_of(route.dsn) == port
    end
  end
end
