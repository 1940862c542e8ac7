//! Keyset pagination: an opaque cursor (the last id, or audit seq, seen), a bounded page
//! size, and the page every list answers with.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Deserializer, Serialize, de};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

pub const MAX_LIMIT: u32 = 200;
/// Every cursor of a list of ids: 16 bytes in unpadded URL-safe base64 (any such string is
/// one, so the spec states the format exactly).
pub const ID_CURSOR_PATTERN: &str = "^[A-Za-z0-9_-]{21}[AQgw]$";
/// Every cursor of a list of audit events: 8 bytes in unpadded URL-safe base64 (the
/// `pattern` of [`SeqPaging`] and of the audit list's `cursor`).
#[cfg(test)]
pub const SEQ_CURSOR_PATTERN: &str = "^[A-Za-z0-9_-]{10}[AEIMQUYcgkosw048]$";
const DEFAULT_LIMIT: u32 = 50;

/// Where the previous page ended. Opaque to callers: they pass back what they were given.
#[derive(Debug, Clone, Copy)]
pub struct Cursor(pub Uuid);

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&URL_SAFE_NO_PAD.encode(self.0.as_bytes()))
    }
}

impl<'de> Deserialize<'de> for Cursor {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        opaque(d, |bytes| Uuid::from_slice(bytes).ok().map(Cursor))
    }
}

/// Where the previous page of audit events ended: the `seq` of the last event seen.
#[derive(Debug, Clone, Copy)]
pub struct SeqCursor(pub i64);

impl fmt::Display for SeqCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&URL_SAFE_NO_PAD.encode(self.0.to_be_bytes()))
    }
}

impl SeqCursor {
    /// The cursor after `event`, a sealed one (lists hold sealed events only).
    pub fn after(event: &crate::db::audit::Event) -> String {
        SeqCursor(event.chain_pos.unwrap_or_default()).to_string()
    }
}

impl<'de> Deserialize<'de> for SeqCursor {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        opaque(d, |bytes| Some(SeqCursor(i64::from_be_bytes(bytes.try_into().ok()?))))
    }
}

/// Decodes a cursor this API issued, refusing anything else with one message.
fn opaque<'de, D: Deserializer<'de>, T>(d: D, from: impl FnOnce(&[u8]) -> Option<T>) -> Result<T, D::Error> {
    let text = String::deserialize(d)?;
    URL_SAFE_NO_PAD
        .decode(text.as_bytes())
        .ok()
        .and_then(|bytes| from(&bytes))
        .ok_or_else(|| de::Error::custom("is not a cursor this API issued: pass back `next_cursor` as it came"))
}

/// One page of a list, and where the next one starts.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// The page of `rows` (fetched with [`Limit::fetch`]), each made an item by `item`, with
    /// the cursor `cursor` gives the last row kept when another page follows.
    pub fn new<R>(mut rows: Vec<R>, limit: Limit, cursor: impl FnOnce(&R) -> String, item: impl FnMut(R) -> T) -> Self {
        let next_cursor = limit.trim(&mut rows).map(cursor);
        Page {
            items: rows.into_iter().map(item).collect(),
            next_cursor,
        }
    }
}

/// Paging through a list: where to start, and how many.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct Paging<C = Cursor> {
    /// The `next_cursor` of the previous page.
    #[param(value_type = Option<String>, pattern = "^[A-Za-z0-9_-]{21}[AQgw]$")]
    pub cursor: Option<C>,
    /// Page size, 1 to 200 (default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 200)]
    pub limit: Option<Limit>,
}

/// Paging through a list of audit events (or changes read from them), by `seq`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SeqPaging {
    /// The `next_cursor` of the previous page.
    #[param(value_type = Option<String>, pattern = "^[A-Za-z0-9_-]{10}[AEIMQUYcgkosw048]$")]
    pub cursor: Option<SeqCursor>,
    /// Page size, 1 to 200 (default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 200)]
    pub limit: Option<Limit>,
}

/// A page size between 1 and [`MAX_LIMIT`].
#[derive(Debug, Clone, Copy)]
pub struct Limit(u32);

