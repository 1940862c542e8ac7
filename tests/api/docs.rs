//! The docs name tests as evidence; this fails when a named test does not exist (renamed or
//! removed), so `docs/security.md` cannot point at nothing.

use std::path::Path;

/// The `` `file::test` `` spans of `doc` (for a `tests/api/file.rs` that exists) that no
/// `fn test(` in that file backs.
fn missing_tests(doc: &str) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join(doc)).unwrap();
    let mut missing = Vec::new();
    let spans = text.split('`').skip(1).step_by(2);
    for span in spans {
        let Some((file, name)) = span.split_once("::") else {
            continue;
        };
        let path = root.join("tests/api").join(format!("{file}.rs"));
        let is_name = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        };
        if !is_name(file) || !is_name(name) || !path.exists() {
            continue;
        }
        let source = std::fs::read_to_string(&path).unwrap();
        if !source.contains(&format!("fn {name}(")) {
            missing.push(span.to_owned());
        }
    }
    missing
}

#[test]
fn every_test_the_security_model_names_exists() {
    let missing = missing_tests("docs/security.md");
    assert!(
        missing.is_empty(),
        "docs/security.md names tests that do not exist: {missing:?}"
    );
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/security.md")).unwrap();
    assert!(text.matches("::").count() > 40, "the threat model names its tests");
}
