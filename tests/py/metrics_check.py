"""Checks a /metrics scrape with prometheus_client's own text parser, and the shipped alert
rules and Grafana dashboard against it.

    metrics_check.py RULES.yml DASHBOARD.json < scrape.txt

- the scrape parses; every family has a # HELP text and a # TYPE other than untyped;
- labels are bounded: `method` is a known method or `other`; `status` three digits;
  `route` a template (no raw ids);
- the rule file has Prometheus's rule-file shape (groups of named rules with alert or
  record, and expr), and every metric named by a rule's or a panel's expression is in the scrape.

Prints {"families": n, "metrics_named": [...], "failures": [...]}; exits 1 on any failure.
"""

import json
import re
import sys

import yaml
from prometheus_client.parser import text_string_to_metric_families

METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE", "CONNECT", "other"}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
            "bool", "offset", "inf", "nan", "le"}
UUIDISH = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-|/[0-9]+(/|$)")


def metric_names(expr):
    """The metric names a PromQL expression reads."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)          # strings
    e = re.sub(r"\{[^}]*\}", "", e)                          # label matchers
    e = re.sub(r"\[[^\]]*\]", "", e)                         # ranges and subqueries
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    names = set()
    for m in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", e):
        word = m.group(0)
        rest = e[m.end():].lstrip()
        if rest.startswith("(") or word.lower() in KEYWORDS:
            continue
        if re.fullmatch(r"[0-9.e+-]+", word):
            continue
        names.add(word)
    return names


def main():
    rules_path, dashboard_path = sys.argv[1], sys.argv[2]
    text = sys.stdin.read()
    failures = []
    families = list(text_string_to_metric_families(text))
    present = set()
    for f in families:
        present.add(f.name)
        if not f.documentation:
            failures.append(f"{f.name}: no # HELP text")
        if f.type in ("unknown", "untyped"):
            failures.append(f"{f.name}: no # TYPE")
        for s in f.samples:
            present.add(s.name)
            labels = s.labels
            if "method" in labels and labels["method"] not in METHODS:
                failures.append(f"{s.name}: unbounded method label {labels['method']!r}")
            if "status" in labels and not re.fullmatch(r"[1-5][0-9][0-9]", labels["status"]):
                failures.append(f"{s.name}: status label {labels['status']!r}")
            if "route" in labels and UUIDISH.search(labels["route"]):
                failures.append(f"{s.name}: route label {labels['route']!r} is a raw path")
    # Counters are exposed as <name>_total; histograms as _bucket/_sum/_count.
    for line in text.splitlines():
        m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)", line)
        if m:
            present.add(m.group(1))

    with open(rules_path) as fh:
        rules = yaml.safe_load(fh)
    named = set()
    if not isinstance(rules, dict) or not isinstance(rules.get("groups"), list) or not rules["groups"]:
        failures.append("rules: no groups")
    else:
        for g in rules["groups"]:
            if not g.get("name") or not isinstance(g.get("rules"), list) or not g["rules"]:
                failures.append(f"rules: group {g.get('name')!r} has no name or no rules")
                continue
            for r in g["rules"]:
                if ("alert" in r) == ("record" in r) or not isinstance(r.get("expr"), str):
                    failures.append(f"rules: {r!r} needs exactly one of alert/record, and an expr")
                    continue
                extra = set(r) - {"alert", "record", "expr", "for", "keep_firing_for", "labels", "annotations"}
                if extra:
                    failures.append(f"rules: {r.get('alert')}: unknown fields {sorted(extra)}")
                if "alert" in r and not (r.get("annotations") or {}).get("summary"):
                    failures.append(f"rules: {r['alert']}: no summary annotation")
                named |= {(n, f"rule {r.get('alert') or r.get('record')}") for n in metric_names(r["expr"])}

    with open(dashboard_path) as fh:
        dashboard = json.load(fh)
    for key in ("uid", "title", "panels", "schemaVersion"):
        if key not in dashboard:
            failures.append(f"dashboard: no {key}")
    for p in dashboard.get("panels", []):
        if not p.get("title") or not p.get("type") or not p.get("targets"):
            failures.append(f"dashboard: panel {p.get('id')} lacks title, type or targets")
        for t in p.get("targets", []):
            named |= {(n, f"panel {p.get('title')!r}") for n in metric_names(t.get("expr", ""))}

    for name, where in sorted(named):
        if name not in present:
            failures.append(f"{where} names {name}, which /metrics does not export")
    print(json.dumps({"families": len(families), "metrics_named": sorted({n for n, _ in named}), "failures": failures}))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
