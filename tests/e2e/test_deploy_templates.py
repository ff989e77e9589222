"""The deployment templates users copy: template.yaml (SAM) passes cfn-lint with no finding, and
examples/terraform parses as HCL2 and wires the layer the way the README says. Both name only
environment variables the extension or the function's SDK reads (config.rs's ENV_VARS table, the
standard OTEL_* variables of the SDKs, and Lambda's own)."""
import glob
import os
import re
import subprocess

import hcl2
import yaml

from lam import ROOT, VENV_PY

TEMPLATE = os.path.join(ROOT, "template.yaml")
TERRAFORM = os.path.join(ROOT, "examples", "terraform")
CONFIG_RS = os.path.join(ROOT, "extension", "src", "config.rs")
WRAPPER = "/opt/otel-xray-wrapper"
# Read by the function's SDK (set by the wrapper unless given) or by Lambda itself.
SDK_OR_LAMBDA = {"AWS_LAMBDA_EXEC_WRAPPER", "OTEL_PROPAGATORS", "OTEL_EXPORTER_OTLP_ENDPOINT",
                 "OTEL_EXPORTER_OTLP_PROTOCOL"}


def extension_env_names():
    """Every name in config.rs's ENV_VARS table, resolved through its `pub const`s."""
    with open(CONFIG_RS) as f:
        src = f.read()
    consts = dict(re.findall(r'pub const ([A-Z0-9_]+): &str = "([A-Z0-9_]+)";', src))
    start = src.index("pub const ENV_VARS")
    table = src[start:src.index("];", start)]
    names = {consts[c] for c in re.findall(r"\b([A-Z0-9_]+)\b", table) if c in consts}
    assert "OTEL_XRAY_EXPORTER" in names and "OTEL_XRAY_INDEXED_ATTRIBUTES" in names, names
    return names


def known_env_names():
    return extension_env_names() | SDK_OR_LAMBDA


# --- SAM ---------------------------------------------------------------------------------------

class _CfnLoader(yaml.SafeLoader):
    """Reads CloudFormation's short-form intrinsics (!Ref, !If, …) as plain values."""


def _intrinsic(loader, suffix, node):
    if isinstance(node, yaml.ScalarNode):
        return {suffix: loader.construct_scalar(node)}
    if isinstance(node, yaml.SequenceNode):
        return {suffix: loader.construct_sequence(node, deep=True)}
    return {suffix: loader.construct_mapping(node, deep=True)}


_CfnLoader.add_multi_constructor("!", _intrinsic)


def load_template():
    with open(TEMPLATE) as f:
        return yaml.load(f, Loader=_CfnLoader)


