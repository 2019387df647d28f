# frozen_string_literal: true

# Install-time step of the dlb gem (run by `gem install`): provides the libdlb shared library.
#
# 1. An installed libdlb (`make install` in the dlb repository: dlb.pc) of the gem's
#    MAJOR.MINOR, found with pkg-config: its directory is recorded in lib/dlb/native_config.rb
#    and nothing is built.
# 2. Otherwise cargo builds it from the crate sources the gem carries (ext/dlb/crate, staged
#    by `rake vendor`), and libdlb.so is installed into the gem's lib/dlb/.
#
# Environment: DLB_GEM_BUILD=cargo skips step 1; CARGO (the cargo command), CARGO_TARGET_DIR
# (reuse a build directory) and CARGO_NET_OFFLINE are honoured. Writes a Makefile by hand:
# mkmf would need Ruby's C headers, and nothing here is compiled against Ruby.

require "rbconfig"
require "shellwords"
require_relative "../../lib/dlb/version"

HERE = __dir__
CRATE = File.join(HERE, "crate")
LIB_NAME = "libdlb.#{RbConfig::CONFIG['SOEXT'] || 'so'}"
# Where RubyGems collects what `make install` puts there (it becomes the gem's lib/).
DEST = RbConfig::CONFIG["sitearchdir"]
WANT = DLB::VERSION.split(".").first(2)

def pkg_config(*args)
  out = IO.popen(["pkg-config", *args, "dlb"], err: File::NULL, &:read)
  $?.success? ? out.strip : nil
rescue SystemCallError
  nil # no pkg-config
end

def installed_libdir
  return nil if ENV["DLB_GEM_BUILD"] == "cargo"

  version = pkg_config("--modversion")
  return nil if version.nil?

  unless version.split(".").first(2) == WANT
    warn "dlb: pkg-config finds libdlb #{version}, the gem needs #{WANT.join('.')}.x: building it with cargo"
    return nil
  end
  libdir = pkg_config("--variable=libdir")
  libdir if libdir && !libdir.empty? && Dir.exist?(libdir)
end

libdir = installed_libdir
config_rb = <<~RUBY
  # frozen_string_literal: true

  # Written by ext/dlb/extconf.rb at `gem install`.
  module DLB
    # How this gem found libdlb when it was installed.
    module NativeConfig
      # The directory of the installed libdlb (pkg-config), or nil: built into lib/dlb/.
      LIBDIR = #{libdir.inspect}
    end
  end
RUBY
File.write(File.join(HERE, "native_config.rb"), config_rb)

if libdir
  puts "dlb: using the installed libdlb in #{libdir} (pkg-config)"
  build = "\t@true"
  copy = ""
else
  manifest = File.join(CRATE, "Cargo.toml")
  unless File.file?(manifest)
    abort "dlb: no installed libdlb #{WANT.join('.')}.x found with pkg-config (dlb.pc), and the gem " \
          "carries no crate sources to build it (#{manifest}): install libdlb (make install in the " \
          "dlb repository) or build the gem with `rake build`"
  end
  cargo = ENV.fetch("CARGO", "cargo")
  target = ENV.fetch("CARGO_TARGET_DIR", File.join(CRATE, "target"))
  puts "dlb: building libdlb with cargo (#{target})"
  build = "\t#{cargo} build --release --lib --locked --manifest-path #{Shellwords.escape(manifest)} " \
          "--target-dir #{Shellwords.escape(target)}"
  copy = "\tcp #{Shellwords.escape(File.join(target, 'release', LIB_NAME))} $(sitearchdir)/dlb/\n"
  # The build directory inside the installed gem is large and of no further use.
  copy += "\trm -rf #{Shellwords.escape(target)}\n" unless ENV.key?("CARGO_TARGET_DIR")
end

File.write(File.join(HERE, "Makefile"), <<~MAKE)
  sitearchdir = #{DEST}
  all:
  #{build}
  install: all
  \tmkdir -p $(sitearchdir)/dlb
  \tcp native_config.rb $(sitearchdir)/dlb/native_config.rb
  #{copy}clean:
  \t@true
  .PHONY: all install clean
MAKE
