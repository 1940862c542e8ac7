//! The audit log's exports: each event as an NDJSON line, a CSV row (made inert for
//! spreadsheets) or a DMTF CADF event, streamed between what comes first and last.

use axum::body::Bytes;
use chrono::SecondsFormat;
use futures_util::{Stream, StreamExt, stream};
use serde::Serialize;
use serde::ser::SerializeMap;
use serde_json::{Value, json};
use uuid::Uuid;

use super::Format;
use crate::db::audit::Event;
use crate::domain::Action;
use crate::tasks::on_cores_in_order;

/// The columns of the CSV export, in order.
const CSV_COLUMNS: [&str; 27] = [
    "seq",
    "chain_pos",
    "id",
    "occurred_at",
    "action",
    "outcome",
    "initiator_kind",
    "initiator_name",
    "initiator_role",
    "initiator_on_behalf_of",
    "initiator_user_id",
    "initiator_project_id",
    "initiator_address",
    "initiator_user_agent",
    "image_id",
    "image_name",
    "owner_project_id",
    "project_id",
    "region",
    "request_id",
    "share_id",
    "observer",
    "reason",
    "correlation_id",
    "details",
    "prev_hash",
    "hash",
];

/// The body of an export: what comes first, the events, what comes last. Each batch of
/// events read is one chunk of the body, encoded on the blocking threads, a few batches at
/// once (one per core) while the next are read, and sent in order: memory holds a few
/// batches, however long the log.
pub(super) fn body(
    format: Format,
    batches: impl Stream<Item = Result<Vec<Event>, sqlx::Error>> + Send + 'static,
) -> impl Stream<Item = Result<Bytes, sqlx::Error>> + Send + 'static {
    let (head, tail) = match format {
        Format::Csv => (format!("{}\n", CSV_COLUMNS.join(",")), ""),
        Format::Cadf => ("[".to_owned(), "]\n"),
        Format::Json | Format::Ndjson => (String::new(), ""),
    };
    let chunks = on_cores_in_order(batches, move |i, events: Vec<Event>| {
        Bytes::from(encode(format, &events, i == 0))
    });
    stream::once(async move { Ok(Bytes::from(head)) })
        .chain(chunks)
        .chain(stream::once(async move { Ok(Bytes::from_static(tail.as_bytes())) }))
}

/// `events` in `format`; `first`: they open the export (CADF separates events by commas).
fn encode(format: Format, events: &[Event], first: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(events.len() * 1536);
    match format {
        Format::Json | Format::Ndjson => {
            for event in events {
                serde_json::to_writer(&mut out, event).expect("an event serializes");
                out.push(b'\n');
            }
        }
        Format::Cadf => {
            for (i, event) in events.iter().enumerate() {
                if !(first && i == 0) {
                    out.extend_from_slice(b",\n");
                }
                serde_json::to_writer(&mut out, &cadf(event)).expect("an event serializes");
            }
        }
        Format::Csv => {
            let mut writer = csv::Writer::from_writer(out);
            for event in events {
                for cell in csv_row(event) {
                    writer
                        .write_field(neutralised(&cell).as_bytes())
                        .expect("writing to memory cannot fail");
                }
                writer
                    .write_record(None::<&[u8]>)
                    .expect("writing to memory cannot fail");
            }
            out = writer.into_inner().expect("writing to memory cannot fail");
        }
    }
    out
}

fn field(object: &Value, key: &str) -> String {
    match object.get(key) {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// The cells of `e`'s row, in [`CSV_COLUMNS`]' order.
fn csv_row(e: &Event) -> [String; 27] {
    let text = |v: Option<String>| v.unwrap_or_default();
    let hex_of = |v: &Option<Vec<u8>>| v.as_deref().map(hex::encode).unwrap_or_default();
    [
        e.seq.to_string(),
        text(e.chain_pos.map(|pos| pos.to_string())),
        e.id.to_string(),
        e.occurred_at.to_rfc3339_opts(SecondsFormat::Micros, true),
        e.action.clone(),
        e.outcome.clone(),
        field(&e.initiator, "kind"),
        field(&e.initiator, "name"),
        field(&e.initiator, "role"),
        field(&e.initiator, "on_behalf_of"),
        field(&e.initiator, "user_id"),
        field(&e.initiator, "project"),
        field(&e.initiator, "address"),
        field(&e.initiator, "user_agent"),
        text(e.image_id.map(|id| id.to_string())),
        field(&e.target, "image_name"),
        field(&e.target, "owner_project_id"),
        text(e.project_id.clone()),
        field(&e.target, "region"),
        text(e.request_id.map(|id| id.to_string())),
        text(e.share_id.map(|id| id.to_string())),
        e.observer.clone(),
        text(e.reason.clone()),
        text(e.correlation_id.clone()),
        e.details.to_string(),
        hex_of(&e.prev_hash),
        hex_of(&e.hash),
    ]
}

/// `cell`, made inert for spreadsheets (OWASP "CSV injection"): one that starts with `=`,
/// `+`, `-`, `@`, a tab or a carriage return would be read as a formula, so it gets a
/// leading `'`. Reasons, user agents, names and comments are the callers' own text.
fn neutralised(cell: &str) -> std::borrow::Cow<'_, str> {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{cell}").into()
    } else {
        cell.into()
    }
}

