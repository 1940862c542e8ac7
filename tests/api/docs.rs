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

/// The `GSB_*` variables and `--flags` in `text`.
fn settings_in(text: &str) -> std::collections::BTreeSet<String> {
    let mut found = std::collections::BTreeSet::new();
    let chars: Vec<char> = text.chars().collect();
    let setting_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    let mut i = 0;
    while i < chars.len() {
        let rest: String = chars[i..chars.len().min(i + 4)].iter().collect();
        let starts = (rest.starts_with("GSB_") || rest.starts_with("--")) && (i == 0 || !setting_char(chars[i - 1]));
        if starts {
            let end = (i + 2..chars.len())
                .find(|&j| !setting_char(chars[j]))
                .unwrap_or(chars.len());
            let word: String = chars[i..end].iter().collect();
            // `GSB_RETRY_*` names a family, not a setting; `---` (a table rule) is no flag.
            let named = word.chars().nth(2).is_some_and(|c| c.is_ascii_alphabetic());
            if named && !word.ends_with('_') {
                found.insert(word);
            }
            i = end;
        } else {
            i += 1;
        }
    }
    found
}

#[test]
fn configuration_lists_exactly_the_settings_of_the_commands() {
    let mut help = String::new();
    for command in ["serve", "api", "worker"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_glance-share-broker"))
            .args([command, "--help"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{command} --help");
        help.push_str(&String::from_utf8(out.stdout).unwrap());
    }
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md")).unwrap();
    let (mut offered, mut documented) = (settings_in(&help), settings_in(&doc));
    offered.remove("--help");
    documented.remove("--help");
    let missing: Vec<_> = offered.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&offered).collect();
    assert!(missing.is_empty(), "docs/configuration.md leaves out {missing:?}");
    assert!(
        unknown.is_empty(),
        "docs/configuration.md names settings that do not exist: {unknown:?}"
    );
}
