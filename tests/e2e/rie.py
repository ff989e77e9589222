"""Drives AWS's Runtime Interface Emulator (RIE, `tests/.bin/aws-lambda-rie`, built by
`tests/tools/build-rie.sh`) with the layer attached, from Python: start, invoke, SIGTERM.

Each `Rie` is one execution environment. The RIE runs as root inside
`unshare -m -p -f --mount-proc`: a private mount namespace, where a per-environment directory is
bind-mounted at `/opt` holding the layer as Lambda unpacks it (`/opt/extensions/otel-xray`,
`/opt/otel-xray-wrapper`), and a pid namespace whose end kills every process the RIE started
(the RIE leaves its children behind when it crashes). `timeout` bounds the whole namespace.

Two modes, chosen by the RIE from its environment:
- on-demand (default): init is lazy (first invoke), one invoke at a time (a second concurrent one
  crashes the RIE: callers serialise), processes run as root, no telemetry is delivered and the
  runtime never gets `Lambda-Runtime-Trace-Id`;
- Lambda Managed Instances (`max_concurrency=N` sets `AWS_LAMBDA_MAX_CONCURRENCY`): init is eager,
  the RIE ignores the bootstrap argument and looks for `/opt/bootstrap` with cwd `/var/task`
  (overlaid on `/var` here), runs the runtime and extensions as uid 993, and answers 400
  `Runtime.Unavailable` to an invoke when no runtime worker is waiting in `/next`.

On LMI the directories on the way to the runtime's interpreter must be open to uid 993; where
one is not (pyenv's Python under /root, 0700), a 0755 tmpfs takes its place inside the mount
namespace with only the needed subdirectory bind-mounted back (nothing changes outside).

The RIE does not apply `AWS_LAMBDA_EXEC_WRAPPER`; Lambda's managed runtimes do, in their
bootstrap. The bootstrap written here does the same: `exec "$AWS_LAMBDA_EXEC_WRAPPER" <runtime>`
when the variable is set.

Everything the runtime, the wrapper and the extension write reaches the RIE's output (in LMI
through its log egress), which is `rie.log` in the environment's directory; `log()` reads it.
"""
import datetime
import http.client
import json
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import threading
import time

from lam import LAYER, ROOT, free_ports

RIE_BIN = os.environ.get("OTEL_XRAY_RIE", os.path.join(ROOT, "tests", ".bin", "aws-lambda-rie"))
INVOKE_PATH = "/2015-03-31/functions/function/invocations"
# The LMI RIE runs the runtime and the extensions as this user and group
# (internal/lambda-managed-instances/supervisor/local/process.go).
LMI_UID, LMI_GID = 993, 990
# Lambda's SHUTDOWN budget for extensions, from the start of shutdown.
SHUTDOWN_BUDGET_S = 2.0
# No environment outlives this, whatever happens to the test process.
MAX_LIFETIME_S = 300
# What the RIE logs (debug) for each runtime /next and for each invoke it hands to a worker.
NEXT_LINE = "InvokeRouter: received runtime /next"
DISPATCH_LINE = "Sending Invoke to Runtime"
_RIE_LINE = re.compile(r"^time=(\S+Z) level=(\w+) msg=(.*)$")
_EXT_TEXT = re.compile(r"^(TRACE|DEBUG| INFO| WARN|ERROR) ")
_TERMINATION = re.compile(r"EvType:process_termination Name:(\S+) Cause:(\w+) Signo:(\S+) ExitStatus:(\S+)")


def unavailable_reason():
    """Why the RIE tests cannot run here, or None."""
    if not os.access(RIE_BIN, os.X_OK):
        return "%s is missing: run tests/tools/build-rie.sh (or tests/setup.sh)" % RIE_BIN
    if os.geteuid() != 0:
        return "the RIE harness needs root (mount and pid namespaces)"
    for tool in ("unshare", "mount", "timeout"):
        if not shutil.which(tool):
            return "%s not found" % tool
    return None


def _blocked_dirs(path, uid=LMI_UID, gid=LMI_GID):
    """The directories on the way to `path` (symlinks resolved) that `uid` cannot traverse."""
    blocked, cur = [], "/"
    for part in os.path.realpath(path).strip("/").split("/")[:-1]:
        cur = os.path.join(cur, part)
        st = os.stat(cur)
        mode = st.st_mode
        ok = (mode & stat.S_IXOTH) or (st.st_uid == uid and mode & stat.S_IXUSR) or \
             (st.st_gid == gid and mode & stat.S_IXGRP)
        if not ok:
            blocked.append(cur)
    return blocked


