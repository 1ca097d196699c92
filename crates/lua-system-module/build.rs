//! `system.so` must never be unmapped while Lua states it interposed on still run: Lua's package
//! library `dlclose`s C modules while it closes a state, before the state's last blocks are freed
//! through the module's allocator. Linking with `-z nodelete` makes `dlclose` leave it mapped.
fn main() {
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-z,nodelete");
    }
}
