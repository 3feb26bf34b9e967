//! The code layout that `build.rs` hands the linker for release builds
//! (`loadtest/hot-functions.txt`, README "Code layout"). Neither a list lld
//! would mostly ignore (wrong names, another tool's output pasted in) nor a
//! build script that stopped passing it fails any build; both only cost
//! resident memory. So the list's form and the script's choice are checked
//! here.

use std::collections::HashSet;
use std::path::Path;

// The build script itself, so that its choice is tested, not a copy of it.
#[allow(dead_code)] // its `main` runs as the build script, not here
#[path = "../../build.rs"]
mod build_script;

use build_script::{Build, link_args};

const LIST: &str = include_str!("../../loadtest/hot-functions.txt");

#[test]
fn the_hot_function_list_is_sorted_unique_symbols_mostly_rust() {
    let names: Vec<&str> = LIST.lines().collect();
    assert!(names.len() > 500, "only {} functions listed", names.len());
    // Rust's two manglings (`_ZN…E`, `_R…`), ring's C and assembly
    // functions, and LTO's local copies (`name.123`): all plain symbols.
    let symbol = |n: &str| {
        n.starts_with(|c: char| c == '_' || c.is_ascii_alphabetic())
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.$".contains(c))
    };
    for name in &names {
        assert!(symbol(name), "not a linker symbol: {name:?}");
    }
    let rust = names
        .iter()
        .filter(|n| n.starts_with("_ZN") || n.starts_with("_R"));
    assert!(
        rust.count() > names.len() * 9 / 10,
        "mostly not Rust functions"
    );
    assert!(
        names.windows(2).all(|w| w[0] < w[1]),
        "not sorted or not unique"
    );
    assert_eq!(names.iter().collect::<HashSet<_>>().len(), names.len());
}

#[test]
fn the_hot_function_list_covers_the_request_path_of_each_protocol() {
    // Mangled paths spell each segment with its length: 7portico5proxy…
    for part in [
        "7portico5proxy2h14send",
        "7portico5proxy8upstream14UpstreamClient7send_h2",
        "7portico5proxy5http2",
        "7portico6server6splice",
        "7portico13observability4json",
        "5hyper5proto2h1",
        "2h25hpack",
        "6rustls",
    ] {
        assert!(
            LIST.lines().any(|n| n.contains(part)),
            "no listed function under {part}: re-run loadtest/hot_functions.sh"
        );
    }
}

fn release_build() -> Build {
    Build {
        profile: "release".into(),
        target: "x86_64-unknown-linux-gnu".into(),
        rustflags: String::new(),
        linker_configured: false,
        opted_out: false,
    }
}

fn list() -> &'static Path {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/loadtest/hot-functions.txt"
    ))
}

#[test]
fn release_builds_linked_by_lld_hand_the_list_to_the_linker() {
    let args = link_args(&release_build(), list());
    assert_eq!(
        args,
        [
            format!("-Wl,--symbol-ordering-file={}", list().display()),
            "-Wl,--no-warn-symbol-ordering".to_string(),
        ]
    );
}

#[test]
fn other_builds_and_other_linkers_get_no_layout_arguments() {
    let cases = [
        (
            "a debug build",
            Build {
                profile: "debug".into(),
                ..release_build()
            },
        ),
        (
            "another target",
            Build {
                target: "aarch64-unknown-linux-gnu".into(),
                ..release_build()
            },
        ),
        (
            "a configured linker",
            Build {
                linker_configured: true,
                ..release_build()
            },
        ),
        (
            "RUSTFLAGS naming a linker",
            Build {
                rustflags: "-Clinker=clang".into(),
                ..release_build()
            },
        ),
        (
            "RUSTFLAGS choosing one",
            Build {
                rustflags: "-Clink-arg=-fuse-ld=bfd".into(),
                ..release_build()
            },
        ),
        (
            "PORTICO_NO_CODE_LAYOUT",
            Build {
                opted_out: true,
                ..release_build()
            },
        ),
    ];
    for (what, build) in cases {
        assert!(link_args(&build, list()).is_empty(), "{what}");
    }
    let missing = Path::new("/nonexistent/hot-functions.txt");
    assert!(
        link_args(&release_build(), missing).is_empty(),
        "a missing list"
    );
}
