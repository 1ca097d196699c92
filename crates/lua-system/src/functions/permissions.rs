//! What scripts may do with the module in a state: permission profiles.
//!
//! Each function's kind is on its line of the registry (`functions/mod.rs`); the profiles follow from
//! the kinds:
//!
//! | profile | allows |
//! |---|---|
//! | `full` (default) | everything |
//! | `observe` | reading only: the functions that change something (`gc`, `set_gc_percent`, `set_memory_limit`, `go_max_procs(n)` with an argument) are denied |
//! | `sandbox` | `observe`, and no host identity either: `hostname` and `pid` are denied |
//!
//! A denied call answers `nil, "permission denied: system.<function>"` and changes nothing; the
//! functions stay in the table, so scripts can probe them. Hosts choose a profile per state and
//! adjust it function by function ([`Permissions::allow`], [`Permissions::deny`]); the runner
//! takes `--profile NAME`, `--allow LIST` and `--deny LIST`.

use std::fmt;
use std::str::FromStr;

use super::{FUNCTIONS, Kind};
use crate::figures::metrics::FAMILIES;

/// A named set of permissions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Profile {
    /// Everything.
    Full,
    /// Reading only.
    Observe,
    /// Reading only, without the host's identity.
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

/// The functions a state's scripts may call, for reading and for changing: one bit per
/// function of the registry in each set.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Permissions {
    read: u64,
    change: u64,
}

const _: () = assert!(FUNCTIONS.len() < 64, "one bit per function");

impl Permissions {
    /// The permissions of `profile`.
    pub fn profile(profile: Profile) -> Permissions {
        let mut permissions = Permissions { read: 0, change: 0 };
        for (index, entry) in FUNCTIONS.iter().enumerate() {
            let bit = 1u64 << index;
            let (read, change) = match (profile, entry.kind) {
                (Profile::Full, _) => (true, true),
                (_, Kind::Reads | Kind::ReadsOrChanges) => (true, false),
                (Profile::Observe, Kind::Identifies) => (true, false),
                (Profile::Sandbox, Kind::Identifies) => (false, false),
                (_, Kind::Changes) => (false, false),
            };
            if read {
                permissions.read |= bit;
            }
            if change {
                permissions.change |= bit;
            }
        }
        permissions
    }

    /// Whether function `index` of the registry may be called, to change something (`change`)
    /// or only to read.
    pub(crate) fn allows_index(self, index: usize, change: bool) -> bool {
        let set = if change { self.change } else { self.read };
        index < 64 && set & (1 << index) != 0
    }

    /// Whether the function `name` may be called at all (for reading, or for its change).
    pub fn allows(self, name: &str) -> bool {
        index_of(name).is_some_and(|index| {
            let changes_only = FUNCTIONS[index].kind == Kind::Changes;
            self.allows_index(index, changes_only)
        })
    }

    /// Whether the function `name` may change what it changes (`gc`, `set_gc_percent`,
    /// `set_memory_limit`, `go_max_procs` with an argument).
    pub fn allows_change(self, name: &str) -> bool {
        index_of(name).is_some_and(|index| self.allows_index(index, true))
    }

    /// Also allows the function `name`, reading and changing.
    pub fn allow(self, name: &str) -> Result<Permissions, UnknownFunction> {
        let bit = 1u64 << index_of(name).ok_or_else(|| UnknownFunction(name.to_owned()))?;
        Ok(Permissions { read: self.read | bit, change: self.change | bit })
    }

    /// Denies the function `name`, reading and changing.
    pub fn deny(self, name: &str) -> Result<Permissions, UnknownFunction> {
        let bit = 1u64 << index_of(name).ok_or_else(|| UnknownFunction(name.to_owned()))?;
        Ok(Permissions { read: self.read & !bit, change: self.change & !bit })
    }

    /// As a state's record keeps them: may read, may change.
    pub(crate) fn to_bits(self) -> [u64; 2] {
        [self.read, self.change]
    }

    /// From a record's bits; bits past the registry's functions are dropped (a new record has
    /// them all set: everything allowed).
    pub(crate) fn from_bits([read, change]: [u64; 2]) -> Permissions {
        const KNOWN: u64 = (1 << FUNCTIONS.len()) - 1;
        Permissions { read: read & KNOWN, change: change & KNOWN }
    }

    /// The metric families `system.metrics()` may show under these permissions, one bit per
    /// family: those some allowed function reports too.
    pub(crate) fn visible_families(self) -> u32 {
        let visible = |reported_by: &[&str]| reported_by.iter().any(|name| self.allows(name));
        FAMILIES
            .iter()
            .enumerate()
            .filter(|(_, family)| visible(family.reported_by))
            .fold(0, |bits, (i, _)| bits | 1 << i)
    }
}

fn index_of(name: &str) -> Option<usize> {
    FUNCTIONS.iter().position(|entry| entry.name.to_bytes() == name.as_bytes())
}

impl Default for Permissions {
    fn default() -> Permissions {
        Permissions::profile(Profile::Full)
    }
}

impl fmt::Debug for Permissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = |index: usize| FUNCTIONS[index].name.to_str().unwrap_or("?");
        let reads: Vec<_> = (0..FUNCTIONS.len()).filter(|&i| self.allows_index(i, false)).map(name).collect();
        let changes: Vec<_> = (0..FUNCTIONS.len()).filter(|&i| self.allows_index(i, true)).map(name).collect();
        f.debug_struct("Permissions").field("read", &reads).field("change", &changes).finish()
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
        for (index, entry) in FUNCTIONS.iter().enumerate() {
            let name = entry.name.to_str().unwrap();
            assert!(!observe.allows_change(name), "{name}");
            assert_eq!(observe.allows_index(index, false), entry.kind != Kind::Changes, "{name}");
        }
    }

    #[test]
    fn sandbox_also_hides_the_host() {
        let sandbox = Permissions::profile(Profile::Sandbox);
        assert!(!sandbox.allows("hostname") && !sandbox.allows("pid"));
        assert!(sandbox.allows("mem_stats") && sandbox.allows("go_max_procs"));
        assert!(!sandbox.allows_change("go_max_procs"));
    }

    #[test]
    fn allow_and_deny_take_function_names() {
        let p = Permissions::profile(Profile::Observe).allow("gc").unwrap().deny("go_max_procs").unwrap();
        assert!(p.allows("gc") && p.allows_change("gc"));
        assert!(!p.allows("go_max_procs") && !p.allows_change("go_max_procs"));
        assert_eq!(p.allow("fork").unwrap_err(), UnknownFunction("fork".into()));
    }

    #[test]
    fn bits_round_trip() {
        let p = Permissions::profile(Profile::Sandbox).allow("pid").unwrap();
        assert_eq!(Permissions::from_bits(p.to_bits()), p);
    }
}
