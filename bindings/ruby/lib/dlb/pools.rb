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
    # When a connection given back is reset (see {Slot#check_in}): +:auto+ when it may carry
    # state (a statement that is not a plain read ran on it, see {Tracked}; a transaction; a
    # changed reported parameter) or its block raised; +:always+ after every block (one more
    # round trip per block).
    RESETS = %i[auto always].freeze
    # The session state a borrower may leave, undone: +DISCARD ALL+ without +DISCARD PLANS+
    # (cached plans are no state a query can see; dropping them costs the next queries a
    # re-plan). One simple-query message: one round trip, also after +ROLLBACK;+. Allowed on
    # hot standbys.
    RESET_SQL = "CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; DEALLOCATE ALL; UNLISTEN *; " \
                "SELECT pg_advisory_unlock_all(); DISCARD TEMP; DISCARD SEQUENCES"
    # The parameters the server reports to the client when they change (ParameterStatus),
    # that a session may change: a check-in compares them with the connection's at connect
    # (no round trip). +search_path+ is reported from PostgreSQL 18 on; +is_superuser+ follows
    # +session_authorization+.
    REPORTED = %w[application_name client_encoding DateStyle IntervalStyle TimeZone standard_conforming_strings
                  session_authorization default_transaction_read_only search_path].freeze

    # The settings a borrower may change on the +PG::Connection+ object itself (no SQL): how
    # results are typed, how parameters are encoded, result field names as Strings or
    # Symbols, COPY's coders. {Slot#check_in} puts back the ones a block changed (no I/O).
    CLIENT_SETTINGS = %i[type_map_for_results type_map_for_queries field_name_type encoder_for_put_copy_data
                         decoder_for_get_copy_data].freeze
    CLIENT_SETTERS = CLIENT_SETTINGS.map { |name| :"#{name}=" }.freeze

    # What a borrower ran on a pooled connection: the +PG::Connection+ a pool opens is
    # extended with this module, whose methods look at each statement before running it
    # (+super+). A statement that is not a plain read ({DLB.plain_read?}: +SET+, +BEGIN+,
    # +CREATE TEMP TABLE+, +LISTEN+, +PREPARE+, +pg_advisory_lock+, a write...) marks the
    # connection as having changed its session, as does any named prepared statement
    # (+prepare+, +send_prepare+: they outlive the block), +exec_prepared+, +transaction+,
    # large objects and +reset+; {Slot#check_in} then resets it. A block of plain reads
    # costs one +lb_is_plain_read()+ call per statement, no round trip.
    #
    # What it cannot see: a function, view, rule or trigger of your own that changes the
    # session when a plain read reaches it: call {#mark_session_changed} after it (or
    # configure the pools with +reset: :always+).
    module Tracked
      # The methods whose first argument is the SQL text (every name pg 1.x gives them).
      STATEMENTS = %i[exec query async_exec async_query sync_exec exec_params async_exec_params sync_exec_params
                      send_query send_query_params copy_data].freeze
      # The methods that leave state on the session (or may: a large object's descriptor), or
      # run a statement whose text is not at hand.
      CHANGES = %i[prepare async_prepare sync_prepare send_prepare exec_prepared async_exec_prepared
                   sync_exec_prepared send_query_prepared transaction reset async_reset sync_reset
                   lo_creat locreat lo_create locreate lo_import loimport lo_export loexport lo_open loopen
                   lo_unlink lounlink].freeze

      STATEMENTS.each do |name|
        define_method(name) do |sql, *args, &block|
          @dlb_session_changed = true unless @dlb_session_changed || DLB.plain_read?(sql)
          super(sql, *args, &block)
        end
      end

      CHANGES.each do |name|
        define_method(name) do |*args, &block|
          @dlb_session_changed = true
          super(*args, &block)
        end
      end

      # Says that the session changed in a way dlb cannot see (a function of your own that
      # runs +set_config+, creates a temporary table...): the connection is reset when its
      # block ends.
      # @return [nil]
      def mark_session_changed
        @dlb_session_changed = true
        nil
      end

      # @return [Boolean] whether a statement that is not a plain read ran since the
      #   connection was opened or last reset
      def session_changed?
        @dlb_session_changed == true
      end

      # Forgets what ran: the session was reset.
      # @api private
      def session_reset
        @dlb_session_changed = false
      end
    end

    # A pool entry: a connection opened on first use, reopened after it was discarded, and
    # handed back clean ({#check_in}).
    class Slot
      def initialize(dsn, connect)
        @dsn = dsn
        @connect = connect
        @connection = nil
        @reported = nil
        @client = nil
      end

      # @return [PG::Connection] the open connection (connecting first if there is none). A
      #   connection that is not idle (a check-in that never finished: the thread was killed
      #   during it) is discarded first: a borrower never gets one inside a transaction.
      def connection
        conn = @connection
        discard if conn && (conn.finished? || conn.transaction_status != PG::PQTRANS_IDLE)
        @connection ||= open
      end

      # Gives the connection back clean, with no round trip when the block ran only plain
      # reads: inside a transaction (open or aborted) it is rolled back and reset; when
      # +reset+ (the block raised, or the pools' +reset: :always+), a statement that is not a
      # plain read ran ({Tracked}: +SET search_path+, a temporary table, +LISTEN+...) or a
      # parameter the server reports changed (+SET TimeZone+ inside a function of yours...),
      # it is reset ({RESET_SQL}, one round trip). The connection object's own settings
      # ({CLIENT_SETTINGS}: a type map...) go back to their values at connect. A query
      # still running (+PQTRANS_ACTIVE+), an unknown state, or a reset that fails discards
      # it. Never raises.
      # @param reset [Boolean] reset even when the connection shows no change
      # @return [Symbol] +:clean+, +:reset+ or +:discarded+ (for the tests)
      def check_in(reset)
        conn = @connection
        return :clean if conn.nil?
        return discard if conn.finished?

        Pools.restore_client_settings(conn, @client)
        case conn.transaction_status
        when PG::PQTRANS_IDLE
          return :clean unless reset || conn.session_changed? || Pools.changed?(conn, @reported)

          conn.exec(RESET_SQL)
        when PG::PQTRANS_INTRANS, PG::PQTRANS_INERROR
          conn.exec("ROLLBACK; #{RESET_SQL}")
        else
          return discard
        end
        return discard unless conn.transaction_status == PG::PQTRANS_IDLE

        conn.session_reset
        @reported = Pools.reported(conn)
        :reset
      rescue StandardError
        discard
      end

      # Closes the connection; the next {#connection} opens a new one.
      # @return [Symbol] +:discarded+
      def discard
        conn = @connection
        @connection = nil
        begin
          conn.close unless conn.nil? || conn.finished?
        rescue StandardError
          nil # a broken connection may fail to close: it is gone either way
        end
        :discarded
      end

      # Forgets the connection without closing it: in a forked child, closing an inherited
      # connection would end the parent's session (libpq sends Terminate on the shared
      # socket). The object is kept referenced so that no finalizer closes it either.
      def abandon(orphans)
        orphans << @connection if @connection
        @connection = nil
      end

      private

      # A new connection, {Tracked} from now on, and the reported parameters it starts with
      # (after the pools' +connect+, which may set some).
      def open
        conn = @connect.call(@dsn)
        conn.extend(Tracked)
        @reported = Pools.reported(conn)
        @client = CLIENT_SETTINGS.map { |name| conn.public_send(name) }
        conn
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
    # @param reset [Symbol] +:auto+ or +:always+ (see {RESETS})
    def initialize(size: DEFAULT_SIZE, checkout_timeout_ms: DEFAULT_CHECKOUT_TIMEOUT_MS, connect: nil, reset: :auto)
      raise ArgumentError, "size must be a positive Integer (got #{size.inspect})" unless size.is_a?(Integer) && size.positive?
      raise TypeError, "connect must respond to call" unless connect.nil? || connect.respond_to?(:call)
      raise ArgumentError, "reset must be :auto or :always (got #{reset.inspect})" unless RESETS.include?(reset)

      @size = size
      @timeout = Duration.to_ms(checkout_timeout_ms, "checkout_timeout_ms") / 1000.0
      @connect = connect || ->(dsn) { PG.connect(dsn) }
      @reset_always = reset == :always
      @pools = {}
      @lock = Mutex.new
    end

    # Runs the block with a connection of the host's pool. A connection error (see
    # {Pools.connection_error?}) discards the connection and is re-raised marked with
    # {ConnectionLost}; the caller reports the host. The connection goes back clean (see
    # {Slot#check_in}): rolled back when the block left a transaction, reset when it may have
    # changed the session; an exception that is not a StandardError (a killed thread)
    # discards it rather than talk to the server.
    # *Blocking*: waits for a free connection (at most the checkout timeout), connects, and a
    # reset's round trip when one is needed.
    # @param host_id [Integer] the host's id (a pool per host)
    # @param dsn [String] the DSN to connect with
    # @yieldparam conn [PG::Connection]
    # @raise [ConnectionPool::TimeoutError] no connection free within the checkout timeout
    def with(host_id, dsn)
      pool_for(host_id, dsn).with do |slot|
        conn = nil
        raised = nil
        begin
          conn = slot.connection
          yield conn
        rescue StandardError => e
          raised = e
          if Pools.connection_error?(e, conn)
            slot.discard
            e.extend(ConnectionLost)
          end
          raise
        rescue Exception # rubocop:disable Lint/RescueException -- a kill or an interrupt, re-raised
          slot.discard
          raise
        ensure
          slot.check_in(@reset_always || !raised.nil?)
        end
      end
    end

    # The values of the {REPORTED} parameters on +conn+ (no round trip: libpq keeps them).
    # @api private
    def self.reported(conn)
      REPORTED.map { |name| conn.parameter_status(name) }
    end

    # Whether a {REPORTED} parameter of +conn+ differs from +reported+ (about 1 µs: no
    # Array built on this path, which every block takes).
    # @api private
    def self.changed?(conn, reported)
      i = 0
      while i < REPORTED.size
        return true unless conn.parameter_status(REPORTED[i]) == reported[i]

        i += 1
      end
      false
    end

    # Puts back the {CLIENT_SETTINGS} of +conn+ that differ from +saved+ (their values at
    # connect; the same objects: compared by identity, under a microsecond when none changed).
    # @api private
    def self.restore_client_settings(conn, saved)
      i = 0
      while i < CLIENT_SETTINGS.size
        conn.public_send(CLIENT_SETTERS[i], saved[i]) unless conn.public_send(CLIENT_SETTINGS[i]).equal?(saved[i])
        i += 1
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
