"""Assertions shared by the end-to-end tests."""
import os
import re
import subprocess

from lam import ROOT, VENV_PY
from xray import model

HERE = os.path.dirname(os.path.abspath(__file__))
PY_FUNCTION = os.path.join(HERE, "functions", "python")
NODE_DIR = os.path.join(ROOT, "tests", "node")


def python_runtime():
    """The real Python runtime interface client running functions/python/handler.py."""
    return [VENV_PY, "-m", "awslambdaric", "handler.handler"]


def python_env(extra=None):
    env = {"PYTHONPATH": PY_FUNCTION, "PYTHONUNBUFFERED": "1"}
    env.update(extra or {})
    return env


def xray_id(w3c_trace_id):
    return "1-%s-%s" % (w3c_trace_id[:8], w3c_trace_id[8:])


def emit_python(protocol, endpoint, label):
    out = subprocess.run([VENV_PY, os.path.join(HERE, "sdk_emit.py"), protocol, endpoint, label],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


def emit_node(url, label):
    out = subprocess.run(["node", os.path.join(NODE_DIR, "emit.js"), url, label],
                         capture_output=True, text=True, timeout=60, cwd=NODE_DIR)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


def trace_nodes(documents, trace_id):
    """Validates every document, then returns the trace's nodes, linked, with exactly one root
    and no orphan (a parent id that is not in the trace)."""
    for d in documents:
        model.validate(d)
    nodes = model.traces(documents).get(trace_id, [])
    assert nodes, "no document of trace %s among %d documents" % (trace_id, len(documents))
    return nodes


def one_connected_tree(nodes, allowed_external_parent=None):
    roots, orphans = model.link(nodes)
    outside = [o for o in orphans if o.parent_id != allowed_external_parent]
    assert not outside, "orphan parent ids: %s" % [(o.name, o.parent_id) for o in outside]
    tops = roots + [o for o in orphans if o.parent_id == allowed_external_parent]
    assert len(tops) == 1, "expected one root, got %s" % [t.name for t in tops]
    ids = [n.id for n in nodes]
    assert len(ids) == len(set(ids)), "a span appears twice: %s" % ids
    return tops[0]


def by_name(nodes, name):
    found = [n for n in nodes if n.name == name]
    assert len(found) == 1, "expected one %r among %s" % (name, [n.name for n in nodes])
    return found[0]


SUMMARY = re.compile(r"shutdown: received=(\d+) exported=(\d+) dropped=(\d+)(?: \(([^)]*)\))? in_flight=(\d+)")


def shutdown_summary(log_text):
    """The numbers of the extension's last shutdown summary line."""
    found = SUMMARY.findall(log_text)
    assert found, "no shutdown summary line in the extension's log:\n%s" % log_text[-3000:]
    received, exported, dropped, reasons, in_flight = found[-1]
    reasons = dict(kv.split("=") for kv in reasons.split(", ")) if reasons else {}
    return {
        "received": int(received),
        "exported": int(exported),
        "dropped": int(dropped),
        "reasons": {k: int(v) for k, v in reasons.items()},
        "in_flight": int(in_flight),
    }
