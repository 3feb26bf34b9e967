//! Process-wide JSON logging. Every line Portico prints is one JSON object
//! with `ts`, `level` and `msg`; access-log lines and tracing events share one
//! non-blocking, lossy stdout writer so that logging never blocks a request.

use std::fmt;
use std::io::{self, BufWriter, Write};
use std::sync::OnceLock;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_appender::non_blocking::{ErrorCounter, NonBlocking, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use super::json;

/// Lines that may wait for the writer thread before new ones are dropped
/// (and counted) instead of blocking the request path.
const BUFFERED_LINES: usize = 64 * 1024;

/// The shared stdout writer, installed once by [`init`]. Access-log records
/// go straight to it; tracing events reach it through the subscriber.
static WRITER: OnceLock<(NonBlocking, ErrorCounter)> = OnceLock::new();

/// Installs the JSON subscriber and the non-blocking stdout writer.
///
/// `level` comes from the config's `log_level`; `RUST_LOG`, when set, wins.
/// Keep the returned guard alive for the life of the process: dropping it
/// flushes what is still queued.
pub fn init(level: Option<&str>) -> WorkerGuard {
    let stdout = io::stdout().as_fd_clone();
    // A buffered file handle: the worker flushes whenever its queue is empty,
    // so lines appear promptly without one write(2) per line under load.
    let sink = BufWriter::with_capacity(64 * 1024, stdout);
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(BUFFERED_LINES)
        .thread_name("portico-log")
        .finish(sink);
    let counter = writer.error_counter();
    let _ = WRITER.set((writer.clone(), counter));

    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => EnvFilter::new(v),
        _ => EnvFilter::new(level.unwrap_or("info")),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .event_format(JsonLine)
        .with_writer(writer)
        .try_init();
    guard
}

/// The writer installed by [`init`], if any (tests that run the gateway
/// in-process leave it unset, and then access logging is off).
pub(crate) fn writer() -> Option<&'static NonBlocking> {
    WRITER.get().map(|(w, _)| w)
}

/// Lines dropped because the writer queue was full.
pub fn dropped_lines() -> u64 {
    WRITER.get().map_or(0, |(_, c)| c.dropped_lines() as u64)
}

/// Current time as RFC 3339 UTC with milliseconds: `2026-11-25T17:05:09.123Z`.
pub fn now_rfc3339() -> humantime::Rfc3339Timestamp {
    humantime::format_rfc3339_millis(std::time::SystemTime::now())
}

trait AsFdClone {
    fn as_fd_clone(&self) -> Box<dyn Write + Send>;
}

impl AsFdClone for io::Stdout {
    /// A dup of fd 1 as a plain file, bypassing `Stdout`'s line buffering and
    /// its global lock. Falls back to `Stdout` if the dup fails.
    fn as_fd_clone(&self) -> Box<dyn Write + Send> {
        use std::os::fd::AsFd;
        match self.as_fd().try_clone_to_owned() {
            Ok(fd) => Box::new(std::fs::File::from(fd)),
            Err(_) => Box::new(io::stdout()),
        }
    }
}

/// Formats a tracing event as one JSON line: `ts`, `level`, `msg`, `target`,
/// then the event's fields at the top level.
struct JsonLine;

impl<S, N> FormatEvent<S, N> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut line = String::with_capacity(256);
        line.push('{');
        json::push_field(&mut line, "ts", &now_rfc3339().to_string());
        json::push_field(&mut line, "level", level_name(*meta.level()));
        let mut visitor = FieldVisitor {
            msg: String::new(),
            rest: String::new(),
        };
        event.record(&mut visitor);
        json::push_field(&mut line, "msg", &visitor.msg);
        json::push_field(&mut line, "target", meta.target());
        line.push_str(&visitor.rest);
        line.push('}');
        writeln!(writer, "{line}")
    }
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::ERROR => "error",
        Level::WARN => "warn",
        Level::INFO => "info",
        Level::DEBUG => "debug",
        Level::TRACE => "trace",
    }
}

/// Collects `message` separately; every other field becomes `,"name":value`.
struct FieldVisitor {
    msg: String,
    rest: String,
}

impl FieldVisitor {
    fn push_raw(&mut self, name: &str, raw: &str) {
        self.rest.push(',');
        json::push_str(&mut self.rest, name);
        self.rest.push(':');
        self.rest.push_str(raw);
    }
}

impl Visit for FieldVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.msg.push_str(value);
        } else {
            self.rest.push(',');
            json::push_str(&mut self.rest, field.name());
            self.rest.push(':');
            json::push_str(&mut self.rest, value);
        }
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.push_raw(field.name(), &value.to_string());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.push_raw(field.name(), &value.to_string());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.push_raw(field.name(), if value { "true" } else { "false" });
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        if value.is_finite() {
            self.push_raw(field.name(), &value.to_string());
        } else {
            self.record_str(field, &value.to_string());
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.record_str(field, &format!("{value:?}"));
    }
}
