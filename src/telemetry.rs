//! Logging, trace export and the metrics recorder.
//!
//! Logs go to stderr. With an OTLP endpoint configured (`config::OtelArgs`), the same
//! `tracing` spans are also exported as OpenTelemetry traces ([`export`]), and W3C trace
//! context flows in and out of them ([`trace`]); without one, no exporter exists and the
//! spans are what they were: log context.

mod export;
pub mod trace;

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use opentelemetry::trace::TracerProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::{Level, Subscriber};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::config::{LogFormat, OtelArgs};

/// How long a stopping process waits for its last spans to reach the collector.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// What logging started: the trace pipeline, when spans are exported.
#[must_use = "call `shutdown` before the process exits, or the last spans are lost"]
pub struct Telemetry {
    traces: Option<SdkTracerProvider>,
}

/// Logs to stderr, as JSON lines or text; `RUST_LOG` sets the levels. With an OTLP endpoint
/// in `otel`, also exports the broker's spans (those of `glance_share_broker` at INFO and
/// above, with the events logged in them, whatever `RUST_LOG` says) as traces.
pub fn init_logging(format: LogFormat, otel: &OtelArgs) -> anyhow::Result<Telemetry> {
    let (subscriber, traces) = subscriber(format, otel)?;
    // Another subscriber may be installed already (tests): keep it.
    if subscriber.try_init().is_ok() && traces.is_some() {
        trace::enable();
    }
    if let Some(url) = otel.traces_url().filter(|_| traces.is_some()) {
        tracing::info!(
            otlp.host = url.host_str().unwrap_or_default(),
            sampler = ?otel.otel_traces_sampler,
            "exporting traces"
        );
    }
    Ok(Telemetry { traces })
}

/// The subscriber [`init_logging`] installs, and the trace pipeline it feeds, if any.
fn subscriber(
    format: LogFormat,
    otel: &OtelArgs,
) -> anyhow::Result<(Box<dyn Subscriber + Send + Sync>, Option<SdkTracerProvider>)> {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=info,hyper=warn"))
        // Spans made only for traces would hide the request's or the job's ids from the
        // log lines written inside them.
        .add_directive(format!("{}=off", trace::TRACE_ONLY).parse()?);
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = match format {
        LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_filter(filter)
            .boxed(),
        LogFormat::Text => logs.with_filter(filter).boxed(),
    };
    let traces = otel.traces_url().map(|url| export::provider(otel, &url)).transpose()?;
    let exported = traces.as_ref().map(|provider| {
        let mine = Targets::new()
            .with_target(env!("CARGO_CRATE_NAME"), Level::INFO)
            .with_target(trace::TRACE_ONLY, Level::INFO);
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("glance-share-broker"))
            // Contexts are passed by hand (`trace`), never read from OpenTelemetry's
            // current context; a span not yet entered can still be renamed (the route).
            .with_context_activation(false)
            .with_location(false)
            .with_threads(false)
            .with_filter(mine)
    });
    // No `Option` layer: an absent one would let every span through to the registry,
    // trace-only spans included.
    let logging = Registry::default().with(logs);
    let subscriber: Box<dyn Subscriber + Send + Sync> = match exported {
        Some(exported) => Box::new(logging.with(exported)),
        None => Box::new(logging),
    };
    Ok((subscriber, traces))
}

impl Telemetry {
    /// Sends the spans still queued to the collector (waiting at most [`FLUSH_TIMEOUT`]) and
    /// stops the exporter. Call it once requests and jobs have finished.
    pub async fn shutdown(self) {
        let Some(provider) = self.traces else {
            return;
        };
        // The SDK blocks until its batch thread is done; the post it waits for runs on
        // this runtime, so block another thread.
        let stopped = tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(FLUSH_TIMEOUT)).await;
        match stopped {
            Ok(Ok(())) => tracing::info!("traces flushed"),
            Ok(Err(e)) => tracing::warn!(error = %e, "the last traces may not have reached the collector"),
            Err(e) => tracing::warn!(error = %e, "flushing traces failed"),
        }
    }
}

/// The process-wide Prometheus recorder, installed on first use.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("http_request_duration_seconds".into()),
                    &crate::metrics::CALL_BUCKETS,
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("gsb_openstack_request_duration_seconds".into()),
                        &crate::metrics::CALL_BUCKETS,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Suffix("_lag_seconds".into()), &crate::metrics::LAG_BUCKETS)
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("gsb_grant_latency_seconds".into()),
                        &crate::metrics::LAG_BUCKETS,
                    )
                })
                .expect("the bucket lists are not empty")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (tests embed several apps): keep it.
            if metrics::set_global_recorder(recorder).is_ok() {
                crate::metrics::describe();
            }
            handle
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TracesSampler;

    #[test]
    fn without_an_endpoint_no_exporter_is_built_and_trace_only_spans_are_never_made() {
        let otel = OtelArgs {
            otlp_endpoint: None,
            otlp_traces_endpoint: None,
            otlp_timeout_ms: 10_000,
            otel_service_name: "glance-share-broker".into(),
            otel_traces_sampler: TracesSampler::ParentbasedAlwaysOn,
            otel_traces_sampler_arg: 1.0,
            otel_sdk_disabled: false,
        };
        // No Tokio runtime here: a pipeline would need one, so none may be built.
        let (subscriber, traces) = subscriber(LogFormat::Json, &otel).unwrap();
        assert!(traces.is_none());
        tracing::subscriber::with_default(subscriber, || {
            // An OpenStack call's span costs a cached look-up: it is never made, its fields
            // never formatted.
            assert!(tracing::info_span!(target: trace::TRACE_ONLY, "openstack call").is_disabled());
            assert!(!tracing::error_span!("request").is_disabled(), "log spans are made");
        });
    }
}
