# frozen_string_literal: true

require_relative "dlb/version"
require_relative "dlb/codes"
require_relative "dlb/native"
require_relative "dlb/errors"
require_relative "dlb/route"
require_relative "dlb/balancer"

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

  # @return [String] the loaded C library's version (+lb_version()+), "MAJOR.MINOR.PATCH"
  def self.library_version
    Native.lb_version
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
