# frozen_string_literal: true

module DLB
  # The gem's version. It follows the C library's version: {DLB.library_version} (the
  # +lb_version()+ of the loaded +libdlb+) must have the same MAJOR.MINOR, which is checked
  # when the library is loaded.
  VERSION = "0.3.0"
end
