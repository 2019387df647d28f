# frozen_string_literal: true

require_relative "lib/dlb/version"

Gem::Specification.new do |spec|
  spec.name = "dlb"
  spec.version = DLB::VERSION
  spec.summary = "Client-side PostgreSQL load balancing (lag-aware replica picks, read-your-writes)"
  spec.description = <<~TEXT
    Ruby bindings (ffi) for dlb, a Rust library that spreads reads over PostgreSQL streaming
    replicas without serving stale reads to callers who just wrote: round-robin over healthy
    replicas, lag quarantine, and primary sticking by recorded WAL LSN. Needs the libdlb
    shared library (cargo build --release --lib), found through DLB_LIB_PATH or the
    repository's target directory.
  TEXT
  spec.authors = ["dlb contributors"]
  spec.license = "MIT"
  spec.required_ruby_version = ">= 2.7"
  spec.files = Dir[File.join(__dir__, "lib/**/*.rb")].map { |f| f.delete_prefix("#{__dir__}/") } + ["README.md"]
  spec.require_paths = ["lib"]
  spec.add_dependency "ffi", ">= 1.15", "< 2"
  spec.add_development_dependency "minitest", "~> 5.15"
  spec.add_development_dependency "pg", "~> 1.4"
  spec.metadata["rubygems_mfa_required"] = "true"
end
