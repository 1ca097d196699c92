//! Where `require` looks: `package.path` and `package.cpath` as Debian's `lua5.x` (and `luajit`)
//! set them, so modules installed by the system's packages and by LuaRocks are found with no
//! path set, C modules included.
//!
//! Lua builds its defaults in (`LUA_PATH_DEFAULT` in luaconf.h); the vendored Lua's are those of
//! a source install (`/usr/local` only). The runner therefore sets both fields itself, as Lua's
//! package library does (`setpath` in loadlib.c): the versioned environment variable
//! (`LUA_PATH_5_4`), else the plain one (`LUA_PATH`), with `;;` standing for the default; the
//! default alone when neither is set or `-E` was given.

use lua_system::mlua::{self, Lua, Table};

/// The Lua version the runner embeds, as paths name it (`5.4`; LuaJIT: `5.1`).
fn version() -> &'static str {
    if cfg!(any(feature = "lua51", feature = "luajit")) {
        "5.1"
    } else if cfg!(feature = "lua52") {
        "5.2"
    } else if cfg!(feature = "lua53") {
        "5.3"
    } else if cfg!(feature = "lua55") {
        "5.5"
    } else {
        "5.4"
    }
}

/// The suffix of the versioned environment variables (`LUA_PATH_5_4`); none in 5.1 and LuaJIT.
fn versioned_suffix() -> Option<String> {
    (!cfg!(any(feature = "lua51", feature = "luajit"))).then(|| format!("_{}", version().replace('.', "_")))
}

/// Debian's multiarch directory for this target (`x86_64-linux-gnu`).
fn multiarch() -> String {
    format!(
        "{}-{}-{}",
        std::env::consts::ARCH,
        std::env::consts::OS,
        if cfg!(target_env = "musl") { "musl" } else { "gnu" }
    )
}

/// Debian's default `package.path` for the version (as `lua5.x -e 'print(package.path)'`
/// prints it on bookworm).
pub fn default_path() -> String {
    let v = version();
    let (share, local_share, local_lib) =
        (format!("/usr/share/lua/{v}"), format!("/usr/local/share/lua/{v}"), format!("/usr/local/lib/lua/{v}"));
    let dirs: Vec<String> = if cfg!(feature = "luajit") {
        // LuaJIT's own modules (jit.*) come first, in the directory of Debian's luajit package.
        let jit = luajit_share().map(|dir| format!("{dir}/?.lua"));
        ["./?.lua".to_owned()]
            .into_iter()
            .chain(jit)
            .chain([
                format!("{local_share}/?.lua"),
                format!("{local_share}/?/init.lua"),
                format!("{share}/?.lua"),
                format!("{share}/?/init.lua"),
            ])
            .collect()
    } else {
        let system = [
            format!("{local_share}/?.lua"),
            format!("{local_share}/?/init.lua"),
            format!("{local_lib}/?.lua"),
            format!("{local_lib}/?/init.lua"),
            format!("{share}/?.lua"),
            format!("{share}/?/init.lua"),
        ];
        if cfg!(feature = "lua51") {
            ["./?.lua".to_owned()].into_iter().chain(system).collect()
        } else if cfg!(feature = "lua52") {
            system.into_iter().chain(["./?.lua".to_owned()]).collect()
        } else {
            system.into_iter().chain(["./?.lua".to_owned(), "./?/init.lua".to_owned()]).collect()
        }
    };
    dirs.join(";")
}

/// Debian's default `package.cpath` for the version.
pub fn default_cpath() -> String {
    let v = version();
    let arch = multiarch();
    let (local, multiarch_dir) = (format!("/usr/local/lib/lua/{v}"), format!("/usr/lib/{arch}/lua/{v}"));
    let dirs = if cfg!(feature = "luajit") {
        vec![
            "./?.so".to_owned(),
            format!("{local}/?.so"),
            format!("{multiarch_dir}/?.so"),
            format!("{local}/loadall.so"),
        ]
    } else {
        let system = vec![
            format!("{local}/?.so"),
            format!("{multiarch_dir}/?.so"),
            format!("/usr/lib/lua/{v}/?.so"),
            format!("{local}/loadall.so"),
        ];
        if cfg!(feature = "lua51") {
            ["./?.so".to_owned()].into_iter().chain(system).collect()
        } else {
            system.into_iter().chain(["./?.so".to_owned()]).collect()
        }
    };
    dirs.join(";")
}

