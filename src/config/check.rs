//! The validation walker shared by `portico.yaml` and the route file: it
//! collects errors (never stops at the first), checks key sets, and reads
//! typed values (strings, booleans, counts, durations, sizes, addresses) from
//! the YAML tree with messages that name the field, the value and the fix.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::duration::parse_duration;
use super::error::{ConfigError, ConfigErrors, Location};
use super::size::parse_size;
use super::yaml::{Entry, Node, Pos, Value};

/// Collects every error found in one file.
pub(crate) struct Checker<'f> {
    file: &'f Path,
    errors: Vec<ConfigError>,
}

impl<'f> Checker<'f> {
    pub fn new(file: &'f Path) -> Self {
        Checker {
            file,
            errors: Vec::new(),
        }
    }

    pub fn error(&mut self, pos: Pos, message: impl Into<String>) {
        self.errors.push(ConfigError::Invalid {
            location: Location {
                file: self.file.to_path_buf(),
                line: pos.line,
                column: pos.column,
            },
            message: message.into(),
        });
    }

    /// `Ok(value)` if nothing was reported, otherwise every error in file
    /// order (cross-field checks run last but belong where they point).
    /// `value` is `None` only when something was reported; should that ever
    /// not hold, the load still fails, with a generic error, instead of
    /// panicking on a config reload.
    pub fn finish<T>(mut self, value: Option<T>) -> Result<T, ConfigErrors> {
        match value {
            Some(value) if self.errors.is_empty() => return Ok(value),
            None if self.errors.is_empty() => {
                self.error(Pos { line: 1, column: 1 }, "invalid configuration")
            }
            _ => {}
        }
        // Stable: errors at the same place keep the order they were found in.
        self.errors
            .sort_by_key(|e| e.location().map(|l| (l.line, l.column)));
        Err(ConfigErrors(self.errors))
    }