class Rie:
    """One execution environment on the RIE.

    `runtime_cmd` is what the managed runtime's bootstrap would run (through the exec wrapper);
    `env` is the function's environment; `task_root` becomes the bootstrap's working directory
    (and `/var/task` on LMI). `extension=False` attaches a layer with the wrapper only;
    `opt_files` ({relative path: text}) adds executables under `/opt` (`extensions/x` is one
    more extension); `readable` names further paths the LMI runtime (uid 993) must reach.
    The extension's ports (`ports`), the invoke address and the Runtime API address are free
    loopback ports, picked again if the RIE finds one taken.
    """

    def __init__(self, work_dir, runtime_cmd, env=None, layer=LAYER, extension=True, wrapper=True,
                 max_concurrency=None, task_root=None, function_name="otel-xray-rie",
                 timeout_s=10, readable=(), opt_files=None):
        self.dir = work_dir
        self.lmi = max_concurrency is not None
        self.log_path = os.path.join(work_dir, "rie.log")
        self.sigterm_at = None
        self.exited_at = None
        self.returncode = None
        self._log = None
        # On-demand, a second concurrent invoke crashes the RIE (nil dereference in
        # rapidcore.(*Server).Invoke): invokes are serialised there.
        self._serial = None if self.lmi else threading.Lock()

        # /opt as Lambda unpacks the layer (plus, on LMI, the bootstrap the RIE looks for there).
        opt = os.path.join(work_dir, "opt")
        os.makedirs(os.path.join(opt, "extensions"))
        if extension:
            shutil.copy2(os.path.join(layer, "extensions", "otel-xray"), os.path.join(opt, "extensions"))
        shutil.copy2(os.path.join(layer, "otel-xray-wrapper"), opt)
        for name, text in (opt_files or {}).items():  # a runtime launcher, another extension…
            path = os.path.join(opt, name)
            os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
            with open(path, "w") as f:
                f.write(text)
            os.chmod(path, 0o755)
        for d in (work_dir, opt, os.path.join(opt, "extensions")):
            os.chmod(d, 0o755)

        cwd = "/var/task" if self.lmi else (task_root or work_dir)
        self.bootstrap = os.path.join(opt if self.lmi else work_dir, "bootstrap")
        cmd = " ".join(shlex.quote(c) for c in runtime_cmd)
        with open(self.bootstrap, "w") as f:
            f.write("#!/bin/sh\n"
                    "# What a managed runtime's bootstrap does: apply AWS_LAMBDA_EXEC_WRAPPER.\n"
                    "cd %s || exit 1\n"
                    'if [ -n "$AWS_LAMBDA_EXEC_WRAPPER" ]; then exec "$AWS_LAMBDA_EXEC_WRAPPER" %s; fi\n'
                    "exec %s\n" % (shlex.quote(cwd), cmd, cmd))
        os.chmod(self.bootstrap, 0o755)

        self.function_env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": "/tmp",
            "LANG": "C.UTF-8",
            "AWS_LAMBDA_FUNCTION_NAME": function_name,
            "AWS_LAMBDA_FUNCTION_TIMEOUT": str(timeout_s),
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
            "OTEL_XRAY_LOG_LEVEL": "debug",
            "OTEL_BSP_SCHEDULE_DELAY": "50",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        self.wrapper = wrapper
        if wrapper:
            self.function_env["AWS_LAMBDA_EXEC_WRAPPER"] = "/opt/otel-xray-wrapper"
        if self.lmi:
            self.function_env["AWS_LAMBDA_MAX_CONCURRENCY"] = str(max_concurrency)
        self.function_env.update(env or {})

        q = shlex.quote
        self.setup = ["set -e", "mount --bind %s /opt" % q(opt)]
        if self.lmi:
            up, wk = os.path.join(work_dir, "var-up"), os.path.join(work_dir, "var-work")
            self.setup += ["rm -rf %s %s" % (q(up), q(wk)), "mkdir %s %s" % (q(up), q(wk)),
                           "mount -t overlay overlay -o lowerdir=/var,upperdir=%s,workdir=%s /var"
                           % (q(up), q(wk)),
                           "mkdir -p /var/task"]
            if task_root:
                self.setup.append("mount --bind %s /var/task" % q(task_root))
            # uid 993 must reach the runtime's interpreter and files. Where a directory on the
            # way is closed to it (e.g. /root, 0700, holding pyenv's Python under the venv), a
            # 0755 tmpfs takes its place in this mount namespace, with only the needed
            # subdirectory bind-mounted back: nothing changes outside the namespace.
            paths = [shutil.which(runtime_cmd[0]) or runtime_cmd[0]] + list(readable)
            if task_root:
                paths.append(os.path.join(task_root, "x"))
            for n, path in enumerate(paths):
                for blocked in _blocked_dirs(path)[:1]:  # below the first, the path is reachable
                    below = os.path.realpath(path)[len(blocked):].strip("/").split("/")[0]
                    child = os.path.join(blocked, below)
                    keep = os.path.join(work_dir, "keep-%d" % n)
                    os.makedirs(keep, exist_ok=True)
                    self.setup += ["if ! mountpoint -q %s; then" % q(child),
                                   "  mount --bind %s %s" % (q(child), q(keep)),
                                   "  mountpoint -q %s || mount -t tmpfs -o mode=0755 tmpfs %s"
                                   % (q(blocked), q(blocked)),
                                   "  mkdir -p %s" % q(child),
                                   "  mount --move %s %s" % (q(keep), q(child)),
                                   "fi"]
        # A port that free_ports() picked can be taken before the RIE binds it (other tests run
        # beside these): the RIE then exits at once with "address already in use"; try again.
        for attempt in range(3):
            self._launch()
            if self.alive() or "address already in use" not in self.log().lower() or attempt == 2:
                break
            if self._log:
                self._log.close()
            os.replace(self.log_path, self.log_path + ".%d" % attempt)

    def _launch(self):
        invoke, rapi, http_port, grpc, telemetry, proxy = free_ports(6)
        self.invoke_addr = "127.0.0.1:%d" % invoke
        self.runtime_api = "127.0.0.1:%d" % rapi
        self.ports = {"http": http_port, "grpc": grpc, "telemetry": telemetry, "proxy": proxy}
        self.env = {
            "OTEL_XRAY_HTTP_PORT": str(http_port),
            "OTEL_XRAY_GRPC_PORT": str(grpc),
            "OTEL_XRAY_TELEMETRY_PORT": str(telemetry),
            "OTEL_XRAY_PROXY_PORT": str(proxy),
            "OTEL_XRAY_TEST_GRPC_ENDPOINT": "http://127.0.0.1:%d" % grpc,
        }
        if not self.wrapper:
            # OS-only runtimes have no exec wrapper: users point the SDK at the extension.
            self.env["OTEL_EXPORTER_OTLP_ENDPOINT"] = "http://127.0.0.1:%d" % http_port
            self.env["OTEL_EXPORTER_OTLP_PROTOCOL"] = "http/protobuf"
        self.env.update(self.function_env)
        q = shlex.quote
        rie = [RIE_BIN, "--log-level", "debug", "--runtime-interface-emulator-address", self.invoke_addr,
               "--runtime-api-address", self.runtime_api, self.bootstrap]
        script = self.setup + ["exec timeout -s KILL %d %s" % (MAX_LIFETIME_S, " ".join(q(a) for a in rie))]
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            ["unshare", "-m", "-p", "-f", "--mount-proc", "--propagation", "private",
             "--kill-child=SIGKILL", "sh", "-c", "\n".join(script)],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, env=self.env,
            cwd=self.dir)
        self.pid = self._find_rie_pid()
        self._wait_listening()

    # -- processes ----------------------------------------------------------------------------

    def _find_rie_pid(self, timeout=10.0):
        """The RIE's pid as this (parent) namespace sees it: unshare → timeout → aws-lambda-rie."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for pid in self._descendants(self.proc.pid):
                try:
                    if os.readlink("/proc/%d/exe" % pid) == os.path.realpath(RIE_BIN):
                        return pid
                except OSError:
                    pass
            if self.proc.poll() is not None:
                return None  # exited at once: alive() is False, the log tells why
            time.sleep(0.01)
        raise RuntimeError("the RIE's process was not found:\n%s" % self.log()[-3000:])

    @staticmethod
    def _descendants(pid):
        out, todo = [], [pid]
        while todo:
            p = todo.pop()
            try:
                with open("/proc/%d/task/%d/children" % (p, p)) as f:
                    kids = [int(k) for k in f.read().split()]
            except OSError:
                kids = []
            out += kids
            todo += kids
        return out

    def _wait_listening(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        host, port = self.invoke_addr.split(":")
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return  # exited (an LMI init failure): returncode and log tell why
            try:
                conn = http.client.HTTPConnection(host, int(port), timeout=1)
                conn.request("GET", "/")
                conn.getresponse().read()
                conn.close()
                return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("the RIE does not listen on %s:\n%s" % (self.invoke_addr, self.log()[-3000:]))

    def alive(self):
        return self.proc.poll() is None

    # -- logs ---------------------------------------------------------------------------------

    def log(self):
        """The RIE's output so far: its own log lines and what every process of the sandbox wrote."""
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def extension_log(self):
        """The extension's log lines (its stderr, as the RIE relays it): text lines starting with
        the level on on-demand, JSON lines with `timestamp`, `level` and `message` and none of a
        runtime's request fields on LMI (where the RIE sets AWS_LAMBDA_LOG_FORMAT=json)."""
        out = []
        for line in self.log().splitlines():
            if _EXT_TEXT.match(line):
                out.append(line)
            elif line.startswith('{"timestamp":'):
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if {"level", "message"} <= rec.keys() and not {"requestId", "logger"} & rec.keys():
                    out.append(line)
        return "\n".join(out) + "\n"

    def rie_lines(self):
        """The RIE's own log lines as (time, level, message), time a UTC datetime (ms)."""
        out = []
        for line in self.log().splitlines():
            m = _RIE_LINE.match(line)
            if m:
                at = datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%fZ")
                out.append((at, m.group(2), m.group(3)))
        return out

    def terminations(self):
        """{process name: (cause, signal, exit status, time)} from the RIE's lifecycle events
        (names: `runtime`, `extension-<name>`); the last one per name."""
        out = {}
        for at, _, msg in self.rie_lines():
            m = _TERMINATION.search(msg)
            if m:
                out[m.group(1)] = (m.group(2), m.group(3), m.group(4), at)
        return out

    def first(self, needle):
        """Time of the RIE's first log line containing `needle`, or None."""
        return next((at for at, _, msg in self.rie_lines() if needle in msg), None)

    def count(self, needle):
        return self.log().count(needle)

    def idle_workers(self):
        """Runtime /next calls the RIE has not yet answered with an invoke (LMI)."""
        text = self.log()
        return text.count(NEXT_LINE) - text.count(DISPATCH_LINE)

    def wait_idle_workers(self, n, timeout=30.0):
        """Waits until `n` runtime workers are waiting in /next; returns how many are."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.alive():
            if self.idle_workers() >= n:
                return self.idle_workers()
            time.sleep(0.02)
        return self.idle_workers()

    # -- invoke -------------------------------------------------------------------------------

    def invoke_raw(self, payload=None, trace_header=None, headers=None, timeout=60):
        """POSTs one invoke; returns (status, {header: value} lower-cased, body bytes)."""
        host, port = self.invoke_addr.split(":")
        h = {"Content-Type": "application/json"}
        if trace_header:
            h["X-Amzn-Trace-Id"] = trace_header
        h.update(headers or {})
        body = json.dumps(payload if payload is not None else {}).encode()
        if self._serial:
            self._serial.acquire()
        conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
        try:
            conn.request("POST", INVOKE_PATH, body=body, headers=h)
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()
            if self._serial:
                self._serial.release()

    def invoke(self, payload=None, trace_header=None, headers=None, timeout=60, retry_unavailable_s=0.0):
        """One invoke that must succeed; returns the function's response, decoded. On LMI a 400
        `Runtime.Unavailable` (no idle worker) is retried for up to `retry_unavailable_s`."""
        deadline = time.monotonic() + retry_unavailable_s
        while True:
            status, hdrs, body = self.invoke_raw(payload, trace_header, headers, timeout)
            unavailable = status == 400 and hdrs.get("error-type") == "Runtime.Unavailable"
            if unavailable and time.monotonic() < deadline:
                time.sleep(0.02)
                continue
            break
        assert status == 200 and "error-type" not in hdrs, (status, hdrs, body[:2000], self.log()[-3000:])
        return json.loads(body)

    # -- shutdown -----------------------------------------------------------------------------

    def terminate(self, timeout=15.0):
        """SIGTERM to the RIE (Lambda's spin-down), then waits for it to exit. Returns the exit
        code; `sigterm_at` and `exited_at` are monotonic times."""
        if self.alive():
            self.sigterm_at = time.monotonic()
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            deadline = self.sigterm_at + timeout
            while self.alive() and time.monotonic() < deadline:
                time.sleep(0.005)
            if self.alive():
                self.kill()
            self.exited_at = time.monotonic()
        self.returncode = self.proc.wait(timeout=10)
        return self.returncode

    def shutdown_seconds(self):
        """From SIGTERM to the RIE's exit (it exits once every extension has, or at the deadline)."""
        return self.exited_at - self.sigterm_at

    def kill(self):
        """Ends the whole namespace: SIGKILL to its first process (timeout), then to unshare."""
        for pid in self._descendants(self.proc.pid)[:1] + [self.proc.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def close(self):
        try:
            if self.alive():
                self.terminate()
        finally:
            if self.proc.poll() is None:
                self.kill()
                self.proc.wait(timeout=10)
            if self._log:
                self._log.close()
