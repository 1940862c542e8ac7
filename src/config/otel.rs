//! The OpenTelemetry trace export settings, read from OpenTelemetry's standard variables so
//! that a broker runs beside any other instrumented service with the same environment. Off
//! unless an OTLP endpoint is named: then no exporter is built and nothing is sent.

use std::time::Duration;

use clap::{Args, ValueEnum};
use url::Url;

/// Where and how spans are exported (OTLP over HTTP, protobuf).
#[derive(Debug, Clone, Args)]
pub struct OtelArgs {
    /// OTLP/HTTP collector base URL, e.g. http://localhost:4318: traces go to its
    /// `/v1/traces`. Unset (with OTEL_EXPORTER_OTLP_TRACES_ENDPOINT unset too): no export.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", global = true, hide_env_values = true, value_parser = parse_endpoint)]
    pub otlp_endpoint: Option<Endpoint>,

    /// OTLP/HTTP URL that traces are posted to, as it is (wins over OTEL_EXPORTER_OTLP_ENDPOINT).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", global = true, hide_env_values = true, value_parser = parse_endpoint)]
    pub otlp_traces_endpoint: Option<Endpoint>,

    /// Longest one export to the collector may take (milliseconds), retries included.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_TIMEOUT", global = true, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub otlp_timeout_ms: u64,

    /// The `service.name` of the exported spans.
    #[arg(
        long,
        env = "OTEL_SERVICE_NAME",
        global = true,
        default_value = "glance-share-broker"
    )]
    pub otel_service_name: String,

    /// Which traces are recorded: `parentbased_always_on` follows the caller's `traceparent`
    /// sampled flag and records every trace the broker starts; `parentbased_traceidratio`
    /// starts a share OTEL_TRACES_SAMPLER_ARG of them; also `always_on`, `always_off`,
    /// `traceidratio`, `parentbased_always_off`.
    #[arg(
        long,
        env = "OTEL_TRACES_SAMPLER",
        global = true,
        default_value = "parentbased_always_on"
    )]
    pub otel_traces_sampler: TracesSampler,

    /// The ratio (0 to 1) of the `traceidratio` samplers.
    #[arg(long, env = "OTEL_TRACES_SAMPLER_ARG", global = true, default_value_t = 1.0, value_parser = parse_ratio)]
    pub otel_traces_sampler_arg: f64,

    /// `true` turns trace export off even with an endpoint set.
    #[arg(long, env = "OTEL_SDK_DISABLED", global = true, default_value = "false", value_parser = parse_true)]
    pub otel_sdk_disabled: bool,
}

/// An OTLP endpoint setting: a URL, or nothing when the variable is set but empty
/// (OpenTelemetry counts an empty variable as unset).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint(pub Option<Url>);

/// OpenTelemetry's standard samplers (`OTEL_TRACES_SAMPLER`), as the specification names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum TracesSampler {
    AlwaysOn,
    AlwaysOff,
    Traceidratio,
    ParentbasedAlwaysOn,
    ParentbasedAlwaysOff,
    ParentbasedTraceidratio,
}

impl OtelArgs {
    /// The URL spans are posted to; `None` when export is off.
    pub fn traces_url(&self) -> Option<Url> {
        let url = |setting: &Option<Endpoint>| setting.as_ref().and_then(|e| e.0.clone());
        if self.otel_sdk_disabled {
            return None;
        }
        if let Some(url) = url(&self.otlp_traces_endpoint) {
            return Some(url);
        }
        // The base URL's path is kept: `/v1/traces` is added below it, as the OTLP
        // exporter specification says.
        url(&self.otlp_endpoint).map(|mut url| {
            let path = format!("{}/v1/traces", url.path().trim_end_matches('/'));
            url.set_path(&path);
            url
        })
    }

    pub fn export_timeout(&self) -> Duration {
        Duration::from_millis(self.otlp_timeout_ms)
    }
}

/// An `http` or `https` URL, without credentials, query or fragment; an empty value is
/// no endpoint.
fn parse_endpoint(text: &str) -> Result<Endpoint, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(Endpoint(None));
    }
    // The value is not echoed: it may hold a secret.
    let url = Url::parse(text).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("not an http or https URL".into());
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err("an OTLP endpoint takes no credentials, query or fragment (use OTEL_EXPORTER_OTLP_HEADERS)".into());
    }
    Ok(Endpoint(Some(url)))
}