/// The directory of Debian's luajit package's own Lua modules (`/usr/share/luajit-2.1.0-beta3`
/// on bookworm; the name carries the packaged version), if installed.
fn luajit_share() -> Option<String> {
    let mut dirs: Vec<String> = std::fs::read_dir("/usr/share")
        .ok()?
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with("luajit-"))
        .collect();
    dirs.sort();
    dirs.pop().map(|name| format!("/usr/share/{name}"))
}

/// `setpath` in Lua's loadlib.c of the embedded version: from 5.4 on, the first `;;` stands for
/// the default, joined without empty entries; before, every `;;` becomes `;default;`.
pub fn resolve(value: Option<&str>, default: &str) -> String {
    let Some(value) = value else { return default.to_owned() };
    if cfg!(not(any(feature = "lua54", feature = "lua55"))) {
        return value.replace(";;", &format!(";{default};"));
    }
    let Some(mark) = value.find(";;") else { return value.to_owned() };
    let (prefix, suffix) = (&value[..mark], &value[mark + 2..]);
    let mut path = String::new();
    if !prefix.is_empty() {
        path.push_str(prefix);
        path.push(';');
    }
    path.push_str(default);
    if !suffix.is_empty() {
        path.push(';');
        path.push_str(suffix);
    }
    path
}

/// The environment variable `name`, versioned first (`LUA_PATH_5_4`, then `LUA_PATH`).
fn variable(name: &str) -> Option<String> {
    named_variable(name).map(|(_, value)| value)
}

/// The environment variable `name`, versioned first, with the name it was found under.
pub fn named_variable(name: &str) -> Option<(String, String)> {
    let versioned = versioned_suffix().map(|suffix| format!("{name}{suffix}"));
    versioned.into_iter().chain([name.to_owned()]).find_map(|name| std::env::var(&name).ok().map(|value| (name, value)))
}

/// Sets `package.path` and `package.cpath`; `ignore_environment` for `-E`.
pub fn set(lua: &Lua, ignore_environment: bool) -> mlua::Result<()> {
    let Some(package) = lua.globals().get::<Option<Table>>("package")? else { return Ok(()) };
    let env = |name: &str| if ignore_environment { None } else { variable(name) };
    package.set("path", resolve(env("LUA_PATH").as_deref(), &default_path()))?;
    package.set("cpath", resolve(env("LUA_CPATH").as_deref(), &default_cpath()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(any(feature = "lua54", feature = "lua55"))]
    fn double_semicolons_stand_for_the_default() {
        assert_eq!(resolve(None, "D"), "D");
        assert_eq!(resolve(Some("a;b"), "D"), "a;b");
        assert_eq!(resolve(Some("a;;"), "D"), "a;D");
        assert_eq!(resolve(Some(";;b"), "D"), "D;b");
        assert_eq!(resolve(Some("a;;b"), "D"), "a;D;b");
        assert_eq!(resolve(Some(";;"), "D"), "D");
    }

    #[test]
    #[cfg(not(any(feature = "lua54", feature = "lua55")))]
    fn double_semicolons_stand_for_the_default_between_separators() {
        assert_eq!(resolve(None, "D"), "D");
        assert_eq!(resolve(Some("a;b"), "D"), "a;b");
        assert_eq!(resolve(Some("a;;"), "D"), "a;D;");
        assert_eq!(resolve(Some(";;"), "D"), ";D;");
        assert_eq!(resolve(Some("a;;b;;c"), "D"), "a;D;b;D;c");
    }

    // The defaults are checked against Debian's interpreters in tests/drop_in.rs.
}
