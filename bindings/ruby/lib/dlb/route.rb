# frozen_string_literal: true

module DLB
  # Helpers for the DSNs dlb hands out: libpq +key=value+ strings or +postgres://+ URLs.
  module DSN
    REDACTED = "********"

    module_function

    # The DSN with its password replaced by +********+: safe for logs. The C library
    # redacts it (+lb_dsn_redact()+), re-rendering the DSN as it does in its status report;
    # text it cannot parse as a DSN comes back as +********+ alone (never echoed: a password
    # may stand anywhere in it). Never blocks.
    # @param dsn [String]
    # @return [String]
    # @raise [InvalidArgumentError] dsn not valid UTF-8 or holding a NUL byte
    # @raise [TypeError] dsn is not a String
    def redact(dsn)
      dsn = Balancer.c_string(dsn, "dsn")
      Native.read_text(dsn.bytesize + 64) { |buf, cap, len| Native.lb_dsn_redact(dsn, buf, cap, len) }.first
    end

    # The +host:port+ a DSN connects to (its first host), as dlb labels it: the C library
    # reads it (+lb_dsn_address()+) with the parser that derives replica DSNs. +nil+ when
    # the text is not a DSN. Never blocks.
    # @param dsn [String]
    # @return [String, nil]
    def address(dsn)
      dsn = Balancer.c_string(dsn, "dsn")
      Native.read_text(64) { |buf, cap, len| Native.lb_dsn_address(dsn, buf, cap, len) }.first
    rescue InvalidArgumentError
      nil
    end
  end

  # Where a read (or write) goes and why: the result of {Balancer#pick_replica} and
  # {Balancer#pick_replica_min_lsn}. Immutable.
  #
  # {#dsn} contains the configured password: hand it to the driver (+PG.connect(route.dsn)+),
  # never to a log. {#to_s} and {#inspect} show the address only.
  class Route
    # +LB_ROLE_*+ to symbols.
    ROLES = { Role::PRIMARY => :primary, Role::REPLICA => :replica }.freeze
    # +LB_REASON_*+ to symbols (the names of +lb_reason_str()+ and of the metrics).
    REASONS = {
      Reason::ROUND_ROBIN => :round_robin,
      Reason::CAUGHT_UP_CACHED => :caught_up_cached,
      Reason::CAUGHT_UP_LIVE => :caught_up_live,
      Reason::NO_LSN_RECORDED => :no_lsn_recorded,
      Reason::NO_REPLICAS_CONFIGURED => :no_replicas_configured,
      Reason::NO_HEALTHY_REPLICA => :no_healthy_replica,
      Reason::NOT_CAUGHT_UP => :not_caught_up,
      Reason::STORE_ERROR => :store_error,
      Reason::FORCED_PRIMARY => :forced_primary,
      Reason::WRITE => :write,
      Reason::REPLICA_UNAVAILABLE => :replica_unavailable
    }.freeze

    # @return [String] the DSN to connect with, password included
    attr_reader :dsn
    # @return [Symbol] +:primary+ or +:replica+ (+:unknown+ for a role newer than this gem)
    attr_reader :role
    # @return [Integer, nil] the host's id (stable while the balancer knows the host, never
    #   reused in the process; host events carry it), from {Balancer#pick},
    #   {Balancer#read_route} and {Balancer#primary_route}; nil from the other picks
    attr_reader :host_id
    # @return [Symbol] why: +:round_robin+, +:caught_up_cached+, +:caught_up_live+,
    #   +:no_lsn_recorded+, +:no_replicas_configured+, +:no_healthy_replica+,
    #   +:not_caught_up+, +:store_error+, +:forced_primary+, +:write+,
    #   +:replica_unavailable+ (a newer library may add reasons: go by {#role})
    attr_reader :reason

    # @param dsn [String]
    # @param role [Symbol]
    # @param reason [Symbol]
    # @param host_id [Integer, nil]
    def initialize(dsn, role, reason, host_id: nil)
      @dsn = dsn.frozen? ? dsn : dsn.dup.freeze
      @role = role
      @reason = reason
      @host_id = host_id
      freeze
    end

    # @api private
    def self.from_c(dsn, role, reason, host_id: nil)
      new(dsn, ROLES[role] || Native.lb_role_str(role).to_sym, REASONS[reason] || Native.lb_reason_str(reason).to_sym,
          host_id: host_id)
    end

    # @return [Boolean]
    def replica?
      @role == :replica
    end

    # @return [Boolean]
    def primary?
      @role == :primary
    end

    # @return [String, nil] +host:port+ of the target
    def address
      DSN.address(@dsn)
    end

    # @return [String] e.g. +"replica 10.0.0.2:5432 (caught_up_cached)"+ (no password)
    def to_s
      "#{@role} #{address} (#{@reason})"
    end

    # @return [String] no password
    def inspect
      "#<#{self.class.name} #{self}>"
    end

    # @return [Hash{Symbol => Object}]
    def to_h
      { dsn: @dsn, role: @role, reason: @reason }
    end

    def ==(other)
      other.is_a?(Route) && other.dsn == @dsn && other.role == @role && other.reason == @reason
    end
    alias eql? ==

    def hash
      [self.class, @dsn, @role, @reason].hash
    end
  end
end
