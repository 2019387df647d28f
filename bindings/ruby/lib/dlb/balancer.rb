# frozen_string_literal: true

require "json"

module DLB
  # A load balancer over one PostgreSQL primary and its streaming replicas: it decides where
  # each read goes (a replica, or the primary when no replica can serve it) and remembers,
  # per sticking key, the primary's WAL position after a write so that later reads of that
  # key only go to replicas that have replayed it ("read your writes").
  #
  # It does not run queries for you: it hands out DSNs to connect with (+PG.connect(dsn)+).
  # A background thread (in the C library) watches the replicas' health and lag.
  #
  # Thread-safe: share one balancer between all threads of a process. Methods documented as
  # *blocking* release the GVL while they wait, so other Ruby threads keep running.
  #
  # Fork: a balancer belongs to the process that created it (its monitor thread does not
  # survive +fork+). In a forked child every call on an inherited balancer raises
  # {ForkedError} until {DLB.after_fork} re-creates it there (call it in Puma's
  # +on_worker_boot+, Unicorn's +after_fork+); the inherited C handle is never freed in the
  # child (so that the child cannot hang joining a thread it does not have).
  #
  # @example
  #   DLB::Balancer.open(primary: "host=db1 user=app dbname=app",
  #                      replicas: { hosts: ["db2:5432", "db3:5432"] }) do |lb|
  #     PG.connect(lb.primary_dsn).exec("INSERT ...")
  #     lb.record_lsn("repo:gitlab-org/gitlab")
  #     route = lb.pick_replica("repo:gitlab-org/gitlab") # a replica that has the insert
  #     PG.connect(route.dsn).exec("SELECT ...")
  #   end
  class Balancer
    # Per-fiber output buffers, reused by every call of that fiber (no allocation per pick).
    # @api private
    class Scratch
      attr_reader :buf, :cap, :len, :route

      def initialize(cap)
        @len = FFI::MemoryPointer.new(:size_t)
        @route = FFI::MemoryPointer.new(:uint32, 2)
        resize(cap)
      end

      # The lb_pick_info of lb_pick_replica_opts/lb_primary_route, allocated on first use.
      def info
        @info ||= Native::PickInfo.new
      end

      # The route a successful lb_pick_replica_opts/lb_primary_route filled, with its host.
      def to_info_route
        dsn = @buf.read_string(length).force_encoding(Encoding::UTF_8).freeze
        Route.from_c(dsn, @info[:role], @info[:reason], host_id: @info[:host_id])
      end

      # Makes room for +needed+ bytes (plus the NUL and some slack).
      def grow(needed)
        resize(needed + 1 + 64) if needed + 1 > @cap
      end

      # The picked route, from the buffers a successful pick filled.
      def to_route
        dsn = @buf.read_string(length).force_encoding(Encoding::UTF_8).freeze
        Route.from_c(dsn, @route.get_uint32(0), @route.get_uint32(4))
      end

      if FFI.type_size(:size_t) == 8
        def length
          @len.read_uint64
        end
      else
        def length
          @len.read_uint32
        end
      end

      private

      def resize(cap)
        @buf = FFI::MemoryPointer.new(:char, cap, false)
        @cap = cap
      end
    end

    SCRATCH_KEY = :__dlb_scratch__
    private_constant :SCRATCH_KEY, :Scratch

    OK = Status::OK
    STORE_ERROR = Status::ERR_STORE
    private_constant :OK, :STORE_ERROR

    # Creates a balancer, yields it to the block and closes it when the block returns (or
    # raises), like +File.open+. Without a block, the same as {new}.
    # @param config [Hash, String] see {#initialize}
    # @yieldparam balancer [Balancer]
    # @return [Object] the block's value, or the balancer without a block
    # @raise (see #initialize)
    def self.open(config)
      lb = new(config)
      return lb unless block_given?

      begin
        yield lb
      ensure
        lb.close
      end
    end

    # The release function of a handle: +lb_balancer_free+ in the process that created it
    # only. Built here, not in an instance method, so that it holds no reference to the
    # balancer (which would then never be collected).
    def self.releaser(pid)
      proc { |ptr| Native.lb_balancer_free(ptr) if Process.pid == pid }
    end
    private_class_method :releaser

    # Creates a balancer and checks every host once.
    #
    # *Blocking*: waits for one health check of every host, at most the configuration's
    # +probe_timeout_ms+ (default 100 ms), with the GVL released. A host that is down does not
    # fail the call: replicas become eligible once the monitor sees them healthy.
    #
    # @param config [Hash, String] the configuration: a Hash (encoded as JSON; Symbol keys
    #   are fine) or a JSON String passed as is, e.g.
    #   +{primary: "host=db1 port=5432 user=app dbname=app", replicas: {hosts: ["db2", "db3:5433"]},
    #   replica_check_interval_ms: 1000}+. Unknown fields are rejected. See the
    #   table in dlb's docs/configuration.md.
    # @raise [InvalidConfigError] malformed JSON, an unknown field or an invalid value (the
    #   message names the field as a JSON path)
    # @raise [InvalidArgumentError] the JSON holds a NUL byte or is not valid UTF-8
    # @raise [TypeError] config is neither a Hash nor a String
    def initialize(config)
      @config_json = self.class.send(:config_json, config)
      @handle = self.class.send(:create_handle, @config_json)
      @pid = Process.pid
      @lock = Mutex.new
      @in_flight = 0
      @closed = false
      @text_cap = 4096
      @host_listeners = []
      DLB.register(self)
    end

    # @api private
    def self.create_handle(json)
      out = FFI::MemoryPointer.new(:pointer)
      status = Native.lb_balancer_new(json, out)
      raise Error.from_status(status) unless status == OK

      FFI::AutoPointer.new(out.read_pointer, releaser(Process.pid))
    end
    private_class_method :create_handle

    # In a forked child: a new C balancer from the same configuration, in place of the
    # inherited one (left unfreed: its threads do not exist here). Called by {DLB.after_fork};
    # a no-op in the process that created the balancer, or once closed.
    # *Blocking* as {#initialize}.
    # @api private
    # @return [nil]
    def reopen_after_fork
      return nil if @pid == Process.pid || @closed

      @lock = Mutex.new # the parent's may have been held by a thread that does not exist here
      @in_flight = 0
      @pools&.after_fork
      @handle = self.class.send(:create_handle, @config_json)
      @pid = Process.pid
      # The parent's event thread does not exist here: a new one for the new handle.
      @pump = nil
      start_pools(@pools) if @pools
      nil
    end

    # @return [Boolean] whether this balancer was created in another process (before a
    #   +fork+) and not re-created here by {DLB.after_fork}: every call then raises {ForkedError}
    def forked?
      @pid != Process.pid
    end

    # @api private
    def self.config_json(config)
      json = case config
             when Hash
               begin
                 JSON.generate(Duration.convert_config(config))
               rescue JSON::GeneratorError => e
                 raise InvalidConfigError.new("invalid configuration: #{e.message}", code: Status::ERR_INVALID_CONFIG)
               end
             when String then config
             else
               raise TypeError, "config must be a Hash or a JSON String (got #{config.class})"
             end
      Balancer.c_string(json, "config")
    end
    private_class_method :config_json

    # Records the primary's current WAL insert position for +key+: call it after a write
    # commits. For the next +sticky_ttl_s+ seconds, {#pick_replica} with this key only
    # returns replicas that have replayed it. A key's LSN never moves backwards.
    #
    # *Blocking*: one round trip to the primary on a pooled connection (connecting first if
    # needed, up to +pool.checkout_timeout_ms+), plus the LSN store's write; the GVL is
    # released meanwhile.
    #
    # @param key [String] the sticking key (1 to {MAX_KEY_LENGTH} bytes of UTF-8), e.g.
    #   +"repo:gitlab-org/gitlab"+
    # @return [String] the LSN, +"X/Y"+: also a causal token for {#pick_replica_min_lsn}
    # @raise [InvalidKeyError] empty or too long key
    # @raise [InvalidArgumentError] key not valid UTF-8 or holding a NUL byte
    # @raise [PrimaryUnavailableError, QueryError, StoreError] retryable failures; a
    #   {StoreError} comes after the LSN was read and carries it ({StoreError#lsn}): carry it
    #   as a causal token
    # @raise [ClosedError] the balancer is closed
    def record_lsn(key)
      key = Balancer.c_string(key, "key")
      with_handle do |handle|
        s = scratch
        s.len.clear # written by the call on success and when it carries the LSN of a StoreError
        status = Native.lb_record_lsn(handle, key, s.buf, s.cap, s.len)
        raise store_error_with_lsn(s) if status == STORE_ERROR && s.length.between?(1, s.cap - 1)
        raise Error.from_status(status) unless status == OK

        s.buf.read_string(s.length).force_encoding(Encoding::UTF_8)
      end
    end

    # Records an LSN the caller already has for +key+ (a causal token carried in a header
    # or a job, or the result of its own +SELECT pg_current_wal_insert_lsn()+).
    #
    # *Blocking* only on the LSN store (never with the default in-memory store); the GVL is
    # released meanwhile.
    #
    # @param key [String] the sticking key
    # @param lsn [String] +"X/Y"+ (hex)
    # @return [nil]
    # @raise [InvalidLsnError] +lsn+ is not an +X/Y+ LSN
    # @raise [InvalidKeyError, InvalidArgumentError, StoreError, ClosedError]
    def record_lsn_value(key, lsn)
      key = Balancer.c_string(key, "key")
      lsn = Balancer.c_string(lsn, "lsn")
      with_handle do |handle|
        status = Native.lb_record_lsn_value(handle, key, lsn)
        raise Error.from_status(status) unless status == OK
      end
      nil
    end

    # Sends every sticky read of +key+ to the primary for +ttl+ seconds (data that must never
    # be read from a replica); such picks answer reason +:forced_primary+.
    #
    # The force is kept apart from the key's recorded LSN: it never erases it (when the force
    # ends, sticky picks still wait for a replica that replayed the LSN), and nothing shortens
    # it (a later {#record_lsn} or a shorter force leaves its end as it is; a longer one
    # extends it). Over 10 years counts as 10 years.
    #
    # *Blocking* only on the LSN store (never with the default in-memory store).
    #
    # @param key [String] the sticking key
    # @param ttl [Numeric, ActiveSupport::Duration] seconds (rounded up to whole
    #   milliseconds), or a duration (+60.seconds+), positive
    # @return [nil]
    # @raise [InvalidArgumentError] ttl not positive
    # @raise [InvalidKeyError, StoreError, ClosedError]
    def force_primary(key, ttl)
      key = Balancer.c_string(key, "key")
      ttl_ms = if Duration.duration?(ttl) then Duration.to_ms(ttl, "ttl")
               elsif ttl.is_a?(Numeric) then (ttl * 1000).ceil
               else
                 raise TypeError, "ttl must be seconds (a Numeric) or a duration such as 60.seconds (got #{ttl.class})"
               end
      unless ttl_ms.positive?
        raise InvalidArgumentError.new("ttl must be positive (got #{ttl})",
                                       code: Status::ERR_INVALID_ARGUMENT)
      end

      with_handle do |handle|
        status = Native.lb_force_primary(handle, key, ttl_ms)
        raise Error.from_status(status) unless status == OK
      end
      nil
    end

    # Picks where a read should go.
    #
    # Without a key: round-robin over the healthy replicas. Takes no lock and does no I/O:
    # never blocks (the GVL is kept).
    #
    # With a key: only replicas that have replayed the key's recorded LSN (see
    # {#record_lsn}); a key with no recorded LSN is round-robin too (reason
    # +:no_lsn_recorded+). *Blocking*: reads the LSN store and, when the cached replay
    # positions show no replica caught up, asks the replicas live for at most
    # +sticky_check_budget_ms+ (default 100 ms); the GVL is released meanwhile.
    #
    # When no replica can serve the read, the route is the primary's, with the reason
    # (+:no_healthy_replica+, +:not_caught_up+, ...): that is not an error.
    #
    # @param key [String, nil] the sticking key
    # @return [Route] the DSN (password included: for the driver only), role and reason
    # @raise [NoCaughtUpReplicaError] only with +"no_caught_up_replica": "error"+
    # @raise [InvalidKeyError] empty or too long key
    # @raise [InvalidArgumentError, StoreError, ClosedError]
    def pick_replica(key = nil)
      # The hot path, written out: one method call per step costs here.
      if key.nil?
        handle = enter
        begin
          s = scratch
          status = Native.lb_pick_replica_round_robin(handle, nil, s.buf, s.cap, s.len, s.route)
          return s.to_route if status == OK

          pick_again(status, s) { |t| Native.lb_pick_replica_round_robin(handle, nil, t.buf, t.cap, t.len, t.route) }
        ensure
          leave
        end
      else
        key = Balancer.c_string(key, "key")
        pick_with { |h, t| Native.lb_pick_replica(h, key, t.buf, t.cap, t.len, t.route) }
      end
    end

    # Picks, in round-robin order, a replica that has replayed at least +min_lsn+ (a causal
    # token from {#record_lsn}, carried by the caller), else the primary with reason
    # +:not_caught_up+.
    #
    # *Blocking* only when the cached replay positions show no replica caught up: it asks the
    # replicas live for at most +sticky_check_budget_ms+; the GVL is released meanwhile.
    #
    # @param min_lsn [String] +"X/Y"+
    # @return [Route]
    # @raise [InvalidLsnError] not an +X/Y+ LSN
    # @raise [NoCaughtUpReplicaError] only with +"no_caught_up_replica": "error"+
    # @raise [InvalidArgumentError, ClosedError]
    def pick_replica_min_lsn(min_lsn)
      min_lsn = Balancer.c_string(min_lsn, "min_lsn")
      pick_with { |handle, t| Native.lb_pick_replica_min_lsn(handle, min_lsn, t.buf, t.cap, t.len, t.route) }
    end

    # {#pick_replica} or {#pick_replica_min_lsn} with per-call options; the route also names
    # its host ({Route#host_id}, stable while the balancer knows the host).
    #
    # *Blocking* as {#pick_replica}, within +budget_ms+ when given; never with +cached_only+.
    #
    # @param key [String, nil] the sticking key (with +min_lsn+: one pick for a replica that has
    #   replayed the newer of the key's recorded LSN and the token)
    # @param min_lsn [String, nil] a causal token, +"X/Y"+
    # @param budget_ms [Numeric, ActiveSupport::Duration, nil] the most the pick's store read
    #   and live replica checks may take together; when it runs out, the read goes to the
    #   primary (or raises, with +no_caught_up: :error+). nil: only their own limits.
    # @param cached_only [Boolean] never block: route from the cached replay positions only
    # @param no_caught_up [Symbol, nil] +:primary+ or +:error+ for this call (nil: the
    #   configuration's +no_caught_up_replica+)
    # @return [Route]
    # @raise [ArgumentError] an unknown option (named), a bad +no_caught_up+
    # @raise [InvalidKeyError, InvalidLsnError, NoCaughtUpReplicaError, StoreError, ClosedError]
    def pick(key = nil, min_lsn: nil, **options)
      key = Balancer.c_string(key, "key") unless key.nil?
      min_lsn = Balancer.c_string(min_lsn, "min_lsn") unless min_lsn.nil?
      opts = Balancer.pick_opts(**options)
      pick_with(:to_info_route) { |h, t| Native.lb_pick_replica_opts(h, key, min_lsn, opts, t.buf, t.cap, t.len, t.info) }
    end

    # The lb_pick_opts of {#pick}'s options; nil for the defaults.
    # @api private
    def self.pick_opts(budget_ms: nil, cached_only: false, no_caught_up: nil)
      return nil if budget_ms.nil? && !cached_only && no_caught_up.nil?

      opts = Native::PickOpts.new
      opts[:struct_size] = Native::PickOpts.size
      opts[:flags] = cached_only ? Native::PICK_CACHED_ONLY : 0
      opts[:budget_us] = Duration.to_ms(budget_ms, "budget_ms") * 1000 unless budget_ms.nil?
      opts[:no_caught_up] = Native::NO_CAUGHT_UP.fetch(no_caught_up) do
        raise ArgumentError, "no_caught_up must be :primary, :error or nil (got #{no_caught_up.inspect})"
      end
      opts
    end

    # The primary's route for writes, with its host ({Route#host_id}); reason +:write+.
    # Never blocks.
    # @return [Route]
    # @raise [ClosedError]
    def primary_route
      pick_with(:to_info_route) { |h, t| Native.lb_primary_route(h, t.buf, t.cap, t.len, t.info) }
    end

    # The primary's DSN, for writes (counted as a routing decision with reason +:write+).
    # Never blocks.
    # @return [String] the DSN, password included: for the driver only
    # @raise [ClosedError]
    def primary_dsn
      with_handle do |handle|
        s = scratch
        attempts = 0
        loop do
          status = Native.lb_primary_dsn(handle, s.buf, s.cap, s.len)
          break s.buf.read_string(s.length).force_encoding(Encoding::UTF_8) if status == OK

          Native.check_retry(status, attempts += 1)
          s.grow(s.length)
        end
      end
    end

    # Tells the balancer that the caller saw a network error on a host: a replica leaves the
    # rotation at once, until a probe started after this call succeeds, and the monitor
    # re-checks every host at once. Never blocks.
    #
    # @param dsn [String] the DSN exactly as handed out ({Route#dsn}, {#primary_dsn}) or
    #   +"host:port"+
    # @return [nil]
    # @raise [UnknownHostError] none of this balancer's hosts (the message does not repeat
    #   the argument, which may hold a password)
    # @raise [InvalidArgumentError, ClosedError]
    def report_failure(dsn)
      dsn = Balancer.c_string(dsn, "dsn")
      with_handle do |handle|
        status = Native.lb_report_failure(handle, dsn)
        raise Error.from_status(status) unless status == OK
      end
      nil
    end

    # Every metric in the Prometheus text exposition format (names prefixed +dlb_+), e.g.
    # +dlb_picks_total{role="replica",reason="round_robin"}+. Contains no secrets. Never
    # blocks on I/O.
    # @return [String]
    # @raise [ClosedError]
    def metrics
      with_handle { |handle| read_text { |buf, cap, len| Native.lb_metrics_text(handle, buf, cap, len) } }
    end
    alias metrics_text metrics

    # The health report as JSON text: the primary and every replica (+addr+, redacted +dsn+,
    # +state+, quarantine +reason+, +replay_lsn+, +lag_bytes+, +lag_seconds+, +last_error+,
    # pool sizes), +primary_lsn+, +checks+, +healthy_replicas+. Contains no password. Never
    # blocks on I/O.
    # @return [String]
    # @raise [ClosedError]
    def status_json
      with_handle { |handle| read_text { |buf, cap, len| Native.lb_status_json(handle, buf, cap, len) } }
    end

    # {#status_json}, parsed.
    # @return [Hash{String => Object}] e.g. +status["healthy_replicas"]+,
    #   +status["replicas"][0]["state"]+
    # @raise [ClosedError]
    def status
      JSON.parse(status_json)
    end

    # Stops the monitor thread, closes the connection pools and frees the balancer.
    # Idempotent. Later calls raise {ClosedError}.
    #
    # *Blocking*: waits for the monitor thread to exit, not for a probe or connect in progress
    # (a vanished host costs nothing here; see +lb_balancer_free+), with the GVL released.
    # When other threads are inside a call on this balancer, it returns at once and the last
    # of those calls frees it as it returns.
    #
    # Closing is optional: a balancer that is garbage collected is freed too.
    # @return [nil]
    def close
      # The event thread first: it calls into the handle without counting as in flight.
      @pump&.stop
      handle = @lock.synchronize do
        return nil if @closed

        @closed = true
        take_handle_if_idle
      end
      handle&.free
      @pools&.close
      nil
    end

    # Sets the per-host connection pools of {#with_replica} and {#with_primary}. Call it
    # before their first use (later it raises: pools are not resized).
    # @param size [Integer] connections per host (default {Pools::DEFAULT_SIZE}, 5)
    # @param checkout_timeout_ms [Numeric, ActiveSupport::Duration] the longest wait for a
    #   free connection (default {Pools::DEFAULT_CHECKOUT_TIMEOUT_MS}, 5000 ms)
    # @param connect [#call, nil] opens a +PG::Connection+ from a DSN (default +PG.connect+).
    #   Session defaults belong in the connection's options (+PG.connect(dsn, options:
    #   "-c statement_timeout=5s")+): a reset (+RESET ALL+) restores those, not a +SET+ run here
    # @param reset [Symbol] when a connection given back is reset: +:auto+ (the default: when
    #   the block ran a statement that is not a plain read ({DLB.plain_read?}: a +SET+,
    #   +BEGIN+, a temporary table, an advisory lock, +LISTEN+, +PREPARE+, a write...), it is
    #   inside a transaction, a parameter the server reports changed, or the block raised; no
    #   round trip after a block of plain reads) or +:always+ (after every block: one more
    #   round trip each, for blocks whose own functions or triggers change the session where
    #   no statement shows it). A connection is never handed out inside a transaction.
    # @return [self]
    # @raise [ArgumentError] an unknown option (named), a bad size, or pools already in use
    def configure_pools(**options)
      @lock.synchronize do
        raise ArgumentError, "configure_pools must come before the first with_replica/with_primary" if @pools

        start_pools(Pools.new(**options))
      end
      self
    end

    # The route of a read in the current {Context}: {#pick_replica}, except that a causal
    # token the context carries (a previous request's write, the job's enqueuer's write)
    # is honoured: keyless picks need a replica that replayed it
    # ({#pick_replica_min_lsn}), keyed ones get it recorded for the key first. Once the
    # context wrote ({#with_primary}) and until its LSN is recorded ({Context#record}: at the
    # end of the request, or when it enqueues a job), its reads go to the primary (reason
    # +:write+), as GitLab's balancer does: no replica is known to have the write yet.
    # *Blocking* as {#pick_replica}; never after a write.
    # @param key [String, nil]
    # @param options [Hash] {#pick}'s options (+budget_ms+, +cached_only+, +no_caught_up+)
    # @return [Route] with its {Route#host_id}
    def read_route(key = nil, **options)
      ctx = Context.current
      return pick(key, **options) if ctx.nil?
      return primary_route if ctx.wrote?

      lsn = ctx.lsn
      return pick(key, **options) if lsn.nil?
      return pick(min_lsn: lsn, **options) if key.nil?

      ctx.seed(self, key)
      pick(key, **options)
    end

    # Runs the block with a pooled connection of the host {#read_route} picks for +key+: a
    # replica that has the key's writes (and the context's causal token), else the primary.
    #
    # A connection error in the block (+PG::ConnectionBad+, +PG::UnableToSend+, an admin
    # shutdown) reports the host ({#report_failure}), discards the connection and, when the
    # host was a replica and the block did not write ({#with_primary}) meanwhile, runs the
    # block once more on a new pick. Other errors pass through; the connection stays pooled.
    #
    # The connection goes back clean: a transaction the block left open or aborted is rolled
    # back, and the session is reset (+RESET ALL+, temporary tables, advisory locks, +LISTEN+,
    # prepared statements, cursors) when the block ran a statement that is not a plain read
    # ({Pools::Tracked}, {DLB.plain_read?}), raised, left a transaction, or changed a
    # parameter the server reports; with +configure_pools(reset: :always)+ after every block.
    # A block of plain reads costs no round trip. A reset that fails discards the connection.
    #
    # *Blocking*: the pick, the pool checkout (at most its checkout timeout) and connecting.
    # @param key [String, nil] the sticking key
    # @param options [Hash] {#pick}'s per-call options: +budget_ms+, +cached_only+,
    #   +no_caught_up+
    # @yieldparam conn [PG::Connection] for this block only: do not keep it (extended with
    #   {Pools::Tracked}: +conn.mark_session_changed+)
    # @return [Object] the block's value
    # @raise [PG::Error] from the block; a lost connection's error (after the retry) is also
    #   a {ConnectionLost}
    # @raise [ConnectionPool::TimeoutError] no free connection in time
    def with_replica(key = nil, **options, &block)
      attempts = 0
      begin
        attempts += 1
        writes = primary_uses
        route = read_route(key, **options)
        on_host(route, &block)
      rescue ConnectionLost
        retry if attempts == 1 && route&.replica? && primary_uses == writes
        raise
      end
    end

    # Runs the block with a pooled connection of the primary, for writes. Marks the current
    # {Context} as having written: its later reads go to the primary until its LSN is
    # recorded (at the end of the request, or when it enqueues a job; see {#read_route}). A
    # connection error reports the primary and discards the connection; nothing is retried.
    # The connection goes back clean, as {#with_replica}'s: a transaction the block left
    # open is rolled back, never committed. *Blocking*: checkout and connecting.
    # @yieldparam conn [PG::Connection]
    # @return [Object] the block's value
    def with_primary(&block)
      Context.current&.wrote!
      Thread.current[:__dlb_primary_uses__] = primary_uses + 1
      on_host(primary_route, &block)
    end

    # Calls the block with each of dlb's host events (a Hash: +"event"+ is +"added"+,
    # +"removed"+, +"drained"+, +"identity_changed"+..., +"host_id"+, +"addr"+), on the
    # balancer's event thread (started now if it was not), after the balancer's own pools
    # handled it. For pools of connections kept outside the balancer's (the ActiveRecord
    # integration): close a host's on +"drained"+ and +"identity_changed"+
    # ({EventPump::CLOSING}). The block must not block for long; an error it raises is
    # printed and ignored. Kept across {DLB.after_fork}.
    # @api private
    # @return [self]
    def on_host_event(&block)
      raise ArgumentError, "on_host_event needs a block" unless block

      @host_listeners << block
      pools
      self
    end

    # @return [Boolean] whether {#close} was called
    def closed?
      @closed
    end

    # @return [String] no configuration (it may hold a password)
    def inspect
      "#<#{self.class.name} #{@closed ? 'closed' : 'open'}>"
    end

    # Checks a String argument for the C API: a String (or +to_str+), in UTF-8 (other
    # encodings are converted), with no NUL byte. Messages never repeat the value.
    # @api private
    # @return [String]
    def self.c_string(value, name)
      str = String.try_convert(value)
      raise TypeError, "#{name} must be a String (got #{value.class})" if str.nil?

      enc = str.encoding
      unless enc == Encoding::UTF_8 || enc == Encoding::BINARY || (enc == Encoding::US_ASCII && str.ascii_only?)
        begin
          str = str.encode(Encoding::UTF_8)
        rescue EncodingError
          raise InvalidArgumentError.new("#{name} cannot be converted from #{enc} to UTF-8",
                                         code: Status::ERR_INVALID_ARGUMENT)
        end
      end
      raise InvalidArgumentError.new("#{name} contains a NUL byte", code: Status::ERR_INVALID_ARGUMENT) if str.include?("\0")

      str
    end

    private

    # The C handle, counted as in flight until {#leave}, so that {#close} never frees it under
    # a running call (lb_balancer_free must not run concurrently with another call on it).
    #
    # (Mutex#lock/unlock with +ensure+ rather than Mutex#synchronize: the same guarantees
    # without a block call, on the path of every pick.)
    def enter
      raise forked_error unless @pid == Process.pid

      @lock.lock
      begin
        raise ClosedError, "the balancer is closed" if @closed

        @in_flight += 1
        @handle
      ensure
        @lock.unlock
      end
    end

    # Ends a call begun with {#enter}; frees the handle when it was closed meanwhile and this
    # was the last call in flight.
    def leave
      @lock.lock
      begin
        @in_flight -= 1
        last = take_handle_if_idle if @closed
      ensure
        @lock.unlock
      end
      last&.free
    end

    def with_handle
      handle = enter
      begin
        yield handle
      ensure
        leave
      end
    end

    def primary_uses
      Thread.current[:__dlb_primary_uses__] || 0
    end

    # A block on a pooled connection of the route's host; a connection error reports the host.
    def on_host(route, &block)
      pools.with(route.host_id, route.dsn, &block)
    rescue ConnectionLost
      report_failure(route.dsn) unless @closed
      raise
    end

    def pools
      @pools || @lock.synchronize { @pools || start_pools(Pools.new) }
    end

    # Under @lock: the pools, and the thread that closes a host's pool on its events.
    def start_pools(pools)
      @pools = pools
      @pump = EventPump.new(@handle, pools, @host_listeners)
      ObjectSpace.define_finalizer(self, EventPump.finalizer(@pump))
      pools
    end

    def forked_error
      ForkedError.new("this balancer was created in process #{@pid}, before a fork; this is process " \
                      "#{Process.pid}: call DLB.after_fork in the child first (Puma: on_worker_boot " \
                      "{ DLB.after_fork }), or create a new balancer there", code: Status::ERR_FORKED)
    end

    # Under @lock: the handle to free now, when closed and no call is in flight.
    def take_handle_if_idle
      return nil unless @in_flight.zero? && @handle

      handle = @handle
      @handle = nil
      handle
    end

    def scratch
      Thread.current[SCRATCH_KEY] ||= Scratch.new(256)
    end

    # The {StoreError} of a failed lb_record_lsn, with the LSN the C call wrote to the buffer.
    def store_error_with_lsn(scratch)
      e = Error.from_status(STORE_ERROR)
      lsn = scratch.buf.read_string(scratch.length).force_encoding(Encoding::UTF_8)
      StoreError.new(e.message, code: STORE_ERROR, lsn: lsn)
    end

    # After a failed pick: raises, or, on LB_ERR_BUFFER_TOO_SMALL, grows the buffer and calls
    # the block again until the DSN fits. Every call is a new pick (another host may have a
    # longer DSN), so the buffer grows to what the last call needed.
    # A pick: yields (handle, scratch) for the C call, which returns its status; the buffer
    # grows while the DSN does not fit.
    # +finish+: the Scratch method that reads the route (to_info_route after the calls
    # that fill an lb_pick_info).
    def pick_with(finish = :to_route)
      handle = enter
      begin
        s = scratch
        status = yield handle, s
        return s.public_send(finish) if status == OK

        pick_again(status, s, finish) { |t| yield handle, t }
      ensure
        leave
      end
    end

    def pick_again(status, s, finish = :to_route)
      attempts = 1
      loop do
        Native.check_retry(status, attempts)
        s.grow(s.length)
        status = yield s
        return s.public_send(finish) if status == OK

        attempts += 1
      end
    end

    # A text that changes between calls (metrics, status): see {Native.read_text}; remembers
    # the size for next time.
    def read_text(&call)
      text, @text_cap = Native.read_text(@text_cap, &call)
      text
    end
  end
end
