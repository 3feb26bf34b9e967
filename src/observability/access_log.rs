//! The access log: one JSON line per request with the fields DESIGN.md fixes.
//! The line is built on the request task and handed to the shared lossy
//! writer; when that queue is full the line is dropped and counted, never
//! waited for.

use super::{json, logging};

/// Everything the access-log line says about one request.
#[derive(Debug, Clone)]
pub struct AccessRecord<'a> {
    pub request_id: &'a str,
    /// W3C trace id and the gateway's span id (lowercase hex); empty for
    /// lines that are not about a request's trace.
    pub trace_id: &'a str,
    pub span_id: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub duration_ms: f64,
    /// The `Host` (or `:authority`) as the client sent it; empty when the
    /// request was refused before it was read.
    pub host: &'a str,
    pub route: &'a str,
    /// The route's canary answered (written only then, as `"canary":true`).
    pub canary: bool,
    /// `host:port` of the backend that answered (the last one tried), or
    /// empty when no upstream was tried.
    pub upstream: &'a str,
    /// Backends tried; written when more than one was (retries).
    pub tries: u8,
    pub client_ip: std::net::IpAddr,
    pub proto: &'a str,
    pub bytes_out: u64,
    /// Bytes from the client of an upgraded (WebSocket) connection.
    pub bytes_in: Option<u64>,
    pub user_agent: &'a str,
    /// Set when the response body ended early (client gone, upstream reset).
    pub incomplete: bool,
}

impl AccessRecord<'_> {
    /// The JSON line, newline included.
    pub fn to_line(&self) -> String {
        let mut out = String::with_capacity(320);
        self.write_line(&mut out);
        out
    }

    /// Appends the JSON line, newline included, to `out`.
    pub fn write_line(&self, out: &mut String) {
        out.push('{');
        logging::push_ts_field(out);
        json::push_field(out, "level", "info");
        json::push_field(out, "msg", "request");
        json::push_field(out, "request_id", self.request_id);
        if !self.trace_id.is_empty() {
            json::push_field(out, "trace_id", self.trace_id);
            json::push_field(out, "span_id", self.span_id);
        }
        json::push_field(out, "method", self.method);
        json::push_field(out, "path", self.path);
        json::push_number(out, "status", self.status);
        json::push_number(out, "duration_ms", self.duration_ms);
        json::push_field(out, "host", self.host);
        json::push_field(out, "route", self.route);
        if self.canary {
            out.push_str(",\"canary\":true");
        }
        json::push_field(out, "upstream", self.upstream);
        if self.tries > 1 {
            json::push_number(out, "tries", u64::from(self.tries));
        }
        json::push_ip_field(out, "client_ip", self.client_ip);
        json::push_field(out, "proto", self.proto);
        json::push_number(out, "bytes_out", self.bytes_out);
        if let Some(n) = self.bytes_in {
            json::push_number(out, "bytes_in", n);
        }
        json::push_field(out, "user_agent", self.user_agent);
        if self.incomplete {
            out.push_str(",\"incomplete\":true");
        }
        out.push_str("}\n");
    }
}

thread_local! {
    /// One reusable line buffer per worker thread: no allocation per request.
    static LINE: std::cell::RefCell<String> = std::cell::RefCell::new(String::with_capacity(512));
}

/// Writes the record if logging was initialised; a no-op otherwise.
pub fn write(record: &AccessRecord<'_>) {
    if let Some(sink) = logging::sink() {
        LINE.with(|line| {
            let mut line = line.borrow_mut();
            line.clear();
            record.write_line(&mut line);
            sink.append(line.as_bytes());
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_has_every_contract_field() {
        let rec = AccessRecord {
            request_id: "abc",
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736",
            span_id: "00f067aa0ba902b7",
            method: "GET",
            path: "/billing/x\"y",
            status: 200,
            duration_ms: 1.25,
            host: "api.example.com",
            route: "/billing",
            canary: false,
            upstream: "127.0.0.1:9000",
            tries: 1,
            client_ip: [127, 0, 0, 1].into(),
            proto: "HTTP/1.1",
            bytes_out: 12,
            bytes_in: None,
            user_agent: "curl/8",
            incomplete: false,
        };
        let line = rec.to_line();
        assert!(line.ends_with('\n'));
        let v: serde_json::Value = serde_json::from_str(line.trim_end()).unwrap();
        for key in [
            "ts",
            "level",
            "msg",
            "request_id",
            "trace_id",
            "span_id",
            "method",
            "path",
            "status",
            "duration_ms",
            "host",
            "route",
            "upstream",
            "client_ip",
            "proto",
            "bytes_out",
            "user_agent",
        ] {
            assert!(v.get(key).is_some(), "missing {key} in {line}");
        }
        assert_eq!(v["path"], "/billing/x\"y");
        assert!(v.get("tries").is_none(), "one try is not worth a field");
        assert!(v.get("canary").is_none(), "stable traffic is not marked");
        let retried = AccessRecord {
            tries: 3,
            ..rec.clone()
        }
        .to_line();
        let v: serde_json::Value = serde_json::from_str(retried.trim_end()).unwrap();
        assert_eq!(v["tries"], 3);
        let canary = AccessRecord {
            canary: true,
            ..rec.clone()
        }
        .to_line();
        let c: serde_json::Value = serde_json::from_str(canary.trim_end()).unwrap();
        assert_eq!(c["canary"], true);
        assert_eq!(v["status"], 200);
        assert!(v["ts"].as_str().unwrap().ends_with('Z'));
    }
}