/// The event as a DMTF CADF event (DSP0262) that `pycadf` loads: who (`initiator`), did what
/// (`action`, `outcome`), to what (`target`), seen by whom (`observer`), why (`reason`). Each
/// resource has an `id` and a `typeURI` of the CADF resource taxonomy; a field with no value
/// is absent, never `null`; the broker's own fields travel in the `attachments`.
/// `e` as a CADF event. Written as it lies (no copy of the event's JSON), members in the
/// order a JSON object of them would put them (sorted by name), so the bytes are those of the
/// same document built as a `Value`.
fn cadf(e: &Event) -> CadfEvent<'_> {
    CadfEvent {
        // CADF's own word for an action the broker does not know (a row written by hand).
        action: e.action.parse().map_or("unknown", Action::cadf),
        attachments: [Attachment {
            content: Content {
                action: &e.action,
                chain_pos: e.chain_pos,
                correlation_id: e.correlation_id.as_deref(),
                details: NoNulls::of(&e.details),
                hash: e.hash.as_deref().map(hex::encode),
                image_id: e.image_id,
                initiator: NoNulls::of(&e.initiator),
                prev_hash: e.prev_hash.as_deref().map(hex::encode),
                project_id: e.project_id.as_deref(),
                request_id: e.request_id,
                seq: e.seq,
                share_id: e.share_id,
                target: NoNulls::of(&e.target),
            },
            name: "glance-share-broker",
            type_uri: "mime:application/json",
        }],
        event_time: e.occurred_at.to_rfc3339_opts(SecondsFormat::Micros, true),
        event_type: "activity",
        id: e.id,
        initiator: cadf_initiator(&e.initiator),
        observer: resource(cadf::BROKER, &named_id("observer", &e.observer), Some(&e.observer)),
        outcome: &e.outcome,
        reason: e.reason.as_deref().map(|reason| Reason {
            reason_code: reason,
            reason_type: cadf::REASON_TYPE,
        }),
        tags: [
            ("correlation_id", e.correlation_id.clone()),
            ("request_id", e.request_id.map(|id| id.to_string())),
            ("share_id", e.share_id.map(|id| id.to_string())),
        ]
        .into_iter()
        .filter_map(|(name, value)| Some(format!("{name}?value={}", value?)))
        .collect(),
        target: cadf_target(e),
        type_uri: "http://schemas.dmtf.org/cloud/audit/1.0/event",
    }
}

#[derive(Serialize)]
struct CadfEvent<'a> {
    action: &'static str,
    attachments: [Attachment<'a>; 1],
    #[serde(rename = "eventTime")]
    event_time: String,
    #[serde(rename = "eventType")]
    event_type: &'static str,
    id: Uuid,
    initiator: Value,
    observer: Value,
    outcome: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<Reason<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tags: Vec<String>,
    target: Value,
    #[serde(rename = "typeURI")]
    type_uri: &'static str,
}

#[derive(Serialize)]
struct Reason<'a> {
    #[serde(rename = "reasonCode")]
    reason_code: &'a str,
    #[serde(rename = "reasonType")]
    reason_type: &'static str,
}

#[derive(Serialize)]
struct Attachment<'a> {
    content: Content<'a>,
    name: &'static str,
    #[serde(rename = "typeURI")]
    type_uri: &'static str,
}

/// The event as stored (less what is null), for a reader who wants all of it.
#[derive(Serialize)]
struct Content<'a> {
    action: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    chain_pos: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    correlation_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<NoNulls<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hash: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    image_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    initiator: Option<NoNulls<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prev_hash: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    project_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<Uuid>,
    seq: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    share_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<NoNulls<'a>>,
}

/// A JSON value written without the object members that are `null`, at every depth: in CADF
/// a field with no value is absent. (The NDJSON export keeps the stored content, which the
/// hashes cover.)
struct NoNulls<'a>(&'a Value);

impl<'a> NoNulls<'a> {
    /// `None` for `null` itself (a member left out).
    fn of(value: &'a Value) -> Option<Self> {
        (!value.is_null()).then_some(NoNulls(value))
    }
}

