//! The audit log's exports: each event as an NDJSON line, a CSV row (made inert for
//! spreadsheets) or a DMTF CADF event, streamed between what comes first and last.

use axum::body::Bytes;
use chrono::SecondsFormat;
use futures_util::{Stream, StreamExt, stream};
use serde_json::{Value, json};

use super::Format;
use crate::db::audit::Event;
use crate::domain::Action;

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

/// The body of an export: what comes first, each event, what comes last.
pub(super) fn body(
    format: Format,
    events: impl Stream<Item = Result<Event, sqlx::Error>> + Send + 'static,
) -> impl Stream<Item = Result<Bytes, sqlx::Error>> + Send + 'static {
    let (head, tail) = match format {
        Format::Csv => (format!("{}\n", CSV_COLUMNS.join(",")), ""),
        Format::Cadf => ("[".to_owned(), "]\n"),
        Format::Json | Format::Ndjson => (String::new(), ""),
    };
    let items = events
        .enumerate()
        .map(move |(i, event)| event.map(|e| Bytes::from(encode(format, &e, i == 0))));
    stream::once(async move { Ok(Bytes::from(head)) })
        .chain(items)
        .chain(stream::once(async move { Ok(Bytes::from_static(tail.as_bytes())) }))
}

fn encode(format: Format, event: &Event, first: bool) -> Vec<u8> {
    match format {
        Format::Json | Format::Ndjson => {
            let mut line = serde_json::to_vec(event).expect("an event serializes");
            line.push(b'\n');
            line
        }
        Format::Cadf => {
            let mut item = if first { Vec::new() } else { b",\n".to_vec() };
            item.extend(serde_json::to_vec(&cadf(event)).expect("an event serializes"));
            item
        }
        Format::Csv => csv_row(event),
    }
}

fn field(object: &Value, key: &str) -> String {
    match object.get(key) {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

fn csv_row(e: &Event) -> Vec<u8> {
    let text = |v: Option<String>| v.unwrap_or_default();
    let hex_of = |v: &Option<Vec<u8>>| v.as_deref().map(hex::encode).unwrap_or_default();
    let row = [
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
    ];
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer
        .write_record(row.iter().map(|cell| neutralised(cell).into_owned()))
        .expect("writing to memory cannot fail");
    writer.into_inner().expect("writing to memory cannot fail")
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

/// The event as a DMTF CADF event (DSP0262): who (`initiator`), did what (`action`,
/// `outcome`), to what (`target`), seen by whom (`observer`), why (`reason`); the broker's
/// own fields travel in the `attachments`.
fn cadf(e: &Event) -> Value {
    let initiator_type = match e.initiator.get("kind").and_then(Value::as_str) {
        Some("service") => "service/image/share-broker",
        _ => "service/security/account/user",
    };
    let mut tags = Vec::new();
    for (name, value) in [
        ("correlation_id", e.correlation_id.clone()),
        ("request_id", e.request_id.map(|id| id.to_string())),
        ("share_id", e.share_id.map(|id| id.to_string())),
    ] {
        if let Some(value) = value {
            tags.push(format!("{name}?value={value}"));
        }
    }
    json!({
        "typeURI": "http://schemas.dmtf.org/cloud/audit/1.0/event",
        "eventType": "activity",
        "id": e.id,
        "eventTime": e.occurred_at.to_rfc3339_opts(SecondsFormat::Micros, true),
        // CADF's own word for an action the broker does not know (a row written by hand).
        "action": e.action.parse().map_or("unknown", Action::cadf),
        "outcome": e.outcome,
        "initiator": {
            "typeURI": initiator_type,
            "id": e.initiator.get("user_id").or_else(|| e.initiator.get("name")),
            "name": e.initiator.get("name"),
            "project_id": e.initiator.get("project"),
            "on_behalf_of": e.initiator.get("on_behalf_of"),
            "host": {
                "address": e.initiator.get("address"),
                "agent": e.initiator.get("user_agent"),
            },
        },
        "target": {
            "typeURI": "service/storage/image",
            "id": e.image_id,
            "name": e.target.get("image_name"),
            "project_id": e.target.get("owner_project_id"),
            "member_project_id": e.project_id,
            "region": e.target.get("region"),
        },
        "observer": {
            "typeURI": "service/image/share-broker",
            "id": e.observer,
            "name": e.observer,
        },
        "reason": e.reason.as_ref().map(|r| json!({"reasonType": "broker", "reasonCode": r})),
        "tags": tags,
        "attachments": [{
            "name": "glance-share-broker",
            "typeURI": "mime:application/json",
            "content": {
                "seq": e.seq,
                "chain_pos": e.chain_pos,
                "request_id": e.request_id,
                "share_id": e.share_id,
                "correlation_id": e.correlation_id,
                "details": e.details,
                "prev_hash": e.prev_hash.as_deref().map(hex::encode),
                "hash": e.hash.as_deref().map(hex::encode),
            },
        }],
    })
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
