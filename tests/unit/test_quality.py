"""Session logs, quality features, the logistic model, ROC-AUC and the review curve (no server)."""
from __future__ import annotations

import itertools
import json

import cv2
import numpy as np
import pytest

from clickmask.client import InvalidInputError, Session
from clickmask.quality.model import (
    DEFAULT_MODEL_PATH,
    FEATURES,
    QualityModel,
    feature_matrix,
    is_bad,
    rank_sessions,
    review_curve,
    roc_auc,
    session_features,
)
from clickmask.client.session_log import SCHEMA, UNCERTAIN_BAND, check_session, read_sessions, session_log, write_sessions
from tests.unit.test_client_session import FakeNetwork, make_image


def _click(x, y, positive=True, t=0.0, area=100, changed=100, iou_prev=0.0, conf=0.9, uncertain=40,
           components=1, crop=(0, 0, 320, 240), inside=True):
    return {"x": x, "y": y, "positive": positive, "timestamp": t, "latency_s": 0.02, "area": area,
            "changed_pixels": changed, "iou_with_previous": iou_prev, "mean_confidence": conf,
            "uncertain_pixels": uncertain, "components": components, "crop": list(crop), "in_final_mask": inside}


def _record(clicks, closed_at=None, final_iou=None, session_id="s", dataset="X"):
    meta = {"dataset": dataset}
    if final_iou is not None:
        meta["final_iou"] = final_iou
    return {"schema": SCHEMA, "session_id": session_id, "image_width": 320, "image_height": 240,
            "closed_at": closed_at, "meta": meta, "clicks": clicks}


# ------------------------------------------------------------------------------ session logs
def test_session_log_records_every_click_with_the_documented_fields():
    session = Session(FakeNetwork(), make_image())
    session.click(100, 100)
    session.click(160, 120)
    session.click(40, 40, positive=False)
    record = session.to_log(session_id="abc", meta={"annotator": "a1"}, closed_at=123.0)
    assert record["schema"] == SCHEMA and record["session_id"] == "abc"
    assert (record["image_width"], record["image_height"]) == (320, 240)
    assert record["closed_at"] == 123.0 and record["meta"] == {"annotator": "a1"}
    assert [c["positive"] for c in record["clicks"]] == [True, True, False]
    history = session.history
    for logged, rec in zip(record["clicks"], history):
        assert logged["area"] == rec.area and logged["changed_pixels"] == rec.changed_pixels
        assert logged["crop"] == list(rec.crop)
    # the fake network marks a disk around each positive click: both positives lie in the final
    # mask, the negative does not; disks of p=1 next to p=0.2 give no uncertain pixels ...
    assert [c["in_final_mask"] for c in record["clicks"]] == [True, True, False]
    count, _ = cv2.connectedComponents(session.mask.array.astype(np.uint8), connectivity=8)
    assert record["clicks"][-1]["components"] == count - 1 >= 1
    lo, hi = UNCERTAIN_BAND
    assert record["clicks"][-1]["uncertain_pixels"] == np.count_nonzero((session.mask.prob > lo)
                                                                        & (session.mask.prob < hi))
    json.loads(json.dumps(record))  # plain JSON
    check_session(record)


def test_session_log_drops_undone_clicks():
    session = Session(FakeNetwork(), make_image())
    session.click(100, 100)
    session.click(200, 100)
    session.undo()
    record = session_log(session)
    assert len(record["clicks"]) == 1 and record["clicks"][0]["x"] == 100.0


def test_sessions_round_trip_through_json_lines(tmp_path):
    records = [_record([_click(10, 20, t=1.0)], session_id=f"s{i}") for i in range(3)]
    path = tmp_path / "log.jsonl"
    assert write_sessions(path, records) == 3
    assert [r["session_id"] for r in read_sessions(path)] == ["s0", "s1", "s2"]
    assert len(path.read_text().splitlines()) == 3