def test_sam_template_passes_cfn_lint():
    cfn_lint = os.path.join(os.path.dirname(VENV_PY), "cfn-lint")
    out = subprocess.run([cfn_lint, "--format", "parseable", TEMPLATE],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip() == "", (out.returncode, out.stdout, out.stderr)


def test_sam_template_wires_layer_tracing_env_and_permissions():
    t = load_template()
    res = t["Resources"]
    layers = {k: v for k, v in res.items() if v["Type"] == "AWS::Serverless::LayerVersion"}
    assert {tuple(v["Properties"]["CompatibleArchitectures"]) for v in layers.values()} == {("x86_64",), ("arm64",)}
    for layer in layers.values():
        (arch,) = layer["Properties"]["CompatibleArchitectures"]
        assert layer["Properties"]["ContentUri"] == "target/layer-zips/otel-xray-%s.zip" % arch
    assert t["Parameters"]["Architecture"]["AllowedValues"] == ["x86_64", "arm64"]
    assert {"auto", "daemon", "api", "otlp"} == set(t["Parameters"]["Exporter"]["AllowedValues"])
    glob_fn = t["Globals"]["Function"]
    assert glob_fn["Tracing"] == "Active"
    assert glob_fn["Architectures"] == [{"Ref": "Architecture"}]
    assert glob_fn["Layers"] == [{"If": ["IsArm64", {"Ref": "OtelXrayLayerArm64"}, {"Ref": "OtelXrayLayerX86"}]}]
    env = glob_fn["Environment"]["Variables"]
    assert env["AWS_LAMBDA_EXEC_WRAPPER"] == WRAPPER
    assert env["OTEL_XRAY_EXPORTER"] == {"Ref": "Exporter"}
    functions = {k: v for k, v in res.items() if v["Type"] == "AWS::Serverless::Function"}
    runtimes = {v["Properties"]["Runtime"].rstrip("0123456789.x") for v in functions.values()}
    assert runtimes == {"python", "nodejs", "provided.al"}, runtimes
    for name, fn in functions.items():
        assert "AWSXRayDaemonWriteAccess" in fn["Properties"]["Policies"], name
        assert os.path.isdir(os.path.join(ROOT, fn["Properties"]["CodeUri"])), name
        names = set(env) | set(fn["Properties"].get("Environment", {}).get("Variables", {}))
        unknown = names - known_env_names()
        assert not unknown, (name, unknown)
    rust = functions["RustFunction"]
    assert rust["Metadata"]["BuildMethod"] == "rust-cargolambda"
    # OS-only runtimes run no exec wrapper: the SDK is pointed at the extension directly.
    assert rust["Properties"]["Environment"]["Variables"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://127.0.0.1:4318"


# --- Terraform ---------------------------------------------------------------------------------

def load_terraform():
    """All .tf files of the example, parsed (a syntax error raises), merged by block type."""
    merged = {}
    files = sorted(glob.glob(os.path.join(TERRAFORM, "*.tf")))
    assert files
    for path in files:
        with open(path) as f:
            doc = hcl2.load(f)
        for key, blocks in doc.items():
            merged.setdefault(key, []).extend(blocks)
    return merged


def unquote(v):
    """python-hcl2 keeps string literals' quotes and wraps expressions in ${}; strip both."""
    if isinstance(v, str):
        v = v.strip()
        if len(v) >= 2 and v[0] == v[-1] == '"':
            v = v[1:-1]
        if v.startswith("${") and v.endswith("}"):
            v = v[2:-1]
    return v


def resources(tf, rtype):
    out = {}
    for block in tf.get("resource", []):
        for t, named in block.items():
            if unquote(t) == rtype:
                for name, body in named.items():
                    out[unquote(name)] = body
    return out


def one(v):
    """A nested block parses as a list of one dict."""
    return v[0] if isinstance(v, list) else v


def test_terraform_example_parses_and_wires_layer_tracing_env_and_permissions():
    tf = load_terraform()
    variables = {unquote(k) for block in tf["variable"] for k in block}
    assert {"architecture", "exporter", "otlp_endpoint", "layer_zip_dir"} <= variables, variables
    (layer,) = resources(tf, "aws_lambda_layer_version").values()
    assert "otel-xray-${var.architecture}.zip" in unquote(
        [one(b)["layer_zip"] for b in tf["locals"] if "layer_zip" in one(b)][0])
    assert unquote(layer["filename"]) == "local.layer_zip"
    assert "var.architecture" in str(layer["compatible_architectures"])
    (fn,) = resources(tf, "aws_lambda_function").values()
    assert unquote(fn["layers"][0]) == "aws_lambda_layer_version.otel_xray.arn"
    assert unquote(one(fn["tracing_config"])["mode"]) == "Active"
    assert "var.architecture" in str(fn["architectures"])
    assert "local.otel_env" in unquote(one(fn["environment"])["variables"])
    otel_env = [one(b)["otel_env"] for b in tf["locals"] if "otel_env" in one(b)][0]
    env = {unquote(k): unquote(v) for k, v in otel_env.items()}
    assert env["AWS_LAMBDA_EXEC_WRAPPER"] == WRAPPER
    assert env["OTEL_XRAY_EXPORTER"] == "var.exporter"
    unknown = set(env) - known_env_names()
    assert not unknown, unknown
    attachments = resources(tf, "aws_iam_role_policy_attachment")
    policies = {unquote(a["policy_arn"]) for a in attachments.values()}
    assert "arn:aws:iam::aws:policy/AWSXRayDaemonWriteAccess" in policies, policies
    assert all(unquote(a["role"]) == "aws_iam_role.function.name" for a in attachments.values())
    assert unquote(fn["role"]) == "aws_iam_role.function.arn"
    outputs = {unquote(k) for block in tf["output"] for k in block}
    assert {"layer_arn", "function_name"} <= outputs, outputs
