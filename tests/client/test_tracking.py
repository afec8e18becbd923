"""The IoU/centre tracker: ids stay put, fast faces keep theirs, crossing faces do not swap, ended ids are never reused."""

from __future__ import annotations

import pytest

from ferclient.tracking import IouTracker, iou, shift


def test_iou_and_shift():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (20, 0, 10, 10)) == 0.0
    assert abs(iou((0, 0, 10, 10), (5, 0, 10, 10)) - 1 / 3) < 1e-9
    assert shift((0, 0, 10, 10), (10, 0, 10, 10)) == 1.0


def test_ids_are_stable_and_a_fast_face_keeps_its_id():
    t = IouTracker(max_missed=2)
    ids = []
    for k in range(6):
        tracks = t.update([(100 + 2 * k, 100, 50, 50), (400 - 40 * k, 300, 50, 50)])  # the second moves 0.8 box per frame
        ids.append([tr.id for tr in tracks])
    assert ids == [[1, 2]] * 6


def test_crossing_faces_keep_their_ids():
    t = IouTracker()
    a0, b0 = t.update([(0, 0, 40, 40), (100, 0, 40, 40)])
    # both move 25 px towards each other: each new box is nearer its own track than the other's
    b1, a1 = t.update([(75, 0, 40, 40), (25, 0, 40, 40)])
    assert (a1.id, b1.id) == (a0.id, b0.id)


def test_a_track_ends_after_max_missed_and_its_id_is_not_reused():
    t = IouTracker(max_missed=2)
    (first,) = t.update([(0, 0, 40, 40)])
    for _ in range(3):
        assert t.update([]) == []
    (again,) = t.update([(0, 0, 40, 40)])
    assert again.id != first.id and again.id == 2
    (kept,) = t.update([(2, 0, 40, 40)])
    assert kept.id == 2 and kept.hits == 2


def test_assignment_is_optimal_against_scipy():
    """The built-in Hungarian method finds the same total cost as SciPy's (a test-time reference only)."""
    import numpy as np
    from scipy.optimize import linear_sum_assignment

    from ferclient.tracking import assignment

    rng = np.random.default_rng(0)
    for _ in range(300):
        n, m = rng.integers(1, 8, size=2)
        cost = rng.random((n, m)) * rng.choice([1.0, 10.0])
        pairs = assignment(cost)
        rows, cols = linear_sum_assignment(cost)
        assert len(pairs) == min(n, m) == len({r for r, _ in pairs}) == len({c for _, c in pairs})
        assert abs(sum(cost[r, c] for r, c in pairs) - cost[rows, cols].sum()) < 1e-9
    assert assignment(np.zeros((0, 3))) == []


@pytest.mark.parametrize("speed", [10, 30, 40, 60])
def test_two_faces_crossing_fast_keep_their_ids(speed):
    """Two 80 px faces crossing, `speed` px per sampled frame (60: 300 px/s at 5 fps), listed in the detector's order
    (left to right), which says nothing of who is who. Matched against their last boxes they swapped ids at 30 and 60;
    against where each was heading they do not."""
    tracker, path = IouTracker(max_missed=5), {}
    for k in range(400 // speed + 1):
        boxes = sorted([(k * speed, 100, 80, 90), (400 - k * speed, 110, 80, 90)])
        for t, box in zip(tracker.update(boxes), boxes):
            path.setdefault(t.id, []).append(box[0])
    assert {i: (x[0], x[-1] > 200) for i, x in path.items()} == {1: (0, True), 2: (400, False)}


def test_a_face_that_stops_while_unseen_keeps_its_id():
    """A face moving 40 px a frame, missed for two frames, found where it stopped: predicting three moves ahead looked
    120 px past it and gave it a new id; the prediction goes two moves at most."""
    tracker = IouTracker(max_missed=5)
    ids = [tracker.update([(40 * k, 100, 80, 90)])[0].id for k in range(6)]
    tracker.update([])
    tracker.update([])
    assert ids == [1] * 6 and tracker.update([(200, 100, 80, 90)])[0].id == 1
