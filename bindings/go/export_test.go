package dlb

// BenchPickC exposes benchPickC to the benchmarks (package dlb_test).
func BenchPickC(b *Balancer, n int) error { return b.benchPickC(n) }
