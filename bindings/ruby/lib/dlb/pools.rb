# frozen_string_literal: true

require "connection_pool"
require "pg"

module DLB
  # Mixed into a +PG::Error+ raised in {Balancer#with_replica} or {Balancer#with_primary}
  # when the connection was lost (it was discarded and its host reported): +rescue
  # DLB::ConnectionLost+ catches exactly those.
  module ConnectionLost; end

  # One +ConnectionPool+ of +PG::Connection+ per host (by dlb's host id), for
  # {Balancer#with_replica} and {Balancer#with_primary}. Connections are opened lazily (a
  # pool's first checkout of a slot connects) and discarded when the block fails with a
  # connection error; a host's pool is closed when dlb drains or removes the host (its
  # {EventPump} calls {#close_host}).
  #
  # Thread-safe. Created by the balancer on first use; configure it with
  # {Balancer#configure_pools} before that.
  # @api private
  class Pools
    # Errors that always mean the connection is gone: it cannot reach the server, cannot
    # send, or the server is shutting down (SQLSTATE 57P01, e.g. a replica being stopped).
    CONNECTION_ERRORS = [PG::ConnectionBad, PG::UnableToSend, PG::AdminShutdown, PG::ConnectionException].freeze
    # Connections per host, unless {Balancer#configure_pools} says otherwise.
    DEFAULT_SIZE = 5
    # How long a checkout waits for a free connection of a host's pool, in ms.
    DEFAULT_CHECKOUT_TIMEOUT_MS = 5000

    # A pool entry: a connection opened on first use, reopened after it was discarded.
    class Slot
      def initialize(dsn, connect)
        @dsn = dsn
        @connect = connect
        @connection = nil
      end

      # @return [PG::Connection] the open connection (connecting first if there is none)
      def connection
        @connection = nil if @connection&.finished?
        @connection ||= @connect.call(@dsn)
      end

      # Closes the connection; the next {#connection} opens a new one.
      def discard
        conn = @connection
        @connection = nil
        conn&.close unless conn.nil? || conn.finished?
      rescue StandardError
        nil # a broken connection may fail to close: it is gone either way
      end

      # Forgets the connection without closing it: in a forked child, closing an inherited
      # connection would end the parent's session (libpq sends Terminate on the shared
      # socket). The object is kept referenced so that no finalizer closes it either.
      def abandon(orphans)
        orphans << @connection if @connection
        @connection = nil
      end
    end

    # Connections inherited across fork, kept referenced so that they are never closed (nor
    # finalized) in the child. Small: at most one pool's worth per host, once per fork.
    ORPHANS = [] # rubocop:disable Style/MutableConstant -- appended to on purpose

    # @return [Integer]
    attr_reader :size

    # @param size [Integer] connections per host
    # @param checkout_timeout_ms [Numeric, #in_milliseconds]
    # @param connect [#call] opens a connection from a DSN (default +PG.connect(dsn)+)
    def initialize(size: DEFAULT_SIZE, checkout_timeout_ms: DEFAULT_CHECKOUT_TIMEOUT_MS, connect: nil)
      raise ArgumentError, "size must be a positive Integer (got #{size.inspect})" unless size.is_a?(Integer) && size.positive?
      raise TypeError, "connect must respond to call" unless connect.nil? || connect.respond_to?(:call)

      @size = size
      @timeout = Duration.to_ms(checkout_timeout_ms, "checkout_timeout_ms") / 1000.0
      @connect = connect || ->(dsn) { PG.connect(dsn) }
      @pools = {}
      @lock = Mutex.new
    end

    # Runs the block with a connection of the host's pool. A connection error (see
    # {Pools.connection_error?}) discards the connection and is re-raised marked with
    # {ConnectionLost}; the caller reports the host.
    # *Blocking*: waits for a free connection (at most the checkout timeout), and connects.
    # @param host_id [Integer] the host's id (a pool per host)
    # @param dsn [String] the DSN to connect with
    # @yieldparam conn [PG::Connection]
    # @raise [ConnectionPool::TimeoutError] no connection free within the checkout timeout
    def with(host_id, dsn)
      pool_for(host_id, dsn).with do |slot|
        conn = nil
        begin
          conn = slot.connection
          yield conn
        rescue StandardError => e
          if Pools.connection_error?(e, conn)
            slot.discard
            e.extend(ConnectionLost)
          end
          raise
        end
      end
    end

    # Whether +error+ means the connection is unusable (rather than a failed statement).
    # @param error [Exception]
    # @param conn [PG::Connection, nil] the connection the error came from (nil: connecting)
    def self.connection_error?(error, conn)
      return false unless error.is_a?(PG::Error)
      return true if conn.nil? || CONNECTION_ERRORS.any? { |k| error.is_a?(k) }

      conn.finished? || conn.status == PG::CONNECTION_BAD
    end

    # @return [Array<Integer>] the ids of the hosts that have a pool
    def host_ids
      @lock.synchronize { @pools.keys }
    end

    # Closes the pool of a host (its idle connections now, busy ones when checked in); the
    # host's next use opens a new pool.
    # @param host_id [Integer]
    def close_host(host_id)
      pool = @lock.synchronize { @pools.delete(host_id) }
      pool&.shutdown(&:discard)
      nil
    end

    # Closes every pool.
    def close
      pools = @lock.synchronize do
        all = @pools.values
        @pools = {}
        all
      end
      pools.each { |pool| pool.shutdown(&:discard) }
      nil
    end

    # In a forked child: forgets every inherited connection without closing it.
    def after_fork
      @lock = Mutex.new
      @pools.each_value { |pool| pool.shutdown { |slot| slot.abandon(ORPHANS) } }
      @pools = {}
    end

    private

    def pool_for(host_id, dsn)
      pool = @pools[host_id]
      return pool if pool

      @lock.synchronize do
        @pools[host_id] ||= ConnectionPool.new(size: @size, timeout: @timeout) { Slot.new(dsn, @connect) }
      end
    end
  end
end
