"""The subject review on made-up encodings: identity, different people, selection."""

from __future__ import annotations

import uuid

import numpy as np

from app.photos.review import PhotoFacts, find_identity, review

RNG = np.random.default_rng(7)


def _person() -> np.ndarray:
    v = RNG.normal(size=128).astype(np.float32)
    return v / np.linalg.norm(v)


def _near(centre: np.ndarray, spread: float = 0.2) -> np.ndarray:
    """An encoding about `spread` away from `centre`."""
    noise = RNG.normal(size=128).astype(np.float32)
    return (centre + spread * noise / np.linalg.norm(noise)).astype(np.float32)


def _photo(*faces: np.ndarray, **fields) -> PhotoFacts:
    return PhotoFacts(id=uuid.uuid4(), encodings=np.stack(faces), **fields)


def _review(facts: list[PhotoFacts], limit: int = 30):
    return review(facts, threshold=0.6, limit=limit, names={f.id: f.id.hex[:6] for f in facts})


def test_largest_cluster_is_the_subject() -> None:
    a, b = _person(), _person()
    facts = [_photo(_near(b)) for _ in range(3)] + [_photo(_near(a)) for _ in range(5)]
    result = _review(facts)
    for fact in facts[:3]:
        outcome = result.outcomes[fact.id]
        assert outcome.verdict == "rejected"
        [r] = outcome.reasons
        assert r["code"] == "different_person" and r["distance"] >= 0.6
    for fact in facts[3:]:
        assert result.outcomes[fact.id].verdict == "accepted"
        assert result.outcomes[fact.id].identity_distance < 0.3
    assert np.linalg.norm(result.identity - a) < 0.15
    assert result.identity_share == 5 / 8


def test_a_tie_goes_to_the_first_photo() -> None:
    a, b = _person(), _person()
    first, second = _photo(_near(a)), _photo(_near(b))
    result = _review([first, second])
    assert result.outcomes[first.id].verdict == "accepted"
    assert result.outcomes[second.id].reasons[0]["code"] == "different_person"


def test_group_photo_matches_on_its_second_face() -> None:
    a, b = _person(), _person()
    facts = [_photo(_near(a)) for _ in range(3)]
    group = _photo(_near(b), _near(a), reasons=[{"code": "multiple_faces", "message": "two"}])
    result = _review([*facts, group])
    outcome = result.outcomes[group.id]
    assert outcome.encoding_index == 1
    assert outcome.verdict == "warning"
    assert [r["code"] for r in outcome.reasons] == ["multiple_faces"]


def test_a_stranger_in_a_group_does_not_vote_twice() -> None:
    """Faces are counted per photo: one photo of a crowd cannot outvote the subject."""
    a = _person()
    crowd_member = _person()
    facts = [
        _photo(_near(a)),
        _photo(_near(a)),
        _photo(crowd_member, _near(crowd_member, 0.05), _near(crowd_member, 0.05)),
    ]
    identity = find_identity(facts, 0.6)
    assert np.linalg.norm(identity - a) < np.linalg.norm(identity - crowd_member)


def test_selection_takes_the_best_and_mixes_shots() -> None:
    a = _person()
    shots = ["close_up"] * 30 + ["half_body"] * 10 + ["full_body"] * 10
    facts = [
        _photo(_near(a, 0.25), quality=0.9 if s == "close_up" else 0.8, shot=s, pose="frontal", brightness=0.5)
        for s in shots
    ]
    facts[0].excluded = True
    facts[1].reasons = [{"code": "too_blurry", "message": "blurry"}]
    result = _review(facts, limit=12)
    chosen = [f for f in facts if result.outcomes[f.id].selected]
    assert len(chosen) == 12
    assert facts[0] not in chosen and facts[1] not in chosen
    picked_shots = [f.shot for f in chosen]
    # Quality alone would pick 12 close-ups; the targets keep roughly 40/35/25.
    assert 3 <= picked_shots.count("close_up") <= 7
    assert picked_shots.count("half_body") >= 3 and picked_shots.count("full_body") >= 2


def test_all_usable_photos_are_selected_when_few() -> None:
    a = _person()
    facts = [_photo(_near(a), quality=0.5) for _ in range(6)]
    facts[2].excluded = True
    result = _review(facts)
    assert [result.outcomes[f.id].selected for f in facts] == [True, True, False, True, True, True]


def test_no_faces_no_identity() -> None:
    facts = [PhotoFacts(id=uuid.uuid4(), reasons=[{"code": "no_face", "message": "none"}])]
    result = _review(facts)
    assert result.identity is None
    assert result.outcomes[facts[0].id].verdict == "rejected"
