//! What scripts may do with the module in a state: permission profiles.
//!
//! | profile | allows |
//! |---|---|
//! | `full` (default) | everything |
//! | `observe` | reading only: `gc`, `set_gc_percent`, `go_max_procs(n)` with an argument and `set_memory_limit` are denied |
//! | `sandbox` | `observe`, and no host identity either: `hostname` and `pid` are denied |
//!
//! A denied call answers `nil, "permission denied: system.<function>"` and changes nothing; the
//! functions stay in the table, so scripts can probe them. Hosts choose a profile per state and
//! adjust it function by function ([`Permissions::allow`], [`Permissions::deny`]); the runner
//! takes `--profile NAME`, `--allow LIST` and `--deny LIST`.

use std::fmt;
use std::str::FromStr;

/// One thing a script can ask of the module. `go_max_procs` is two: reading the limit, and
/// setting it (a call with an argument).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
#[non_exhaustive]
pub enum Operation {
    MemStats,
    Allocated,
    HeapObjects,
    Gc,
    SetGcPercent,
    GetGcPercent,
    NumGoroutines,
    GoMaxProcs,
    SetGoMaxProcs,
    NumCpu,
    Hostname,
    Pid,
    SetMemoryLimit,
    GetMemoryLimit,
    Metrics,
}

impl Operation {
    const ALL: [Operation; 15] = [
        Operation::MemStats,
        Operation::Allocated,
        Operation::HeapObjects,
        Operation::Gc,
        Operation::SetGcPercent,
        Operation::GetGcPercent,
        Operation::NumGoroutines,
        Operation::GoMaxProcs,
        Operation::SetGoMaxProcs,
        Operation::NumCpu,
        Operation::Hostname,
        Operation::Pid,
        Operation::SetMemoryLimit,
        Operation::GetMemoryLimit,
        Operation::Metrics,
    ];

    /// The operations that change something.
    const CHANGES: [Operation; 4] =
        [Operation::Gc, Operation::SetGcPercent, Operation::SetGoMaxProcs, Operation::SetMemoryLimit];

    /// The Lua function the operation belongs to.
    pub fn function(self) -> &'static str {
        match self {
            Operation::MemStats => "mem_stats",
            Operation::Allocated => "allocated",
            Operation::HeapObjects => "heap_objects",
            Operation::Gc => "gc",
            Operation::SetGcPercent => "set_gc_percent",
            Operation::GetGcPercent => "get_gc_percent",
            Operation::NumGoroutines => "num_goroutines",
            Operation::GoMaxProcs | Operation::SetGoMaxProcs => "go_max_procs",
            Operation::NumCpu => "num_cpu",
            Operation::Hostname => "hostname",
            Operation::Pid => "pid",
            Operation::SetMemoryLimit => "set_memory_limit",
            Operation::GetMemoryLimit => "get_memory_limit",
            Operation::Metrics => "metrics",
        }
    }

    fn bit(self) -> u32 {
        1 << self as u8
    }
}

/// A named set of permissions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Profile {
    Full,
    Observe,
    Sandbox,
}

impl FromStr for Profile {
    type Err = String;

    fn from_str(name: &str) -> Result<Profile, String> {
        match name {
            "full" => Ok(Profile::Full),
            "observe" => Ok(Profile::Observe),
            "sandbox" => Ok(Profile::Sandbox),
            other => Err(format!("unknown profile '{other}' (full, observe or sandbox)")),
        }
    }
}

/// The operations a state's scripts may perform.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Permissions {
    allowed: u32,
}

impl Permissions {
    pub fn profile(profile: Profile) -> Permissions {
        let everything = Operation::ALL.iter().fold(0, |bits, op| bits | op.bit());
        let changes = Operation::CHANGES.iter().fold(0, |bits, op| bits | op.bit());
        let identity = Operation::Hostname.bit() | Operation::Pid.bit();
        let allowed = match profile {
            Profile::Full => everything,
            Profile::Observe => everything & !changes,
            Profile::Sandbox => everything & !changes & !identity,
        };
        Permissions { allowed }
    }

    pub fn allows(self, operation: Operation) -> bool {
        self.allowed & operation.bit() != 0
    }

    /// Also allows every operation of the function `name` (`go_max_procs`: reading and setting).
    pub fn allow(self, name: &str) -> Result<Permissions, UnknownFunction> {
        Ok(Permissions { allowed: self.allowed | Self::bits_of(name)? })
    }

    /// Denies every operation of the function `name`.
    pub fn deny(self, name: &str) -> Result<Permissions, UnknownFunction> {
        Ok(Permissions { allowed: self.allowed & !Self::bits_of(name)? })
    }

    fn bits_of(name: &str) -> Result<u32, UnknownFunction> {
        let bits = Operation::ALL.iter().filter(|op| op.function() == name).fold(0, |bits, op| bits | op.bit());
        if bits == 0 { Err(UnknownFunction(name.to_owned())) } else { Ok(bits) }
    }

    pub(crate) fn to_bits(self) -> u32 {
        self.allowed
    }

    pub(crate) fn from_bits(allowed: u32) -> Permissions {
        Permissions { allowed }
    }
}

impl Default for Permissions {
    fn default() -> Permissions {
        Permissions::profile(Profile::Full)
    }
}

impl fmt::Debug for Permissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let allowed: Vec<_> = Operation::ALL.iter().filter(|op| self.allows(**op)).collect();
        f.debug_tuple("Permissions").field(&allowed).finish()
    }
}

/// A name that is not a function of the module.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownFunction(pub String);

impl fmt::Display for UnknownFunction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "'{}' is not a function of the system module", self.0)
    }
}

impl std::error::Error for UnknownFunction {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observe_denies_exactly_the_changes() {
        let observe = Permissions::profile(Profile::Observe);
        for op in Operation::ALL {
            assert_eq!(observe.allows(op), !Operation::CHANGES.contains(&op), "{op:?}");
        }
    }

    #[test]
    fn sandbox_also_hides_the_host() {
        let sandbox = Permissions::profile(Profile::Sandbox);
        assert!(!sandbox.allows(Operation::Hostname) && !sandbox.allows(Operation::Pid));
        assert!(sandbox.allows(Operation::MemStats) && sandbox.allows(Operation::GoMaxProcs));
        assert!(!sandbox.allows(Operation::SetGoMaxProcs));
    }

    #[test]
    fn allow_and_deny_take_function_names() {
        let p = Permissions::profile(Profile::Observe).allow("gc").unwrap().deny("go_max_procs").unwrap();
        assert!(p.allows(Operation::Gc));
        assert!(!p.allows(Operation::GoMaxProcs) && !p.allows(Operation::SetGoMaxProcs));
        assert_eq!(p.allow("fork").unwrap_err(), UnknownFunction("fork".into()));
    }
}