@pytest.mark.parametrize("mutate, message", [
    (lambda r: r.update(schema="other/9"), "schema"),
    (lambda r: r.update(image_width=0), "image_width"),
    (lambda r: r["clicks"][0].pop("area"), "clicks[0].area"),
    (lambda r: r["clicks"][0].update(x=float("nan")), "clicks[0].x"),
    (lambda r: r["clicks"][0].update(positive=1), "clicks[0].positive"),
    (lambda r: r["clicks"][0].update(crop=[0, 0, 1]), "crop"),
    (lambda r: r.update(meta=[]), "meta"),
])
def test_bad_session_records_are_rejected_with_the_field_named(mutate, message):
    record = _record([_click(10, 20)])
    mutate(record)
    with pytest.raises(InvalidInputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        check_session(record)


def test_a_line_that_is_not_json_names_the_file_and_line(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text(json.dumps(_record([_click(1, 1)])) + "\n{not json\n")
    with pytest.raises(InvalidInputError, match=r"log.jsonl:2: not valid JSON"):
        list(read_sessions(path))


# ------------------------------------------------------------------------------ features
def test_features_follow_their_definitions():
    clicks = [
        _click(10, 10, t=100.0, area=400, changed=400, conf=0.80),
        _click(30, 10, t=102.0, area=500, changed=100, iou_prev=0.8, conf=0.85),
        _click(10, 30, positive=False, t=106.0, area=450, changed=50, iou_prev=0.9, conf=0.9, components=2,
               inside=True),  # a negative click the final mask still covers
    ]
    f = dict(zip(FEATURES, session_features(_record(clicks, closed_at=109.0))))
    assert f["log_clicks"] == pytest.approx(np.log1p(3))
    assert f["negative_fraction"] == pytest.approx(1 / 3)
    assert f["log_mean_interval"] == pytest.approx(np.log1p(3.0))  # intervals 2 s and 4 s
    assert f["interval_cv"] == pytest.approx(1.0 / 3.0)
    assert f["log_review_time"] == pytest.approx(np.log1p(3.0)) and f["has_review_time"] == 1.0
    assert f["log_final_change"] == pytest.approx(np.log1p(50 / 450))
    assert f["log_late_change"] == pytest.approx(np.log1p(100 / 450))
    assert f["final_iou_with_previous"] == 0.9 and f["mean_iou_with_previous"] == pytest.approx(0.85)
    assert f["confidence_gain"] == pytest.approx(0.1)
    assert f["log_components"] == pytest.approx(np.log1p(2))
    assert f["area_vs_max"] == pytest.approx(450 / 500)
    assert f["ignored_clicks"] == pytest.approx(1 / 3)
    assert f["log_area_fraction"] == pytest.approx(np.log(450 / (320 * 240)))
    assert f["zoomed"] == 0.0


def test_one_click_and_empty_sessions_have_finite_features():
    one = session_features(_record([_click(5, 5, t=1.0)]))
    empty = session_features(_record([]))
    assert np.isfinite(one).all() and np.isfinite(empty).all()
    assert dict(zip(FEATURES, one))["single_click"] == 1.0
    assert dict(zip(FEATURES, one))["has_review_time"] == 0.0


def test_labels_need_the_final_iou():
    assert is_bad(_record([], final_iou=0.7)) and not is_bad(_record([], final_iou=0.9))
    with pytest.raises(InvalidInputError, match="final_iou"):
        is_bad(_record([]))


# ------------------------------------------------------------------------------ metrics
def test_roc_auc_is_the_probability_a_bad_session_outscores_a_good_one():
    rng = np.random.default_rng(0)
    labels = rng.random(60) < 0.4
    scores = np.round(rng.random(60) + labels * 0.3, 1)  # rounding makes ties
    pairs = [(1.0 if a > b else 0.5 if a == b else 0.0)
             for a, b in itertools.product(scores[labels], scores[~labels])]
    assert roc_auc(labels, scores) == pytest.approx(np.mean(pairs))
    assert roc_auc([True, False], [0.9, 0.1]) == 1.0 and roc_auc([True, False], [0.1, 0.9]) == 0.0
    with pytest.raises(InvalidInputError, match="both"):
        roc_auc([True, True], [0.1, 0.2])


def test_review_curve_of_a_perfect_ranking_finds_every_bad_mask_first():
    labels = np.array([0, 1, 0, 1, 0, 0, 1, 0, 0, 0], bool)
    reviewed, found = review_curve(labels, labels.astype(float))
    assert reviewed[0] == 0 and found[0] == 0 and reviewed[-1] == 1 and found[-1] == 1
    assert found[3] == 1.0  # three bad masks, all in the first three reviewed
    reviewed, found = review_curve(labels, -labels.astype(float))
    assert found[7] == 0.0  # worst ranking: the seven good ones first


# ------------------------------------------------------------------------------ the model
def _separable(n=400, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(FEATURES)))
    y = (x[:, 0] - 0.8 * x[:, 5] + 0.3 * rng.normal(size=n)) > 0.3
    return x, y


def test_logistic_model_learns_a_separable_rule_and_generalises():
    x, y = _separable()
    model = QualityModel.fit(x, y, l2=1.0)
    xt, yt = _separable(seed=1)
    assert roc_auc(yt, model.score_matrix(xt)) > 0.95
    assert model.coef[0] > 0 and model.coef[5] < 0 and abs(model.coef[3]) < 0.3 * model.coef[0]


def test_model_round_trips_through_json(tmp_path):
    x, y = _separable()
    model = QualityModel.fit(x, y)
    model.save(tmp_path / "m.json")
    again = QualityModel.load(tmp_path / "m.json")
    np.testing.assert_allclose(again.score_matrix(x), model.score_matrix(x))


def test_model_refuses_one_class_and_foreign_files(tmp_path):
    x, _ = _separable()
    with pytest.raises(InvalidInputError, match="both good and bad"):
        QualityModel.fit(x, np.zeros(len(x)))
    (tmp_path / "m.json").write_text(json.dumps({"features": ["a", "b"]}))
    with pytest.raises(InvalidInputError, match="other features"):
        QualityModel.load(tmp_path / "m.json")
    with pytest.raises(InvalidInputError, match="no quality model"):
        QualityModel.load(tmp_path / "missing.json")


def test_shipped_model_loads_and_ranks_worst_first():
    assert DEFAULT_MODEL_PATH.is_file()
    model = QualityModel.load()
    assert model.info["trained_on"] and not set(model.info["trained_on"]) & {"GrabCut", "Berkeley"}
    records = [_record([_click(5, 5, t=float(i))] * (i + 1), session_id=f"s{i}") for i in range(4)]
    ranked = rank_sessions(records, model)
    scores = [s for s, _ in ranked]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
    assert sorted(r["session_id"] for _, r in ranked) == ["s0", "s1", "s2", "s3"]
    assert feature_matrix(records).shape == (4, len(FEATURES))