    /// Treats `node` as a mapping with keys from `allowed`. Unknown keys are
    /// reported (a typo must not silently do nothing) and skipped; the known
    /// entries are returned. `what` names the mapping in messages, e.g.
    /// `"listen"` or `"route \"/billing\""`.
    pub fn mapping<'n>(&mut self, node: &'n Node, what: &str, allowed: &[&str]) -> Option<Map<'n>> {
        let Value::Mapping(entries) = &node.value else {
            self.error(
                node.pos,
                format!(
                    "{what}: expected a mapping (key: value lines), got {}",
                    node.describe()
                ),
            );
            return None;
        };
        for entry in entries {
            if !allowed.contains(&entry.key.as_str()) {
                let hint = match closest(&entry.key, allowed) {
                    Some(near) => format!(" (did you mean {near:?}?)"),
                    None => String::new(),
                };
                self.error(
                    entry.key_pos,
                    format!(
                        "unknown key {:?} in {what}; expected one of: {}{hint}",
                        entry.key,
                        allowed.join(", ")
                    ),
                );
            }
        }
        Some(Map {
            pos: node.pos,
            entries,
        })
    }

    /// The value of a required key; reports a missing or null one. `what`
    /// names the mapping (`"tls"`, `"route \"/billing\""`); empty for the
    /// top level, where the file name already says it.
    pub fn required<'n>(
        &mut self,
        map: &Map<'n>,
        key: &str,
        what: &str,
        hint: &str,
    ) -> Option<&'n Entry> {
        let owner = if what.is_empty() {
            String::new()
        } else {
            format!("{what}: ")
        };
        match map.entry(key) {
            Some(entry) if !entry.value.is_null() => Some(entry),
            Some(entry) => {
                self.error(
                    entry.key_pos,
                    format!("{owner}{key} must not be empty; {hint}"),
                );
                None
            }
            None => {
                self.error(map.pos, format!("{owner}{key} is required; {hint}"));
                None
            }
        }
    }

    /// A non-empty string. `expected` says what kind, e.g. "a file path".
    pub fn string<'n>(&mut self, node: &'n Node, name: &str, expected: &str) -> Option<&'n str> {
        match node.as_str() {
            Some("") => {
                self.error(
                    node.pos,
                    format!("{name}: expected {expected}, got an empty string"),
                );
                None
            }
            Some(text) => Some(text),
            None => {
                self.error(
                    node.pos,
                    format!("{name}: expected {expected}, got {}", node.describe()),
                );
                None
            }
        }
    }

    /// A path, resolved against `base` (the directory of the file that
    /// names it), so configs work whatever the working directory is.
    pub fn path(&mut self, node: &Node, name: &str, base: &Path) -> Option<PathBuf> {
        self.string(node, name, "a file path")
            .map(|text| base.join(text))
    }

    /// Only unquoted `true` / `false`: `yes`, `on` and `"true"` are errors
    /// rather than guesses.
    pub fn boolean(&mut self, node: &Node, name: &str) -> Option<bool> {
        match node.as_plain() {
            Some("true") => Some(true),
            Some("false") => Some(false),
            _ => {
                self.error(
                    node.pos,
                    format!("{name}: expected true or false, got {}", node.describe()),
                );
                None
            }
        }
    }

    /// An unquoted integer > 0.
    pub fn count(&mut self, node: &Node, name: &str) -> Option<usize> {
        let Some(text) = node
            .as_plain()
            .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
        else {
            self.error(
                node.pos,
                format!(
                    "{name}: expected a whole number greater than 0, got {}",
                    node.describe()
                ),
            );
            return None;
        };
        match text.parse::<usize>() {
            Ok(0) => {
                self.error(node.pos, format!("{name}: must be greater than 0, got 0"));
                None
            }
            Ok(n) => Some(n),
            Err(_) => {
                self.error(node.pos, format!("{name}: {text} is too large"));
                None
            }
        }
    }

    /// An unquoted integer in `min..=max`.
    pub fn number(&mut self, node: &Node, name: &str, min: u64, max: u64) -> Option<u64> {
        let n = node
            .as_plain()
            .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|t| t.parse::<u64>().ok());
        match n {
            Some(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                self.error(
                    node.pos,
                    format!(
                        "{name}: expected a whole number from {min} to {max}, got {}",
                        node.describe()
                    ),
                );
                None
            }
        }
    }

    /// A duration like `30s`; zero is rejected unless `allow_zero`.
    pub fn duration(&mut self, node: &Node, name: &str, allow_zero: bool) -> Option<Duration> {
        let parsed = node.as_str().and_then(parse_duration);
        match parsed {
            Some(d) if d.is_zero() && !allow_zero => {
                self.error(
                    node.pos,
                    format!("{name}: must be greater than 0, got {}", node.describe()),
                );
                None
            }
            Some(d) => Some(d),
            None => {
                let fix = match node.as_str() {
                    Some(t) if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) => {
                        format!(" (write \"{t}s\" for seconds or \"{t}ms\" for milliseconds)")
                    }
                    _ => String::new(),
                };
                self.error(
                    node.pos,
                    format!(
                        "{name}: expected a duration: a whole number and a unit (ms, s, m, h) like \"30s\" or \"250ms\", got {}{fix}",
                        node.describe()
                    ),
                );
                None
            }
        }
    }

    /// A byte size > 0 like `64KiB` or `65536`.
    pub fn size(&mut self, node: &Node, name: &str) -> Option<u64> {
        match node.as_str().and_then(parse_size) {
            Some(0) => {
                self.error(
                    node.pos,
                    format!("{name}: must be greater than 0, got {}", node.describe()),
                );
                None
            }
            Some(n) => Some(n),
            None => {
                self.error(
                    node.pos,
                    format!(
                        "{name}: expected a size in bytes like 65536, \"64KiB\", \"10MiB\", \"1GiB\" (or decimal \"64KB\", \"10MB\"), got {}",
                        node.describe()
                    ),
                );
                None
            }
        }
    }

    /// An `IP:PORT` listen address; `[::]:8443` for IPv6; port 0 means
    /// "pick a free port" (tests).
    pub fn socket_addr(&mut self, node: &Node, name: &str) -> Option<SocketAddr> {
        let text = node.as_str();
        if let Some(addr) = text.and_then(|t| t.parse::<SocketAddr>().ok()) {
            return Some(addr);
        }
        let fix = match text {
            Some(t) if t.parse::<u16>().is_ok() => format!(" (write \"0.0.0.0:{t}\")"),
            Some(t) if t.starts_with(':') && t[1..].parse::<u16>().is_ok() => {
                format!(" (write \"0.0.0.0{t}\")")
            }
            Some(t) if t.contains(':') && !t.starts_with('[') && t.matches(':').count() == 1 => {
                " (the host must be an IP address, not a name)".to_string()
            }
            _ => String::new(),
        };
        self.error(
            node.pos,
            format!(
                "{name}: expected an IP:PORT address like \"0.0.0.0:8080\" or \"[::]:8443\", got {}{fix}",
                node.describe()
            ),
        );
        None
    }

    /// The items of a list.
    pub fn list<'n>(
        &mut self,
        node: &'n Node,
        name: &str,
        expected_items: &str,
    ) -> Option<&'n [Node]> {
        match &node.value {
            Value::Sequence(items) => Some(items),
            _ => {
                self.error(
                    node.pos,
                    format!(
                        "{name}: expected a list of {expected_items}, got {}",
                        node.describe()
                    ),
                );
                None
            }
        }
    }
}

/// The known entries of a mapping, after unknown keys were reported.
pub(crate) struct Map<'n> {
    /// Where "missing key" errors point.
    pub pos: Pos,
    entries: &'n [Entry],
}

impl<'n> Map<'n> {
    /// The entry for `key`, null or not.
    pub fn entry(&self, key: &str) -> Option<&'n Entry> {
        self.entries.iter().find(|e| e.key == key)
    }

    /// The value of an optional key; null (`key:`, `key: ~`) counts as unset,
    /// as serde's `Option` would treat it.
    pub fn get(&self, key: &str) -> Option<&'n Node> {
        self.entry(key).map(|e| &e.value).filter(|v| !v.is_null())
    }
}

/// The accepted key nearest to a typo, if it is near enough to be a typo.
fn closest<'a>(key: &str, allowed: &[&'a str]) -> Option<&'a str> {
    let lower = key.to_ascii_lowercase();
    allowed
        .iter()
        .map(|candidate| (edit_distance(&lower, candidate), *candidate))
        .filter(|(distance, candidate)| *distance <= 2.max(candidate.len() / 4))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// Levenshtein distance over chars; keys are short, so O(n·m) is fine.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typo_suggestions() {
        let keys = super::super::routes::ROUTE_KEYS;
        let cases = [
            ("timout", Some("timeout")),
            ("Timeout", Some("timeout")),
            ("backnd", Some("backend")),
            ("strip-prefix", Some("strip_prefix")),
            ("prefx", Some("prefix")),
            ("color", None),
            ("x", None),
        ];
        for (typo, expected) in cases {
            assert_eq!(closest(typo, keys), expected, "{typo}");
        }
    }

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("abc", "abc"), 0);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
