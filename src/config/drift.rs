//! The reconciler's settings: how often it compares Glance with the broker, how long an ended
//! share's image stays compared, and which owners' hand-made members it adopts.

use std::time::Duration;

use clap::Args;

/// How drift is looked for (enforcement is the approval policy's `enforce_drift`).
#[derive(Debug, Clone, Args)]
pub struct DriftArgs {
    /// How often every managed image is compared with Glance (`90s`, `5m`, `1h`); `0` or
    /// `off`: only on `POST /v1/reconcile` and `glance-share-broker reconcile`.
    #[arg(long, env = "GSB_RECONCILE_EVERY", default_value = "5m", value_parser = parse_every)]
    pub reconcile_every: Every,
    /// How long after a share ended its image is still compared (a member back after a
    /// revoke is found in that time).
    #[arg(long, env = "GSB_RECONCILE_ENDED_WITHIN_HOURS", default_value_t = 24, value_parser = clap::value_parser!(u64).range(0..=8760))]
    pub reconcile_ended_within_hours: u64,
    /// Owner projects (ids) whose image members made outside the broker are adopted:
    /// recorded as shares as found in Glance, with no approver, instead of reported.
    #[arg(long, env = "GSB_ADOPT_OWNER_PROJECTS", value_delimiter = ',')]
    pub adopt_owner_projects: Vec<String>,
}

/// A period, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Every(pub Option<Duration>);

/// `0`, `off`, or a whole number with `s`, `m` or `h` (a bare number is seconds).
fn parse_every(text: &str) -> Result<Every, String> {
    let text = text.trim();
    if text == "off" || text == "0" {
        return Ok(Every(None));
    }
    let unit_at = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(unit_at);
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return Err(format!("`{text}` is not 0, off, or a period such as 90s, 5m or 1h")),
    };
    match number.parse::<u64>() {
        Ok(0) => Ok(Every(None)),
        Ok(n) if n.saturating_mul(scale) <= 7 * 86400 => Ok(Every(Some(Duration::from_secs(n * scale)))),
        _ => Err(format!(
            "`{text}` is not 0, off, or a period up to 7 days such as 90s, 5m or 1h"
        )),
    }
}

impl DriftArgs {
    /// The reconciler's configuration.
    pub fn config(&self) -> crate::worker::DriftConfig {
        crate::worker::DriftConfig {
            every: self.reconcile_every.0,
            ended_within: Duration::from_secs(self.reconcile_ended_within_hours * 3600),
            adopt_owners: self
                .adopt_owner_projects
                .iter()
                .map(|p| p.trim().to_owned())
                .filter(|p| !p.is_empty())
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reconcile_period_is_off_or_a_number_with_a_unit() {
        assert_eq!(parse_every("off"), Ok(Every(None)));
        assert_eq!(parse_every("0"), Ok(Every(None)));
        assert_eq!(parse_every("0m"), Ok(Every(None)));
        assert_eq!(parse_every("90"), Ok(Every(Some(Duration::from_secs(90)))));
        assert_eq!(parse_every("5m"), Ok(Every(Some(Duration::from_secs(300)))));
        assert_eq!(parse_every("2h"), Ok(Every(Some(Duration::from_secs(7200)))));
        for bad in ["", "5d", "-1m", "m", "fast", "9999h"] {
            assert!(parse_every(bad).is_err(), "{bad}");
        }
    }
}
