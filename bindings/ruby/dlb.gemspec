# frozen_string_literal: true

require_relative "lib/dlb/version"

Gem::Specification.new do |spec|
  spec.name = "dlb"
  spec.version = DLB::VERSION
  spec.summary = "Client-side PostgreSQL load balancing (lag-aware replica picks, read-your-writes)"
  spec.description = <<~TEXT
    Ruby bindings (ffi) for dlb, a Rust library that spreads reads over PostgreSQL streaming
    replicas without serving stale reads to callers who just wrote: round-robin over healthy
    replicas, lag quarantine, and primary sticking by recorded WAL LSN. Per-host connection
    pools, Rack and Sidekiq middleware that carry read-your-writes across processes. At
    install it uses an installed libdlb (pkg-config dlb) or builds it with cargo from the
    crate sources the gem carries.
  TEXT
  spec.authors = ["dlb contributors"]
  spec.license = "MIT"
  spec.required_ruby_version = ">= 2.7"
  # The crate's sources are staged into ext/dlb/crate by `rake vendor` (part of `rake build`).
  spec.files = Dir.chdir(__dir__) do
    Dir["lib/**/*.rb", "ext/dlb/extconf.rb", "ext/dlb/crate/**/*"]
      .reject { |f| f.start_with?("ext/dlb/crate/target") || File.directory?(f) } + ["README.md"]
  end
  spec.extensions = ["ext/dlb/extconf.rb"]
  spec.require_paths = ["lib"]
  spec.add_dependency "connection_pool", ">= 2.2", "< 3"
  spec.add_dependency "ffi", ">= 1.15", "< 2"
  spec.add_dependency "pg", "~> 1.4"
  spec.add_development_dependency "activerecord", ">= 6.1"
  spec.add_development_dependency "minitest", "~> 5.15"
  spec.add_development_dependency "rack", ">= 2.2"
  spec.add_development_dependency "rack-test", ">= 2.0"
  spec.add_development_dependency "rake", ">= 13"
  spec.add_development_dependency "sidekiq", ">= 6.4"
  spec.metadata["rubygems_mfa_required"] = "true"
end
