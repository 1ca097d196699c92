//! The figure types, as scripts and hosts receive them, each documented as Go's
//! `runtime/mstats.go` documents `MemStats`:
//!
//! * `mem_stats.rs`: [`MemStats`](mem_stats::MemStats), the table of `mem_stats()`, and
//!   `FIELDS`, the one table of its fields.
//! * `metrics.rs`: [`Metrics`](metrics::Metrics) and `FAMILIES`, the one table of the metric
//!   families, with their Prometheus text.
//!
//! Below the functions that return them (`functions/`), above the state's record they are read
//! from (`state/`).

pub(crate) mod mem_stats;
pub(crate) mod metrics;
