//! Builds the plugins under `../plugins` (a separate cargo workspace) as wasm32-wasip2 components and
//! embeds the shipped ones in pgwarden, so `builtin:readonly` or an `auth_user` line needs no file beside
//! the binary. The `testing` plugin is built too and its path exported for tests and benchmarks only.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Built-in name → crate artifact.
const SHIPPED: &[(&str, &str)] = &[
    ("router", "router"),
    ("readonly", "readonly"),
    ("auth-query", "auth_query"),
];
const TESTING: &str = "testing";

fn main() {
    let manifest = PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    );
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let plugins = manifest.join("../plugins");
    println!("cargo:rerun-if-changed=../plugins");
    println!("cargo:rerun-if-changed=../wit");
    let artifacts = build(&plugins, &out.join("plugins-target"));
    let mut code = String::from(
        "/// Built-in plugins: name, component bytes.\npub(super) const BUILTIN: &[(&str, &[u8])] = &[\n",
    );
    for (name, krate) in SHIPPED {
        let file = artifacts.join(format!("{krate}.wasm"));
        let _ = writeln!(
            code,
            "    ({name:?}, include_bytes!({:?})),",
            file.display().to_string()
        );
    }
    code.push_str("];\n");
    let testing = artifacts.join(format!("{TESTING}.wasm"));
    let _ = writeln!(
        code,
        "/// The misbehaving `testing` plugin built with this binary (tests and benchmarks only).\npub const TESTING_PLUGIN: &str = {:?};",
        testing.display().to_string()
    );
    std::fs::write(out.join("builtin_plugins.rs"), code).expect("write builtin_plugins.rs");
}

/// Runs `cargo build --release --target wasm32-wasip2` in the plugins workspace; returns the artifact dir.
fn build(plugins: &Path, target_dir: &Path) -> PathBuf {
    assert!(
        plugins.join("Cargo.toml").exists(),
        "{} has no Cargo.toml: the plugins workspace is part of the source tree",
        plugins.display()
    );
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(plugins)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--workspace",
        ])
        .env("CARGO_TARGET_DIR", target_dir);
    if plugins.join("Cargo.lock").exists() {
        cmd.arg("--locked");
    }
    // The outer build's flags and wrappers (clippy's driver, host RUSTFLAGS) are not for wasm guests.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("CARGO_TARGET_DIR", target_dir);
    let status = cmd.status().expect("run cargo for the plugins");
    assert!(
        status.success(),
        "building the plugins under {} failed ({status}); is the wasm32-wasip2 target installed? (rustup target add wasm32-wasip2)",
        plugins.display()
    );
    target_dir.join("wasm32-wasip2").join("release")
}
