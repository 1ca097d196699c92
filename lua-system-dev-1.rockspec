-- LuaRocks package of the `system` module, built with mlua's LuaRocks backend.
--
--   luarocks install lua-system-dev-1.rockspec      (needs cargo: the module is Rust)
--
-- Layout: the Rust crate built is crates/lua-system-module (source.dir), which links no Lua
-- (the interpreter provides it). The native library is installed as `lua_system`, and
-- crates/lua-system-module/lua/system.lua as `system`: Lua finds `system.lua` before
-- luasystem's `system/init.lua`, and that file adds luasystem's functions when luasystem is
-- installed, so busted keeps working (README, "LuaRocks").
rockspec_format = "3.0"
package = "lua-system"
version = "dev-1"

source = {
   url = "git+https://github.com/lua-system/lua-system.git",
   dir = "lua-system/crates/lua-system-module",
}

description = {
   summary = "Memory statistics, GC control, parallelism, CPU count, hostname and pid for Lua",
   detailed = [[
The `system` module: mem_stats, allocated, heap_objects, gc, set_gc_percent, get_gc_percent,
num_goroutines, go_max_procs, num_cpu, hostname, pid; every function answers value, err.
Written in Rust with mlua, for Lua 5.1 to 5.4 and LuaJIT.
]],
   homepage = "https://github.com/lua-system/lua-system",
   license = "MIT",
}

dependencies = {
   "lua >= 5.1, < 5.5",
   "luarocks-build-rust-mlua >= 0.2.2",
}

build = {
   type = "rust-mlua",
   -- target/release/libsystem.so, installed as lua_system.so
   modules = {
      lua_system = "system",
   },
   -- Relative to the repository root.
   include = {
      ["crates/lua-system-module/lua/system.lua"] = "system.lua",
   },
}
