//! The journal's series: how sessions ended, by the cause the server gave
//! each, how long dropped ones lived, and what clients reported. Every
//! label value comes from a closed set (`Cause` ids), whatever a client
//! sends.

use holdfast_protocol::{Cause, ClientReport, Ending, SessionRecord};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CauseLabels {
    cause: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReportLabels {
    fallback: &'static str,
}

/// Upper bounds of the dropped-lifetime histogram, in seconds: the idle
/// limits of common proxies fall between them.
const LIFETIME_BUCKETS: [f64; 11] = [1.0, 5.0, 10.0, 30.0, 55.0, 65.0, 100.0, 300.0, 900.0, 3600.0, 14400.0];

#[derive(Debug)]
pub(super) struct JournalMetrics {
    ends: Family<CauseLabels, Counter>,
    dropped_lifetime: Histogram,
    reports: Family<ReportLabels, Counter>,
    log_bytes: Gauge,
}

impl JournalMetrics {
    pub(super) fn register(r: &mut Registry) -> JournalMetrics {
        let ends = Family::<CauseLabels, Counter>::default();
        r.register(
            "holdfast_session_ends",
            "Sessions that ended, by the cause the server gave each (idle_timeout, mass_drop, abnormal_closure, server_closed, healthy)",
            ends.clone(),
        );
        let dropped_lifetime = Histogram::new(LIFETIME_BUCKETS);
        r.register_with_unit(
            "holdfast_dropped_session_lifetime",
            "How long sessions lived that ended without a close frame",
            Unit::Seconds,
            dropped_lifetime.clone(),
        );
        let reports = Family::<ReportLabels, Counter>::default();
        r.register(
            "holdfast_client_reports",
            "Failure reports clients sent in connect, by the fallback reason they gave (none, or unreadable)",
            reports.clone(),
        );
        let log_bytes = Gauge::default();
        r.register_with_unit(
            "holdfast_session_log",
            "Bytes of session records kept for timelines (session_log_mb bounds them)",
            Unit::Bytes,
            log_bytes.clone(),
        );
        JournalMetrics { ends, dropped_lifetime, reports, log_bytes }
    }

    pub(super) fn ended(&self, record: &SessionRecord) {
        self.ends.get_or_create(&CauseLabels { cause: record.cause.id() }).inc();
        if record.ending == Ending::Dropped {
            self.dropped_lifetime.observe(record.lived_ms as f64 / 1e3);
        }
    }

    pub(super) fn reported(&self, report: Option<&ClientReport>) {
        let fallback = match report {
            None => "unreadable",
            Some(ClientReport { fallback: None, .. }) => "none",
            Some(ClientReport { fallback: Some(cause), .. }) => Cause::id(*cause),
        };
        self.reports.get_or_create(&ReportLabels { fallback }).inc();
    }

    pub(super) fn set_log_bytes(&self, bytes: usize) {
        self.log_bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }
}
