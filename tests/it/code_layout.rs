//! The code layout list that `build.rs` hands the linker for release builds
//! (`loadtest/hot-functions.txt`, README "Code layout"): a list lld would
//! silently mostly ignore (wrong names, another tool's output pasted in)
//! costs resident memory without any build failing, so its form is
//! checked here.

use std::collections::HashSet;

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
