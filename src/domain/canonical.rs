//! One byte encoding per JSON value, whatever order its object keys arrived in: RFC 8785
//! (JCS, [`jcs_object`]) for what is digested from now on, and the
//! broker's first, hand-written form, which audit events written before JCS were digested
//! with (and idempotency-key fingerprints still are: they live a day, and a change of form
//! would answer a retry with a conflict).

use std::cmp::Ordering;

use serde_json::Value;
use uuid::Uuid;

/// The largest integer an IEEE double holds exactly (2^53).
const EXACT_IN_A_DOUBLE: u64 = 1 << 53;

/// Appends RFC 8785's canonical JSON (JCS) of `value`: keys sorted by their UTF-16 code units,
/// numbers as ECMAScript prints them, minimal string escapes, no insignificant whitespace.
///
/// Written here rather than by `serde_json_canonicalizer` alone: every event is digested
/// when it is written and again by every `audit verify`, and the crate, which canonicalizes
/// any `Serialize`, buffers and re-parses each object key. Integers that a double holds
/// exactly (all the broker writes) print as their digits, which is what ECMAScript prints;
/// every other number is left to the crate. The crate stays the reference the tests hold
/// this to, value by value.
fn write_jcs(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) if u <= EXACT_IN_A_DOUBLE => out.extend_from_slice(u.to_string().as_bytes()),
            (_, Some(i)) if i.unsigned_abs() <= EXACT_IN_A_DOUBLE => out.extend_from_slice(i.to_string().as_bytes()),
            _ => out.extend(serde_json_canonicalizer::to_vec(n).expect("a JSON number canonicalizes")),
        },
        // serde_json escapes exactly what RFC 8785 does: `"`, `\` and the controls (the short
        // forms, else `\u00xx` in lower case), and nothing else.
        Value::String(s) => serde_json::to_writer(&mut *out, s).expect("writing to memory cannot fail"),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_jcs(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut members: Vec<(&str, Member<'_>)> = map.iter().map(|(k, v)| (k.as_str(), Member::Json(v))).collect();
            write_jcs_object(&mut members, out);
        }
    }
}

/// RFC 8785's order of object keys: by their UTF-16 code units (for ASCII, by bytes).
fn key_order(a: &str, b: &str) -> Ordering {
    if a.is_ascii() && b.is_ascii() {
        a.as_bytes().cmp(b.as_bytes())
    } else {
        a.encode_utf16().cmp(b.encode_utf16())
    }
}

/// A member of a JSON object borrowed from where it lives, so that a document assembled
/// from several places is canonicalized without copying them into one `Value` first.
#[derive(Debug, Clone, Copy)]
pub enum Member<'a> {
    Text(Option<&'a str>),
    Id(Option<Uuid>),
    Integer(i64),
    Json(&'a Value),
}

impl Member<'_> {
    /// The member as a value of its own.
    pub fn to_value(self) -> Value {
        match self {
            Member::Text(text) => text.map_or(Value::Null, |t| Value::String(t.to_owned())),
            Member::Id(id) => id.map_or(Value::Null, |id| Value::String(id.to_string())),
            Member::Integer(n) => Value::from(n),
            Member::Json(value) => value.clone(),
        }
    }
}

