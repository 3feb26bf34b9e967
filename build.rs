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
//! off.

use std::env;
use std::path::Path;

const LIST: &str = "loadtest/hot-functions.txt";

fn main() {
    println!("cargo:rerun-if-changed={LIST}");
    println!("cargo:rerun-if-env-changed=PORTICO_NO_CODE_LAYOUT");
    if let Some(list) = ordering_file() {
        // `-Wl,`: rustc links through the C compiler driver.
        println!(
            "cargo:rustc-link-arg-bin=portico=-Wl,--symbol-ordering-file={}",
            list.display()
        );
        // A symbol of the list that this build does not have (renamed,
        // inlined everywhere) is simply not placed: no warning per symbol.
        println!("cargo:rustc-link-arg-bin=portico=-Wl,--no-warn-symbol-ordering");
    }
}

/// The list, when this build links with lld and is a release build.
fn ordering_file() -> Option<std::path::PathBuf> {
    let var = |k: &str| env::var(k).unwrap_or_default();
    if var("PROFILE") != "release" || var("TARGET") != "x86_64-unknown-linux-gnu" {
        return None;
    }
    if !var("PORTICO_NO_CODE_LAYOUT").is_empty() {
        return None;
    }
    // Another linker (or lld turned off) may not know the option.
    let flags = var("CARGO_ENCODED_RUSTFLAGS");
    if flags.contains("linker") || flags.contains("fuse-ld") {
        return None;
    }
    // Set by Cargo when a linker is configured for the target.
    if env::var_os("RUSTC_LINKER").is_some() {
        return None;
    }
    let list = Path::new(&var("CARGO_MANIFEST_DIR")).join(LIST);
    list.is_file().then_some(list)
}
