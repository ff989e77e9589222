"""Security of the layer as it runs inside someone else's function, on the local Lambda with the
release extension:
- no socket of the extension process listens on a non-loopback address (read from
  /proc/<pid>/net/{tcp,tcp6,udp,udp6} and the socket inodes of /proc/<pid>/fd);
- at info level the extension's log holds neither the AWS credentials of the environment nor any
  part of a span's payload, on a successful export and on a refused one."""
import os
import socket

from checks import python_env, python_runtime, shutdown_summary
from lam import wait_until

SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYSECRETCANARY"
ACCESS_KEY = "AKIACANARYACCESSKEY7"
SESSION_TOKEN = "IQoJb3JpZ2luX2VjCANARYSESSIONTOKEN0123456789"
PAYLOAD = "order-payload-canary-5f1e"


def extension_pids(lam):
    """Processes running the layer's extension binary with this sandbox's receiver port."""
    marker = ("OTEL_XRAY_HTTP_PORT=%d" % lam.ports["http"]).encode()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            exe = os.readlink("/proc/%s/exe" % entry)
            with open("/proc/%s/environ" % entry, "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        if os.path.basename(exe) == "otel-xray" and marker in env:
            pids.append(int(entry))
    return pids


def socket_inodes(pid):
    inodes = set()
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    return inodes


def decode_address(hex_addr):
    """The kernel's hex form (each 32-bit word in host byte order) → an IP address string."""
    addr, port = hex_addr.split(":")
    raw = bytes.fromhex(addr)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    family = socket.AF_INET if len(words) == 4 else socket.AF_INET6
    return socket.inet_ntop(family, words), int(port, 16)


def is_loopback(ip):
    if ip.startswith("127.") or ip == "::1":
        return True
    return ip.startswith("::ffff:127.")


def sockets_of(pid):
    """(protocol, local ip, port, state) of every socket the process holds."""
    inodes = socket_inodes(pid)
    found = []
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        with open("/proc/%d/net/%s" % (pid, proto)) as f:
            lines = f.read().splitlines()[1:]
        for line in lines:
            cols = line.split()
            local, state, inode = cols[1], cols[3], cols[9]
            if inode in inodes:
                ip, port = decode_address(local)
                found.append((proto, ip, port, state))
    return found


def sandbox_address():
    try:
        return socket.gethostbyname("sandbox.localdomain")
    except OSError:
        return None


def test_no_socket_listens_beyond_loopback(sandbox, daemon):
    lam = sandbox(python_runtime(), active_tracing=True,
                  env=python_env({"AWS_XRAY_DAEMON_ADDRESS": daemon.address}))
    assert lam.invoke({"order_id": "s-1"})["status"] == "success"
    pids = wait_until(lambda: extension_pids(lam), 5)
    assert len(pids) == 1, pids
    sockets = sockets_of(pids[0])
    listening = [s for s in sockets if (s[0].startswith("tcp") and s[3] == "0A")
                 or (s[0].startswith("udp") and s[3] == "07")]
    # The receivers (HTTP, gRPC) and the Telemetry API listener at least.
    ports = {s[2] for s in listening}
    assert {lam.ports["http"], lam.ports["grpc"]} <= ports, (lam.ports, sockets)
    # The Telemetry API destination may bind what sandbox.localdomain resolves to (in Lambda,
    # the sandbox's own address, reachable only by the Lambda service); nothing else may leave
    # loopback. An unconnected UDP socket (state 07) receives from anyone, so it counts too.
    allowed = {sandbox_address()} - {None}
    exposed = [s for s in listening if not is_loopback(s[1]) and s[1] not in allowed]
    assert not exposed, "sockets reachable from outside the sandbox: %s" % exposed
    lam.shutdown()


def run_and_capture_info_log(sandbox, env):
    credentials = {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_SESSION_TOKEN": SESSION_TOKEN,
        "OTEL_XRAY_LOG_LEVEL": "info",
        "OTEL_XRAY_INDEX_ALL_ATTRIBUTES": "true",
    }
    credentials.update(env)
    lam = sandbox(python_runtime(), active_tracing=True, env=python_env(credentials))
    for i in range(2):
        result = lam.invoke({"order_id": "%s-%d" % (PAYLOAD, i), "fail": True})
        assert result["status"] == "success", result
    report = lam.shutdown()
    (ext,) = [e for e in report["extensions"] if e["name"] == "otel-xray"]
    assert ext["exitCode"] == 0, ext
    log = lam.extension_log()
    summary = shutdown_summary(log)
    assert summary["received"] > 0, summary
    return log, summary


def assert_nothing_secret(log):
    for secret in (ACCESS_KEY, SECRET_KEY, SESSION_TOKEN, PAYLOAD, "order rejected"):
        assert secret not in log, "%r appears in the extension's info log:\n%s" % (secret, log)
    # A partial leak (the signature's credential scope names the access key id).
    assert ACCESS_KEY[:12] not in log, log


def test_no_credentials_or_payload_in_the_info_log_on_success(sandbox, moto):
    log, summary = run_and_capture_info_log(sandbox, {
        "OTEL_XRAY_EXPORTER": "api", "OTEL_XRAY_API_ENDPOINT": moto.endpoint,
        "OTEL_XRAY_EXPORT_TIMEOUT_MS": "5000"})
    # moto can be slow on a loaded machine; what matters here is the log, and that spans went out.
    assert summary["exported"] > 0, summary
    assert_nothing_secret(log)


def test_no_credentials_or_payload_in_the_info_log_on_refusal(sandbox, log_dir):
    from test_faults import FakeXRay
    xray = FakeXRay("403")
    try:
        log, summary = run_and_capture_info_log(sandbox, {
            "OTEL_XRAY_EXPORTER": "api", "OTEL_XRAY_API_ENDPOINT": xray.endpoint})
    finally:
        xray.close()
    assert summary["dropped"] == summary["received"], summary
    assert xray.requests, "the refusing X-Ray endpoint was never called"
    # The refusal is logged (at warn), without what was sent.
    assert "403" in log or "rejected" in log, log
    assert_nothing_secret(log)
