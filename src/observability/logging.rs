//! Process-wide JSON logging. Every line Portico prints is one JSON object
//! with `ts`, `level` and `msg`. Access-log lines and tracing events share
//! one [`LogSink`]: request tasks append finished lines to a shared buffer
//! under a short lock, and one writer thread swaps the buffer out and writes
//! it to stdout in large chunks. Nothing on the request path waits for
//! stdout, and there is no wake-up per line; when stdout cannot keep up the
//! buffer's cap is reached and lines are dropped and counted, never waited for.

use std::fmt;
use std::io::{self, Write};
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

use super::json;

/// Bytes that may wait for the writer before new lines are dropped.
const BUFFER_CAP: usize = 16 << 20;
/// The writer is woken early once this much is waiting.
const WAKE_AT: usize = 256 << 10;
/// Longest a line waits before it is written.
const FLUSH_INTERVAL: Duration = Duration::from_millis(50);

/// The sink installed by [`init`].
static SINK: OnceLock<LogSink> = OnceLock::new();

/// A bounded, batching line buffer in front of stdout. Cheap to clone.
#[derive(Clone)]
pub struct LogSink {
    inner: Arc<SinkInner>,
}

struct SinkInner {
    buf: Mutex<Vec<u8>>,
    wake: Condvar,
    dropped: AtomicU64,
    closed: AtomicBool,
}

impl LogSink {
    fn new() -> Self {
        LogSink {
            inner: Arc::new(SinkInner {
                buf: Mutex::new(Vec::with_capacity(WAKE_AT)),
                wake: Condvar::new(),
                dropped: AtomicU64::new(0),
                closed: AtomicBool::new(false),
            }),
        }
    }

    /// Queues complete lines (newline included). Never blocks on I/O.
    pub fn append(&self, lines: &[u8]) {
        let mut buf = self.inner.buf.lock();
        if buf.len() + lines.len() > BUFFER_CAP {
            drop(buf);
            self.inner.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        buf.extend_from_slice(lines);
        if buf.len() >= WAKE_AT {
            self.inner.wake.notify_one();
        }
    }

    /// The writer loop: swap the buffer out, write it, repeat.
    fn run(&self, mut out: impl Write) {
        let mut batch = Vec::with_capacity(WAKE_AT);
        loop {
            {
                let mut buf = self.inner.buf.lock();
                if buf.is_empty() && !self.inner.closed.load(Ordering::Acquire) {
                    self.inner.wake.wait_for(&mut buf, FLUSH_INTERVAL);
                }
                std::mem::swap(&mut *buf, &mut batch);
            }
            if !batch.is_empty() {
                // A failed write (closed stdout) loses this batch; there is
                // nowhere better to report it.
                let _ = out.write_all(&batch).and_then(|_| out.flush());
                batch.clear();
            } else if self.inner.closed.load(Ordering::Acquire) {
                return;
            }
        }
    }
}

/// Flushes what is queued and stops the writer when dropped. Keep it alive
/// for the life of the process.
pub struct LogGuard {
    sink: LogSink,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.sink.inner.closed.store(true, Ordering::Release);
        self.sink.inner.wake.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Installs the JSON subscriber and the stdout writer thread.
///
/// `level` comes from the config's `log_level`; `RUST_LOG`, when set, wins.
pub fn init(level: Option<&str>) -> LogGuard {
    let sink = SINK.get_or_init(LogSink::new).clone();
    let writer = sink.clone();
    let out = stdout_file();
    let thread = std::thread::Builder::new()
        .name("portico-log".into())
        .spawn(move || writer.run(out))
        .ok();

    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => EnvFilter::new(v),
        _ => EnvFilter::new(level.unwrap_or("info")),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .event_format(JsonLine)
        .with_writer(sink.clone())
        .try_init();
    LogGuard { sink, thread }
}

/// The sink installed by [`init`], if any (tests that run the gateway
/// in-process leave it unset, and then access logging is off).
pub(crate) fn sink() -> Option<&'static LogSink> {
    SINK.get()
}

/// Lines dropped because the writer could not keep up.
pub fn dropped_lines() -> u64 {
    SINK.get()
        .map_or(0, |s| s.inner.dropped.load(Ordering::Relaxed))
}

/// `"ts":"…"`, the first field of every log line (no comma before it).
pub fn push_ts_field(out: &mut String) {
    out.push_str("\"ts\":\"");
    push_now_rfc3339(out);
    out.push('"');
}

thread_local! {
    /// The last timestamp this thread formatted, and its millisecond: a
    /// busy worker logs dozens of requests per millisecond, and formatting
    /// a date is most of what a timestamp costs.
    static LAST_TS: std::cell::RefCell<(u128, String)> =
        const { std::cell::RefCell::new((u128::MAX, String::new())) };
}

/// Appends the current time as RFC 3339 UTC with milliseconds
/// (`2026-11-25T17:05:09.123Z`) to `out`, formatting it at most once per
/// millisecond per thread.
pub fn push_now_rfc3339(out: &mut String) {
    use std::fmt::Write;
    let now = std::time::SystemTime::now();
    let ms = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    LAST_TS.with(|last| {
        let mut last = last.borrow_mut();
        if last.0 != ms {
            last.1.clear();
            let _ = write!(last.1, "{}", humantime::format_rfc3339_millis(now));
            last.0 = ms;
        }
        out.push_str(&last.1);
    });
}

/// A dup of fd 1 as a plain file: no line buffering and no global lock,
/// since the writer already writes in large batches. Falls back to `Stdout`.
fn stdout_file() -> Box<dyn Write + Send> {
    use std::os::fd::AsFd;
    match io::stdout().as_fd().try_clone_to_owned() {
        Ok(fd) => Box::new(std::fs::File::from(fd)),
        Err(_) => Box::new(io::stdout()),
    }
}

/// One tracing event's bytes, appended to the sink as a whole when dropped.
pub struct EventWriter {
    sink: LogSink,
    buf: Vec<u8>,
}

impl Write for EventWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            self.sink.append(&self.buf);
        }
    }
}

impl<'a> MakeWriter<'a> for LogSink {
    type Writer = EventWriter;
    fn make_writer(&'a self) -> EventWriter {
        EventWriter {
            sink: self.clone(),
            buf: Vec::with_capacity(256),
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
        push_ts_field(&mut line);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_timestamps_are_rfc3339_millis_of_now() {
        for _ in 0..3 {
            let before = std::time::SystemTime::now();
            let mut out = String::from("x");
            push_now_rfc3339(&mut out);
            let after = std::time::SystemTime::now();
            let text = out.strip_prefix('x').unwrap();
            assert_eq!(text.len(), "2026-11-25T17:05:09.123Z".len(), "{text}");
            let at = humantime::parse_rfc3339(text).unwrap();
            let ms = std::time::Duration::from_millis(1);
            assert!(
                at + ms > before && at <= after,
                "{text} not between the clock reads"
            );
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }
}