/// [`jcs`] of the object whose members are `members` (distinct keys, in any order).
pub fn jcs_object(members: &mut [(&str, Member<'_>)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024);
    write_jcs_object(members, &mut out);
    out
}

fn write_jcs_object(members: &mut [(&str, Member<'_>)], out: &mut Vec<u8>) {
    members.sort_unstable_by(|(a, _), (b, _)| key_order(a, b));
    out.push(b'{');
    for (i, (key, member)) in members.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut *out, key).expect("writing to memory cannot fail");
        out.push(b':');
        match *member {
            Member::Text(Some(text)) => serde_json::to_writer(&mut *out, text).expect("writing to memory cannot fail"),
            Member::Id(Some(id)) => {
                out.push(b'"');
                out.extend_from_slice(id.hyphenated().encode_lower(&mut Uuid::encode_buffer()).as_bytes());
                out.push(b'"');
            }
            Member::Text(None) | Member::Id(None) => out.extend_from_slice(b"null"),
            Member::Integer(n) => write_jcs(&Value::from(n), out),
            Member::Json(value) => write_jcs(value, out),
        }
    }
    out.push(b'}');
}

/// JSON with object keys sorted by their UTF-8 bytes at every level, numbers as serde_json
/// prints them and no insignificant whitespace: two documents with the same meaning give
/// the same bytes. Not RFC 8785 (key order and numbers differ at the edges); kept because
/// older audit digests were taken over it.
pub fn canonical_json(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    write(value, &mut out);
    out
}

fn write(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend(Value::String(key.clone()).to_string().as_bytes());
                out.push(b':');
                write(&map[key], out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(item, out);
            }
            out.push(b']');
        }
        scalar => out.extend(scalar.to_string().as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn jcs(value: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        write_jcs(value, &mut out);
        out
    }

    #[test]
    fn key_order_and_whitespace_do_not_matter() {
        let a: Value = serde_json::from_str(r#"{"b": [1, {"y": 2, "x": 1}], "a": "z"}"#).unwrap();
        let b = json!({"a": "z", "b": [1, {"x": 1, "y": 2}]});
        assert_eq!(canonical_json(&a), canonical_json(&b));
        assert_eq!(canonical_json(&a), br#"{"a":"z","b":[1,{"x":1,"y":2}]}"#);
        assert_eq!(jcs(&a), jcs(&b));
    }

    /// RFC 8785, section 3.2.2: numbers as ECMAScript prints them, strings escaped minimally.
    #[test]
    fn jcs_gives_the_rfc_8785_example() {
        let input = r#"{
            "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
            "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
            "literals": [null, true, false]
        }"#;
        let value: Value = serde_json::from_str(input).unwrap();
        let expected = r#"{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\u000f\nA'B\"\\\\\"/"}"#;
        assert_eq!(String::from_utf8(jcs(&value)).unwrap(), expected);
        // Where the legacy form differs: a float with an integral value.
        assert_eq!(
            (canonical_json(&json!(1.0)), jcs(&json!(1.0))),
            (b"1.0".to_vec(), b"1".to_vec())
        );
    }

    /// Any value, as the reference implementation canonicalizes it: keys of every plane and
    /// escapes, integers small and large, floats.
    #[test]
    fn jcs_gives_what_the_reference_implementation_gives() {
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};

        fn text(rng: &mut StdRng) -> String {
            const PIECES: [&str; 12] = [
                "a",
                "Z",
                "0",
                "_",
                "\u{7f}",
                "\u{1}",
                "\n",
                "\"",
                "\\",
                "\u{e9}",
                "\u{fb33}",
                "\u{1f600}",
            ];
            (0..rng.random_range(0..6))
                .map(|_| PIECES[rng.random_range(0..PIECES.len())])
                .collect()
        }
        fn value(rng: &mut StdRng, depth: u32) -> Value {
            match rng.random_range(0..if depth > 3 { 6 } else { 8 }) {
                0 => Value::Null,
                1 => Value::Bool(rng.random()),
                2 => json!(rng.random_range(-1_000_000i64..1_000_000)),
                3 => json!(
                    [
                        i64::MIN,
                        i64::MAX,
                        u64::MAX as i64,
                        1 << 53,
                        (1 << 53) + 1,
                        -(1 << 53) - 1
                    ][rng.random_range(0..6)]
                ),
                4 => json!(rng.random::<f64>() * 10f64.powi(rng.random_range(-30..30))),
                5 => Value::String(text(rng)),
                6 => Value::Array((0..rng.random_range(0..4)).map(|_| value(rng, depth + 1)).collect()),
                _ => Value::Object(
                    (0..rng.random_range(0..6))
                        .map(|_| (text(rng), value(rng, depth + 1)))
                        .collect(),
                ),
            }
        }
        let mut rng = StdRng::seed_from_u64(8785);
        for _ in 0..5_000 {
            let value = value(&mut rng, 0);
            let reference = serde_json_canonicalizer::to_vec(&value).unwrap();
            assert_eq!(
                String::from_utf8(jcs(&value)).unwrap(),
                String::from_utf8(reference).unwrap(),
                "{value}"
            );
        }
        assert_eq!(jcs(&json!(u64::MAX)), b"18446744073709552000");
    }

    /// RFC 8785, section 3.2.3: keys sorted by UTF-16 code units, so U+1F600 (a surrogate
    /// pair, 0xD83D...) comes before U+FB33, which UTF-8 byte order puts after it.
    #[test]
    fn jcs_sorts_keys_by_utf16_code_units() {
        let value: Value = serde_json::from_str(
            r#"{"\u20ac": "Euro Sign", "\r": "Carriage Return", "\ufb33": "Hebrew Letter Dalet With Dagesh",
                "1": "One", "\ud83d\ude00": "Emoji: Grinning Face", "\u0080": "Control",
                "\u00f6": "Latin Small Letter O With Diaeresis"}"#,
        )
        .unwrap();
        let sorted: Value = serde_json::from_slice(&jcs(&value)).unwrap();
        let order = |bytes: &[u8]| -> Vec<String> {
            let text = String::from_utf8(bytes.to_vec()).unwrap();
            let mut keys: Vec<(usize, String)> = sorted
                .as_object()
                .unwrap()
                .values()
                .map(|v| v.as_str().unwrap().to_owned())
                .map(|name| (text.find(&name).unwrap(), name))
                .collect();
            keys.sort();
            keys.into_iter().map(|(_, name)| name).collect()
        };
        let rfc = [
            "Carriage Return",
            "One",
            "Control",
            "Latin Small Letter O With Diaeresis",
            "Euro Sign",
            "Emoji: Grinning Face",
            "Hebrew Letter Dalet With Dagesh",
        ];
        assert_eq!(order(&jcs(&value)), rfc);
        assert_ne!(order(&canonical_json(&value)), rfc, "UTF-8 byte order differs");
    }
}
