# frozen_string_literal: true

require "ffi"

module DLB
  # The raw C API of +libdlb+ (+include/dlb.h+), attached with the +ffi+ gem. Internal: use
  # {DLB::Balancer}. Every function is attached once; the functions that may wait on the
  # network or a lock are attached with +blocking: true+, so that the calling Ruby thread
  # releases the GVL while it waits and other Ruby threads keep running.
  #
  # The library is looked up, in this order:
  # 1. +ENV["DLB_LIB_PATH"]+: the path of the shared library file (an error when missing);
  # 2. the one the gem installed: +lib/dlb/libdlb.so+ (built with cargo at +gem install+), or
  #    the directory of the installed libdlb that pkg-config named then (+NativeConfig::LIBDIR+);
  # 3. the repository's build directory, relative to this file: +target/release+, then
  #    +target/debug+ (+cargo build --release --lib+ makes +target/release/libdlb.so+);
  # 4. the directory +pkg-config --variable=libdir dlb+ names now (an installed libdlb);
  # 5. +libdlb+ on the system's library search path.
  #
  # @api private
  module Native
    extend FFI::Library

    # The repository root when the gem is used from its source tree (bindings/ruby/lib/dlb).
    REPO_ROOT = File.expand_path("../../../..", __dir__)
    LIB_NAME = "libdlb.#{FFI::Platform::LIBSUFFIX}"

    # The shared library files tried, in order (the last entry may be a bare name for the
    # dynamic loader's own search).
    # @return [Array<String>]
    def self.candidates
      explicit = ENV.fetch("DLB_LIB_PATH", "")
      unless explicit.empty?
        unless File.file?(explicit)
          raise LoadError, "DLB_LIB_PATH=#{explicit} is not a file (it must be the path of " \
                           "#{LIB_NAME}, e.g. target/release/#{LIB_NAME})"
        end
        return [File.expand_path(explicit)]
      end
      dirs = [__dir__, installed_libdir, *%w[release debug].map { |profile| File.join(REPO_ROOT, "target", profile) }]
      found = in_dirs(dirs.compact)
      found = in_dirs([pkg_config_libdir].compact) if found.empty?
      found + ["dlb"]
    end

    # The library files (+libdlb.so+, else the versioned +libdlb.so.0+) in +dirs+.
    def self.in_dirs(dirs)
      dirs.filter_map do |dir|
        [LIB_NAME, "#{LIB_NAME}.0"].map { |name| File.join(dir, name) }.find { |path| File.file?(path) }
      end
    end

    # The libdlb directory pkg-config named at +gem install+ (nil when the gem built its own).
    def self.installed_libdir
      require_relative "native_config"
      NativeConfig::LIBDIR
    rescue LoadError
      nil # used from the source tree: no install step ran
    end

    # +pkg-config --variable=libdir dlb+, or nil (no pkg-config, or no dlb.pc).
    def self.pkg_config_libdir
      out = IO.popen(%w[pkg-config --variable=libdir dlb], err: File::NULL, &:read).strip
      $?.success? && !out.empty? ? out : nil
    rescue SystemCallError
      nil
    end

    # @return [String] the path (or name) of the library that was loaded
    def self.load_library
      tried = candidates
      errors = []
      tried.each do |path|
        ffi_lib path
        return path
      rescue LoadError => e
        errors << "#{path}: #{e.message}"
      end
      raise LoadError, "cannot load #{LIB_NAME}; install libdlb (make install: pkg-config dlb), set " \
                       "DLB_LIB_PATH to its path, or build it with `cargo build --release --lib` in the " \
                       "dlb repository (tried: #{errors.join('; ')})"
    end

    LIBRARY_PATH = load_library

    typedef :uint32, :lb_status
    typedef :pointer, :lb_balancer

    # Never block, never fail.
    attach_function :lb_version, [], :string
    attach_function :lb_status_str, [:lb_status], :string
    attach_function :lb_status_is_retryable, [:lb_status], :bool
    attach_function :lb_reason_str, [:uint32], :string
    attach_function :lb_role_str, [:uint32], :string
    attach_function :lb_last_error_message, %i[pointer size_t], :size_t
    attach_function :lb_last_error_length, [], :size_t
    # (A String's bytes, read in place: +buffer_in+ takes frozen ones too.)
    attach_function :lb_is_plain_read, %i[buffer_in size_t], :bool

    # Blocking: one health check of every host (bounded by probe_timeout_ms).
    attach_function :lb_balancer_new, %i[string pointer], :lb_status, blocking: true
    # Blocking: joins the monitor thread.
    attach_function :lb_balancer_free, [:lb_balancer], :void, blocking: true

    # Blocking: a round trip to the primary, and the LSN store.
    attach_function :lb_record_lsn, %i[lb_balancer string pointer size_t pointer], :lb_status,
                    blocking: true
    # Blocking only on the LSN store (a Redis store does network I/O).
    attach_function :lb_record_lsn_value, %i[lb_balancer string string], :lb_status, blocking: true
    attach_function :lb_force_primary, %i[lb_balancer string uint64], :lb_status, blocking: true

    # The same C function twice: without a key it never blocks (no lock, no I/O), so it
    # keeps the GVL and avoids the cost of releasing and re-acquiring it; with a key it may
    # check the replicas live and the LSN store.
    attach_function :lb_pick_replica_round_robin, :lb_pick_replica,
                    %i[lb_balancer pointer pointer size_t pointer pointer], :lb_status
    attach_function :lb_pick_replica, %i[lb_balancer string pointer size_t pointer pointer],
                    :lb_status, blocking: true
    attach_function :lb_pick_replica_min_lsn,
                    %i[lb_balancer string pointer size_t pointer pointer], :lb_status,
                    blocking: true

    # Never block (on I/O).
    attach_function :lb_primary_dsn, %i[lb_balancer pointer size_t pointer], :lb_status
    attach_function :lb_report_failure, %i[lb_balancer string], :lb_status
    attach_function :lb_metrics_text, %i[lb_balancer pointer size_t pointer], :lb_status
    attach_function :lb_status_json, %i[lb_balancer pointer size_t pointer], :lb_status
    attach_function :lb_dsn_redact, %i[string pointer size_t pointer], :lb_status
    attach_function :lb_dsn_address, %i[string pointer size_t pointer], :lb_status

    # Per-call pick options (+lb_pick_opts+): zero-initialised, +struct_size+ set.
    class PickOpts < FFI::Struct
      layout :struct_size, :uint32, :flags, :uint32, :budget_us, :uint64, :no_caught_up, :uint32
    end

    # What a pick chose, with the host's identity (+lb_pick_info+).
    class PickInfo < FFI::Struct
      layout :role, :uint32, :reason, :uint32, :host_id, :uint64, :addr, [:char, 272]
    end

    # +LB_PICK_CACHED_ONLY+
    PICK_CACHED_ONLY = 1
    # +LB_NO_CAUGHT_UP_*+ by name.
    NO_CAUGHT_UP = { nil => 0, primary: 1, error: 2 }.freeze

    # Blocking as lb_pick_replica, within the options' budget.
    attach_function :lb_pick_replica_opts,
                    %i[lb_balancer string string pointer pointer size_t pointer pointer], :lb_status,
                    blocking: true
    attach_function :lb_primary_route, %i[lb_balancer pointer size_t pointer pointer], :lb_status
    # Blocking: waits up to timeout_ms for a host event or a log record (the GVL released).
    attach_function :lb_next_event, %i[lb_balancer uint32 pointer size_t pointer], :lb_status, blocking: true
    attach_function :lb_wake_event_waiters, [:lb_balancer], :lb_status
    attach_function :lb_log_queue_enable, [:uint32], :lb_status
    attach_function :lb_next_log, %i[uint32 pointer size_t pointer], :lb_status, blocking: true
    attach_function :lb_wake_log_waiters, [], :void

    # Most tries of a call whose output keeps outgrowing its buffer.
    MAX_ATTEMPTS = 16

    # Runs a C call that writes a text into a caller buffer (+buf+, +cap+, +len+): yields
    # them for the call, which returns its status, and while the status is
    # +LB_ERR_BUFFER_TOO_SMALL+ yields a larger buffer (the length needed plus some slack:
    # texts such as the metrics change between calls), at most {MAX_ATTEMPTS} times.
    # @param cap [Integer] the first buffer's size
    # @return [Array(String, Integer)] the text and the size of the buffer that held it
    # @raise [Error] the error of a failed call
    def self.read_text(cap)
      len = FFI::MemoryPointer.new(:size_t)
      attempts = 0
      loop do
        buf = FFI::MemoryPointer.new(:char, cap, false)
        status = yield buf, cap, len
        needed = len.read(:size_t)
        return [buf.read_string(needed).force_encoding(Encoding::UTF_8), cap] if status == Status::OK

        check_retry(status, attempts += 1)
        cap = needed + 1 + (needed / 8) + 256
      end
    end

    # Raises the error of a failed call, unless it is +LB_ERR_BUFFER_TOO_SMALL+ and fewer
    # than {MAX_ATTEMPTS} attempts were made. Must run right after the failing call (same
    # thread, no other +lb_*+ call in between): it reads the thread's last error message.
    def self.check_retry(status, attempts)
      raise Error.from_status(status) unless status == Status::ERR_BUFFER_TOO_SMALL && attempts < MAX_ATTEMPTS
    end

    # The calling OS thread's last error message (+lb_last_error_message()+).
    #
    # dlb keeps the last error per OS thread. In CRuby every Ruby thread is its own native
    # thread, and a +blocking: true+ call runs on the calling native thread (it only
    # releases the GVL), so reading the message right after the failing call, in the same
    # Ruby thread and before any other +lb_*+ call, gets that call's message.
    # @return [String]
    def self.last_error_message
      len = lb_last_error_length
      return "" if len.zero?

      buf = FFI::MemoryPointer.new(:char, len + 1)
      full = lb_last_error_message(buf, len + 1)
      buf.read_string([full, len].min).force_encoding(Encoding::UTF_8)
    end
  end
end
