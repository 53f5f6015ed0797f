"""What goes wrong, shown in plain words: rejected files, a training already running, a cancel, a failure."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.helpers import FIXTURES, wait_for, zip_bytes
from tests.procs import ready_subject
from tests.web.conftest import Server, Tab
from tests.web.test_journey import sign_in


def test_an_upload_with_bad_files_shows_why_and_keeps_the_rest(tab: Tab, server: Server, tmp_path: Path) -> None:
    page, key = tab.page, server.new_key()
    with server.http(key) as http:
        subject = http.post("/v1/subjects", json={"name": "Ann", "class_word": "woman", "consent": True}).json()
    sign_in(tab, key)
    page.goto(f"/#/subjects/{subject['id']}")
    expect(page.get_by_role("heading", name="Ann", level=1)).to_be_visible()

    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"this is a text file with a .jpg name")
    files = [FIXTURES / "obama.jpg", broken, FIXTURES / "coffee.png"]
    page.locator("#photo-files").set_input_files([str(f) for f in files])
    uploads = page.get_by_role("list", name="Uploads")
    expect(uploads).to_contain_text("3 files: 2 photos added, 1 rejected")
    rejected = page.get_by_role("list", name="Rejected files")
    expect(rejected).to_contain_text(re.compile(r"broken\.jpg: .*not .*image", re.I))
    cards = page.get_by_role("list", name="Photos").locator("li.photo")
    expect(cards).to_have_count(2)
    # The cup has no face: analysed, marked not used, with the reason in words.
    cup = cards.filter(has_text="coffee.png")
    expect(cup.locator(".badge")).to_have_text("Not used", timeout=120_000)
    expect(cup).to_contain_text("could not find a face")
    expect(page.locator("#ready-state")).to_contain_text("Not ready to train yet.")
    expect(page.get_by_role("button", name="Start training")).to_be_disabled()
    tab.check_page()
    tab.shot("one-bad-file")

    # A request whose every file is refused (an archive that escapes its folder) answers an error, not a
    # 202: the page lists the file and its reason the same way, and the photos already there stay.
    evil = tmp_path / "evil.zip"
    evil.write_bytes(zip_bytes({"../../etc/passwd.jpg": (FIXTURES / "obama2.jpg").read_bytes()}))
    page.locator("#photo-files").set_input_files([str(evil)])
    expect(uploads.locator("li").first).to_contain_text("1 file: 0 photos added, 1 rejected")
    expect(page.get_by_role("list", name="Rejected files").first).to_contain_text("evil.zip")
    expect(cards).to_have_count(2)
    tab.shot("all-rejected")

    # Delete asks first; dismissed, nothing happens; accepted, the photo is gone from the page and the API.
    page.once("dialog", lambda d: d.dismiss())
    cup.get_by_role("button", name="Delete coffee.png").click()
    expect(cards).to_have_count(2)
    page.once("dialog", lambda d: d.accept())
    cup.get_by_role("button", name="Delete coffee.png").click()
    expect(cards).to_have_count(1)
    expect(page.get_by_role("button", name="Delete obama.jpg")).to_be_focused()  # the keyboard is not lost
    with server.http(key) as http:
        names = [p["filename"] for p in http.get(f"/v1/subjects/{subject['id']}/photos").json()["items"]]
    assert names == ["obama.jpg"]

    # The subject goes with its photos, after a question; the start page no longer lists it.
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Delete this subject").click()
    expect(page.get_by_role("region", name="Subjects")).to_contain_text("No subjects yet")
    with server.http(key) as http:
        assert http.get(f"/v1/subjects/{subject['id']}").status_code == 404


@pytest.mark.slow
def test_cancel_and_a_training_already_running(tab: Tab, server: Server) -> None:
    page, key = tab.page, server.new_key()
    with server.http(key) as http:
        subject_id = ready_subject(http)
    sign_in(tab, key)
    page.goto(f"/#/subjects/{subject_id}")
    expect(page.locator("#ready-state")).to_contain_text("Ready to train.")
    page.get_by_text("Advanced settings").click()
    page.get_by_label("Steps").fill("5000")  # long enough to cancel on the way
    page.get_by_role("button", name="Start training").click()
    progress = page.locator("#progress-text")
    expect(progress).to_contain_text(re.compile(r"Step [1-9]\d* of 5000"), timeout=180_000)
    expect(page.get_by_role("img", name=re.compile("Training loss by step"))).to_be_visible()
    training_url = page.url
    tab.shot("training")

    # A second training while this one runs: the API's 409, in words, with the way to the running one.
    page.goto(f"/#/subjects/{subject_id}")
    expect(page.locator("#ready-state")).to_contain_text("Ready to train.")
    page.get_by_role("button", name="Start training").click()
    expect(page.get_by_role("alert")).to_contain_text("is still")
    tab.shot("already-running")
    page.get_by_role("link", name="Open the training that is running").click()
    assert page.url == training_url

    # Cancel asks first; once confirmed the page and the API both say canceled.
    page.once("dialog", lambda d: d.dismiss())
    page.get_by_role("button", name="Cancel training").click()
    expect(page.get_by_role("button", name="Cancel training")).to_be_enabled()
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Cancel training").click()
    expect(page.get_by_text("This training was canceled.")).to_be_visible()
    expect(page.locator(".stages [aria-current=step]")).to_have_text("Canceled")
    expect(page.get_by_role("button", name="Cancel training")).to_be_hidden()
    training_id = training_url.rsplit("/", 1)[1]
    with server.http(key) as http:
        assert http.get(f"/v1/trainings/{training_id}").json()["status"] == "canceled"
    tab.shot("canceled")
    page.get_by_role("link", name="Back to the photos").click()
    expect(page.locator("#ready-state")).to_contain_text("Ready to train.")


@pytest.mark.slow
def test_a_failed_training_says_what_failed_and_what_to_do(tab: Tab, server: Server, tmp_path: Path) -> None:
    """A base model folder whose weights are missing: the worker fails the job, the page explains."""
    page, key = tab.page, server.new_key()
    broken = tmp_path / "no-weights"
    broken.mkdir()
    (broken / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    (broken / "lookalike_preset.json").write_text("{}")  # small enough for this CPU
    with server.http(key) as http:
        subject_id = ready_subject(http)
        response = http.post(
            "/v1/trainings", json={"subject_id": subject_id, "name": "broken", "base_model": str(broken)}
        )
        assert response.status_code == 202, response.text
        training_id = response.json()["id"]
    sign_in(tab, key)
    page.goto(f"/#/trainings/{training_id}")
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("The training failed:", timeout=180_000)
    expect(alert).to_contain_text("What to do:")
    expect(page.locator(".stages [aria-current=step]")).to_have_text("Failed")
    with server.http(key) as http:
        error = wait_for(lambda: http.get(f"/v1/trainings/{training_id}").json()["error"])
    expect(alert).to_contain_text(error["message"])
    tab.check_page()
    tab.shot("failed")
