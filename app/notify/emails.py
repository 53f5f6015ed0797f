"""The emails a person gets when their training ends: success (with a sample) or failure.

Stdlib `email` only, so the Celery worker can build them without pulling in the web stack.
"""

from __future__ import annotations

import html
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any

from app.core.mail import build_message

_WRAP = (
    '<div style="font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:560px;'
    'margin:0 auto;padding:16px;color:#1f2328;line-height:1.5">{body}</div>'
)
_BUTTON = (
    '<p style="margin:24px 0"><a href="{href}" style="background:#1f6feb;color:#ffffff;padding:10px 18px;'
    'border-radius:6px;text-decoration:none;display:inline-block">{label}</a></p>'
)
_CODE = "font-family:SFMono-Regular,Consolas,Menlo,monospace;background:#f6f8fa;border-radius:6px"


def training_succeeded_email(
    *,
    to: str,
    message_id: str,
    model_name: str,
    trigger_word: str,
    quality: dict[str, Any] | None,
    example_prompt: str,
    link: str,
    sample_jpeg: bytes | None,
    notice: str | None = None,
) -> EmailMessage:
    """Tell the owner their model is ready and, above all, which trigger word makes it work."""
    quality = quality or {}
    score, verdict, advice = quality.get("score"), quality.get("verdict"), quality.get("advice")
    name = _one_line(model_name)
    rating = ", ".join(p for p in (verdict, f"{score}/100" if score is not None else None) if p)
    subject = f'Your model "{name}" is ready' + (f" ({rating})" if rating else "")

    text_lines = [
        f'Your model "{model_name}" has finished training.',
        "",
        f"Trigger word: {trigger_word}",
        "Put it in your prompt to get this face.",
    ]
    if rating:
        text_lines += ["", f"Quality: {rating}"]
    if advice:
        text_lines.append(str(advice))
    if notice:
        text_lines += ["", f"Note: {notice}"]
    text_lines += ["", "Try a prompt like:", f"  {example_prompt}", "", f"Open your model: {link}", ""]

    cid = make_msgid(domain="lookalike") if sample_jpeg else None
    e = html.escape
    parts = [
        f'<h1 style="font-size:20px;margin:0 0 12px">Your model &ldquo;{e(model_name)}&rdquo; is ready</h1>',
        '<p style="margin:0 0 4px">Trigger word &mdash; put it in your prompt to get this face:</p>',
        f'<p style="margin:0 0 16px;font-size:22px;font-weight:bold;padding:8px 12px;{_CODE}">{e(trigger_word)}</p>',
    ]
    if rating:
        parts.append(f'<p style="margin:0 0 4px"><strong>Quality: {e(rating)}</strong></p>')
    if advice:
        parts.append(f'<p style="margin:0 0 16px">{e(str(advice))}</p>')
    if notice:
        parts.append(
            '<p style="margin:0 0 16px;padding:8px 12px;background:#fff8c5;border-left:4px solid #d4a72c">'
            f"{e(notice)}</p>"
        )
    if cid:
        parts.append(
            f'<img src="cid:{cid[1:-1]}" alt="A sample image generated with {e(model_name, quote=True)}" '
            'width="512" style="display:block;max-width:100%;height:auto;border-radius:6px;margin:0 0 16px">'
        )
    parts += [
        '<p style="margin:0 0 4px">Try a prompt like:</p>',
        f'<p style="margin:0 0 16px;padding:8px 12px;{_CODE}">{e(example_prompt)}</p>',
        _BUTTON.format(href=e(link, quote=True), label="Open your model"),
        f'<p style="font-size:12px;color:#656d76">Or paste this link: {e(link)}</p>',
    ]

    message = _message(to=to, message_id=message_id, subject=subject, text="\n".join(text_lines), parts=parts)
    if sample_jpeg and cid:
        html_part = message.get_body(preferencelist=("html",))
        assert html_part is not None  # we just added it
        html_part.add_related(sample_jpeg, maintype="image", subtype="jpeg", cid=cid, filename="sample.jpg")
    return message


def training_failed_email(
    *, to: str, message_id: str, training_name: str, error: dict[str, Any], link: str
) -> EmailMessage:
    """Tell the owner what went wrong and what they can do about it, not just that it failed."""
    code, what = error.get("code") or "unknown", error.get("message") or "The training stopped unexpectedly."
    hint = error.get("hint") or "Try again; if it keeps failing, pass the error code below on to support."
    subject = f'Training "{_one_line(training_name)}" failed'
    text = "\n".join(
        [
            f'Your training "{training_name}" failed.',
            "",
            f"What went wrong: {what}",
            f"What to do: {hint}",
            "",
            f"Error code: {code}",
            f"Details: {link}",
            "",
        ]
    )
    e = html.escape
    parts = [
        f'<h1 style="font-size:20px;margin:0 0 12px">Training &ldquo;{e(training_name)}&rdquo; failed</h1>',
        f'<p style="margin:0 0 12px"><strong>What went wrong:</strong> {e(str(what))}</p>',
        f'<p style="margin:0 0 12px"><strong>What to do:</strong> {e(str(hint))}</p>',
        f'<p style="margin:0 0 12px;font-size:13px;color:#656d76">Error code: '
        f'<code style="{_CODE};padding:2px 6px">{e(str(code))}</code></p>',
        _BUTTON.format(href=e(link, quote=True), label="See the training"),
        f'<p style="font-size:12px;color:#656d76">Or paste this link: {e(link)}</p>',
    ]
    return _message(to=to, message_id=message_id, subject=subject, text=text, parts=parts)


def _message(*, to: str, message_id: str, subject: str, text: str, parts: list[str]) -> EmailMessage:
    """Reuse the shared builder, but with the caller's Message-ID so a resend can be recognised as one."""
    message = build_message(to=to, subject=subject, text=text, html=_WRAP.format(body="".join(parts)))
    del message["Message-ID"]
    message["Message-ID"] = message_id
    return message


def _one_line(value: str) -> str:
    """Headers must not contain line breaks; a name pasted with one should not break the email."""
    return " ".join(value.split())
