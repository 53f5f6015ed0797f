"""Shot type and training crops, from the face box alone.

A person's body is about seven face heights tall, so the room left below the face says how
much of the body the photo can show: under ~2 face heights it is a close-up, past ~5.5 the
whole figure fits. The crop follows the same proportions: head and shoulders for a
close-up, head to waist for a half-body shot, the whole figure for a full-body shot.
"""

from __future__ import annotations

Box = tuple[int, int, int, int]  # left, top, right, bottom

# Training resolutions come in aspect-ratio buckets (width / height), as kohya and
# ai-toolkit use them; a crop takes the bucket closest to its natural shape.
BUCKETS: tuple[float, ...] = (1.0, 4 / 5, 3 / 4, 2 / 3, 5 / 4, 4 / 3, 3 / 2)
CLOSE_UP_BELOW = 2.2
FULL_BODY_BELOW = 5.5

# Context around the face for each shot, in face heights (above, below) and face widths (across).
_CONTEXT = {
    "close_up": (0.7, 1.6, 2.6),
    "half_body": (0.7, 4.0, 3.6),
    "full_body": (0.6, 7.6, 4.0),
}


def shot(face: Box, height: int) -> str:
    """close_up | half_body | full_body."""
    face_h = max(1, face[3] - face[1])
    below = (height - face[3]) / face_h
    if below < CLOSE_UP_BELOW:
        return "close_up"
    if below < FULL_BODY_BELOW:
        return "half_body"
    return "full_body"


def context_box(face: Box, kind: str) -> tuple[float, float, float, float]:
    """Where the person is likely to be, before fitting to the image and a bucket."""
    left, top, right, bottom = face
    face_w, face_h = right - left, bottom - top
    above, below, across = _CONTEXT[kind]
    cx = (left + right) / 2
    return (cx - across * face_w / 2, top - above * face_h, cx + across * face_w / 2, bottom + below * face_h)


def fit(want: tuple[float, float, float, float], aspect: float, width: int, height: int) -> Box:
    """The box of the given aspect that covers `want` as far as the image allows, inside the image."""
    wl, wt, wr, wb = want
    w, h = wr - wl, wb - wt
    if w / h < aspect:
        w = h * aspect
    else:
        h = w / aspect
    shrink = min(1.0, width / w, height / h)
    w, h = w * shrink, h * shrink
    # Keep the top of the wanted area (the head) in frame when the box had to shrink.
    cx = (wl + wr) / 2
    top = wt if shrink < 1.0 else (wt + wb) / 2 - h / 2
    left = min(max(0.0, cx - w / 2), width - w)
    top = min(max(0.0, top), height - h)
    return (round(left), round(top), round(left + w), round(top + h))


def bucket_for(want: tuple[float, float, float, float], width: int, height: int) -> float:
    """The bucket whose fitted box keeps most of the wanted area with the least padding."""
    wl, wt, wr, wb = want
    best, best_score = 1.0, -1.0
    want_area = max(1.0, (wr - wl) * (wb - wt))
    for aspect in BUCKETS:
        box = fit(want, aspect, width, height)
        inter_w = max(0.0, min(box[2], wr) - max(box[0], wl))
        inter_h = max(0.0, min(box[3], wb) - max(box[1], wt))
        kept = inter_w * inter_h / want_area
        extra = (box[2] - box[0]) * (box[3] - box[1]) / want_area
        score = kept - 0.25 * max(0.0, extra - 1.0)
        if score > best_score + 1e-6:
            best, best_score = aspect, score
    return best


def crop_boxes(face: Box, kind: str, width: int, height: int) -> tuple[Box, Box]:
    """(bucket crop, square crop) around the face for a shot of the given kind."""
    want = context_box(face, kind)
    return fit(want, bucket_for(want, width, height), width, height), fit(want, 1.0, width, height)
