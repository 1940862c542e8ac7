//! The OTLP trace pipeline: spans are batched in a bounded queue and posted as protobuf to
//! the collector over HTTP by the broker's reqwest (rustls), on the process's Tokio runtime.
//!
//! A span is handed to the batch queue without waiting: when the collector is slow, down or
//! hangs, requests and jobs go on at full speed and spans beyond the queue's bound
//! (`OTEL_BSP_MAX_QUEUE_SIZE`, 2048 by default) are dropped. Exports run on the SDK's own
//! thread, one at a time, each bounded by `OTEL_EXPORTER_OTLP_TIMEOUT`.

use std::time::Duration;

use anyhow::Context;
use opentelemetry::KeyValue;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider};
use tokio::runtime::Handle;
use url::Url;

use crate::config::{OtelArgs, TracesSampler};

/// Largest collector answer read (OTLP answers are a few bytes; a partial-success message
/// at most a few hundred).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// The tracer provider for `args`, exporting to `url`. Needs a Tokio runtime (the posts run
/// on it).
pub(super) fn provider(args: &OtelArgs, url: &Url) -> anyhow::Result<SdkTracerProvider> {
    let timeout = args.export_timeout();
    let runtime = Handle::try_current().context("trace export needs the Tokio runtime")?;
    let http = reqwest::Client::builder()
        .user_agent(concat!("glance-share-broker/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(5).min(timeout))
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    // OTEL_EXPORTER_OTLP_HEADERS (and _TRACES_HEADERS) are read by the exporter itself.
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(Poster { http, runtime })
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url.as_str())
        .with_timeout(timeout)
        .build()
        .context("building the OTLP exporter")?;
    // The queue's bound, batch size and delay: OTEL_BSP_* variables, else the SDK's defaults.
    let batches = BatchSpanProcessor::builder(exporter)
        .with_batch_config(BatchConfigBuilder::default().build())
        .build();
    let resource = Resource::builder()
        .with_service_name(args.otel_service_name.clone())
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(batches)
        .with_sampler(sampler(args.otel_traces_sampler, args.otel_traces_sampler_arg))
        .with_resource(resource)
        .build())
}

/// OpenTelemetry's standard sampler `kind`, with `ratio` for the ratio samplers.
fn sampler(kind: TracesSampler, ratio: f64) -> Sampler {
    let parent_based = |root: Sampler| Sampler::ParentBased(Box::new(root));
    match kind {
        TracesSampler::AlwaysOn => Sampler::AlwaysOn,
        TracesSampler::AlwaysOff => Sampler::AlwaysOff,
        TracesSampler::Traceidratio => Sampler::TraceIdRatioBased(ratio),
        TracesSampler::ParentbasedAlwaysOn => parent_based(Sampler::AlwaysOn),
        TracesSampler::ParentbasedAlwaysOff => parent_based(Sampler::AlwaysOff),
        TracesSampler::ParentbasedTraceidratio => parent_based(Sampler::TraceIdRatioBased(ratio)),
    }
}

/// Posts an export with the broker's reqwest on the Tokio runtime. The SDK's batch thread
/// waits for the answer without a runtime of its own, hence the hop.
#[derive(Debug)]
struct Poster {
    http: reqwest::Client,
    runtime: Handle,
}

#[async_trait::async_trait]
impl HttpClient for Poster {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let request = reqwest::Request::try_from(request)?;
        let http = self.http.clone();
        self.runtime
            .spawn(async move {
                let mut answer = http.execute(request).await?;
                let mut response = Response::builder().status(answer.status());
                for (name, value) in answer.headers() {
                    response = response.header(name, value);
                }
                let mut body = Vec::new();
                while let Some(chunk) = answer.chunk().await? {
                    if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                        return Err("the collector's answer is too long".into());
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok::<_, HttpError>(response.body(Bytes::from(body))?)
            })
            .await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_standard_samplers_are_built_as_named() {
        assert!(matches!(sampler(TracesSampler::AlwaysOn, 1.0), Sampler::AlwaysOn));
        assert!(matches!(sampler(TracesSampler::AlwaysOff, 1.0), Sampler::AlwaysOff));
        assert!(matches!(
            sampler(TracesSampler::Traceidratio, 0.25),
            Sampler::TraceIdRatioBased(r) if r == 0.25
        ));
        for kind in [
            TracesSampler::ParentbasedAlwaysOn,
            TracesSampler::ParentbasedAlwaysOff,
            TracesSampler::ParentbasedTraceidratio,
        ] {
            assert!(matches!(sampler(kind, 0.5), Sampler::ParentBased(_)), "{kind:?}");
        }
    }
}
