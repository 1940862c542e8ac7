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

#[tokio::test]
async fn the_committed_spec_passes_openapi_spec_validator() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json");
    let out = crate::pytools::check("openapi_check.py", &[path], b"").await;
    assert!(out.contains("\"valid\": true"), "{out}");
}

#[test]
fn every_limit_the_handlers_enforce_is_in_the_spec() {
    let spec: serde_json::Value = serde_json::from_str(&glance_share_broker::startup::openapi_json()).unwrap();
    let params = |path: &str, method: &str| spec["paths"][path][method]["parameters"].as_array().unwrap().clone();
    let param = |path: &str, method: &str, name: &str| {
        params(path, method)
            .into_iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{method} {path} has no {name}"))
    };
    let key = param("/v1/webhooks", "post", "Idempotency-Key");
    assert_eq!(
        (key["schema"]["minLength"].clone(), key["schema"]["maxLength"].clone()),
        (1.into(), 255.into())
    );
    assert!(key["schema"]["pattern"].is_string());
    for (path, pattern) in [
        ("/v1/share-requests", "^[A-Za-z0-9_-]{21}[AQgw]$"),
        ("/v1/audit-events", "^[A-Za-z0-9_-]{10}[AEIMQUYcgkosw048]$"),
        (
            "/v1/projects/{project_id}/access-history",
            "^[A-Za-z0-9_-]{10}[AEIMQUYcgkosw048]$",
        ),
        (
            "/v1/images/{image_id}/access-history",
            "^[A-Za-z0-9_-]{10}[AEIMQUYcgkosw048]$",
        ),
    ] {
        assert_eq!(param(path, "get", "cursor")["schema"]["pattern"], pattern, "{path}");
    }
    let schemas = &spec["components"]["schemas"];
    let events = &schemas["WebhookInput"]["properties"]["events"];
    assert_eq!(
        events["items"]["enum"].as_array().unwrap().len(),
        glance_share_broker::domain::webhook::EVENTS.len()
    );
    assert_eq!(events["uniqueItems"], true);
    assert!(schemas["WebhookPatch"]["properties"]["description"]["pattern"].is_string());
    for verb in ["approve", "deny", "cancel"] {
        let body = &spec["paths"][format!("/v1/share-requests/{{id}}/{verb}")]["post"]["requestBody"];
        assert_eq!(body["required"], false, "{verb}: its body is optional");
    }
    assert_eq!(
        spec["paths"]["/v1/shares/{id}/revoke"]["post"]["requestBody"]["required"],
        true
    );
    let expires = schemas["ShareRequestInput"]["properties"]["expires_at"]["description"]
        .as_str()
        .unwrap();
    assert!(
        expires.contains("in the future") && expires.contains("422"),
        "{expires}"
    );
}
