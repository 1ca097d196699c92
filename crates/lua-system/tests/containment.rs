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

/// For each small size class: fill the heap to the limit with strings of that class, keep one
/// in sixteen, drop the rest. The live heap stays under the limit; counted by live bytes alone,
/// the half-empty slabs of every class stayed resident (135 MB under a 16 MiB limit).
const FRAGMENTING: &str = r#"
local kept, n = {}, 0
local size = 16
while size <= 4096 do
  local batch, count = {}, 0
  pcall(function()
    while true do
      count = count + 1
      batch[count] = string.rep("x", size - 30) .. count
    end
  end)
  pcall(function()
    for i = 1, count, 16 do n = n + 1; kept[n] = batch[i] end
  end)
  batch = nil
  collectgarbage()
  size = size + math.floor(size / 4) + 1
end
return n
"#;

#[test]
fn a_sandboxed_state_that_fragments_its_heap_stays_within_its_limit_in_resident_memory() {
    const LIMIT: usize = 16 << 20;
    let lua = SystemLua::new().unwrap();
    lua_system::set_memory_limit(&lua, Some(LIMIT)).unwrap();
    lua_system::sandbox(&lua).unwrap();
    let before = peak_resident();
    // The script may end with "not enough memory" once fragmentation fills the limit's pages.
    let outcome = lua.load(FRAGMENTING).eval::<i64>();
    let grown = peak_resident().saturating_sub(before);
    println!("outcome {outcome:?}; peak resident memory grew by {} KiB", grown / 1024);
    assert!(grown <= (LIMIT + (48 << 20)) as u64, "grew by {} MiB", grown >> 20);
}
