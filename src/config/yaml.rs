//! YAML adapter: the only file that names the YAML crate (`marked-yaml`).
//!
//! It turns text into a small position-carrying tree ([`Node`]) and turns the
//! parser's own errors into a [`ConfigError`] with a location. Everything else
//! in `config` validates that tree, so swapping the parser means rewriting
//! this file only.
//!
//! YAML anchors, aliases and tags are rejected: config files are short, and
//! `<<: *defaults` merges would make "which line set this?" hard to answer.

use std::path::Path;

use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode, Marker};
use marked_yaml::{LoadError, LoaderOptions};

use super::error::{ConfigError, Location};

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Pos {
    pub line: usize,
    pub column: usize,
}

impl Pos {
    const START: Pos = Pos { line: 1, column: 1 };
}

/// One value in the tree.
#[derive(Debug)]
pub(crate) struct Node {
    /// Where to point the user at this value. For a mapping or list that is
    /// the value of a key, it is the key (the parser's own start marks for
    /// block collections fall on the next token, which reads as off by one
    /// line); for a mapping inside a list, its first key. For an empty value
    /// (`key:`), the key.
    pub pos: Pos,
    pub value: Value,
}

#[derive(Debug)]
pub(crate) enum Value {
    /// `plain` is false for quoted and block scalars: those are always
    /// strings, never null, booleans or numbers (`"true"` is not `true`).
    Scalar {
        text: String,
        plain: bool,
    },
    /// Entries in file order.
    Mapping(Vec<Entry>),
    Sequence(Vec<Node>),
}

/// One `key: value` pair of a mapping.
#[derive(Debug)]
pub(crate) struct Entry {
    pub key: String,
    pub key_pos: Pos,
    pub value: Node,
}

impl Node {
    /// `key:`, `key: ~` and `key: null` (unquoted) are all null in YAML.
    pub fn is_null(&self) -> bool {
        matches!(
            &self.value,
            Value::Scalar { text, plain: true } if matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL")
        )
    }

    /// The scalar text, or `None` for null and collections.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar { text, .. } if !self.is_null() => Some(text),
            _ => None,
        }
    }

    /// The text of an unquoted scalar: booleans and numbers must be written
    /// unquoted to be booleans and numbers.
    pub fn as_plain(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar { text, plain: true } if !self.is_null() => Some(text),
            _ => None,
        }
    }

    /// The value of `key` if this is a mapping that has it. For reading a
    /// field before the mapping is validated (a route's prefix names the
    /// route in every other message).
    pub fn field(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Mapping(entries) => entries.iter().find(|e| e.key == key).map(|e| &e.value),
            _ => None,
        }
    }

    /// What the user wrote, for "got ..." in messages.
    pub fn describe(&self) -> String {
        match &self.value {
            _ if self.is_null() => "nothing (null)".to_string(),
            Value::Scalar { text, plain: true } if text == "true" || text == "false" => {
                text.clone()
            }
            Value::Scalar { text, .. } => format!("{text:?}"),
            Value::Mapping(_) => "a mapping".to_string(),
            Value::Sequence(_) => "a list".to_string(),
        }
    }
}

/// Parses `text` (the content of `file`) into a tree whose top level is a
/// mapping. An empty file is an empty mapping.
pub(crate) fn parse(file: &Path, text: &str) -> Result<Node, ConfigError> {
    // Editors on Windows may write a byte-order mark; the YAML scanner would
    // make it part of the first key.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let options = LoaderOptions::default()
        .error_on_duplicate_keys(true)
        .prevent_coercion(true);
    match marked_yaml::parse_yaml_with_options(0, text, options) {
        Ok(root) => {
            let mut node = convert(&root, None);
            // A top-level mapping's "position" is only used for "missing key"
            // errors, which read best at the top of the file.
            node.pos = Pos::START;
            Ok(node)
        }
        Err(error) => Err(load_error(file, &error)),
    }
}

