"""Reading X-Ray segment documents as traces: flatten, validate, link, print as a tree."""
import json
import os
from collections import defaultdict

import jsonschema

_HERE = os.path.dirname(os.path.abspath(__file__))
SCHEMA_PATH = os.path.join(
    _HERE, "..", "..", "..", "extension", "tests", "fixtures", "xray-segmentdocument-schema-v1.0.0.json"
)
with open(SCHEMA_PATH) as f:
    _SCHEMA = json.load(f)
_VALIDATOR = jsonschema.Draft4Validator(_SCHEMA)


def validate(doc):
    """Raises jsonschema.ValidationError when the document does not follow X-Ray's schema."""
    errors = sorted(_VALIDATOR.iter_errors(doc), key=lambda e: list(e.path))
    if errors:
        raise AssertionError(
            "document does not validate: %s\n%s" % (errors[0].message, json.dumps(doc)[:2000])
        )
    if len(json.dumps(doc, separators=(",", ":")).encode()) > 64 * 1024:
        raise AssertionError("document over 64 KiB")


class Node:
    def __init__(self, doc, trace_id, parent_id, kind):
        self.doc = doc
        self.id = doc["id"]
        self.trace_id = trace_id
        self.parent_id = parent_id
        self.kind = kind  # "segment" | "subsegment"
        self.children = []

    @property
    def name(self):
        return self.doc.get("name")

    @property
    def duration_ms(self):
        return (self.doc.get("end_time", self.doc["start_time"]) - self.doc["start_time"]) * 1000.0


def flatten(documents):
    """Every segment and subsegment (embedded or independent) as a Node."""
    nodes = []

    def walk(doc, trace_id, parent_id, kind):
        nodes.append(Node(doc, trace_id, parent_id, kind))
        for sub in doc.get("subsegments", []) or []:
            walk(sub, trace_id, doc["id"], "subsegment")

    for doc in documents:
        kind = "subsegment" if doc.get("type") == "subsegment" else "segment"
        walk(doc, doc["trace_id"], doc.get("parent_id"), kind)
    return nodes


def traces(documents):
    """{trace_id: [Node]}."""
    out = defaultdict(list)
    for node in flatten(documents):
        out[node.trace_id].append(node)
    return dict(out)


def link(nodes):
    """Builds children lists; returns (roots, orphans): roots have no parent id, orphans name a
    parent that is not among the nodes."""
    by_id = {n.id: n for n in nodes}
    roots, orphans = [], []
    for n in nodes:
        n.children = []
    for n in nodes:
        if n.parent_id is None:
            roots.append(n)
        elif n.parent_id in by_id:
            by_id[n.parent_id].children.append(n)
        else:
            orphans.append(n)
    for n in nodes:
        n.children.sort(key=lambda c: c.doc["start_time"])
    return roots, orphans


def render(documents):
    """A readable tree per trace: name, kind, duration, http status, annotations, faults."""
    lines = []
    for trace_id, nodes in sorted(traces(documents).items()):
        roots, orphans = link(nodes)
        lines.append("trace %s  (%d spans)" % (trace_id, len(nodes)))
        tops = sorted(roots + orphans, key=lambda n: n.doc["start_time"])

        def emit(node, prefix, last):
            bits = ["%s %s" % (node.kind, node.name), "%.1f ms" % node.duration_ms]
            if node.doc.get("namespace"):
                bits.append("ns=%s" % node.doc["namespace"])
            status = ((node.doc.get("http") or {}).get("response") or {}).get("status")
            if status:
                bits.append("http %s" % status)
            for flag in ("fault", "error", "throttle"):
                if node.doc.get(flag):
                    bits.append(flag.upper())
            if node.doc.get("annotations"):
                bits.append("annotations %s" % json.dumps(node.doc["annotations"], sort_keys=True))
            if node.parent_id and node in orphans:
                bits.append("(parent %s outside this trace's documents)" % node.parent_id)
            branch = "└─ " if last else "├─ "
            lines.append(prefix + branch + "  ".join(bits))
            child_prefix = prefix + ("   " if last else "│  ")
            for i, c in enumerate(node.children):
                emit(c, child_prefix, i == len(node.children) - 1)

        for i, top in enumerate(tops):
            emit(top, "", i == len(tops) - 1)
        lines.append("")
    return "\n".join(lines)
