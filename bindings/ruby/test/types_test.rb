# frozen_string_literal: true

require_relative "test_helper"
require "active_support"
require "active_support/core_ext/integer/time"
require "active_support/core_ext/numeric/time"

# Durations in options (milliseconds or ActiveSupport::Duration, converted by their length)
# and option names (an unknown one is named in the error).
class TypesTest < Minitest::Test
  include DLBTest

  # A duration that is not ActiveSupport's: anything answering in_milliseconds.
  StandIn = Struct.new(:in_milliseconds)

  def sent_json(config)
    JSON.parse(DLB::Balancer.send(:config_json, config))
  end

  def test_active_support_durations_become_milliseconds
    json = sent_json(config(max_lag_ms: 30.seconds, sticky_check_budget_ms: 0.25.seconds,
                            sticky_ttl_s: 2.minutes, pool: { checkout_timeout_ms: 1.5.seconds, max_lifetime_s: 1.hour }))
    assert_equal 30_000, json["max_lag_ms"], "30.seconds is 30000 ms, not 30"
    assert_equal 250, json["sticky_check_budget_ms"]
    assert_equal 120, json["sticky_ttl_s"]
    assert_equal 1500, json["pool"]["checkout_timeout_ms"]
    assert_equal 3600, json["pool"]["max_lifetime_s"]
    # Plain numbers are milliseconds (seconds under *_s) as before; fractions round up.
    json = sent_json(config(max_lag_ms: 250, sticky_ttl_s: 60, sticky_check_budget_ms: 0.5))
    assert_equal [250, 60, 1], json.values_at("max_lag_ms", "sticky_ttl_s", "sticky_check_budget_ms")
    assert_equal 42, sent_json(config(max_lag_ms: StandIn.new(41.2)))["max_lag_ms"]
  end

  def test_a_balancer_takes_durations
    DLB::Balancer.open(config(replica_check_interval_ms: 0.1.seconds, max_lag_ms: 30.seconds)) do |lb|
      wait_healthy(lb)
      lb.force_primary("types:key", 1.minute)
      assert_equal :forced_primary, lb.pick_replica("types:key").reason
    end
  end

  def test_bad_durations_name_the_option
    err = assert_raises(TypeError) { sent_json(config(max_lag_ms: Object.new)) }
    assert_includes err.message, "max_lag_ms"
    err = assert_raises(ArgumentError) { sent_json(config(pool: { checkout_timeout_ms: -1.second })) }
    assert_includes err.message, "pool.checkout_timeout_ms"
    err = assert_raises(DLB::InvalidConfigError) { DLB::Balancer.new(config(max_lag_ms: "30s")) }
    assert_includes err.message, "max_lag_ms"
  end

  def test_unknown_options_are_named
    err = assert_raises(DLB::InvalidConfigError) { DLB::Balancer.new(config(max_lag: 30)) }
    assert_includes err.message, "max_lag"
    DLB::Balancer.open(config) do |lb|
      err = assert_raises(ArgumentError) { lb.configure_pools(sise: 3) }
      assert_includes err.message, "sise"
      err = assert_raises(TypeError) { lb.configure_pools(checkout_timeout_ms: "soon") }
      assert_includes err.message, "checkout_timeout_ms"
      err = assert_raises(ArgumentError) do
        DLB::RackMiddleware.new(->(_env) {}, balancer: lb, secret: "s" * 16, kyes: ->(_req) {})
      end
      assert_includes err.message, "kyes"
    end
  end
end
