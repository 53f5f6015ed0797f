"""`GET /v1/subjects/{id}/report`: is this set of photos ready to train, and what would make it better.

Built from the photo rows alone (the subject review has already judged them), so it costs
one query however the photos got there.
"""

from __future__ import annotations

from collections import Counter

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.settings import Settings
from app.db import Photo, PhotoStatus, Subject
from app.photos.reasons import CATALOGUE, REJECTED, WARNING
from app.subjects.schemas import Advice, SubjectReport

SHOTS = ("close_up", "half_body", "full_body")
POSES = ("frontal", "three_quarter", "profile")
RECOMMENDED = (15, 30)
DIM, BRIGHT = 0.35, 0.65  # face brightness bounds of "normal" light
FAILED_NAMES = 5  # failed photos named in the advice


def _light(brightness: float | None) -> str:
    if brightness is None:
        return "normal"
    return "dim" if brightness < DIM else "bright" if brightness > BRIGHT else "normal"


def build_report(session: Session, *, subject: Subject, settings: Settings) -> SubjectReport:
    """The dataset verdict for one subject."""
    columns = (
        Photo.filename,
        Photo.status,
        Photo.verdict,
        Photo.reasons,
        Photo.excluded,
        Photo.selected,
        Photo.shot,
        Photo.pose,
        Photo.brightness,
        Photo.identity_distance,
    )
    rows = session.execute(select(*columns).where(Photo.subject_id == subject.id)).all()

    status = Counter(r.status for r in rows)
    analyzed = [r for r in rows if r.status == PhotoStatus.analyzed]
    verdicts = Counter(r.verdict for r in analyzed)
    usable = [r for r in analyzed if r.verdict != REJECTED and not r.excluded]
    rejected_by: Counter[str] = Counter()
    warned_by: Counter[str] = Counter()
    for r in analyzed:
        for item in r.reasons or []:
            severity = CATALOGUE.get(item.get("code"), (None,))[0]
            if severity == REJECTED:
                rejected_by[item["code"]] += 1
            elif severity == WARNING:
                warned_by[item["code"]] += 1
    by_shot = {s: sum(1 for r in usable if r.shot == s) for s in SHOTS}
    by_pose = {p: sum(1 for r in usable if r.pose == p) for p in POSES}
    by_light = Counter(_light(r.brightness) for r in usable)
    lighting = {k: by_light.get(k, 0) for k in ("dim", "normal", "bright")}
    distances = sorted(r.identity_distance for r in analyzed if r.identity_distance is not None)
    matching = [d for d in distances if d < settings.identity_threshold]

    pending = status.get(PhotoStatus.pending, 0)
    problems = _problems(
        pending=pending,
        usable=len(usable),
        minimum=settings.min_training_photos,
        with_face=len(distances),
        matching=len(matching),
        rejected_by=rejected_by,
    )
    advice = _advice(len(usable), by_shot, by_pose, lighting, warned_by, rejected_by)
    failed = [r.filename for r in rows if r.status == PhotoStatus.failed]
    if failed:
        more = len(failed) - FAILED_NAMES
        shown = ", ".join(failed[:FAILED_NAMES]) + (f" and {more} more" if more > 0 else "")
        advice.insert(
            0,
            Advice(
                code="analysis_failed",
                message=f"{len(failed)} photo(s) could not be analysed and are not used: {shown}. "
                "Uploading them again (or another copy of them) may help; each photo's `error` says what went wrong.",
            ),
        )
    return SubjectReport(
        subject_id=subject.id,
        reviewed_at=subject.reviewed_at,
        ready_to_train=not problems,
        photos={
            "total": len(rows),
            "pending": pending,
            "failed": status.get(PhotoStatus.failed, 0),
            "analyzed": len(analyzed),
            "accepted": verdicts.get("accepted", 0),
            "warning": verdicts.get("warning", 0),
            "rejected": verdicts.get(REJECTED, 0),
            "excluded": sum(1 for r in rows if r.excluded),
            "usable": len(usable),
            "selected": sum(1 for r in rows if r.selected),
        },
        min_photos=settings.min_training_photos,
        max_photos=settings.max_training_photos,
        recommended_photos=list(RECOMMENDED),
        by_shot=by_shot,
        by_pose=by_pose,
        by_lighting=lighting,
        rejected_by_reason=dict(rejected_by.most_common()),
        warnings_by_reason=dict(warned_by.most_common()),
        identity={
            "threshold": settings.identity_threshold,
            "photos_with_face": len(distances),
            "matching": len(matching),
            "median_distance": round(matching[len(matching) // 2], 4) if matching else None,
        },
        problems=problems,
        advice=advice,
    )


def _problems(
    *, pending: int, usable: int, minimum: int, with_face: int, matching: int, rejected_by: Counter[str]
) -> list[Advice]:
    """What stops training now; empty means ready."""
    out: list[Advice] = []
    if pending:
        out.append(Advice(code="analysis_in_progress", message=f"{pending} photo(s) are still being analysed."))
    if usable < minimum:
        out.append(
            Advice(
                code="not_enough_photos",
                message=f"{usable} usable photo(s); training needs at least {minimum}. "
                f"Add {minimum - usable} more clear photos of the same person.",
            )
        )
    if with_face >= 2 and matching * 2 <= with_face:
        out.append(
            Advice(
                code="identity_unclear",
                message=f"Only {matching} of {with_face} faces match each other: we cannot tell who the subject "
                "is. Upload photos of one person only.",
            )
        )
    return out


def _advice(
    usable: int,
    by_shot: dict[str, int],
    by_pose: dict[str, int],
    lighting: dict[str, int],
    warned_by: Counter[str],
    rejected_by: Counter[str],
) -> list[Advice]:
    """Concrete steps towards the set the leading trainers recommend."""
    out: list[Advice] = []
    low, high = RECOMMENDED
    if usable < low:
        out.append(Advice(code="add_photos", message=f"Aim for {low}-{high} photos; you have {usable} usable."))
    elif usable > high:
        out.append(
            Advice(
                code="selection_made",
                message=f"You have {usable} usable photos; the best {high} are selected. "
                "Exclude any you do not want and the next best takes its place.",
            )
        )
    if usable:
        close = by_shot["close_up"]
        if close * 3 < usable:
            out.append(
                Advice(
                    code="add_close_ups",
                    message=f"Only {close} close-up(s): a third to a half of the photos should show the head "
                    "and shoulders, so the model learns the face in detail.",
                )
            )
        elif close * 2 > usable + 1:
            out.append(
                Advice(
                    code="add_body_shots",
                    message="Most photos are close-ups: add half-body and full-body photos so the model "
                    "can draw you beyond the face.",
                )
            )
        if by_shot["full_body"] == 0:
            out.append(Advice(code="add_full_body", message="Add a few full-body photos (head to feet)."))
        if by_pose["three_quarter"] + by_pose["profile"] == 0:
            out.append(
                Advice(
                    code="add_angles",
                    message="Every photo looks straight at the camera: add some three-quarter and profile views.",
                )
            )
        elif by_pose["frontal"] == 0:
            out.append(Advice(code="add_frontal", message="Add some photos looking straight at the camera."))
        if sum(1 for v in lighting.values() if v) < 2:
            out.append(
                Advice(
                    code="vary_lighting",
                    message="The photos share one kind of light: add some indoors, outdoors, in daylight and "
                    "in the evening.",
                )
            )
    if warned_by.get("black_and_white") or warned_by.get("overexposed"):
        out.append(
            Advice(
                code="no_filters",
                message="Use unedited colour photos: no filters, heavy retouching or black-and-white.",
            )
        )
    if rejected_by.get("different_person"):
        out.append(
            Advice(
                code="remove_other_people",
                message=f"{rejected_by['different_person']} photo(s) show someone else and are left out; "
                "delete them or replace them with photos of the subject.",
            )
        )
    if rejected_by.get("duplicate"):
        out.append(
            Advice(
                code="vary_photos",
                message=f"{rejected_by['duplicate']} photo(s) are copies of others. Different days, outfits, "
                "expressions and places teach the model more than many shots of one moment.",
            )
        )
    out.append(
        Advice(
            code="good_practice",
            message="Photos of you alone, with varied expressions, no sunglasses or hats hiding the face, "
            "and no other people train the best likeness.",
        )
    )
    return out
