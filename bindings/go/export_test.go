package dlb

// BenchPickC exposes benchPickC to the benchmarks (package dlb_test).
func BenchPickC(b *Balancer, n int) error { return b.benchPickC(n) }

// ConfigJSON exposes configJSON (the complete JSON OpenConfig sends) to the tests.
func ConfigJSON(c Config) ([]byte, error) { return c.configJSON() }