impl Serialize for NoNulls<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Object(members) => {
                let mut map = serializer.serialize_map(None)?;
                for (name, value) in members.iter().filter(|(_, value)| !value.is_null()) {
                    map.serialize_entry(name, &NoNulls(value))?;
                }
                map.end()
            }
            Value::Array(items) => serializer.collect_seq(items.iter().map(NoNulls)),
            other => other.serialize(serializer),
        }
    }
}

/// The CADF resource types the broker names: entries of the taxonomy (DSP0262 annex A, as
/// `pycadf.cadftaxonomy.RESOURCE_TAXONOMY` lists it), used as they stand.
mod cadf {
    /// The broker itself (observer; initiator of what it does on its own; target of an
    /// attempt on no particular resource): a service in front of the image store.
    pub const BROKER: &str = "service/storage/image";
    pub const USER: &str = "service/security/account/user";
    pub const IMAGE: &str = "data/image";
    /// A share request: a task the broker's worker carries out.
    pub const REQUEST: &str = "data/workload/task";
    /// A webhook registration.
    pub const WEBHOOK: &str = "data/config";
    pub const KEY: &str = "data/security/credential";
    pub const POLICY: &str = "data/security/policy";
    pub const REASON_TYPE: &str = "urn:glance-share-broker:audit:reason";
}

fn resource(type_uri: &str, id: &str, name: Option<&str>) -> Value {
    let mut r = json!({"typeURI": type_uri, "id": id});
    if let Some(name) = name {
        r["name"] = json!(name);
    }
    r
}

/// A stable UUID for something the broker knows by name only (an API key's holder, the
/// observer, a policy file): CADF identifiers are UUIDs, and this one is the same every time.
fn named_id(kind: &str, name: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("glance-share-broker:{kind}:{name}").as_bytes());
    let mut bytes: [u8; 16] = digest[..16].try_into().expect("a SHA-256 has 16 bytes");
    // RFC 9562 version 8 (custom), variant 10.
    bytes[6] = (bytes[6] & 0x0f) | 0x80;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    uuid::Uuid::from_bytes(bytes).to_string()
}

fn text<'a>(object: &'a Value, key: &str) -> Option<&'a str> {
    object.get(key).and_then(Value::as_str)
}

fn cadf_initiator(initiator: &Value) -> Value {
    let kind = text(initiator, "kind").unwrap_or("unknown");
    let name = text(initiator, "name").unwrap_or(kind);
    let (type_uri, id) = match (kind, text(initiator, "user_id")) {
        (_, Some(user_id)) => (cadf::USER, user_id.to_owned()),
        ("service", None) => (cadf::BROKER, named_id(kind, name)),
        (_, None) => (cadf::USER, named_id(kind, name)),
    };
    let mut r = resource(type_uri, &id, Some(name));
    let mut host = serde_json::Map::new();
    for (from, to) in [("address", "address"), ("user_agent", "agent")] {
        if let Some(value) = text(initiator, from) {
            host.insert(to.into(), json!(value));
        }
    }
    if !host.is_empty() {
        r["host"] = Value::Object(host);
    }
    r
}

/// What the event is about, most specific first: the image; else the share request; else the
/// webhook, API key or policy its details name; else the broker itself (an attempt refused
/// before it reached any resource).
fn cadf_target(e: &Event) -> Value {
    if let Some(image) = e.image_id {
        return resource(cadf::IMAGE, &image.to_string(), text(&e.target, "image_name"));
    }
    if let Some(request) = e.request_id {
        return resource(cadf::REQUEST, &request.to_string(), Some("share request"));
    }
    if let Some(webhook) = text(&e.details, "webhook_id") {
        return resource(cadf::WEBHOOK, webhook, text(&e.details, "host"));
    }
    if let Some(key) = e.details.get("key").and_then(|k| text(k, "id")) {
        return resource(cadf::KEY, key, e.details.get("key").and_then(|k| text(k, "name")));
    }
    if e.action == Action::Policy.as_ref() {
        let path = text(&e.details, "path").unwrap_or("policy");
        return resource(cadf::POLICY, &named_id("policy", path), Some(path));
    }
    resource(cadf::BROKER, &named_id("observer", &e.observer), Some(&e.observer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_a_spreadsheet_reads_as_formulas_are_neutralised_and_others_kept() {
        for formula in ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx", "=HYPERLINK(\"http://x\")"] {
            assert_eq!(neutralised(formula), format!("'{formula}"), "{formula:?}");
        }
        for plain in ["", "CI runners", "a=b", "1-2", "'quoted", "{\"a\": -1}"] {
            assert_eq!(neutralised(plain), plain);
        }
    }
}
