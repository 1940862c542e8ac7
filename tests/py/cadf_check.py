"""Loads a CADF export (a JSON array on stdin) with pycadf, strictly, and says which events fail.

Each event is rebuilt as a pycadf Event from its fields (pycadf validates every field as it
is set) and must then pass Event.is_valid(). Stricter than pycadf where pycadf is lax: no
field may be null, no field outside the CADF model may appear, resource typeURIs must be
entries of the taxonomy (not just start like one), actions an entry or an entry refined
after a '/', and identifiers UUIDs (pycadf only warns).

Prints one JSON line: {"events": n, "valid": k, "failures": [...]}; exits 1 unless all valid.
"""

import datetime
import json
import sys
import uuid
import warnings

from pycadf import attachment, cadftaxonomy, event, host, reason, resource

EVENT_FIELDS = set(event.EVENT_KEYNAMES)
RESOURCE_FIELDS = set(resource.RESOURCE_KEYNAMES)


def no_nulls(value, path):
    if value is None:
        raise ValueError(f"{path} is null")
    if isinstance(value, dict):
        for k, v in value.items():
            no_nulls(v, f"{path}.{k}")
    if isinstance(value, list):
        for i, v in enumerate(value):
            no_nulls(v, f"{path}[{i}]")


def only(fields, allowed, path):
    extra = set(fields) - set(allowed)
    if extra:
        raise ValueError(f"{path} has fields outside CADF: {sorted(extra)}")


def an_id(value, path):
    try:
        uuid.UUID(str(value))
    except ValueError:
        raise ValueError(f"{path} {value!r} is not a UUID")


def load_resource(fields, path):
    only(fields, RESOURCE_FIELDS, path)
    if "id" not in fields or "typeURI" not in fields:
        raise ValueError(f"{path} lacks id or typeURI")
    if fields["typeURI"] not in cadftaxonomy.RESOURCE_TAXONOMY:
        raise ValueError(f"{path}.typeURI {fields['typeURI']!r} is not in the CADF taxonomy")
    an_id(fields["id"], f"{path}.id")
    h = None
    if "host" in fields:
        only(fields["host"], host.HOST_KEYNAMES, f"{path}.host")
        h = host.Host(**fields["host"])
    r = resource.Resource(
        id=fields["id"],
        typeURI=fields["typeURI"],
        name=fields.get("name"),
        ref=fields.get("ref"),
        domain=fields.get("domain"),
        host=h,
    )
    for a in fields.get("attachments", []):
        r.add_attachment(attachment.Attachment(**a))
    if not r.is_valid():
        raise ValueError(f"{path} is not a valid Resource")
    return r


def valid_action(action):
    return any(action == a or action.startswith(a + "/") for a in cadftaxonomy.ACTION_TAXONOMY)


def load(e):
    no_nulls(e, "event")
    only(e, EVENT_FIELDS, "event")
    if e.get("typeURI") != event.TYPE_URI_EVENT:
        raise ValueError(f"typeURI {e.get('typeURI')!r} is not {event.TYPE_URI_EVENT}")
    if not valid_action(e.get("action", "")):
        raise ValueError(f"action {e.get('action')!r} is not in the CADF taxonomy")
    an_id(e["id"], "event.id")
    datetime.datetime.fromisoformat(e["eventTime"])
    r = None
    if "reason" in e:
        r = reason.Reason(**e["reason"])
    ev = event.Event(
        eventType=e["eventType"],
        id=e["id"],
        eventTime=e["eventTime"],
        action=e["action"],
        outcome=e["outcome"],
        initiator=load_resource(e["initiator"], "initiator"),
        target=load_resource(e["target"], "target"),
        observer=load_resource(e["observer"], "observer"),
        reason=r,
        name=e.get("name"),
        severity=e.get("severity"),
    )
    for t in e.get("tags", []):
        ev.add_tag(t)
    for a in e.get("attachments", []):
        only(a, ["typeURI", "content", "name"], "attachment")
        ev.add_attachment(attachment.Attachment(**a))
    if not ev.is_valid():
        raise ValueError("Event.is_valid() is false")
    # What pycadf would send on: it must be the event as exported.
    out = ev.as_dict()
    for key in ("action", "outcome", "id", "target", "initiator", "observer"):
        if key not in out:
            raise ValueError(f"pycadf dropped {key}")


def main():
    events = json.load(sys.stdin)
    failures = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for e in events:
            try:
                load(e)
            except Exception as err:  # every failure is reported, with its event
                failures.append({"id": e.get("id") if isinstance(e, dict) else None,
                                 "action": e.get("action") if isinstance(e, dict) else None,
                                 "error": f"{type(err).__name__}: {err}"})
    print(json.dumps({"events": len(events), "valid": len(events) - len(failures), "failures": failures}))
    sys.exit(1 if failures or not events else 0)


if __name__ == "__main__":
    main()
