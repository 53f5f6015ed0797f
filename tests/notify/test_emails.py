"""Training emails: both parts say the same useful things, the sample shows inline, resends keep their id."""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import Iterator
from email.message import EmailMessage

import pytest

from app.core.mail import DEFAULT_SENDER, send_email
from app.core.settings import Settings
from app.notify.emails import training_failed_email, training_succeeded_email
from tests.smtp import ScriptedInbox
from tests.smtp import smtp_server as serve_smtp

JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256)) * 4 + b"\xff\xd9"
ADVICE = "Add a few more close-ups with different lighting to sharpen the likeness."


def _success(**overrides) -> EmailMessage:
    kwargs = dict(
        to="ada@example.com",
        message_id="<notif-01HX@lookalike>",
        model_name="Ada portrait",
        trigger_word="zxqada",
        quality={"score": 74, "verdict": "good", "advice": ADVICE, "faces": 12},
        example_prompt="a photo of zxqada as an astronaut, studio lighting",
        link="https://lookalike.example/models/m1?tab=use&x=1",
        sample_jpeg=JPEG,
    )
    kwargs.update(overrides)
    return training_succeeded_email(**kwargs)


def _parse(message: EmailMessage) -> EmailMessage:
    return email.message_from_bytes(message.as_bytes(), policy=email.policy.default)


def _bodies(parsed: EmailMessage) -> tuple[str, str]:
    return parsed.get_body(("plain",)).get_content(), parsed.get_body(("html",)).get_content()


def test_success_email_headers_and_both_parts():
    parsed = _parse(_success(notice="Tiny test models make noise, not faces."))
    assert parsed["Subject"] == 'Your model "Ada portrait" is ready (good, 74/100)'
    assert parsed["Message-ID"] == "<notif-01HX@lookalike>"
    assert parsed["To"] == "ada@example.com" and parsed["From"] == DEFAULT_SENDER
    text, html = _bodies(parsed)
    for body in (text, html):
        assert "zxqada" in body and ADVICE in body and "74/100" in body
        assert "Tiny test models make noise" in body
        assert "a photo of zxqada as an astronaut" in body
    assert "https://lookalike.example/models/m1?tab=use&x=1" in text
    assert 'href="https://lookalike.example/models/m1?tab=use&amp;x=1"' in html
    assert "<" not in text and "&amp;" not in text  # readable on its own
    assert "max-width:560px" in html


def test_sample_is_an_inline_image_referenced_by_cid():
    parsed = _parse(_success())
    (image,) = [p for p in parsed.walk() if p.get_content_type() == "image/jpeg"]
    assert image.get_content() == JPEG
    _, html = _bodies(parsed)
    (src,) = re.findall(r'src="cid:([^"]+)"', html)
    assert image["Content-ID"] == f"<{src}>"
    assert re.search(r'<img [^>]*alt="[^"]+"', html)
    assert parsed.get_content_type() == "multipart/alternative"  # clients pick one part, image goes with html


def test_no_image_part_without_sample():
    parsed = _parse(_success(sample_jpeg=None))
    assert not [p for p in parsed.walk() if p.get_content_maintype() == "image"]
    assert "cid:" not in _bodies(parsed)[1]


def test_user_values_are_escaped_in_html():
    parsed = _parse(_success(model_name="<b>Ada & co</b>", trigger_word="<i>zx</i>"))
    text, html = _bodies(parsed)
    assert "&lt;b&gt;Ada &amp; co&lt;/b&gt;" in html and "<b>Ada" not in html
    assert "&lt;i&gt;zx&lt;/i&gt;" in html and "<i>" not in html
    assert "<b>Ada & co</b>" in text  # plain text shows the name as typed
    assert parsed["Subject"] == 'Your model "<b>Ada & co</b>" is ready (good, 74/100)'


def test_subject_without_score_or_quality():
    assert _parse(_success(quality={"score": None, "verdict": "weak", "advice": ADVICE}))["Subject"] == (
        'Your model "Ada portrait" is ready (weak)'
    )
    parsed = _parse(_success(quality=None, model_name="Ada\nportrait"))
    assert parsed["Subject"] == 'Your model "Ada portrait" is ready'
    assert "zxqada" in _bodies(parsed)[0]


def test_resend_keeps_the_message_id():
    assert _success()["Message-ID"] == _success()["Message-ID"] == "<notif-01HX@lookalike>"


def test_failure_email_says_what_happened_and_what_to_do():
    error = {
        "code": "no_faces",
        "message": "No face found in 9 of 10 photos.",
        "hint": "Upload clear, front-on photos.",
    }
    parsed = _parse(
        training_failed_email(
            to="bo@example.com",
            message_id="<notif-02@lookalike>",
            training_name="Bo & <friends>",
            error=error,
            link="https://lookalike.example/trainings/t1",
        )
    )
    assert parsed["Subject"] == 'Training "Bo & <friends>" failed'
    assert parsed["Message-ID"] == "<notif-02@lookalike>"
    text, html = _bodies(parsed)
    for body in (text, html):
        assert "No face found in 9 of 10 photos." in body and "Upload clear, front-on photos." in body
        assert "no_faces" in body and "https://lookalike.example/trainings/t1" in body
    assert "Bo &amp; &lt;friends&gt;" in html and "<" not in text.replace("<friends>", "")


def test_failure_email_without_hint_still_suggests_something():
    parsed = _parse(
        training_failed_email(
            to="bo@example.com",
            message_id="<notif-03@lookalike>",
            training_name="Bo",
            error={"code": "internal", "message": "The worker crashed.", "hint": None},
            link="https://lookalike.example/trainings/t2",
        )
    )
    text, html = _bodies(parsed)
    assert "What to do:" in text and "None" not in text and "None" not in html


@pytest.fixture
def smtp_server() -> Iterator[tuple[str, ScriptedInbox]]:
    with serve_smtp() as running:
        yield running


def test_success_email_survives_a_real_smtp_server(tmp_path, smtp_server):
    url, inbox = smtp_server
    send_email(_success(), Settings(data_dir=tmp_path, smtp_url=url))
    (content,) = inbox.accepted
    ((_, recipients),) = inbox.envelopes
    assert recipients == ["ada@example.com"]
    received = email.message_from_bytes(content, policy=email.policy.default)
    assert b"Content-Type: image/jpeg" in content
    (image,) = [p for p in received.walk() if p.get_content_type() == "image/jpeg"]
    assert image.get_content() == JPEG
    assert received["Message-ID"] == "<notif-01HX@lookalike>"
