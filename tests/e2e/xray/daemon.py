"""A stand-in for the X-Ray daemon: a UDP socket on 127.0.0.1 that decodes every datagram.

Each datagram must be the daemon's header line `{"format": "json", "version": 1}` followed by
one segment document of at most 64 KiB; anything else is recorded in `errors`, never ignored.

A datagram sent over loopback is in this socket's receive queue when `sendto` returns, so
`drain()` right after an invocation completes sees everything the extension sent before it asked
Lambda for the next event — no sleeping, no race.
"""
import json
import socket
import time


class DaemonListener:
    HEADER = {"format": "json", "version": 1}

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024 * 1024)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.address = "127.0.0.1:%d" % self.sock.getsockname()[1]
        self.documents = []
        self.errors = []

    def drain(self):
        """Reads every datagram queued now; returns the documents received so far."""
        while True:
            try:
                data, _ = self.sock.recvfrom(70000)
            except BlockingIOError:
                return list(self.documents)
            try:
                header, body = data.split(b"\n", 1)
                if json.loads(header) != self.HEADER:
                    raise ValueError("bad header %r" % header)
                if len(body) > 64 * 1024:
                    raise ValueError("document of %d bytes" % len(body))
                self.documents.append(json.loads(body))
            except Exception as exc:  # recorded, asserted on by tests
                self.errors.append("%s: %r" % (exc, data[:200]))

    def wait_for(self, predicate, timeout=10.0):
        """Drains until predicate(documents) holds or the timeout passes (for asynchronous senders)."""
        deadline = time.monotonic() + timeout
        while True:
            docs = self.drain()
            if predicate(docs) or time.monotonic() >= deadline:
                return docs
            time.sleep(0.01)

    def close(self):
        self.sock.close()
