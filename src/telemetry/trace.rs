//! W3C Trace Context in and out of the broker's spans: a caller's `traceparent` becomes the
//! parent of its request's span, OpenStack calls and responses carry the `traceparent` of
//! their span, and a job continues the trace of the span that queued it (`db::jobs`).
//!
//! All of it does nothing unless trace export is on ([`enabled`]): without an exporter no span
//! has an OpenTelemetry context, and no header is read or written. Spans stay `tracing` spans;
//! `tracing-opentelemetry` (installed by `telemetry::init_logging`) turns them into
//! OpenTelemetry spans. Their `otel.name`, `otel.kind` and `otel.status_code` fields name
//! them, set their kind and status there; the modules that make spans declare them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::db::jobs::TraceContext;

/// The target of spans made only for traces (an OpenStack call's client span): the logs
/// leave them out, so that a log line keeps the request's or the job's span and its ids.
pub const TRACE_ONLY: &str = "gsb_trace";

const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";

/// Longest `tracestate` carried with a job (W3C asks that at least 512 characters be
/// propagated); a longer one is dropped, the trace goes on.
const MAX_TRACESTATE_CHARS: usize = 512;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported (set once, when logging starts with an OTLP endpoint).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

pub(super) fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// Makes the caller's trace, from its `traceparent` (and `tracestate`) headers, the parent
/// of `span`. A missing, malformed or repeated `traceparent` is ignored: `span` starts a new
/// trace, and the request is served all the same.
pub fn adopt_caller_trace(span: &Span, headers: &HeaderMap) {
    if !enabled() {
        return;
    }
    let mut carrier = HashMap::new();
    let mut parents = headers.get_all(TRACEPARENT).iter();
    if let (Some(parent), None) = (parents.next(), parents.next())
        && let Ok(parent) = parent.to_str()
    {
        carrier.insert(TRACEPARENT.to_owned(), parent.to_owned());
        // Several `tracestate` headers are one list (W3C Trace Context, 3.3.1.1).
        let states: Vec<&str> = headers
            .get_all(TRACESTATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if !states.is_empty() {
            carrier.insert(TRACESTATE.to_owned(), states.join(","));
        }
    }
    set_parent(span, &carrier);
}

/// Writes `span`'s context into `headers` as `traceparent` (and `tracestate` when it has
/// one): on an outgoing call, or on a response, so that its caller can find the trace.
pub fn inject(span: &Span, headers: &mut HeaderMap) {
    let Some(context) = context_of(span) else {
        return;
    };
    for (name, value) in [
        (TRACEPARENT, Some(context.traceparent)),
        (TRACESTATE, context.tracestate),
    ] {
        if let Some(value) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
}

/// The trace context of the current span, for the jobs it queues to continue.
pub fn current() -> Option<TraceContext> {
    context_of(&Span::current())
}

/// `span`'s trace context; `None` when tracing is off or `span` is not traced.
fn context_of(span: &Span) -> Option<TraceContext> {
    if !enabled() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
    let traceparent = carrier.remove(TRACEPARENT)?;
    let tracestate = carrier
        .remove(TRACESTATE)
        .filter(|s| !s.is_empty() && s.len() <= MAX_TRACESTATE_CHARS);
    Some(TraceContext {
        traceparent,
        tracestate,
    })
}

/// Makes `span` (not entered yet) a child of the span that queued its job, and links it to
/// the origins of the jobs run with it (grants adopted into one batch) when they differ.
pub fn continue_trace<'a>(
    span: &Span,
    origin: Option<&TraceContext>,
    others: impl IntoIterator<Item = &'a TraceContext>,
) {
    if !enabled() {
        return;
    }
    if let Some(origin) = origin {
        set_parent(span, &carrier_of(origin));
    }
    for other in others.into_iter().filter(|o| Some(*o) != origin) {
        let linked = TraceContextPropagator::new().extract(&carrier_of(other));
        span.add_link(linked.span().span_context().clone());
    }
}

fn carrier_of(context: &TraceContext) -> HashMap<String, String> {
    let mut carrier = HashMap::from([(TRACEPARENT.to_owned(), context.traceparent.clone())]);
    if let Some(state) = &context.tracestate {
        carrier.insert(TRACESTATE.to_owned(), state.clone());
    }
    carrier
}

/// Sets `span`'s parent from a W3C carrier; one without a valid `traceparent` leaves `span`
/// a root.
fn set_parent(span: &Span, carrier: &HashMap<String, String>) {
    let parent = TraceContextPropagator::new().extract(carrier);
    if parent.span().span_context().is_valid()
        && let Err(e) = span.set_parent(parent)
    {
        tracing::debug!(error = %e, "the trace context was not taken");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_tracing_off_no_context_is_read_or_written() {
        // `enable` is never called in unit tests: the process runs without an exporter.
        let span = tracing::info_span!("request");
        let mut headers = HeaderMap::new();
        headers.insert(
            TRACEPARENT,
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        adopt_caller_trace(&span, &headers);
        let mut out = HeaderMap::new();
        inject(&span, &mut out);
        assert!(out.is_empty());
        assert_eq!(current(), None);
    }

    #[test]
    fn a_job_context_travels_as_its_two_headers() {
        let context = TraceContext {
            traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
            tracestate: Some("vendor=x".into()),
        };
        let carrier = carrier_of(&context);
        let extracted = TraceContextPropagator::new().extract(&carrier);
        let span = extracted.span();
        let parent = span.span_context();
        assert_eq!(parent.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(parent.span_id().to_string(), "00f067aa0ba902b7");
        assert!(parent.is_sampled() && parent.is_remote());
        assert_eq!(parent.trace_state().header(), "vendor=x");
    }
}
