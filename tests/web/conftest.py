"""The web page in a real browser: Debian's Chromium driven by Playwright, against `lookalike serve`
on the embedded defaults and the tiny presets, as a user would run it.

Each test saves a screenshot per step under `artifacts/web/` (or LOOKALIKE_TEST_ARTIFACTS): look at them.
"""

from __future__ import annotations

import os
import re
import signal
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.procs import base_env, run, running, wait_ready

CHROMIUM = Path(os.environ.get("LOOKALIKE_TEST_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(os.environ.get("LOOKALIKE_TEST_ARTIFACTS", Path(__file__).parents[2] / "artifacts" / "web"))
PHONE = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2, "is_mobile": True, "has_touch": True}
DESKTOP = {"viewport": {"width": 1280, "height": 900}}


@dataclass
class Server:
    base: str
    env: dict[str, str]
    log: Path

    def new_key(self) -> str:
        return run(self.env, "users", "create", f"web-{uuid.uuid4().hex[:8]}@example.com").stdout.strip()

    def http(self, key: str) -> httpx.Client:
        return httpx.Client(base_url=self.base, headers={"Authorization": f"Bearer {key}"}, timeout=30)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`lookalike serve` with its own data folder; three photos are enough to train a tiny model, whose
    progress is written every 0.2 s (not 2 s) so that its short run still draws a loss curve."""
    data = tmp_path_factory.mktemp("web")
    env = base_env(data / "data", min_training_photos=3, training_progress_s=0.2)
    run(env, "migrate")
    base = f"http://127.0.0.1:{env['LOOKALIKE_PORT']}"
    with running(env, data / "serve.log", "serve") as proc:
        wait_ready(httpx.Client(base_url=base))
        yield Server(base, env, proc.log)
        assert proc.stop(signal.SIGINT, timeout=90) == 0, proc.output()[-3000:]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing: `make test` installs Debian's chromium where it may run apt-get"
        if os.environ.get("LOOKALIKE_REQUIRE_BROWSER"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=["--no-sandbox", "--disable-background-networking", "--disable-dev-shm-usage"],
        )
        yield chromium
        chromium.close()


@dataclass
class Tab:
    """A page, the errors it raised, and a screenshot per step of the test."""

    page: Any
    folder: Path
    errors: list[str] = field(default_factory=list)
    shots: int = 0

    def shot(self, name: str) -> None:
        self.shots += 1
        self.page.screenshot(path=str(self.folder / f"{self.shots:02d}-{name}.png"), full_page=True)

    def check_page(self) -> None:
        """What any view must hold: labelled controls, described images, nothing wider than the screen."""
        problems = self.page.evaluate(
            r"""() => {
              const out = [];
              const named = (el) => el.getAttribute('aria-label') || el.getAttribute('aria-labelledby');
              for (const el of document.querySelectorAll('input, select, textarea')) {
                if (el.type !== 'hidden' && !(el.labels && el.labels.length) && !named(el))
                  out.push('no label: ' + (el.id || el.outerHTML.slice(0, 60)));
              }
              for (const img of document.querySelectorAll('img'))
                if (!img.alt) out.push('no alt: ' + img.outerHTML.slice(0, 60));
              for (const b of document.querySelectorAll('button'))
                if (!b.textContent.trim() && !named(b)) out.push('unnamed button');
              // WCAG AA contrast for every visible text (disabled controls are exempt): 4.5:1, 3:1 when large.
              const rgb = (c) => (c.match(/[\d.]+/g) || []).map(Number);
              const lum = ([r, g, b]) => {
                const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
                return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
              };
              const background = (el) => {
                for (; el; el = el.parentElement) {
                  const c = rgb(getComputedStyle(el).backgroundColor);
                  if (c.length === 3 || c[3] > 0) return c;
                }
                return [255, 255, 255];
              };
              for (const el of document.querySelectorAll('body *')) {
                if (el.closest('svg, [disabled], .visually-hidden, noscript')) continue;
                const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
                const box = el.getBoundingClientRect();
                if (!own || !box.width || !box.height) continue;
                const style = getComputedStyle(el);
                const [a, b] = [lum(rgb(style.color)), lum(background(el))];
                const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
                const size = parseFloat(style.fontSize), bold = Number(style.fontWeight) >= 700;
                const needed = size >= 24 || (bold && size >= 18.66) ? 3 : 4.5;
                const text = el.textContent.trim().slice(0, 40);
                if (ratio < needed) out.push(`contrast ${ratio.toFixed(2)} < ${needed}: ${text}`);
              }
              if (document.documentElement.scrollWidth > window.innerWidth + 1)
                out.push('wider than the window: ' + document.documentElement.scrollWidth + ' > ' + window.innerWidth);
              return out;
            }"""
        )
        assert not problems, problems


@pytest.fixture
def tab(browser: Any, server: Server, request: pytest.FixtureRequest) -> Iterator[Tab]:
    """A fresh browser context (its own session storage); PHONE when the test is marked `phone`."""
    options = PHONE if request.node.get_closest_marker("phone") else DESKTOP
    context = browser.new_context(**options, base_url=server.base, accept_downloads=True)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.base)
    context.set_default_timeout(30_000)
    page = context.new_page()
    folder = ARTIFACTS / re.sub(r"[^\w.-]+", "_", request.node.name)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.png"):
        old.unlink()
    tab = Tab(page, folder)
    page.on("pageerror", lambda exc: tab.errors.append(f"uncaught: {exc}"))
    # A 4xx the test provokes shows as "Failed to load resource"; anything else (a CSP violation, a
    # console.error) is a fault of the page.
    page.on(
        "console",
        lambda msg: (
            tab.errors.append(f"console: {msg.text}")
            if msg.type == "error" and not msg.text.startswith("Failed to load resource")
            else None
        ),
    )
    try:
        yield tab
    finally:
        try:
            tab.shot("last")
        finally:
            context.close()
    assert not tab.errors, tab.errors
