//! What a sandboxed state can make the process hold resident is bounded by its memory limit plus
//! a constant, whatever its allocation pattern (SECURITY.md, "Memory limit"): with the library's
//! feature `jemalloc`, a limited state allocates from an arena of its own whose pages the limit
//! counts. One test in its own binary, so that the process's peak resident memory is this
//! test's.
#![cfg(feature = "jemalloc")]

use lua_system::SystemLua;

/// The process's peak resident memory (`VmHWM`), in bytes.
fn peak_resident() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

/// The fragmentation attack of the hostile corpus: per small size class, fill the heap to the
/// limit with strings of that class, keep one in sixteen, drop the rest (counted by live bytes
/// alone, the half-empty slabs of every class stayed resident: 135 MB under a 16 MiB limit).
const FRAGMENTING: &str = include_str!("../../../tests/hostile/mem_fragments.lua");

#[test]
fn a_sandboxed_state_that_fragments_its_heap_stays_within_its_limit_in_resident_memory() {
    const LIMIT: usize = 16 << 20;
    let lua = SystemLua::new().unwrap();
    lua_system::set_memory_limit(&lua, Some(LIMIT)).unwrap();
    lua_system::sandbox(&lua).unwrap();
    let before = peak_resident();
    // The script may end with "not enough memory" once fragmentation fills the limit's pages.
    let outcome = lua.load(FRAGMENTING).exec();
    let grown = peak_resident().saturating_sub(before);
    println!("outcome {outcome:?}; peak resident memory grew by {} KiB", grown / 1024);
    assert!(grown <= (LIMIT + (48 << 20)) as u64, "grew by {} MiB", grown >> 20);
}
