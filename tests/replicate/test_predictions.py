"""Predictions through the official client: replicate.run, predictions.create/get/cancel/list."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap

import pytest
from PIL import Image
from replicate.helpers import FileOutput

from tests.replicate.conftest import Server, wait_final

FAST = {"num_inference_steps": 2, "seed": 11}


def test_run_answers_file_outputs_of_the_requested_format(server: Server, version: str) -> None:
    alice = server.client("alice")
    before = alice.models.get("alice/face").run_count
    output = alice.run(
        "alice/face", input={"prompt": "a portrait, studio light", "num_outputs": 2, "output_format": "png", **FAST}
    )
    assert isinstance(output, list) and len(output) == 2
    assert all(isinstance(item, FileOutput) and item.url.startswith("data:image/png;base64,") for item in output)
    images = [Image.open(io.BytesIO(item.read())) for item in output]
    assert {image.format for image in images} == {"PNG"}

    # owner/name:version runs that version; the model counts its runs.
    (jpeg,) = alice.run(f"alice/face:{version}", input={"prompt": "a portrait", "output_format": "jpg", **FAST})
    assert Image.open(io.BytesIO(jpeg.read())).format == "JPEG"
    assert alice.models.get("alice/face").run_count == before + 2


def test_a_wait_that_runs_out_answers_starting_and_the_client_polls(server: Server, version: str) -> None:
    alice = server.client("alice")
    slow = {"prompt": "a portrait", "num_outputs": 2, "width": 192, "height": 192, "num_inference_steps": 10}  # ~2.5 s
    prediction = alice.predictions.create(version=version, input=slow, wait=1)
    assert prediction.status == "starting"  # never `processing`: the client would take that as final
    wait_final(prediction)
    # Asked with a wait over plain http: data URIs on every read, so that replicate.run gets file objects.
    assert prediction.status == "succeeded" and all(x.startswith("data:image/webp;base64,") for x in prediction.output)
    (output,) = alice.run("alice/face", input={"prompt": "a portrait", **FAST}, wait=1)
    assert isinstance(output, FileOutput) and output.read()


def test_unknown_inputs_are_ignored_with_a_log_line(server: Server, version: str) -> None:
    alice = server.client("alice")
    prediction = alice.predictions.create(
        version=version, input={"prompt": "a portrait", "go_fast": True, "megapixels": "1", **FAST}, wait=True
    )
    wait_final(prediction)
    assert prediction.status == "succeeded", prediction.error
    assert (
        "Ignored unknown input: go_fast" in prediction.logs and "Ignored unknown input: megapixels" in prediction.logs
    )
    assert prediction.input["go_fast"] is True  # the input is answered as it was sent
    assert prediction.metrics["predict_time"] > 0
    assert prediction.model == "alice/face" and prediction.version == version


def test_create_without_wait_then_poll(server: Server, version: str) -> None:
    alice = server.client("alice")
    prediction = alice.predictions.create(
        version=version, input={"prompt": "a portrait", "output_format": "webp", **FAST}
    )
    assert prediction.status == "starting" and prediction.output is None
    assert prediction.urls["get"].endswith(f"/replicate/v1/predictions/{prediction.id}")
    wait_final(prediction)
    assert prediction.status == "succeeded" and prediction.completed_at
    (url,) = prediction.output  # without a wait, outputs are URLs of the native API (with the key)
    assert url.startswith(f"{server.url}/v1/generations/")
    with server.http("alice") as http:
        image = http.get(url)
    assert image.status_code == 200 and Image.open(io.BytesIO(image.content)).format == "WEBP"
    assert prediction.id in [p.id for p in alice.predictions.list()]

    # The model's own route runs its latest version.
    on_model = alice.models.predictions.create(model="alice/face", input={"prompt": "a portrait", **FAST})
    assert on_model.version == version and on_model.model == "alice/face"


def test_cancel(server: Server, version: str) -> None:
    alice = server.client("alice")
    prediction = alice.predictions.create(version=version, input={"prompt": "a portrait", "num_outputs": 4, **FAST})
    prediction.cancel()
    assert prediction.status == "canceled" and prediction.completed_at
    assert alice.predictions.get(prediction.id).status == "canceled"
    assert alice.predictions.cancel(prediction.id).status == "canceled"  # again: answered as it is


@pytest.mark.usefixtures("version")
def test_a_script_runs_unchanged_with_the_environment(server: Server) -> None:
    """The module-level API, configured only by REPLICATE_BASE_URL and REPLICATE_API_TOKEN."""
    script = textwrap.dedent(
        """
        import io, replicate
        from PIL import Image
        output = replicate.run("alice/face", input={"prompt": "a portrait", "num_inference_steps": 2})
        print(Image.open(io.BytesIO(output[0].read())).format)
        """
    )
    env = server.env | {"REPLICATE_BASE_URL": server.base_url, "REPLICATE_API_TOKEN": server.keys["alice"]}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "WEBP"
