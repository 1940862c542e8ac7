//! `openapi/openapi.json` is generated from the code; this fails when they disagree.

#[test]
fn the_committed_spec_matches_the_code() {
    let generated = glance_share_broker::startup::openapi_json() + "\n";
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json");
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == generated,
        "openapi/openapi.json is out of date: run `cargo run -q -- openapi > openapi/openapi.json` (or UPDATE_OPENAPI=1 cargo test)"
    );
}

#[test]
fn the_spec_is_openapi_3_1_and_describes_problems() {
    let spec: serde_json::Value = serde_json::from_str(&glance_share_broker::startup::openapi_json()).unwrap();
    assert!(spec["openapi"].as_str().unwrap().starts_with("3.1"));
    assert!(spec["components"]["schemas"]["Problem"].is_object());
    for path in [
        "/v1/share-requests",
        "/v1/share-requests/{id}",
        "/v1/shares",
        "/v1/shares/{id}",
        "/healthz",
        "/readyz",
    ] {
        assert!(spec["paths"][path].is_object(), "{path} is in the spec");
    }
}
