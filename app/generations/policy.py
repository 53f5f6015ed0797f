"""The prompt policy, checked before any GPU work: these LoRAs depict real people.

The default refuses sexual content and anything that depicts a minor. Operators add deny terms
(matched as whole words or phrases, any case, with common separators and leetspeak folded) and
regular expressions (`LOOKALIKE_PROMPT_DENY_TERMS`, `LOOKALIKE_PROMPT_DENY_PATTERNS`, JSON lists), or
turn the defaults off (`LOOKALIKE_PROMPT_POLICY_DEFAULTS=false`) where another filter stands in front.
A word list is a floor, not a classifier: it stops the plain requests, and says why.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from app.core.errors import Unprocessable
from app.core.settings import Settings

SEXUAL = """
nude nudes nudity naked nsfw nipple nipples topless bottomless sex sexual sexy porn porno pornographic pornography
erotic erotica explicit xxx genitals genital penis vagina vulva breasts boobs tits butt-naked undressed undressing
lingerie orgasm masturbating masturbation fetish bdsm hentai onlyfans strip-tease striptease stripper intercourse
cum cumshot blowjob handjob aroused arousal seductive seduction sensual lewd
""".split()

MINORS = """
child children kid kids minor minors underage under-age teen teens teenager teenagers teenage preteen pre-teen
boy boys girl girls baby babies toddler toddlers infant infants newborn schoolgirl schoolboy school-girl school-boy
loli lolita shota youngster juvenile adolescent adolescents kindergarten elementary-school middle-school
""".split()

# Ages under 18 written as numbers: "12 years old", "12-year-old", "12yo", "age 12", "aged 9".
_AGE = r"(?:1[0-7]|[0-9])"
AGE_PATTERNS = (
    rf"\b{_AGE}\s*(?:-|\s)?\s*(?:years?|yrs?|y\.?o\.?)\b",
    rf"\b{_AGE}\s*-?\s*year\s*-?\s*old\b",
    rf"\bage[ds]?\s*{_AGE}\b",
)

_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"})


@dataclass(frozen=True)
class Rule:
    category: str
    pattern: re.Pattern[str]
    what: str  # what the user is told was matched


@dataclass(frozen=True)
class Policy:
    rules: tuple[Rule, ...]

    def refusal(self, text: str) -> Rule | None:
        """The first rule `text` breaks, or None."""
        variants = (text, *_folds(text))
        for rule in self.rules:
            if any(rule.pattern.search(v) for v in variants):
                return rule
        return None


def _folds(text: str) -> tuple[str, str]:
    """Lower case with leetspeak digits as letters, and separators (_ . * ~ +) as spaces or dropped
    ("top_less" is "top less" and "topless")."""
    lowered = text.lower().translate(_LEET)
    return re.sub(r"[_.*~+]+", " ", lowered), re.sub(r"[_.*~+]+", "", lowered)


def _term(word: str) -> re.Pattern[str]:
    # "school-girl" also matches "school girl" and "schoolgirl".
    parts = [re.escape(p) for p in re.split(r"[-\s]+", word.strip().lower()) if p]
    return re.compile(r"\b" + r"[-\s]?".join(parts) + r"\b", re.IGNORECASE)


def _rules(category: str, terms: Iterable[str]) -> list[Rule]:
    return [Rule(category, _term(t), t) for t in terms if t.strip()]


@lru_cache(maxsize=8)
def _build(defaults: bool, terms: tuple[str, ...], patterns: tuple[str, ...]) -> Policy:
    rules: list[Rule] = []
    if defaults:
        rules += _rules("sexual", SEXUAL)
        rules += _rules("minors", MINORS)
        rules += [Rule("minors", re.compile(p, re.IGNORECASE), "an age under 18") for p in AGE_PATTERNS]
    rules += _rules("operator", terms)
    rules += [Rule("operator", re.compile(p, re.IGNORECASE), "a term this service refuses") for p in patterns]
    return Policy(tuple(rules))


def policy_for(settings: Settings) -> Policy:
    """The policy the settings describe (built once per distinct setting)."""
    return _build(
        settings.prompt_policy_defaults, tuple(settings.prompt_deny_terms), tuple(settings.prompt_deny_patterns)
    )


REASONS = {
    "sexual": "sexual content",
    "minors": "minors",
    "operator": "content this service's operator does not allow",
}


def check_prompts(texts: Iterable[str], settings: Settings) -> None:
    """Raise a 422 naming the first refused term; nothing is queued and no GPU is used."""
    policy = policy_for(settings)
    for text in texts:
        rule = policy.refusal(text)
        if rule is not None:
            raise Unprocessable(
                f"The prompt was refused: it asks for {REASONS[rule.category]} ({rule.what!r}). "
                "These models depict real people, so this service does not generate that.",
                code="prompt_refused",
                hint="Rephrase the prompt without it. Sexual content and images of minors are never generated.",
                details={"category": rule.category},
            )
