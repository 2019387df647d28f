# frozen_string_literal: true

require_relative "dlb/version"
require_relative "dlb/codes"
require_relative "dlb/native"
require_relative "dlb/errors"
require_relative "dlb/route"
require_relative "dlb/duration"
require_relative "dlb/context"
require_relative "dlb/balancer"
require_relative "dlb/events"
require_relative "dlb/logs"

# Client-side PostgreSQL load balancing (read/write split, lag-aware replica picks, primary
# sticking for read-your-writes), bound from the +libdlb+ C library with the +ffi+ gem.
#
# Start with {DLB::Balancer}. The library is found through +ENV["DLB_LIB_PATH"]+ (a file
# path), else the repository's +target/release+ or +target/debug+, else the system's library
# path (see {DLB::Native}).
module DLB
  # Longest accepted sticking key, in bytes (+LB_MAX_KEY_LENGTH+).
  MAX_KEY_LENGTH = 1024
  # Longest LSN text, +"FFFFFFFF/FFFFFFFF"+ (+LB_LSN_MAX_LENGTH+).
  LSN_MAX_LENGTH = 17

  # Loaded on first use: they need the pg and connection_pool gems.
  autoload :Pools, File.expand_path("dlb/pools", __dir__)
  autoload :ConnectionLost, File.expand_path("dlb/pools", __dir__)
  autoload :RackMiddleware, File.expand_path("dlb/rack", __dir__)
  autoload :Sidekiq, File.expand_path("dlb/sidekiq", __dir__)
  # Needs ActiveRecord (6.1 or later): loaded when the app first names it.
  autoload :ActiveRecord, File.expand_path("dlb/active_record", __dir__)

  @balancers = ObjectSpace::WeakMap.new
  @balancers_lock = Mutex.new

  # @api private: every balancer of the process, for {after_fork}
  def self.register(balancer)
    @balancers_lock.synchronize { @balancers[balancer] = true }
  end

  # Re-creates, in a forked child, every balancer inherited from the parent (same
  # configuration; the LSN store's embedded contents are not inherited) and forgets their
  # pooled connections without closing them (closing would end the parent's sessions). Until
  # then, calls on an inherited balancer raise {ForkedError}. Call it first thing in a worker:
  #
  #   # config/puma.rb (with preload_app!)
  #   on_worker_boot { DLB.after_fork }
  #
  # A no-op in the process that created the balancers. *Blocking*: one health check of every
  # host per balancer, as {Balancer#initialize}.
  # @return [Integer] how many balancers were re-created
  def self.after_fork
    @balancers_lock = Mutex.new
    list = []
    @balancers.each_key { |lb| list << lb if lb.forked? && !lb.closed? }
    list.each(&:reopen_after_fork)
    Logs.after_fork
    list.size
  end

  # @return [String] the loaded C library's version (+lb_version()+), "MAJOR.MINOR.PATCH"
  def self.library_version
    Native.lb_version
  end

  # Whether +sql+ is one plain read: a statement that leaves its session as it found it, by
  # dlb's rule (+lb_is_plain_read()+, the one the Rust pools use): a +SELECT+, +VALUES+,
  # +TABLE+, +WITH+ or +SHOW+ that names none of the built-in ways to change the session
  # (+set_config+, +nextval+, advisory locks, +SELECT ... INTO+, a data-modifying +WITH+,
  # +FOR UPDATE+...), with nothing after a +;+. Errs on the side of false (such a word in a
  # string or a comment counts). The pools of {Balancer#with_replica} and
  # {Balancer#with_primary} reset a connection after a block that ran anything else. Never
  # blocks, about half a microsecond.
  # @param sql [String] in any encoding (its bytes are read; no copy)
  # @return [Boolean] false also for anything that is not a String
  def self.plain_read?(sql)
    sql = String.try_convert(sql)
    !sql.nil? && Native.lb_is_plain_read(sql, sql.bytesize)
  end

  # @return [String] the path (or name) of the loaded C library
  def self.library_path
    Native::LIBRARY_PATH
  end

  # The C library must speak this binding's ABI: same MAJOR.MINOR.
  lib_version = library_version
  unless lib_version.split(".").first(2) == VERSION.split(".").first(2)
    raise LoadError, "#{library_path} is libdlb #{lib_version}; the dlb gem #{VERSION} " \
                     "needs #{VERSION.split('.').first(2).join('.')}.x"
  end
end
