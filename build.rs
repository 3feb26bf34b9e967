//! Release builds of the `portico` binary place the functions that start-up
//! and the request path run (`loadtest/hot-functions.txt`, written by
//! `loadtest/hot_functions.sh`) together in the binary, through lld's
//! `--symbol-ordering-file`: the kernel maps a binary's code in runs of
//! 64 KiB around each page first touched, so with those functions spread
//! over 6.3 MiB of code about 5 MiB of it was resident; placed together,
//! about 2.5 MiB less (README, Performance: "Code layout").
//!
//! Only where rustc links with its own lld by default
//! (`x86_64-unknown-linux-gnu`, Rust 1.90 and later) and no other linker is
//! configured; elsewhere the binary is laid out as the linker likes, which
//! changes its memory, not what it does. `PORTICO_NO_CODE_LAYOUT=1` turns it
//! off. (`tests/it/code_layout.rs` includes this file to test the choice.)

use std::env;
use std::path::Path;

const LIST: &str = "loadtest/hot-functions.txt";

fn main() {
    println!("cargo:rerun-if-changed={LIST}");
    println!("cargo:rerun-if-env-changed=PORTICO_NO_CODE_LAYOUT");
    let var = |k: &str| env::var(k).unwrap_or_default();
    let build = Build {
        profile: var("PROFILE"),
        target: var("TARGET"),
        rustflags: var("CARGO_ENCODED_RUSTFLAGS"),
        // Set by Cargo when a linker is configured for the target.
        linker_configured: env::var_os("RUSTC_LINKER").is_some(),
        opted_out: !var("PORTICO_NO_CODE_LAYOUT").is_empty(),
    };
    let list = Path::new(&var("CARGO_MANIFEST_DIR")).join(LIST);
    for arg in link_args(&build, &list) {
        println!("cargo:rustc-link-arg-bin=portico={arg}");
    }
}

/// What decides whether the list goes to the linker.
pub struct Build {
    pub profile: String,
    pub target: String,
    pub rustflags: String,
    pub linker_configured: bool,
    pub opted_out: bool,
}

/// The linker arguments for `build` (`-Wl,`: rustc links through the C
/// compiler driver); none when it is not a release build linked by lld, or
/// when the list is missing.
pub fn link_args(build: &Build, list: &Path) -> Vec<String> {
    let lld = build.target == "x86_64-unknown-linux-gnu"
        && !build.linker_configured
        // Another linker (or lld turned off) may not know the option.
        && !build.rustflags.contains("linker")
        && !build.rustflags.contains("fuse-ld");
    if build.profile != "release" || !lld || build.opted_out || !list.is_file() {
        return Vec::new();
    }
    vec![
        format!("-Wl,--symbol-ordering-file={}", list.display()),
        // A symbol of the list that this build does not have (renamed,
        // inlined everywhere) is simply not placed: no warning per symbol.
        "-Wl,--no-warn-symbol-ordering".to_string(),
    ]
}