impl Default for Limit {
    fn default() -> Self {
        Limit(DEFAULT_LIMIT)
    }
}

impl<'de> Deserialize<'de> for Limit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        match text.parse::<u32>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(Limit(n)),
            _ => Err(de::Error::custom(format!(
                "must be a whole number from 1 to {MAX_LIMIT}"
            ))),
        }
    }
}

impl Limit {
    /// A page of `n` rows, within 1 to [`MAX_LIMIT`] (for callers that choose their own size).
    pub fn clamped(n: u32) -> Self {
        Limit(n.clamp(1, MAX_LIMIT))
    }
    /// The largest page.
    pub const MAX: Limit = Limit(MAX_LIMIT);

    /// How many rows to fetch: one more than the page, to learn whether another page follows.
    pub fn fetch(self) -> i64 {
        i64::from(self.0) + 1
    }

    /// Cuts `rows` to the page and returns the last row kept when another page follows.
    pub fn trim<T>(self, rows: &mut Vec<T>) -> Option<&T> {
        if rows.len() > self.0 as usize {
            rows.truncate(self.0 as usize);
            rows.last()
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The last character class and the length a pattern gives.
    fn shape(pattern: &str) -> (usize, String) {
        let (head, last) = pattern.trim_end_matches("]$").rsplit_once('[').unwrap();
        let n: usize = head.split('{').nth(1).unwrap().trim_end_matches('}').parse().unwrap();
        (n + 1, last.to_owned())
    }

    #[test]
    fn the_cursor_patterns_of_the_spec_are_exactly_the_cursors_issued() {
        let (ids, seqs) = (shape(ID_CURSOR_PATTERN), shape(SEQ_CURSOR_PATTERN));
        for i in 0..2000u64 {
            let id = Cursor(Uuid::from_u64_pair(i.wrapping_mul(0x9e37_79b9_7f4a_7c15), i)).to_string();
            assert_eq!(id.len(), ids.0);
            assert!(ids.1.contains(id.chars().last().unwrap()), "{id}");
            let seq = SeqCursor(i as i64 * 7_919 - 1).to_string();
            assert_eq!(seq.len(), seqs.0);
            assert!(seqs.1.contains(seq.chars().last().unwrap()), "{seq}");
        }
        // And every string of that shape decodes: the alphabet's 64 symbols, any last one of the class.
        for last in ids.1.chars() {
            let text = format!(
                "{}{last}",
                "Az09_-".repeat(4).chars().take(ids.0 - 1).collect::<String>()
            );
            assert!(
                serde_json::from_value::<Cursor>(serde_json::json!(text)).is_ok(),
                "{text}"
            );
        }
        for last in seqs.1.chars() {
            let text = format!("{}{last}", "-_9aZ".repeat(2));
            assert!(
                serde_json::from_value::<SeqCursor>(serde_json::json!(text)).is_ok(),
                "{text}"
            );
        }
    }

    #[test]
    fn a_cursor_round_trips_and_junk_is_refused() {
        let id = Uuid::now_v7();
        let text = Cursor(id).to_string();
        let back: Cursor = serde_json::from_value(serde_json::json!(text)).unwrap();
        assert_eq!(back.0, id);
        assert!(serde_json::from_value::<Cursor>(serde_json::json!("not-a-cursor")).is_err());

        let text = SeqCursor(42).to_string();
        let back: SeqCursor = serde_json::from_value(serde_json::json!(text)).unwrap();
        assert_eq!(back.0, 42);
        let uuid_cursor = Cursor(id).to_string();
        assert!(serde_json::from_value::<SeqCursor>(serde_json::json!(uuid_cursor)).is_err());
    }

    #[test]
    fn limits_outside_one_to_two_hundred_are_refused() {
        for bad in ["0", "201", "-1", "ten"] {
            assert!(
                serde_json::from_value::<Limit>(serde_json::json!(bad)).is_err(),
                "{bad}"
            );
        }
        let mut rows = vec![1, 2, 3];
        assert_eq!(
            serde_json::from_value::<Limit>(serde_json::json!("2"))
                .unwrap()
                .trim(&mut rows),
            Some(&2)
        );
        assert_eq!(rows, [1, 2]);
    }
}
