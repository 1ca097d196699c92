//! Figures and profiles of many states, for monitoring systems: [`WatchedStates`] (a Prometheus
//! collector, and merged heap profiles) and `serve`, `/metrics` and `/debug/pprof/heap` over
//! HTTP (feature `http`). The top of the library: it uses the host API below it.
//!
//! [`WatchedStates`]: watched_states::WatchedStates

#[cfg(feature = "http")]
pub(crate) mod http_server;
pub(crate) mod watched_states;
