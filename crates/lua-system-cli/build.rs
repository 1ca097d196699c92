//! What the runner needs from the build:
//!
//! * It exports the Lua C API, as the `lua` interpreter does: C modules loaded by `require`
//!   (`cjson.so`, `lpeg.so`) leave `lua_*` and `luaL_*` undefined and expect the process that
//!   loads them to provide them. Lua is linked into the runner statically, so its symbols are
//!   put in the dynamic symbol table with a dynamic list (and nothing else of the runner is).
//! * `-v` prints the embedded Lua's own version line (`LUA_COPYRIGHT`), compiled from its
//!   headers where the build knows them (the vendored PUC Lua: `DEP_LUA_INCLUDE`); otherwise
//!   the runner prints the version it can ask Lua for (cfg `lua_version_line` unset).
//! * Lua 5.4 and 5.5: finalizers wait at the very end of the stack rather than take the room
//!   kept for errors (c/finalizer_room.c says why), linked in with `--wrap`. It is compiled
//!   against the private headers of the release mlua builds (the lua-src package of Cargo.lock,
//!   in cargo's registry); without them the runner is built without it, with a warning.
//! * Lua 5.2 to 5.5: every emergency collection is reported to the module (c/emergency.c says
//!   why), linked in with `--wrap`.
use std::io::Write;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=c/version.c");
    println!("cargo::rustc-check-cfg=cfg(lua_version_line)");
    println!("cargo::rustc-check-cfg=cfg(emergency_wrapped)");
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
    wrap_finalizer_room(&out);
    wrap_emergency_collection(&out);
}

/// Compiles c/emergency.c and links it in front of Lua's `luaC_fullgc` (Lua 5.2 to 5.5,
/// vendored: linked statically, so the wrap reaches Lua's own calls).
fn wrap_emergency_collection(out: &std::path::Path) {
    println!("cargo:rerun-if-changed=c/emergency.c");
    let has_emergencies = ["LUA52", "LUA53", "LUA54", "LUA55"]
        .iter()
        .any(|version| std::env::var_os(format!("CARGO_FEATURE_{version}")).is_some());
    if !has_emergencies || std::env::var_os("CARGO_FEATURE_VENDORED").is_none() {
        return;
    }
    let objects = cc::Build::new().file("c/emergency.c").warnings(true).out_dir(out).compile_intermediates();
    for object in objects {
        println!("cargo:rustc-link-arg-bins={}", object.display());
    }
    println!("cargo:rustc-link-arg-bins=-Wl,--wrap=luaC_fullgc");
    println!("cargo:rustc-cfg=emergency_wrapped");
}

/// Compiles c/finalizer_room.c and links it in front of Lua's `luaD_checkminstack` (Lua 5.4 and
/// 5.5, vendored).
fn wrap_finalizer_room(out: &std::path::Path) {
    println!("cargo:rerun-if-changed=c/finalizer_room.c");
    let release = if std::env::var_os("CARGO_FEATURE_LUA54").is_some() {
        "lua-5.4"
    } else if std::env::var_os("CARGO_FEATURE_LUA55").is_some() {
        "lua-5.5"
    } else {
        return;
    };
    if std::env::var_os("CARGO_FEATURE_VENDORED").is_none() {
        return;
    }
    let Some(sources) = vendored_lua_sources(release) else {
        println!("cargo::warning=the vendored Lua's sources were not found: built without c/finalizer_room.c");
        return;
    };
    let objects = cc::Build::new()
        .file("c/finalizer_room.c")
        .include(&sources)
        .warnings(true)
        .out_dir(out)
        .compile_intermediates();
    for object in objects {
        println!("cargo:rustc-link-arg-bins={}", object.display());
    }
    println!("cargo:rustc-link-arg-bins=-Wl,--wrap=luaD_checkminstack");
}

/// The source folder of the vendored `release` (`lua-5.4`): the lua-src package of Cargo.lock,
/// in cargo's registry.
fn vendored_lua_sources(release: &str) -> Option<PathBuf> {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR")?);
    let lock = std::fs::read_to_string(manifest.join("../../Cargo.lock")).ok()?;
    let entry = lock.split("[[package]]").find(|p| p.contains("name = \"lua-src\""))?;
    let version = entry.lines().find_map(|l| l.strip_prefix("version = "))?.trim_matches('"').to_owned();
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))?;
    for registry in std::fs::read_dir(home.join("registry/src")).ok()? {
        let package = registry.ok()?.path().join(format!("lua-src-{version}"));
        let found = std::fs::read_dir(&package)
            .ok()
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .find(|entry| entry.file_name().to_string_lossy().starts_with(&format!("{release}.")));
        if let Some(found) = found {
            return Some(found.path());
        }
    }
    None
}
