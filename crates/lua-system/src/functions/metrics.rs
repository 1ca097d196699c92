//! `system.metrics()`: the state's and the process's figures in the Prometheus text exposition
//! format (`figures/metrics.rs` has the families and the writer).

use crate::ffi::Call;
use crate::figures::mem_stats::MemStats;
use crate::functions::answer::{Failure, Reply};
use crate::state::StateRecord;

/// `system.metrics()`: the figures the state's permissions let it see, as Prometheus text.
pub(crate) fn metrics(call: &Call<'_, StateRecord>) -> Result<Reply, Failure> {
    let record = call.record();
    let mut metrics = MemStats::read(record, &call.collector()).metrics();
    metrics.keep_only(record.visible_families());
    Ok(Reply::Metrics(metrics))
}