/// OpenTelemetry's booleans: `true` in any case is true, anything else false.
fn parse_true(text: &str) -> Result<bool, String> {
    Ok(text.trim().eq_ignore_ascii_case("true"))
}

fn parse_ratio(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(ratio) if (0.0..=1.0).contains(&ratio) => Ok(ratio),
        _ => Err(format!("`{text}` is not a ratio from 0 to 1")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(endpoint: Option<&str>, traces: Option<&str>) -> OtelArgs {
        OtelArgs {
            otlp_endpoint: endpoint.map(|e| parse_endpoint(e).unwrap()),
            otlp_traces_endpoint: traces.map(|e| parse_endpoint(e).unwrap()),
            otlp_timeout_ms: 10_000,
            otel_service_name: "glance-share-broker".into(),
            otel_traces_sampler: TracesSampler::ParentbasedAlwaysOn,
            otel_traces_sampler_arg: 1.0,
            otel_sdk_disabled: false,
        }
    }

    #[test]
    fn with_no_endpoint_or_an_empty_one_nothing_is_exported() {
        assert_eq!(args(None, None).traces_url(), None);
        assert_eq!(args(Some(""), Some(" ")).traces_url(), None);
        assert_eq!(
            args(Some(""), Some("http://c:4318/v1/traces"))
                .traces_url()
                .map(String::from),
            Some("http://c:4318/v1/traces".to_owned())
        );
    }

    #[test]
    fn the_base_endpoint_gets_v1_traces_below_its_path_and_the_traces_endpoint_is_taken_as_it_is() {
        let url = |e, t| args(e, t).traces_url().map(|u| u.to_string());
        assert_eq!(
            url(Some("http://collector:4318"), None).as_deref(),
            Some("http://collector:4318/v1/traces")
        );
        assert_eq!(
            url(Some("http://collector:4318/"), None).as_deref(),
            Some("http://collector:4318/v1/traces")
        );
        assert_eq!(
            url(Some("https://c.example/otlp/"), None).as_deref(),
            Some("https://c.example/otlp/v1/traces")
        );
        assert_eq!(
            url(Some("http://wrong:4318"), Some("http://collector:4318/custom")).as_deref(),
            Some("http://collector:4318/custom")
        );
    }

    #[test]
    fn otel_sdk_disabled_turns_export_off_even_with_an_endpoint() {
        let disabled = OtelArgs {
            otel_sdk_disabled: true,
            ..args(Some("http://collector:4318"), Some("http://collector:4318/v1/traces"))
        };
        assert_eq!(disabled.traces_url(), None);
    }

    #[test]
    fn endpoints_are_http_urls_without_query_and_ratios_lie_between_0_and_1() {
        for bad in [
            "collector:4318",
            "ftp://collector",
            "http://c:4318/?token=x",
            "http://user:secret@c:4318",
            "not a url",
        ] {
            let refused = parse_endpoint(bad).unwrap_err();
            assert!(!refused.contains("secret") && !refused.contains("token"), "{refused}");
        }
        assert!(parse_endpoint(" http://collector:4318 ").is_ok());
        for bad in ["-0.1", "1.5", "half", "NaN"] {
            assert!(parse_ratio(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_ratio("0.25"), Ok(0.25));
    }

    #[test]
    fn otel_sdk_disabled_is_true_in_any_case_and_false_otherwise() {
        for (text, disabled) in [
            ("true", true),
            ("TRUE", true),
            (" True ", true),
            ("1", false),
            ("", false),
            ("no", false),
        ] {
            assert_eq!(parse_true(text), Ok(disabled), "{text}");
        }
    }

    #[test]
    fn samplers_have_the_specifications_names() {
        for (name, sampler) in [
            ("always_on", TracesSampler::AlwaysOn),
            ("always_off", TracesSampler::AlwaysOff),
            ("traceidratio", TracesSampler::Traceidratio),
            ("parentbased_always_on", TracesSampler::ParentbasedAlwaysOn),
            ("parentbased_always_off", TracesSampler::ParentbasedAlwaysOff),
            ("parentbased_traceidratio", TracesSampler::ParentbasedTraceidratio),
        ] {
            assert_eq!(TracesSampler::from_str(name, false), Ok(sampler));
        }
    }
}
