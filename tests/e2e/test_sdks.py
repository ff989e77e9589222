"""Spans from the real OpenTelemetry SDKs of Python (http/protobuf, grpc), Node.js (http/json,
chunked) and Rust (opentelemetry-otlp) go through the real extension on the local Lambda and come
out as schema-valid X-Ray documents with the right ids, structure, http, aws, cause, annotations
and metadata — at the daemon address and, through moto, at PutTraceSegments."""
import os

from checks import (by_name, emit_node, emit_python, one_connected_tree, python_env, python_runtime,
                    trace_nodes, xray_id)
from lam import BIN_DIR


def check_python_emit_trace(docs, tid, label):
    nodes = trace_nodes(docs, xray_id(tid))
    assert len(nodes) == 3, [n.name for n in nodes]
    root = one_connected_tree(nodes)
    seg = root.doc
    assert root.kind == "segment" and root.name == "py-%s" % label
    assert seg["http"]["request"]["method"] == "GET"
    assert seg["http"]["request"]["url"] == "https://api.example.com/orders/42"
    assert seg["http"]["request"]["user_agent"] == "curl/8.0"
    assert seg["http"]["request"]["client_ip"] == "198.51.100.7"
    assert seg["http"]["response"]["status"] == 503
    assert seg.get("fault") is True
    assert seg.get("user") == "alice"
    assert seg.get("annotations") == {"order_id": "42"}, seg.get("annotations")
    assert seg["aws"]["account_id"] == "123456789012"
    ddb = by_name(nodes, "DynamoDB")
    assert ddb.parent_id == root.id and ddb.doc["namespace"] == "aws"
    assert ddb.doc["aws"]["operation"] == "GetItem"
    assert ddb.doc["aws"]["region"] == "eu-west-1"
    load = by_name(nodes, "load-order")
    exc = load.doc["cause"]["exceptions"][0]
    assert exc["type"] == "KeyError" and "order 42 missing" in exc["message"]
    assert load.doc.get("fault") is True


def test_python_sdk_http_protobuf_and_grpc_to_daemon(sandbox, daemon):
    lam = sandbox(python_runtime(), env=python_env({
        "AWS_XRAY_DAEMON_ADDRESS": daemon.address,
        "OTEL_XRAY_INDEXED_ATTRIBUTES": "order.id",
    }))
    http_tid = emit_python("http/protobuf", "http://127.0.0.1:%d/v1/traces" % lam.ports["http"], "http")
    grpc_tid = emit_python("grpc", "http://127.0.0.1:%d" % lam.ports["grpc"], "grpc")
    assert lam.invoke({"order_id": "o-1"})["status"] == "success"
    docs = daemon.drain()
    check_python_emit_trace(docs, http_tid, "http")
    check_python_emit_trace(docs, grpc_tid, "grpc")


def test_node_sdk_http_json_chunked_to_daemon(sandbox, daemon):
    lam = sandbox(python_runtime(), env=python_env({
        "AWS_XRAY_DAEMON_ADDRESS": daemon.address,
        "OTEL_XRAY_INDEX_ALL_ATTRIBUTES": "true",
    }))
    tid = emit_node("http://127.0.0.1:%d/v1/traces" % lam.ports["http"], "json")
    assert lam.invoke({})["status"] == "success"
    nodes = trace_nodes(daemon.drain(), xray_id(tid))
    assert len(nodes) == 2
    root = one_connected_tree(nodes)
    seg = root.doc
    assert root.name == "node-json"
    assert seg["http"]["request"]["method"] == "POST"
    assert seg["http"]["request"]["url"] == "https://shop.example.com/checkout"
    assert seg["http"]["response"]["status"] == 429
    assert seg.get("throttle") is True and seg.get("error") is True
    assert seg["annotations"]["cart_size"] == 3
    (db,) = root.children
    assert db.doc["namespace"] == "remote"
    assert db.doc["sql"]["user"] == "app"


def test_rust_sdk_function_to_daemon(sandbox, daemon):
    lam = sandbox([os.path.join(BIN_DIR, "bootstrap")], wrapper=False, active_tracing=True, env={
        "AWS_XRAY_DAEMON_ADDRESS": daemon.address,
        "OTEL_SERVICE_NAME": "orders-rs",
        "OTEL_XRAY_INDEXED_ATTRIBUTES": "order.id",
        "OTEL_XRAY_PLATFORM_SPANS": "false",
    })
    result = lam.invoke({"order_id": "o-7", "items": 4})
    assert result["status"] == "success", result
    root_id = result["traceHeader"].split("Root=")[1].split(";")[0]
    parent = result["traceHeader"].split("Parent=")[1].split(";")[0]
    nodes = trace_nodes(daemon.drain(), root_id)
    assert len(nodes) == 4, [n.name for n in nodes]
    # The function continues Lambda's trace: its segment's parent is Lambda's function segment.
    root = one_connected_tree(nodes, allowed_external_parent=parent)
    assert root.name == "orders-rs" and root.kind == "segment"
    assert root.doc["annotations"] == {"order_id": "o-7"}
    names = sorted(c.name for c in root.children)
    assert names == ["DynamoDB", "compute-total", "inventory.example.com"], names
    assert by_name(nodes, "inventory.example.com").doc["http"]["response"]["status"] == 200
    assert by_name(nodes, "DynamoDB").doc["aws"]["operation"] == "PutItem"


def test_api_exporter_to_moto(sandbox, moto):
    lam = sandbox(python_runtime(), env=python_env({
        "OTEL_XRAY_EXPORTER": "api",
        "OTEL_XRAY_API_ENDPOINT": moto.endpoint,
        "OTEL_XRAY_INDEXED_ATTRIBUTES": "order.id",
        "OTEL_XRAY_PLATFORM_SPANS": "false",
    }))
    tid = emit_python("http/protobuf", "http://127.0.0.1:%d/v1/traces" % lam.ports["http"], "moto")
    assert lam.invoke({})["status"] == "success"
    # PutTraceSegments is synchronous: the documents are in X-Ray when the invocation completes.
    check_python_emit_trace(moto.documents([xray_id(tid)]), tid, "moto")

