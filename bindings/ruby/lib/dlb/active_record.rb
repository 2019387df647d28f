# frozen_string_literal: true

require "active_record"
require "active_record/connection_adapters/postgresql_adapter"

module DLB
  # ActiveRecord's reads on dlb's replicas, its writes on the primary, with no change at the
  # call sites (ActiveRecord 6.1 and later; tested with 6.1).
  #
  # The mechanism is a connection-level router, as makara's and GitLab's load balancers: the
  # PostgreSQL adapter's +select_all+ (the method every ActiveRecord read goes through:
  # relations, +find+, +pluck+, +count+, +exists?+, +select_value+...) of the app's own
  # connections asks dlb where the read goes ({Balancer#read_route}: the current
  # {Context}'s causal token honoured, the primary once the unit of work wrote) and runs it
  # on a connection of that replica's ActiveRecord pool, one pool per dlb host, created on
  # the host's first pick and closed when dlb drains the host or finds its address re-pointed
  # (dlb's host events: DNS discovery works as for raw +pg+). Everything else stays on the
  # app's own (primary) connection: writes, +execute+/+exec_query+, reads inside a
  # transaction, a read that is not a plain read by dlb's rule ({DLB.plain_read?}: +SELECT
  # ... FOR UPDATE+, +nextval()+, advisory locks, +set_config()+..., which would leave
  # their state on the replica's pooled connection), +FOR SHARE+, and every read outside a
  # unit of work (a {Context}: a request behind {RackMiddleware}, a job
  # behind the Sidekiq middleware, or +DLB::Context.with+), so that consoles, migrations and
  # rake tasks never read a lagging replica.
  #
  # Every write on the app's connections (a statement that is not a read, a +COMMIT+) marks
  # the unit of work as written ({Context#wrote!}): its later reads go to the primary, the
  # Rack response carries the causal token, and jobs it enqueues afterwards carry it too.
  # A connection error on a replica reports the host to dlb (it leaves the rotation) and
  # the read runs once more on a new pick (another replica, or the primary).
  #
  # @example config/initializers/dlb.rb
  #   DLB_LB = DLB::Balancer.new(Rails.application.config_for(:dlb))
  #   DLB::ActiveRecord.install(balancer: DLB_LB)
  #   Rails.application.config.middleware.use DLB::RackMiddleware, balancer: DLB_LB,
  #                                                            secret: ENV.fetch("DLB_TOKEN_SECRET")
  module ActiveRecord
    # The oldest ActiveRecord the router knows the adapter API of.
    MIN_VERSION = Gem::Version.new("6.1")
    unless ::ActiveRecord.gem_version >= MIN_VERSION
      raise LoadError, "DLB::ActiveRecord needs ActiveRecord #{MIN_VERSION} or later (this is #{::ActiveRecord.gem_version})"
    end

    # Plain reads ({DLB.plain_read?}: row locks for update, sequences, advisory locks,
    # +set_config+ are not) that must run on the primary anyway: shared row locks (a standby
    # refuses them), large objects, functions that assign a transaction id or read the
    # primary's WAL.
    PRIMARY_ONLY = /\bFOR\s+(?:KEY\s+)?SHARE\b|\b(?:lo_\w+|txid_current|pg_current_\w+)\s*\(/i.freeze
    # A statement that ends a transaction with its writes.
    COMMIT = /\A\s*(?:COMMIT|END)\b/i.freeze

    class << self
      # @return [Router, nil] the installed router
      attr_reader :router

      # Routes ActiveRecord's reads through +balancer+ from now on (see {ActiveRecord}).
      # Installing again replaces the router (its replica pools are closed).
      # @param balancer [Balancer] the process's balancer, configured with the same primary
      #   as ActiveRecord's database (and its replicas)
      # @param model [Class] the ActiveRecord class whose connections are routed
      #   (+ActiveRecord::Base+: the app's primary database and its +reading+ role)
      # @return [Router]
      def install(balancer:, model: ::ActiveRecord::Base)
        raise TypeError, "balancer must be a DLB::Balancer (got #{balancer.class})" unless balancer.is_a?(Balancer)

        hook!
        old = @router
        @router = Router.new(balancer, model)
        old&.close
        @router
      end

      # Stops routing: every query runs on ActiveRecord's own connections again. Closes the
      # replica pools.
      def uninstall
        old = @router
        @router = nil
        old&.close
        nil
      end

      private

      # Once per process: the adapter's methods and the write subscriber.
      def hook!
        return if @hooked

        ::ActiveRecord::ConnectionAdapters::PostgreSQLAdapter.prepend(Adapter)
        ::ActiveSupport::Notifications.subscribe("sql.active_record") do |*, payload|
          @router&.observe(payload)
        end
        @hooked = true
      end
    end

    # Where each read goes; the replica pools, one per dlb host.
    class Router
      # @return [Balancer]
      attr_reader :balancer

      def initialize(balancer, model)
        @lb = balancer
        @model = model
        @handler = ::ActiveRecord::ConnectionAdapters::ConnectionHandler.new
        @pools = {}
        @lock = Mutex.new
        @pid = Process.pid
        @closed = false
        balancer.on_host_event { |event| host_event(event) unless @closed }
      end

      # Whether +adapter+ is one of the app's connections this router routes (memoized on the
      # adapter once it belongs to a pool: its pool never changes; while it connects it has
      # none yet, a +NullPool+ in 6.1).
      # @api private
      def managed?(adapter)
        state = adapter.instance_variable_get(:@dlb_managed)
        return state[1] if state && state[0].equal?(self)

        owner = owner_of(adapter.pool)
        return false if owner.nil?

        managed = owner == @model.connection_specification_name
        adapter.instance_variable_set(:@dlb_managed, [self, managed])
        managed
      end

      # Whether a read on +adapter+ may leave it: an app connection, in a unit of work that
      # has not written, outside a transaction.
      # @api private
      def routable?(adapter)
        ctx = Context.current
        !ctx.nil? && !ctx.wrote? && managed?(adapter) && !adapter.transaction_open?
      end

      # Runs a read's SQL where dlb says: the block (the app's connection) for the primary,
      # else a connection of the replica's pool; a connection error there reports the host
      # and picks again, once.
      # @api private
      def read(sql, name, binds, options, &on_primary)
        attempts = 0
        begin
          attempts += 1
          route = @lb.read_route
          return on_primary.call if route.primary?

          on_replica(route) { |conn| conn.select_all(sql, name, binds, **options) }
        rescue ConnectionLost
          retry if attempts == 1
          raise
        end
      end

      # The write subscriber: a statement on an app connection that is not a read, or a
      # commit, marks the unit of work as written.
      # @api private
      def observe(payload)
        ctx = Context.current
        return if ctx.nil? || ctx.wrote? || payload[:cached]

        conn = payload[:connection]
        return unless conn.is_a?(::ActiveRecord::ConnectionAdapters::PostgreSQLAdapter) && managed?(conn)

        sql = payload[:sql].to_s
        ctx.wrote! if COMMIT.match?(sql) || conn.write_query?(sql)
      end

      # @return [Array<Integer>] the dlb host ids that have an ActiveRecord pool
      def host_ids
        @lock.synchronize { @pools.keys }
      end

      # @return [::ActiveRecord::ConnectionAdapters::ConnectionPool, nil] a host's pool
      def pool(host_id)
        @lock.synchronize { @pools[host_id] }
      end

      # Closes a host's pool (idle connections now, busy ones once given back); its next
      # pick opens a new one.
      def close_host(host_id)
        pool = @lock.synchronize { @pools.delete(host_id) }
        @handler.remove_connection_pool(owner_name(host_id), role: :writing, shard: :default) if pool
        nil
      end

      # Closes every replica pool; the router routes nothing after.
      def close
        @closed = true
        ids = host_ids
        ids.each { |id| close_host(id) }
        nil
      end

      private

      def host_event(event)
        close_host(event["host_id"]) if EventPump::CLOSING.include?(event["event"])
      end

      # The pool's owner name (6.1-7.0: +connection_specification_name+; 7.1: +connection_name+).
      def owner_of(pool)
        config = pool.respond_to?(:pool_config) && pool.pool_config
        return nil unless config

        config.respond_to?(:connection_name) ? config.connection_name : config.connection_specification_name
      end

      def on_replica(route)
        pool = pool_for(route)
        conn = nil
        begin
          conn = pool.checkout
          conn.instance_variable_set(:@dlb_replica, true)
          yield conn
        rescue ::ActiveRecord::ActiveRecordError, PG::Error => e
          raise unless Router.connection_error?(e, conn)

          @lb.report_failure(route.dsn) unless @lb.closed?
          discard(pool, conn)
          conn = nil
          raise e.extend(ConnectionLost)
        ensure
          pool.checkin(conn) if conn
        end
      end

      def discard(pool, conn)
        return if conn.nil?

        pool.remove(conn)
        conn.disconnect!
      rescue StandardError
        nil # a broken connection may fail to close: it is gone either way
      end

      def pool_for(route)
        fork_check
        @pools[route.host_id] || @lock.synchronize { @pools[route.host_id] ||= new_pool(route) }
      end

      # In a forked child ActiveRecord discards the inherited pools, and dlb's host ids
      # come from the re-created balancer: start over.
      def fork_check
        return if @pid == Process.pid

        @lock = Mutex.new
        @pools = {}
        @handler = ::ActiveRecord::ConnectionAdapters::ConnectionHandler.new
        @pid = Process.pid
      end

      # An ActiveRecord pool for a replica: the app's database configuration (pool size,
      # timeouts, prepared statements, variables...) with the replica's connection
      # parameters from dlb's DSN, marked +replica+ (writes on it raise).
      def new_pool(route)
        base = @model.connection_pool.db_config.configuration_hash
        config = base.reject { |k, _| CONNECTION_KEYS.include?(k.to_sym) }.merge(Router.dsn_config(route.dsn))
        config[:replica] = true
        @handler.establish_connection(config, owner_name: owner_name(route.host_id), role: :writing, shard: :default)
      end

      def owner_name(host_id)
        "dlb:host:#{host_id}"
      end

      # The configuration keys that say where and as whom to connect: dlb's DSN says it.
      CONNECTION_KEYS = %i[url host hostaddr port database dbname username user password passfile service].freeze

      class << self
        # A libpq DSN as ActiveRecord configuration keys (+database+, +username+, the others
        # as libpq names them).
        # @api private
        def dsn_config(dsn)
          PG::Connection.conninfo_parse(dsn).each_with_object({}) do |opt, h|
            next if opt[:val].nil?

            key = { "dbname" => :database, "user" => :username }.fetch(opt[:keyword], opt[:keyword].to_sym)
            h[key] = opt[:val]
          end
        end

        # Whether +error+ (raised by ActiveRecord or pg) means the connection is gone:
        # connecting failed (not a pool timeout), or the driver's error is one
        # {Pools.connection_error?} counts.
        # @api private
        def connection_error?(error, conn)
          return false if error.is_a?(::ActiveRecord::ConnectionTimeoutError)
          return true if error.is_a?(::ActiveRecord::ConnectionNotEstablished)

          cause = error.is_a?(PG::Error) ? error : error.cause
          return false unless cause.is_a?(PG::Error)
          return true if Pools::CONNECTION_ERRORS.any? { |k| cause.is_a?(k) }

          raw = conn && (conn.instance_variable_get(:@raw_connection) || conn.instance_variable_get(:@connection))
          raw.is_a?(PG::Connection) && (raw.finished? || raw.status == PG::CONNECTION_BAD)
        end
      end
    end

    # Prepended into +ActiveRecord::ConnectionAdapters::PostgreSQLAdapter+: reads of the app's
    # connections through the router; dlb's replica connections verified without a round
    # trip.
    # @api private
    module Adapter
      def select_all(arel, name = nil, binds = [], *rest, **options)
        router = DLB::ActiveRecord.router
        return super if router.nil? || !rest.empty? || options[:async] || !router.routable?(self)

        query = arel_from_relation(arel)
        return super if query.respond_to?(:locked) && query.locked

        begin
          sql, binds_out, preparable = to_sql_and_binds(query, binds, options[:preparable])
        rescue ::RangeError
          return super
        end
        return super if write_query?(sql) || !DLB.plain_read?(sql) || DLB::ActiveRecord::PRIMARY_ONLY.match?(sql)

        fwd = options.merge(preparable: preparable)
        read = -> { router.read(sql, name, binds_out, fwd) { super(arel, name, binds, **options) } }
        query_cache_enabled ? cache_sql(sql, name, binds_out, &read) : read.call
      end

      # A dlb replica connection is checked out for each read: ActiveRecord 6.1 and 7.0 verify
      # one at every checkout with a +SELECT 1+. Here the driver's own state says whether it
      # is open (no round trip); one that died since shows at the read, which reports the
      # host and runs again elsewhere.
      def verify!(*)
        raw = @dlb_replica && instance_variable_get(:@connection)
        return super unless raw.is_a?(PG::Connection)

        reconnect! if raw.finished? || raw.status != PG::CONNECTION_OK
      end
    end
  end
end
