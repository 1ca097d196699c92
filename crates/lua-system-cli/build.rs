//! What the runner needs from the build:
//!
//! * It exports the Lua C API, as the `lua` interpreter does: C modules loaded by `require`
//!   (`cjson.so`, `lpeg.so`) leave `lua_*` and `luaL_*` undefined and expect the process that
//!   loads them to provide them. Lua is linked into the runner statically, so its symbols are
//!   put in the dynamic symbol table with a dynamic list (and nothing else of the runner is).
//! * `-v` prints the embedded Lua's own version line (`LUA_COPYRIGHT`), compiled from its
//!   headers where the build knows them (the vendored PUC Lua: `DEP_LUA_INCLUDE`); otherwise
//!   the runner prints the version it can ask Lua for (cfg `lua_version_line` unset).
use std::io::Write;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=c/version.c");
    println!("cargo::rustc-check-cfg=cfg(lua_version_line)");
    if let Some(include) = std::env::var_os("DEP_LUA_INCLUDE") {
        cc::Build::new().file("c/version.c").include(include).warnings(true).compile("lua_system_version");
        println!("cargo:rustc-cfg=lua_version_line");
    }
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        return;
    }
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let list = out.join("lua-api.list");
    let mut file = std::fs::File::create(&list).expect("dynamic list");
    writeln!(file, "{{ lua_*; luaL_*; luaopen_*; luaJIT_*; }};").expect("dynamic list");
    println!("cargo:rustc-link-arg-bins=-Wl,--dynamic-list={}", list.display());
}
