//! `--listen ADDRESS`: the running script's figures and heap profile over HTTP, for Prometheus
//! (`/metrics`) and pprof (`/debug/pprof/heap`), served by the library's
//! [`lua_system::serve`] on a thread of its own that never enters Lua.
//!
//! The runner's state is the set's only one, without labels: its samples read as
//! `system.metrics()` writes them. The heap profiler runs at `--heap-profile-rate` (Go's
//! 512 KiB by default, as Go's `net/http/pprof` serves it; 0: off, and the profile is empty).
//! The server stops when the program ends, before the runner exits.

use std::sync::Arc;

use lua_system::mlua::Lua;
use lua_system::{MetricsServer, WatchedStates};

/// Starts serving `lua`'s state on `address`, and says where on stderr (port 0 asks the system
/// for a free port: the line tells which).
pub fn start(lua: &Lua, address: &str) -> Result<MetricsServer, String> {
    // Go's `:9464` means every interface; here the address is always said in full.
    if address.starts_with(':') {
        return Err(format!(
            "--listen: '{address}' needs a host: 127.0.0.1{address} (this machine only) or 0.0.0.0{address} (every interface)"
        ));
    }
    let states = Arc::new(WatchedStates::new());
    states.add(lua, &[]).map_err(|error| error.to_string())?;
    let server =
        lua_system::serve(address, states).map_err(|error| format!("--listen: cannot listen on {address}: {error}"))?;
    eprintln!("{}: serving http://{}/metrics and /debug/pprof/heap", crate::progname(), server.address());
    Ok(server)
}
