//! One byte encoding per JSON value, whatever order its object keys arrived in: RFC 8785
//! (JCS, through `serde_json_canonicalizer`) for what is digested from now on, and the
//! broker's first, hand-written form, which audit events written before JCS were digested
//! with (and idempotency-key fingerprints still are: they live a day, and a change of form
//! would answer a retry with a conflict).

use serde_json::Value;

/// RFC 8785's canonical JSON (JCS): keys sorted by their UTF-16 code units, numbers as
/// ECMAScript prints them, minimal string escapes, no insignificant whitespace.
pub fn jcs(value: &Value) -> Vec<u8> {
    serde_json_canonicalizer::to_vec(value).expect("a JSON value always canonicalizes")
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
