//! Seeded randomness. Core never reaches for OS randomness: every machine owns a ChaCha RNG
//! seeded by its owner, so a simulation seed replays exactly.

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

/// The RNG type every core machine uses.
pub type CoreRng = ChaCha8Rng;

/// A ChaCha RNG from a 64-bit seed (stable across releases, unlike `StdRng`).
pub fn seeded(seed: u64) -> CoreRng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// A child seed drawn from a parent RNG, to seed a sub-machine.
pub fn child_seed(rng: &mut CoreRng) -> u64 {
    rng.next_u64()
}

/// A value uniformly in `0..n` (n > 0), without modulo bias worth caring about for n << 2^64.
pub fn below(rng: &mut CoreRng, n: u64) -> u64 {
    if n == 0 {
        return 0;
    }
    ((rng.next_u64() as u128 * n as u128) >> 64) as u64
}
