"""The whole journey in a browser, sign-in to a generated image, on a desktop and a phone-sized window."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.helpers import FIXTURES
from tests.web.conftest import Server, Tab

FACES = [FIXTURES / name for name in ("obama.jpg", "obama2.jpg", "obama3.jpg")]
TRAINING_S = 300_000  # ms: a tiny training with its quality assessment, on 2 busy cores


def sign_in(tab: Tab, key: str) -> None:
    page = tab.page
    page.goto("/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    key_box = page.get_by_label("API key")
    expect(key_box).to_be_focused()  # the keyboard starts where the user must type
    key_box.type(key)
    key_box.press("Enter")
    expect(page.get_by_role("heading", name="Your face models")).to_be_visible()


def journey(tab: Tab, server: Server) -> None:
    page = tab.page
    key = server.new_key()

    # 1. Sign in: a wrong key is refused in plain words, the right one lands on the start page.
    page.goto("/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    tab.check_page()
    tab.shot("sign-in")
    page.get_by_label("API key").fill("lk_not-a-real-key")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("This API key was not accepted.")
    tab.shot("sign-in-refused")
    page.get_by_label("API key").fill(key)
    page.get_by_label("API key").press("Enter")
    expect(page.get_by_role("heading", name="Your face models")).to_be_visible()
    expect(page.locator("#account-email")).to_contain_text("@example.com")
    assert page.evaluate("sessionStorage.getItem('lookalike.key')") == key
    tab.check_page()

    # 2. A subject needs consent: refused without the box ticked, created with it.
    page.get_by_label("Name").fill("Barack")
    page.get_by_label("Who is it?").select_option("man")
    page.get_by_role("button", name="Create subject").click()
    expect(page.get_by_role("alert")).to_contain_text("needs their consent")
    tab.shot("consent-missing")
    with server.http(key) as http:
        statement = http.get("/v1/consent").json()
    expect(page.locator("#consent-text")).to_have_text(statement["text"])  # the statement, from the API
    page.get_by_label("I agree to this statement.").check()
    page.get_by_role("button", name="Create subject").click()
    expect(page.get_by_role("heading", name="Barack", level=1)).to_be_visible()
    with server.http(key) as http:
        (subject,) = http.get("/v1/subjects").json()["items"]
    assert subject["consent_version"] == statement["version"]
    expect(page.locator("#steps [aria-current=step]")).to_have_text("Photos")
    tab.check_page()
    tab.shot("subject")

    # Photos through the file picker: one request, its progress bar, the photos analysed in the grid.
    page.locator("#photo-files").set_input_files([str(p) for p in FACES])
    uploads = page.get_by_role("list", name="Uploads")
    expect(uploads).to_contain_text("3 files: 3 photos added")
    expect(uploads.locator("progress")).to_have_attribute("value", "100")
    cards = page.get_by_role("list", name="Photos").locator("li.photo")
    expect(cards).to_have_count(3)
    ready = page.locator("#ready-state")
    expect(ready).to_contain_text("Ready to train.", timeout=120_000)
    expect(cards.locator(".badge")).to_have_text([re.compile("Good|Usable")] * 3)
    expect(page.locator("#steps [aria-current=step]")).to_have_text("Configure")
    for img in cards.locator("img").all():
        expect(img).to_have_js_property("complete", True)
        assert img.evaluate("i => i.naturalWidth") > 0
    tab.check_page()
    tab.shot("review-ready")

    # 3. Review: leaving a photo out drops below the minimum, and the page says what is missing.
    # By keyboard: the toggle keeps the focus when the grid is redrawn.
    first = cards.first
    first.get_by_role("button", name=re.compile("^Exclude")).focus()
    page.keyboard.press("Enter")
    include = first.get_by_role("button", name=re.compile("^Include"))
    expect(include).to_have_attribute("aria-pressed", "true")
    expect(include).to_be_focused()
    expect(first).to_contain_text("Left out by you")
    expect(ready).to_contain_text("Not ready to train yet.")
    expect(page.get_by_role("button", name="Start training")).to_be_disabled()
    tab.shot("review-excluded")
    first.get_by_role("button", name=re.compile("^Include")).click()
    expect(ready).to_contain_text("Ready to train.")

    # 4. Configure: the default is the tiny test model, full-size ones need a GPU, defaults are shown.
    base = page.get_by_label("Base model")
    expect(base).to_have_value("tiny-sd15")
    expect(base.locator("option[value=tiny-sd15]")).to_contain_text("test model, makes noise")
    expect(base.locator("option[value=sdxl]")).to_be_disabled()
    page.get_by_text("Advanced settings").click()
    expect(page.get_by_label("Steps")).to_have_attribute("placeholder", "20")
    expect(page.locator("#knob-steps-hint")).to_have_text("Default: 20")
    page.get_by_label("Steps").fill("300")  # enough steps for the event stream to carry several losses
    page.get_by_label("Model name").fill("Barack v1")
    tab.check_page()
    tab.shot("configure")
    page.get_by_role("button", name="Start training").click()

    # 5. Progress from the event stream: the stage, step/total and the loss chart, then ready.
    expect(page.get_by_role("heading", name=re.compile("Training .Barack v1."))).to_be_visible()
    expect(page.locator("#steps [aria-current=step]")).to_have_text("Train")
    expect(page.get_by_text(re.compile("tiny test model"))).to_be_visible()
    expect(page.locator("#progress-text")).to_contain_text(re.compile(r"Step \d+ of 300"), timeout=TRAINING_S)
    tab.check_page()
    tab.shot("training")
    expect(page.get_by_text("Your model is ready.")).to_be_visible(timeout=TRAINING_S)
    points = page.locator("#loss-chart polyline").get_attribute("points").split()
    assert len(points) >= 3, points  # the chart drew the losses the stream carried
    expect(page.locator("#progress-text")).to_contain_text("Step 300 of 300")
    expect(page.get_by_role("button", name="Cancel training")).to_be_hidden()
    tab.shot("trained")
    page.get_by_role("link", name="See your model").click()

    # 6. Ready: quality, trigger word, samples, downloads, generation and the sweep.
    expect(page.locator("#steps [aria-current=step]")).to_have_text("Ready")
    trigger = page.locator("#trigger-word-value").inner_text()
    assert re.fullmatch(r"[a-z][a-z0-9_-]+", trigger), trigger
    expect(page.locator("#quality-verdict")).to_have_text("failed")  # tiny models draw noise, and say so
    expect(page.locator("#quality-advice")).not_to_be_empty()
    expect(page.get_by_text(re.compile("tiny test model")).first).to_be_visible()
    page.get_by_role("button", name="Copy").click()
    expect(page.get_by_role("button", name="Copied")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == trigger
    sheet = page.locator("#contact-sheet")
    expect(sheet).to_have_js_property("complete", True)
    assert sheet.evaluate("i => i.naturalWidth") > 0
    expect(page.get_by_role("heading", name=re.compile(r"Step \d+ \(in the files\)"))).to_be_visible()

    for fmt in ("kohya", "diffusers"):
        with page.expect_download() as caught:
            page.locator(f"button[data-format={fmt}]").click()
        saved = Path(caught.value.path())
        assert saved.stat().st_size > 1000 and saved.read_bytes()[8:9] == b"{"  # a safetensors header
        assert caught.value.suggested_filename.endswith(".safetensors")

    prompt = page.get_by_label("Prompt")
    expect(prompt).to_have_value(re.compile(rf"photo of {trigger} man"))
    page.get_by_label("LoRA strength").fill("0.6")
    expect(page.locator("#gen-strength-value")).to_have_text("0.60")
    page.get_by_label("Number of images").fill("2")
    page.get_by_label("Seed (optional)").fill("7")
    page.get_by_label("Aspect ratio").select_option("3:2")
    tab.check_page()
    page.get_by_role("button", name="Generate").click()
    gallery = page.get_by_role("list", name="Generated images")
    expect(gallery.locator("img")).to_have_count(2, timeout=120_000)
    expect(gallery).to_contain_text("strength 0.60 · seed 7")
    expect(gallery).to_contain_text("seed 8")
    for img in gallery.locator("img").all():
        expect(img).to_have_js_property("complete", True)
        assert img.evaluate("i => i.naturalWidth > i.naturalHeight")  # 3:2
    tab.shot("generated")
    page.get_by_role("button", name=re.compile("Strength sweep")).click()
    expect(gallery.locator("img")).to_have_count(9, timeout=120_000)
    for scale in ("0.00", "0.60", "1.20"):
        expect(gallery).to_contain_text(f"strength {scale}")
    tab.check_page()
    tab.shot("sweep")

    # Deleting the model asks first, then the start page no longer lists it.
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Delete this model").click()
    expect(page.get_by_role("heading", name="Your face models")).to_be_visible()
    expect(page.get_by_role("region", name="Models")).to_contain_text("No models yet.")
    expect(page.get_by_role("region", name="Subjects")).to_contain_text("Barack")

    # Signing out forgets the key; the page shows sign-in again.
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('lookalike.key')") is None


@pytest.mark.slow
def test_the_whole_journey(tab: Tab, server: Server) -> None:
    journey(tab, server)


@pytest.mark.slow
@pytest.mark.phone
def test_the_whole_journey_at_phone_width(tab: Tab, server: Server) -> None:
    journey(tab, server)
