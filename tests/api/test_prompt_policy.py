"""The prompt policy: what the default refuses, what it lets through, and the operator's own terms."""

from __future__ import annotations

import pytest

from app.core.errors import Unprocessable
from app.core.settings import Settings
from app.generations.policy import check_prompts


def _settings(**kw: object) -> Settings:
    return Settings(broker_url=None, **kw)


@pytest.mark.parametrize(
    "prompt",
    [
        "photo of sks man, nude on a beach",
        "sks woman NSFW",
        "sks woman, n4ked",
        "sks man, top_less",
        "sks man as a child",
        "sks woman as a 12-year-old",
        "sks man, 9 years old",
        "sks person at age 15",
        "sks woman as a school girl",
        "sks woman, schoolgirl outfit",
        "sks man with kids",
    ],
)
def test_default_policy_refuses_sexual_content_and_minors(prompt: str) -> None:
    with pytest.raises(Unprocessable) as caught:
        check_prompts([prompt], _settings())
    error = caught.value
    assert error.status == 422 and error.code == "prompt_refused"
    assert error.details["category"] in ("sexual", "minors")
    assert "real people" in error.message


@pytest.mark.parametrize(
    "prompt",
    [
        "photo of sks man, portrait, 85mm, studio lighting",
        "sks woman as an astronaut on the moon",
        "sks man at age 45, oil painting",
        "sks woman, 18 years old",
        "sks person in a kidney-shaped pool",  # "kid" only as a whole word
        "sks man, Sussex countryside",  # "sex" only as a whole word
        "sks person aged 70, grey hair",
        "sks man holding a 35mm camera",
    ],
)
def test_default_policy_lets_ordinary_portraits_through(prompt: str) -> None:
    check_prompts([prompt], _settings())


def test_operator_terms_and_patterns_and_defaults_off() -> None:
    strict = _settings(prompt_deny_terms=["politician"], prompt_deny_patterns=[r"\bbrand\s*x\b"])
    for prompt in ("sks man as a Politician", "sks man drinking Brand X"):
        with pytest.raises(Unprocessable) as caught:
            check_prompts([prompt], strict)
        assert caught.value.details["category"] == "operator"
    lax = _settings(prompt_policy_defaults=False)
    check_prompts(["sks man as a child"], lax)


def test_an_invalid_operator_pattern_is_a_settings_error() -> None:
    with pytest.raises(ValueError, match="not a regular expression"):
        _settings(prompt_deny_patterns=["(unclosed"])


def test_every_matrix_prompt_is_checked() -> None:
    with pytest.raises(Unprocessable):
        check_prompts(["sks man at age 30", "sks man at age 10"], _settings())
