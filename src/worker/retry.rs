//! When to try again: a pure function of the attempt number, so it is tested without a clock.

use std::time::Duration;

/// Exponential backoff with full jitter, bounded by `max`. `jitter` is a number in [0, 1).
pub fn backoff(attempt: i32, base: Duration, max: Duration, jitter: f64) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.clamp(0, 16) as u32).min(max);
    // Never less than half the step, so retries do not bunch up at zero.
    exp.mul_f64(0.5 + jitter.clamp(0.0, 1.0) / 2.0)
}

/// The delay before the next try: what the server asked for (`Retry-After`), if more.
pub fn next_delay(attempt: i32, base: Duration, max: Duration, retry_after: Option<Duration>, jitter: f64) -> Duration {
    let ours = backoff(attempt, base, max, jitter);
    retry_after.map_or(ours, |asked| asked.max(ours))
}

/// The delay before the next acceptance check: quick at first, then slower, up to `max`.
pub fn poll_delay(polls_done: i32, first: Duration, max: Duration) -> Duration {
    first.saturating_mul(1u32 << polls_done.clamp(0, 16) as u32).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(0, S, S * 60, 1.0), S);
        assert_eq!(backoff(3, S, S * 60, 1.0), S * 8);
        assert_eq!(backoff(30, S, S * 60, 1.0), S * 60);
        assert_eq!(backoff(3, S, S * 60, 0.0), S * 4, "jitter keeps at least half");
    }

    #[test]
    fn retry_after_is_honoured_when_longer() {
        assert_eq!(next_delay(0, S, S * 60, Some(S * 7), 1.0), S * 7);
        assert_eq!(next_delay(5, S, S * 60, Some(S), 1.0), S * 32);
    }

    #[test]
    fn polls_slow_down() {
        let d: Vec<u64> = (0..6).map(|n| poll_delay(n, S * 2, S * 30).as_secs()).collect();
        assert_eq!(d, [2, 4, 8, 16, 30, 30]);
    }
}
