//! Shared helpers of the Switchboard benchmarks.
