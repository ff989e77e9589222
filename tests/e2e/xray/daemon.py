"""A stand-in for the X-Ray daemon: a UDP listener on 127.0.0.1 that decodes every datagram.

Each datagram must be the daemon's header line `{"format": "json", "version": 1}` followed by
one segment document; anything else is recorded as an error, never ignored.
"""
import json
import socket
import threading
import time


class DaemonListener:
    HEADER = {"format": "json", "version": 1}

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.address = "127.0.0.1:%d" % self.sock.getsockname()[1]
        self.documents = []
        self.errors = []
        self.arrivals = []  # (monotonic time, document)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                data, _ = self.sock.recvfrom(70000)
            except socket.timeout:
                continue
            except OSError:
                return
            now = time.monotonic()
            try:
                header, body = data.split(b"\n", 1)
                if json.loads(header) != self.HEADER:
                    raise ValueError("bad header %r" % header)
                doc = json.loads(body)
                if len(body) > 64 * 1024:
                    raise ValueError("document of %d bytes" % len(body))
            except Exception as exc:  # recorded, asserted on by tests
                with self._lock:
                    self.errors.append("%s: %r" % (exc, data[:200]))
                continue
            with self._lock:
                self.documents.append(doc)
                self.arrivals.append((now, doc))

    def snapshot(self):
        with self._lock:
            return list(self.documents)

    def wait_for(self, predicate, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            docs = self.snapshot()
            if predicate(docs):
                return docs
            time.sleep(0.02)
        return self.snapshot()

    def close(self):
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()
