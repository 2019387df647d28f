//! The soak's command line and its seeded random numbers.

use crate::*;

// ---------------------------------------------------------------------------------------------
// arguments, randomness

pub(crate) struct Args {
    pub(crate) seconds: u64,
    pub(crate) seed: u64,
    pub(crate) workers: usize,
}

pub(crate) fn parse_args() -> Result<Args, String> {
    let var = |k: &str| std::env::var(k).ok();
    let mut a = Args {
        seconds: var("DLB_SOAK_SECONDS")
            .map_or(Ok(60), |v| v.parse())
            .map_err(|e| format!("DLB_SOAK_SECONDS: {e}"))?,
        seed: var("DLB_SOAK_SEED")
            .map_or_else(
                || {
                    Ok(std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_nanos() as u64
                        % 1_000_000_000)
                },
                |v| v.parse(),
            )
            .map_err(|e| format!("DLB_SOAK_SEED: {e}"))?,
        workers: 2,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| -> Result<u64, String> {
            it.next()
                .ok_or(format!("{name} needs a value"))?
                .parse()
                .map_err(|e| format!("{name}: {e}"))
        };
        match arg.as_str() {
            "--seconds" => a.seconds = value("--seconds")?,
            "--seed" => a.seed = value("--seed")?,
            "--workers" => a.workers = value("--workers")? as usize,
            "-h" | "--help" => {
                println!(
                    "usage: soak [--seconds N (60)] [--seed N (from the clock)] [--workers N per balancer (2)]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    if a.seconds == 0 || a.workers == 0 || a.workers > 16 {
        return Err("--seconds must be at least 1 and --workers from 1 to 16".into());
    }
    Ok(a)
}

/// SplitMix64: small, seeded, good enough to pick faults.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `lo..=hi`.
    pub(crate) fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
    pub(crate) fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(self.range(lo, hi))
    }
    pub(crate) fn replica(&mut self) -> usize {
        self.range(1, 2) as usize
    }
}
