"""The likeness scorer on real photos fed in as if they were samples: no mocks.

The subject is the obama set: trained on obama.jpg and obama2.jpg, obama3.jpg held out.
obama_partial_face*.jpg are crops of obama.jpg and obama_rgba.png is obama2.jpg re-encoded;
biden.jpg is another person, chelsea.png (a cat) and coffee.png have no human face.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from itertools import permutations

import numpy as np
import pytest
from PIL import Image, ImageOps

from tests.helpers import fixture_bytes
from worker.analysis import faces as face_lib
from worker.analysis.measures import phash
from worker.assessment.scorer import (
    CheckpointScore,
    References,
    SampleScore,
    TrainingRef,
    advice,
    choose,
    overall_score,
    score_image,
    similarity,
    verdict_for,
)

NAMES = (
    "obama.jpg",
    "obama2.jpg",
    "obama3.jpg",
    "obama_rgba.png",
    "obama_partial_face.jpg",
    "obama_partial_face2.jpg",
    "biden.jpg",
    "chelsea.png",
    "coffee.png",
)
TRAINED = ("obama.jpg", "obama2.jpg")
DISTINCT_OBAMA = ("obama.jpg", "obama2.jpg", "obama3.jpg")  # three different photos, not crops or re-encodes


@dataclass
class Subject:
    images: dict[str, Image.Image]
    encodings: dict[str, np.ndarray]  # of the photos with a face
    refs: References  # trained on TRAINED, obama3.jpg held out
    scores: dict[str, SampleScore]  # every fixture scored against `refs` as a sample

    def refs_for(self, trained: tuple[str, ...], held_out: tuple[str, ...]) -> References:
        return References(
            identity=np.mean([self.encodings[n] for n in trained], axis=0),
            training=[TrainingRef(n, self.encodings[n], phash(self.images[n])) for n in trained],
            held_out=[self.encodings[n] for n in held_out],
        )


@pytest.fixture(scope="module")
def subject() -> Subject:
    images = {name: Image.open(io.BytesIO(fixture_bytes(name))) for name in NAMES}
    encodings = {}
    for name, img in images.items():
        found = face_lib.find_faces(np.asarray(img.convert("RGB")))
        if found:
            encodings[name] = found[0].encoding
    subject = Subject(images, encodings, References(identity=None), {})
    subject.refs = subject.refs_for(TRAINED, ("obama3.jpg",))
    subject.scores = {name: score_image(img, subject.refs) for name, img in images.items()}
    return subject


def _checkpoint(subject: Subject, step: int, samples: list[str], others: list[str]) -> CheckpointScore:
    return CheckpointScore(step, [subject.scores[n] for n in samples], [subject.scores[n] for n in others])


# --- the likeness scale ---


@pytest.mark.parametrize(
    ("distance", "expected"),
    [(0.0, 100.0), (0.4, 100.0), (0.5, 80.0), (0.6, 60.0), (0.7, 40.0), (0.9, 0.0), (1.2, 0.0)],
)
def test_similarity_maps_distance_linearly(distance: float, expected: float) -> None:
    assert similarity(distance) == expected


def test_same_person_threshold_is_the_good_weak_boundary() -> None:
    assert verdict_for(similarity(0.6)) == "good"
    assert verdict_for(60) == "good"
    assert verdict_for(59.9) == "weak"
    assert verdict_for(80) == "excellent"
    assert verdict_for(29.9) == "failed"
    assert verdict_for(None) == "failed"


# --- single samples ---


@pytest.mark.parametrize(("trained", "held_out", "sample"), list(permutations(DISTINCT_OBAMA)))
def test_unseen_photo_of_the_subject_scores_high(subject: Subject, trained: str, held_out: str, sample: str) -> None:
    # Trained on one photo, held out a second, the third is a photo the model never saw.
    refs = subject.refs_for((trained,), (held_out,))
    score = score_image(subject.images[sample], refs)
    assert score.faces == 1
    assert score.similarity is not None and score.similarity >= 80
    assert verdict_for(score.similarity) in ("excellent", "good")
    assert not score.memorized and score.copy_of is None


def test_held_out_photo_is_the_reference(subject: Subject) -> None:
    score = subject.scores["obama3.jpg"]
    assert score.held_out_distance == 0.0 and score.similarity == 100.0
    assert not score.memorized


def test_another_person_scores_low(subject: Subject) -> None:
    score = subject.scores["biden.jpg"]
    assert score.faces == 1
    assert score.similarity is not None and score.similarity < 30
    assert verdict_for(score.similarity) == "failed"
    assert not score.memorized


@pytest.mark.parametrize("name", ["chelsea.png", "coffee.png"])
def test_no_face_no_score(subject: Subject, name: str) -> None:
    score = subject.scores[name]
    assert score.faces == 0
    assert score.similarity is None and score.identity_distance is None
    assert not score.memorized


def test_without_held_out_photos_the_identity_is_the_reference(subject: Subject) -> None:
    refs = subject.refs_for(TRAINED, ())
    score = score_image(subject.images["obama3.jpg"], refs)
    assert score.held_out_distance is None
    assert score.similarity == similarity(score.identity_distance)
    assert score.similarity >= 80


def test_pose_and_framing_are_measured(subject: Subject) -> None:
    assert subject.scores["obama.jpg"].pose == "frontal"
    assert subject.scores["obama2.jpg"].pose == "three_quarter"
    # obama3 is a full-length shot: its face is a much smaller share of the frame.
    assert subject.scores["obama3.jpg"].face_share < subject.scores["obama2.jpg"].face_share / 3


# --- memorization ---


@pytest.mark.parametrize("name", TRAINED)
def test_training_photo_is_a_copy(subject: Subject, name: str) -> None:
    score = subject.scores[name]
    assert score.memorized and score.copy_of == name
    assert score.similarity is not None  # still scored for likeness


@pytest.mark.parametrize(
    ("name", "change"),
    [
        ("obama.jpg", lambda img: img.resize((img.width // 2, img.height // 2))),
        ("obama.jpg", lambda img: img.resize((410, 512))),  # squashed to another aspect ratio
        ("obama.jpg", lambda img: img.crop((20, 25, img.width - 20, img.height - 25))),
        ("obama.jpg", lambda img: img.convert("L")),
        ("obama.jpg", ImageOps.mirror),  # by the encoding: its hash is ~32 bits away
        ("obama2.jpg", lambda img: img.resize((img.width // 2, img.height // 2))),
    ],
    ids=["half-size", "squashed", "trimmed", "grayscale", "mirrored", "obama2-half-size"],
)
def test_altered_training_photo_is_a_copy(
    subject: Subject, name: str, change: Callable[[Image.Image], Image.Image]
) -> None:
    score = score_image(change(subject.images[name]), subject.refs)
    assert score.memorized and score.copy_of == name


def test_reencoded_training_photo_is_a_copy(subject: Subject) -> None:
    score = subject.scores["obama_rgba.png"]  # obama2.jpg as an RGBA PNG
    assert score.memorized and score.copy_of == "obama2.jpg"


def test_mirrored_three_quarter_training_photo_is_a_copy(subject: Subject) -> None:
    # 0.23 from its original by encoding (over the limit): the mirrored hash catches it.
    score = score_image(ImageOps.mirror(subject.images["obama2.jpg"]), subject.refs)
    assert score.memorized and score.copy_of == "obama2.jpg"


# --- checkpoints ---


def test_subject_in_no_trigger_samples_is_bleed(subject: Subject) -> None:
    bleeding = _checkpoint(subject, 1000, ["obama3.jpg"], ["obama3.jpg"])
    assert bleeding.identity_bleed is not None and bleeding.identity_bleed >= 60
    assert bleeding.bleeds


def test_someone_else_in_no_trigger_samples_is_no_bleed(subject: Subject) -> None:
    clean = _checkpoint(subject, 1000, ["obama3.jpg"], ["biden.jpg"])
    assert clean.identity_bleed is not None and clean.identity_bleed < 30
    assert not clean.bleeds
    faceless = _checkpoint(subject, 1000, ["obama3.jpg"], ["chelsea.png", "coffee.png"])
    assert faceless.identity_bleed is None and not faceless.bleeds


def test_checkpoint_summary(subject: Subject) -> None:
    checkpoint = _checkpoint(subject, 500, ["obama.jpg", "obama3.jpg", "chelsea.png", "biden.jpg"], ["biden.jpg"])
    assert checkpoint.face_detection_rate == 0.75
    assert checkpoint.memorization == pytest.approx(1 / 3, abs=1e-3)
    assert checkpoint.memorizes  # one copy in three faces is over the 25% limit
    assert checkpoint.diversity is not None and checkpoint.diversity > 0.1
    assert set(checkpoint.summary()) == {
        "step",
        "identity_similarity",
        "face_detection_rate",
        "memorization",
        "identity_bleed",
        "diversity",
    }


def test_memorizing_checkpoint_is_passed_over_for_a_clean_one(subject: Subject) -> None:
    clean = _checkpoint(subject, 500, ["obama3.jpg", "biden.jpg"], ["biden.jpg"])
    memorizing = _checkpoint(subject, 1000, ["obama.jpg", "obama2.jpg"], ["biden.jpg"])
    assert not clean.memorizes and not clean.bleeds
    assert memorizing.memorizes and not memorizing.bleeds
    assert clean.identity_similarity < memorizing.identity_similarity
    chosen = choose([clean, memorizing])
    assert chosen is clean
    score = overall_score(chosen)
    assert score == clean.identity_similarity
    text = advice([clean, memorizing], chosen, score, tiny=False, trigger="ohwx")
    assert "Overfitting after step 1000: the step-500 weights were kept." in text


def test_bleeding_checkpoint_is_passed_over_for_a_clean_one(subject: Subject) -> None:
    clean = _checkpoint(subject, 500, ["obama3.jpg", "biden.jpg"], ["biden.jpg"])
    bleeding = _checkpoint(subject, 1000, ["obama3.jpg", "obama_partial_face.jpg"], ["obama_partial_face2.jpg"])
    assert bleeding.bleeds and not bleeding.memorizes
    assert clean.identity_similarity < bleeding.identity_similarity
    assert choose([clean, bleeding]) is clean
    assert choose([bleeding, clean]) is clean


def test_when_every_checkpoint_is_flawed_the_least_flawed_is_kept(subject: Subject) -> None:
    memorizing = _checkpoint(subject, 500, ["obama.jpg", "obama2.jpg"], ["biden.jpg"])
    both = _checkpoint(subject, 1000, ["obama.jpg", "obama2.jpg"], ["obama3.jpg"])
    assert memorizing.memorizes and both.memorizes and both.bleeds
    chosen = choose([memorizing, both])
    assert chosen is memorizing
    score = overall_score(chosen)
    assert score == pytest.approx(memorizing.identity_similarity - 20)
    assert "copy your training photos" in advice([memorizing, both], chosen, score, tiny=False, trigger="ohwx")


def test_clean_checkpoint_advice_names_the_trigger(subject: Subject) -> None:
    clean = _checkpoint(subject, 500, ["obama3.jpg", "obama_partial_face.jpg"], ["biden.jpg"])
    score = overall_score(clean)
    assert score == 100.0
    assert advice([clean], clean, score, tiny=False, trigger="ohwx") == (
        "Likeness is excellent: put ohwx in your prompts to get this face."
    )


def test_no_faces_anywhere_keeps_the_last_checkpoint(subject: Subject) -> None:
    checkpoints = [_checkpoint(subject, step, ["chelsea.png", "coffee.png"], ["coffee.png"]) for step in (250, 500)]
    chosen = choose(checkpoints)
    assert chosen is checkpoints[-1]
    assert chosen.face_detection_rate == 0.0 and chosen.identity_similarity is None
    assert overall_score(chosen) is None
    assert advice(checkpoints, chosen, None, tiny=True, trigger="ohwx").startswith("No faces in the samples")
    assert "No faces in the samples" in advice(checkpoints, chosen, None, tiny=False, trigger="ohwx")
