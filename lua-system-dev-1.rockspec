-- LuaRocks package of the `system` module.
--
--   luarocks --lua-version 5.4 make   (from a checkout; needs cargo: the module is Rust; Debian's
--                                     LuaRocks builds for 5.1 unless told the version)
--
-- The build (scripts/luarocks-build) asks the tree's interpreter for its Lua version, builds
-- crates/lua-system-module with cargo for it (LuaJIT trees get the LuaJIT build), and installs:
--   * the native library as `lua_system` (it links no Lua: the interpreter provides it, so no
--     liblua5.x-dev is needed),
--   * crates/lua-system-module/lua/system.lua as `system`: Lua finds `system.lua` before
--     luasystem's `system/init.lua`, and that file adds luasystem's functions when luasystem is
--     installed, so busted keeps working (docs/every-lua.md, "LuaRocks").
rockspec_format = "3.0"
package = "lua-system"
version = "dev-1"

source = {
   -- `luarocks make` builds the checkout it runs in; this is where a release would come from.
   url = "git+https://github.com/lua-system/lua-system.git",
}

description = {
   summary = "Memory statistics, GC control, parallelism, CPU count, hostname and pid for Lua",
   detailed = [[
The `system` module: mem_stats, allocated, heap_objects, gc, set_gc_percent, get_gc_percent,
num_goroutines, go_max_procs, num_cpu, hostname, pid; every function answers value, err.
Written in Rust with mlua, for Lua 5.1 to 5.5 and LuaJIT.
]],
   homepage = "https://github.com/lua-system/lua-system",
   license = "MIT",
}

dependencies = {
   "lua >= 5.1, < 5.6",
}

build = {
   type = "command",
   build_command = [[sh scripts/luarocks-build "$(LUA)"]],
   install = {
      lib = {
         lua_system = "target/rock/lua_system.so",
      },
      lua = {
         system = "crates/lua-system-module/lua/system.lua",
      },
   },
}
