"""moto's server as the X-Ray API on 127.0.0.1: PutTraceSegments in, BatchGetTraces out."""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import boto3

DUMMY = {"aws_access_key_id": "AKIDTEST", "aws_secret_access_key": "secret", "region_name": "us-east-1"}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MotoXRay:
    def __init__(self, log_dir):
        self.port = free_port()
        self.endpoint = "http://127.0.0.1:%d" % self.port
        self.log = open(os.path.join(log_dir, "moto.log"), "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(self.endpoint + "/moto-api/", timeout=1).read()
                break
            except Exception:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto server did not start; see %s" % self.log.name)
                time.sleep(0.1)
        self.client = boto3.client("xray", endpoint_url=self.endpoint, **DUMMY)

    def documents(self, trace_ids):
        """Every document moto holds for these X-Ray trace ids (`1-…-…`), parsed."""
        docs = []
        ids = list(trace_ids)
        for i in range(0, len(ids), 5):
            resp = self.client.batch_get_traces(TraceIds=ids[i : i + 5])
            for trace in resp.get("Traces", []):
                for seg in trace.get("Segments", []):
                    docs.append(json.loads(seg["Document"]))
        return docs

    def reset(self):
        urllib.request.urlopen(
            urllib.request.Request(self.endpoint + "/moto-api/reset", method="POST"), timeout=5
        ).read()

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
