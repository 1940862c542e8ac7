//! The limits the handlers enforce, written into the OpenAPI document, so that a client (or a
//! fuzzer) generating from the spec sends only what the API takes: header formats, free-text
//! rules, the webhook event names, cursor formats, and which bodies are optional. Applied to
//! the whole generated document, so a new route inherits them. The one rule a schema cannot
//! state, `expires_at` in the future, is said in its description.

use serde_json::{Value, json};
use utoipa::openapi::OpenApi;

use super::pagination;
use crate::domain::webhook::EVENTS;

/// `Idempotency-Key`: 1 to 255 visible ASCII characters (`extract::IdempotencyKey`).
const IDEMPOTENCY_KEY: &str = "^[\\x21-\\x7E]{1,255}$";
/// Free text (reasons, comments): anything but NUL, which Postgres text cannot store.
const FREE_TEXT: &str = "^[^\\u0000]*$";
/// Free text that is required: not blank either (the handlers trim it before they check).
const REQUIRED_TEXT: &str = "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$";
/// A webhook's description: no control characters but newline and tab.
const DESCRIPTION: &str = "^[^\\u0000-\\u0008\\u000B-\\u001F\\u007F-\\u009F]*$";
/// A target: a project id or name (at most 64 characters, `MAX_PROJECT_NAME_CHARS`), not
/// blank, no control characters.
const TARGET: &str =
    "^[^\\u0000-\\u001F\\u007F-\\u009F]*[^\\s\\u0000-\\u001F\\u007F-\\u009F][^\\u0000-\\u001F\\u007F-\\u009F]*$";
/// A webhook URL: http or https with a host, in the ASCII characters a URI may hold.
const URL: &str =
    "^https?://[A-Za-z0-9._~%!$&'()*+,;=:-]+(/[A-Za-z0-9._~%!$&'()*+,;=:@/-]*)?(\\?[A-Za-z0-9._~%!$&'()*+,;=:@/?-]*)?$";
/// `If-Match`: `*` or entity tags, comma-separated (`extract::entity_tags`); empty is as absent.
const IF_MATCH: &str = "^ *(|\\*|(W/)?\"[\\x21\\x23-\\x7E]*\"( *, *(W/)?\"[\\x21\\x23-\\x7E]*\")*) *$";

/// The operations whose handler takes `extract::OptionalJson`.
const OPTIONAL_BODIES: [&str; 4] = [
    "approve_share_request",
    "deny_share_request",
    "cancel_share_request",
    "reconcile",
];

/// The document as JSON, with the limits written in.
pub fn with_limits(openapi: &OpenApi) -> Value {
    let mut doc = serde_json::to_value(openapi).expect("the document serializes");
    apply(&mut doc);
    doc
}

fn apply(doc: &mut Value) {
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for operations in paths.values_mut().filter_map(Value::as_object_mut) {
            for operation in operations.values_mut() {
                parameters(operation);
            }
        }
    }
    let schemas = doc.pointer("/components/schemas").cloned().unwrap_or_default();
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for operations in paths.values_mut().filter_map(Value::as_object_mut) {
            for operation in operations.values_mut() {
                optional_body(operation, &schemas);
            }
        }
    }
    let Some(schemas) = doc.pointer_mut("/components/schemas").and_then(Value::as_object_mut) else {
        return;
    };
    for (name, schema) in schemas.iter_mut() {
        let required: Vec<String> = schema
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default();
        let Some(properties) = schema.get_mut("properties").and_then(Value::as_object_mut) else {
            continue;
        };
        for (field, property) in properties.iter_mut() {
            match (name.as_str(), field.as_str()) {
                ("WebhookInput" | "WebhookPatch", "events") => {
                    property["items"] = json!({"type": "string", "enum": EVENTS});
                    property["uniqueItems"] = json!(true);
                }
                ("WebhookInput" | "WebhookPatch", "description") => property["pattern"] = json!(DESCRIPTION),
                ("WebhookInput" | "WebhookPatch", "url") => {
                    property["pattern"] = json!(URL);
                    property["maxLength"] = json!(2048);
                }
                // Examples are sent as they are: one in the past would be refused.
                ("ShareRequestInput", "expires_at") => property["example"] = json!("2099-12-31T00:00:00Z"),
                ("ShareRequestInput", "region") => {
                    property["maxLength"] = json!(255);
                    property["pattern"] = json!(TARGET);
                }
                ("ShareRequestInput", "targets") => {
                    property["items"] = json!({"type": "string", "maxLength": 64, "pattern": TARGET});
                    property["uniqueItems"] = json!(true);
                }
                (_, "reason" | "comment") if property.get("maxLength").is_some() => {
                    let text = if required.contains(field) {
                        REQUIRED_TEXT
                    } else {
                        FREE_TEXT
                    };
                    property["pattern"] = json!(text);
                }
                _ => {}
            }
        }
    }
}

/// Header and query parameters: what each accepts.
fn parameters(operation: &mut Value) {
    let Some(parameters) = operation.get_mut("parameters").and_then(Value::as_array_mut) else {
        return;
    };
    for parameter in parameters {
        match (parameter["in"].as_str(), parameter["name"].as_str()) {
            (Some("header"), Some("If-Match")) => {
                parameter["schema"] = json!({"type": "string", "pattern": IF_MATCH});
            }
            (Some("header"), Some("Idempotency-Key")) => {
                parameter["schema"] =
                    json!({"type": "string", "minLength": 1, "maxLength": 255, "pattern": IDEMPOTENCY_KEY});
            }
            // Set by the route's cursor type (`pagination`) where it is not yet.
            (Some("query"), Some("cursor")) if parameter["schema"].get("pattern").is_none() => {
                parameter["schema"]["pattern"] = json!(pagination::ID_CURSOR_PATTERN);
            }
            // Postgres text cannot hold NUL, and the query extractor refuses it (`extract`).
            (Some("query"), _) if is_text(&parameter["schema"]) && parameter["schema"].get("pattern").is_none() => {
                parameter["schema"]["pattern"] = json!(FREE_TEXT);
            }
            _ => {}
        }
    }
}

/// Whether a parameter's schema is free text (a string with no format).
fn is_text(schema: &Value) -> bool {
    let string = match &schema["type"] {
        Value::String(t) => t == "string",
        Value::Array(types) => types.iter().any(|t| t == "string"),
        _ => false,
    };
    string && schema.get("format").is_none() && schema.get("enum").is_none()
}

/// A JSON body whose schema requires no field may be left out where the handler reads a
/// missing body as an empty one (`extract::OptionalJson`: approve, deny, cancel).
fn optional_body(operation: &mut Value, schemas: &Value) {
    if !OPTIONAL_BODIES.contains(&operation["operationId"].as_str().unwrap_or("")) {
        return;
    }
    let Some(body) = operation.get_mut("requestBody") else {
        return;
    };
    let schema = &body["content"]["application/json"]["schema"];
    let resolved = match schema.get("$ref").and_then(Value::as_str) {
        Some(reference) => reference
            .strip_prefix("#/components/schemas/")
            .and_then(|name| schemas.get(name))
            .cloned()
            .unwrap_or_default(),
        None => schema.clone(),
    };
    let requires_nothing = resolved
        .get("required")
        .and_then(Value::as_array)
        .is_none_or(|required| required.is_empty());
    if requires_nothing && resolved.get("properties").is_some() {
        body["required"] = json!(false);
    }
}
