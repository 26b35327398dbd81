//! Request counters and latency histograms, and the Prometheus text rendering of `/metrics`.
//!
//! Routes are labelled by axum's matched route pattern (`/api/tracker/events/{uid}`), never by
//! the raw path, so label cardinality is bounded by the route table.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Histogram bucket bounds in seconds: a tablet request is expected in milliseconds, a big
/// sync page in seconds.
const BUCKETS: [f64; 11] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Default)]
struct Series {
    count: u64,
    sum_secs: f64,
    /// Non-cumulative per bucket; the last slot is `+Inf`.
    buckets: [u64; BUCKETS.len() + 1],
}

#[derive(Default)]
struct Inner {
    /// (method, route, status) → count
    requests: BTreeMap<(String, String, u16), u64>,
    /// route → latency
    latency: BTreeMap<String, Series>,
}

/// Shared HTTP metrics. Cheap to clone.
#[derive(Clone, Default)]
pub struct Metrics {
    inner: Arc<Mutex<Inner>>,
}

impl Metrics {
    /// Counts one finished request.
    pub fn observe(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        *inner
            .requests
            .entry((method.to_owned(), route.to_owned(), status))
            .or_default() += 1;
        let s = inner.latency.entry(route.to_owned()).or_default();
        s.count += 1;
        s.sum_secs += secs;
        let slot = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        s.buckets[slot] += 1;
    }

    /// Requests answered so far, and of those with a 5xx status.
    pub fn totals(&self) -> (u64, u64) {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let all = inner.requests.values().sum();
        let errors = inner
            .requests
            .iter()
            .filter(|((_, _, s), _)| *s >= 500)
            .map(|(_, n)| n)
            .sum();
        (all, errors)
    }

    /// Appends the HTTP families in Prometheus text format 0.0.4.
    pub fn render_http(&self, out: &mut String) {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        out.push_str("# HELP clinicbox_http_requests_total HTTP requests answered, by method, route and status.\n");
        out.push_str("# TYPE clinicbox_http_requests_total counter\n");
        for ((method, route, status), n) in &inner.requests {
            let _ = writeln!(
                out,
                "clinicbox_http_requests_total{{method=\"{}\",route=\"{}\",status=\"{status}\"}} {n}",
                label(method),
                label(route)
            );
        }
        out.push_str("# HELP clinicbox_http_errors_total HTTP requests answered with a 5xx status, by route.\n");
        out.push_str("# TYPE clinicbox_http_errors_total counter\n");
        let mut errors: BTreeMap<&str, u64> = BTreeMap::new();
        for ((_, route, status), n) in &inner.requests {
            if *status >= 500 {
                *errors.entry(route).or_default() += n;
            }
        }
        for (route, n) in errors {
            let _ = writeln!(
                out,
                "clinicbox_http_errors_total{{route=\"{}\"}} {n}",
                label(route)
            );
        }
        out.push_str("# HELP clinicbox_http_request_duration_seconds Time to answer HTTP requests, by route.\n");
        out.push_str("# TYPE clinicbox_http_request_duration_seconds histogram\n");
        for (route, s) in &inner.latency {
            let route = label(route);
            let mut cumulative = 0;
            for (i, bound) in BUCKETS.iter().enumerate() {
                cumulative += s.buckets[i];
                let _ = writeln!(
                    out,
                    "clinicbox_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "clinicbox_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                s.count
            );
            let _ = writeln!(
                out,
                "clinicbox_http_request_duration_seconds_sum{{route=\"{route}\"}} {}",
                s.sum_secs
            );
            let _ = writeln!(
                out,
                "clinicbox_http_request_duration_seconds_count{{route=\"{route}\"}} {}",
                s.count
            );
        }
    }
}

/// Escapes a label value (backslash, quote, newline).
pub fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Appends one gauge or counter family with a single unlabelled sample.
pub fn family(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_and_counts_errors() {
        let m = Metrics::default();
        m.observe("GET", "/api/me", 200, Duration::from_millis(3));
        m.observe("GET", "/api/me", 200, Duration::from_millis(30));
        m.observe("POST", "/api/tracker", 500, Duration::from_secs(20));
        assert_eq!(m.totals(), (3, 1));
        let mut out = String::new();
        m.render_http(&mut out);
        assert!(
            out.contains(
                "clinicbox_http_requests_total{method=\"GET\",route=\"/api/me\",status=\"200\"} 2"
            ),
            "{out}"
        );
        assert!(out.contains(
            "clinicbox_http_request_duration_seconds_bucket{route=\"/api/me\",le=\"0.005\"} 1"
        ));
        assert!(out.contains(
            "clinicbox_http_request_duration_seconds_bucket{route=\"/api/me\",le=\"0.05\"} 2"
        ));
        assert!(out.contains(
            "clinicbox_http_request_duration_seconds_bucket{route=\"/api/tracker\",le=\"10\"} 0"
        ));
        assert!(out.contains(
            "clinicbox_http_request_duration_seconds_bucket{route=\"/api/tracker\",le=\"+Inf\"} 1"
        ));
        assert!(out.contains("clinicbox_http_errors_total{route=\"/api/tracker\"} 1"));
    }

    #[test]
    fn labels_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