/// Parses a multi-document stream (`---` between documents, as
/// `kubectl` and Helm write manifests) into one tree per document, each
/// with positions in the whole text. Empty documents (comments only) are
/// left out. A document marker (`---` or `...` at the start of a line) is a
/// marker wherever it appears in YAML, even inside a block scalar, so the
/// stream is split on those lines; each document is parsed with the lines
/// before it blanked, so its positions count from the top of the file.
pub(crate) fn parse_stream(file: &Path, text: &str) -> Result<Vec<Node>, ConfigError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut has_content = false;
    let flush = |current: &mut String, has_content: &mut bool, docs: &mut Vec<Node>| {
        if *has_content {
            let node = parse(file, current)?;
            docs.push(node);
        }
        current.clear();
        *has_content = false;
        Ok::<(), ConfigError>(())
    };
    for (lines_before, line) in text.split_inclusive('\n').enumerate() {
        let bare = line.trim_end_matches(['\n', '\r']);
        let is_marker = |m: &str| {
            bare == m
                || bare
                    .strip_prefix(m)
                    .is_some_and(|rest| rest.starts_with([' ', '\t']))
        };
        if is_marker("---") || is_marker("...") {
            flush(&mut current, &mut has_content, &mut docs)?;
            current.push_str(&"\n".repeat(lines_before));
            // Content after `--- ` stays in place (columns kept).
            let rest = if is_marker("---") { &bare[3..] } else { "" };
            if !rest.trim().is_empty() && !rest.trim_start().starts_with('#') {
                has_content = true;
            }
            current.push_str("   ");
            current.push_str(rest);
            current.push('\n');
        } else {
            if current.is_empty() && lines_before > 0 {
                current.push_str(&"\n".repeat(lines_before));
            }
            let t = bare.trim();
            if !t.is_empty() && !t.starts_with('#') && !t.starts_with('%') {
                has_content = true;
            }
            // Directives (%YAML) belong to the stream, not the document.
            if !bare.starts_with('%') {
                current.push_str(line);
            } else {
                current.push('\n');
            }
        }
    }
    flush(&mut current, &mut has_content, &mut docs)?;
    Ok(docs)
}

fn convert(node: &marked_yaml::Node, key_pos: Option<Pos>) -> Node {
    let start = pos_of(node.span().start());
    match node {
        marked_yaml::Node::Scalar(scalar) => {
            let text = scalar.as_str().to_string();
            // `may_coerce` is false exactly for quoted and block scalars
            // because we load with `prevent_coercion(true)`.
            let plain = scalar.may_coerce();
            // An empty value's marker is the *next* token, often on the next line.
            let pos = match key_pos {
                Some(key_pos) if plain && text.is_empty() => key_pos,
                _ => start,
            };
            Node {
                pos,
                value: Value::Scalar { text, plain },
            }
        }
        marked_yaml::Node::Mapping(mapping) => {
            let entries = convert_mapping(mapping);
            let pos = key_pos
                .or_else(|| entries.first().map(|e| e.key_pos))
                .unwrap_or(start);
            Node {
                pos,
                value: Value::Mapping(entries),
            }
        }
        marked_yaml::Node::Sequence(sequence) => {
            let items = sequence.iter().map(|item| convert(item, None)).collect();
            Node {
                pos: key_pos.unwrap_or(start),
                value: Value::Sequence(items),
            }
        }
    }
}

fn convert_mapping(mapping: &MarkedMappingNode) -> Vec<Entry> {
    mapping
        .iter()
        .map(|(key, value): (&MarkedScalarNode, _)| {
            let key_pos = pos_of(key.span().start());
            Entry {
                key: key.as_str().to_string(),
                key_pos,
                value: convert(value, Some(key_pos)),
            }
        })
        .collect()
}

fn pos_of(marker: Option<&Marker>) -> Pos {
    marker.map_or(Pos::START, |m| Pos {
        line: m.line().max(1),
        column: m.column().max(1),
    })
}

fn load_error(file: &Path, error: &LoadError) -> ConfigError {
    let (marker, message) = match error {
        LoadError::TopLevelMustBeMapping(m) | LoadError::TopLevelMustBeSequence(m) => (
            Some(m),
            "the top level must be a mapping (key: value lines)".to_string(),
        ),
        LoadError::UnexpectedAnchor(m) => (
            Some(m),
            "YAML anchors and aliases (&name, *name) are not supported; write the value out"
                .to_string(),
        ),
        LoadError::MappingKeyMustBeScalar(m) => (
            Some(m),
            "mapping keys must be plain names, not lists or mappings".to_string(),
        ),
        LoadError::UnexpectedTag(m) => (
            Some(m),
            "YAML tags (!name, !!type) are not supported; remove the tag".to_string(),
        ),
        LoadError::ScanError(m, scan) => (Some(m), format!("invalid YAML: {}", scan.info())),
        LoadError::DuplicateKey(inner) => {
            let first = pos_of(inner.prev_key.span().start());
            (
                inner.key.span().start(),
                format!(
                    "duplicate key {:?} (first set at line {}); remove one of them",
                    inner.key.as_str(),
                    first.line
                ),
            )
        }
    };
    let pos = pos_of(marker);
    ConfigError::Invalid {
        location: Location {
            file: file.to_path_buf(),
            line: pos.line,
            column: pos.column,
        },
        message,
    }
}
