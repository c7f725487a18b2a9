"""DiG rewards: hand-computed cases, the batched scorer against a per-sample scipy reference, the fast text
path against the general parser, TRL's calling convention, and the never-raise property."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.optimize import linear_sum_assignment

from dig import rewards
from dig.rewards import (
    RewardConfig,
    answer_text,
    completion_text,
    format_reward,
    make_reward_funcs,
    make_total_reward,
    score_batch,
    score_completion,
)
from tinygg.boxes import BOX_PATTERN, box_iou, canonical, generalized_box_iou, parse_boxes, pixel_to_square

CFG = RewardConfig()
SIZE = (640, 480)  # padded square: side 640, y offset 80
GT_A = [0, 0, 320, 320]  # -> [0.000,0.125,0.500,0.625] in the padded square
TEXT_A = "[0.000,0.125,0.500,0.625]"


def test_doctests_pass() -> None:
    result = doctest.testmod(rewards)
    assert result.attempted >= 10 and result.failed == 0


# ---------------------------------------------------------------------------------------------- by hand


def test_perfect_single_box() -> None:
    s = score_completion(f"[{TEXT_A}]", [GT_A], SIZE, CFG)
    assert (s.format, s.precision, s.recall, s.f1, s.n_hit) == (1.0, 1.0, 1.0, 1.0, 1)
    assert s.iou == pytest.approx(1.0) and s.total == pytest.approx(3.0)


def test_duplicates_do_not_count_twice() -> None:
    s = score_completion(f"[{TEXT_A},{TEXT_A},{TEXT_A}]", [GT_A], SIZE, CFG)
    assert s.n_hit == 1 and s.n_pred == 3
    assert s.precision == pytest.approx(1 / 3) and s.recall == 1.0
    assert s.f1 == pytest.approx(2 * (1 / 3) / (1 / 3 + 1))  # 0.5
    assert s.iou == pytest.approx(1.0)  # mean over the one matched pair: duplicates neither add nor remove
    single = score_completion(f"[{TEXT_A}]", [GT_A], SIZE, CFG)
    assert s.total < single.total
    assert score_completion(f"[{TEXT_A},{TEXT_A}]", [GT_A], SIZE,
                            RewardConfig(iou_mode="max")).iou == pytest.approx(0.5)


def test_empty_prediction_with_differences_scores_format_only() -> None:
    s = score_completion("[]", [GT_A, [400, 100, 500, 200]], SIZE, CFG)
    assert (s.format, s.precision, s.recall, s.f1, s.iou, s.total) == (1.0, 0.0, 0.0, 0.0, 0.0, 1.0)


def test_empty_gt() -> None:
    assert score_completion("[]", [], SIZE, CFG).total == 3.0  # nothing to find, nothing found
    assert score_completion(" ```json\n[]\n``` ", [], SIZE, CFG).total == 3.0
    s = score_completion(f"[{TEXT_A}]", [], SIZE, CFG)  # a false alarm
    assert (s.format, s.precision, s.recall, s.f1, s.iou, s.total) == (1.0, 0.0, 0.0, 0.0, 0.0, 1.0)


def test_over_prediction_beyond_the_cap() -> None:
    cfg = RewardConfig(max_boxes=3)
    far = "[0.900,0.900,0.950,0.950]"
    s = score_completion(f"[{TEXT_A},{far},{far},{far}]", [GT_A], SIZE, cfg)
    assert s.format == 0.0  # 4 boxes > max_boxes
    assert s.n_pred == 4 and s.n_hit == 1 and s.precision == pytest.approx(0.25)  # every box counts in N
    late = score_completion(f"[{far},{far},{far},{TEXT_A}]", [GT_A], SIZE, cfg)
    assert late.n_hit == 0 and late.f1 == 0.0  # boxes past the cap are never matched
    assert len(late.pred_unit) == 3
    within = score_completion(f"[{TEXT_A},{far},{far}]", [GT_A], SIZE, cfg)
    assert within.format == 1.0 and within.precision == pytest.approx(1 / 3)


def test_swapped_corners_are_canonicalised() -> None:
    s = score_completion("[[0.500,0.625,0.000,0.125]]", [GT_A], SIZE, CFG)
    assert (s.format, s.f1, s.total) == (1.0, 1.0, pytest.approx(3.0))
    s = score_completion("[[0.5,0.125,0.0,0.625]]", [[320, 320, 0, 0]], SIZE, CFG)  # GT swapped too
    assert s.iou == pytest.approx(1.0)


@pytest.mark.parametrize("text", ["", "lorem ipsum", "[0.1, 0.2", "[[0.1,0.2,0.3]]", "{'box': 1}", "[[a,b,c,d]]",
                                  "\x00[]\x00", "```", "<think>[[0.000,0.125,0.500,0.625]]"])
def test_garbage_text(text: str) -> None:
    s = score_completion(text, [GT_A], SIZE, CFG)
    assert (s.format, s.f1, s.iou, s.total) == (0.0, 0.0, 0.0, 0.0)
    empty = score_completion(text, [], SIZE, CFG)  # no box against no difference: right, badly formatted
    assert (empty.format, empty.f1, empty.iou) == (0.0, 1.0, 1.0)


def test_iou_exactly_at_threshold_is_a_hit() -> None:
    # square 100x100 image: GT [0,0,2,1] px -> [0,0,.02,.01]; the prediction covers exactly half of it
    gt = [[0, 0, 2, 1]]
    iou = float(box_iou(np.array([[0, 0, 0.01, 0.01]]), np.array([[0, 0, 0.02, 0.01]]))[0, 0])
    assert iou < 0.5 and abs(iou - 0.5) < 1e-12  # float rounding puts it just below 0.5
    s = score_completion("[[0,0,0.01,0.01]]", gt, (100, 100), CFG)
    assert s.n_hit == 1 and s.f1 == 1.0 and s.iou == pytest.approx(0.5)
    assert score_completion("[[0,0,0.01,0.01]]", gt, (100, 100), RewardConfig(tau=0.51)).f1 == 0.0
    assert score_completion("[[0,0,0.0099,0.01]]", gt, (100, 100), CFG).n_hit == 0


def test_qwen_grid_on_a_non_square_image() -> None:
    cfg = RewardConfig(box_format="qwen1000")
    gt = [[64, 48, 320, 240]]  # on 640x480: x/640*1000, y/480*1000 = [100, 100, 500, 500]
    text = '[{"bbox_2d": [100, 100, 500, 500], "label": "red cube"}]'
    s = score_completion(text, gt, SIZE, cfg)
    assert (s.format, s.f1, s.total) == (1.0, 1.0, pytest.approx(3.0))
    assert score_completion("[[100,100,500,500]]", gt, SIZE, cfg).total == pytest.approx(3.0)
    # read as the padded-square frame (the frame-mismatch bug): out of range and no overlap
    wrong = score_completion("[[100,100,500,500]]", gt, SIZE, CFG)
    assert wrong.format == 0.0 and wrong.iou == 0.0
    # a relative-grid box that does not match the padded-square reading of the same numbers
    s = score_completion("[[0,0,1000,1000]]", [[0, 0, 640, 480]], SIZE, cfg)
    assert s.iou == pytest.approx(1.0)
    s = score_completion("[[0,0,1,1]]", [[0, 0, 640, 480]], SIZE, CFG)  # padded square: includes the pads
    assert s.iou == pytest.approx(480 / 640)


def test_pixel_frame() -> None:
    cfg = RewardConfig(box_format="pixel")
    s = score_completion("[[64, 48, 320, 240]]", [[64, 48, 320, 240]], SIZE, cfg)
    assert s.total == pytest.approx(3.0)
    assert score_completion("[[64, 48, 700, 240]]", [[64, 48, 320, 240]], SIZE, cfg).format == 0.0


def test_hungarian_beats_greedy() -> None:
    # p1 overlaps A best, but giving A to p2 and B to p1 makes two hits (100x100 square image)
    a, b = [10, 0, 20, 10], [12, 0, 22, 10]
    p1, p2 = [10.8, 0, 20.8, 10], [8, 0, 18, 10]
    ious = box_iou(np.array([p1, p2]) / 100, np.array([a, b]) / 100)
    assert ious[0, 0] > ious[0, 1] >= 0.5 and ious[1, 0] >= 0.5 > ious[1, 1]  # greedy takes p1-A, then misses
    text = "[" + ",".join("[" + ",".join(f"{v / 100:.3f}" for v in p) + "]" for p in (p1, p2)) + "]"
    s = score_completion(text, [a, b], (100, 100), CFG)
    assert s.n_hit == 2 and s.f1 == 1.0
    assert sorted(zip(s.pred_idx.tolist(), s.gt_idx.tolist())) == [(0, 1), (1, 0)]


def test_iou_modes_and_missed_boxes() -> None:
    gt = [GT_A, [400, 100, 500, 200]]
    matched = score_completion(f"[{TEXT_A}]", gt, SIZE, CFG)
    assert matched.iou == pytest.approx(1.0) and matched.recall == 0.5
    assert score_completion(f"[{TEXT_A}]", gt, SIZE, RewardConfig(iou_mode="gt")).iou == pytest.approx(0.5)
    assert list(matched.gt_hit) == [True, False] and matched.gt_iou[1] == 0.0


def test_thinking_and_fences() -> None:
    s = score_completion(f"<think>maybe [0.9,0.9,1.0,1.0]</think>\n[{TEXT_A}]", [GT_A], SIZE, CFG)
    assert s.n_pred == 1 and s.total == pytest.approx(3.0)
    s = score_completion(f"```json\n[{TEXT_A}]\n```", [GT_A], SIZE, CFG)
    assert s.format == 1.0 and s.total == pytest.approx(3.0)
    s = score_completion(f"The boxes: [{TEXT_A}]", [GT_A], SIZE, CFG)
    assert s.format == 0.0 and s.f1 == 1.0  # accuracy still counts the boxes it can read ...
    strict = RewardConfig(accuracy_requires_format=True)
    assert score_completion(f"The boxes: [{TEXT_A}]", [GT_A], SIZE, strict).total == 0.0  # ... unless told not to


@pytest.mark.parametrize("text,ok", [
    ("[]", 1.0), ("[ ]", 1.0), (f"[{TEXT_A}]", 1.0), (f"[ {TEXT_A} ,\n {TEXT_A} ]", 1.0),
    ("[[.5,+.1,0.6,0.2]]", 1.0), (TEXT_A, 0.0), (f"[5{TEXT_A}]", 0.0), (f"[{TEXT_A}5]", 0.0),
    (f"[{TEXT_A},,{TEXT_A}]", 0.0), ("[[0.1,0.2,0.3,1e999]]", 0.0), ("[[0.1,0.2,0.3,-0.1]]", 0.0),
    ('[{"bbox_2d": [0.1, 0.2, 0.3, 0.4]}]', 1.0), ('[{"bbox_2d": [0.1, 0.2, 0.3, 0.4], "bbox": [0,0,1,1]}]', 0.0),
    ('[{"label": "[0.1,0.1,0.2,0.2]", "bbox_2d": [0.1, 0.2, 0.3, 0.4]}]', 0.0), ("[[true,0,1,1]]", 0.0),
    ('[[0.1,0.2,0.3,0.4],"x"]', 0.0), ("[[1..2,0,1,1]]", 0.0), ("[[0.5,0.5,1,0.50.5]]", 0.0),
    ("[[0.5,0.5,1 1,0.5]]", 0.0), ("[[0.5,0.5,1,0.5 ]]", 1.0),
])
def test_format_definition(text: str, ok: float) -> None:
    assert format_reward(text, CFG, *SIZE) == ok
    s = score_completion(text, [GT_A], SIZE, CFG)
    assert s.format == ok  # the batched fast path agrees
    assert s.n_pred == len(parse_boxes(text))


def test_ablation_presets() -> None:
    text = f"[{TEXT_A},[0.9,0.9,0.95,0.95]]"
    full = score_completion(text, [GT_A], SIZE, RewardConfig.ablation("full"))
    for name, expected in [("format", full.format), ("format+iou", full.format + full.iou),
                           ("format+f1", full.format + full.f1)]:
        assert score_completion(text, [GT_A], SIZE, RewardConfig.ablation(name)).total == pytest.approx(expected)
    with pytest.raises(ValueError, match="unknown reward ablation"):
        RewardConfig.ablation("iou-only")


@pytest.mark.parametrize("kwargs,match", [({"box_format": "xyxy"}, "box_format"), ({"tau": 0}, "tau"),
                                          ({"max_boxes": 0}, "max_boxes"), ({"w_f1": -1}, "w_f1"),
                                          ({"iou_mode": "mean"}, "iou_mode")])
def test_config_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RewardConfig(**kwargs)


def test_bad_inputs_name_the_sample() -> None:
    with pytest.raises(ValueError, match=r"boxes\[1\]"):
        score_batch(["[]", "[]"], [[GT_A], [[1, 2, 3]]], [SIZE, SIZE], CFG)
    with pytest.raises(ValueError, match=r"image_size\[1\]"):
        score_batch(["[]", "[]"], [[], []], [SIZE, (0, 10)], CFG)
    with pytest.raises(ValueError, match="one GT list"):
        score_batch(["[]"], [], [SIZE], CFG)


def test_image_size_forms() -> None:
    for size in ({"width": 640, "height": 480}, [640, 480], np.array([640, 480])):
        assert score_completion(f"[{TEXT_A}]", [GT_A], size, CFG).total == pytest.approx(3.0)


# ---------------------------------------------------------------------------------------------- reference


def reference_score(text: str, gt_px: list, size: tuple[int, int], cfg: RewardConfig) -> dict:
    """The reward written the obvious way, one sample at a time with scipy's Hungarian solver."""
    answer = answer_text(completion_text(text))
    fmt = format_reward(answer, cfg, *size)
    boxes = parse_boxes(answer)
    n = len(boxes)
    w, h = size
    scale = {"norm": [1, 1, 1, 1], "qwen1000": [1000] * 4, "pixel": [w, h, w, h]}[cfg.box_format]
    pred = canonical(boxes[:cfg.max_boxes] / np.array(scale, dtype=float))
    gt = np.asarray(gt_px, dtype=float).reshape(-1, 4)
    gt = canonical(pixel_to_square(gt, w, h) if cfg.box_format == "norm" else gt / np.array([w, h, w, h]))
    m = len(gt)
    hits, iou_sum = 0, 0.0
    if len(pred) and m:
        cost = (cfg.lambda_l1 * np.abs(pred[:, None] - gt[None]).sum(-1)
                - cfg.lambda_giou * generalized_box_iou(pred, gt))
        rows, cols = linear_sum_assignment(cost)
        ious = box_iou(pred, gt)[rows, cols]
        hits, iou_sum = int((ious >= cfg.tau - 1e-9).sum()), float(ious.sum())
    p = hits / n if n else float(m == 0)
    r = hits / m if m else float(n == 0)
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    denom = {"matched": min(len(pred), m), "gt": m, "max": max(n, m)}[cfg.iou_mode]
    iou = iou_sum / denom if denom else float(n == 0 and m == 0)
    return {"format": fmt, "f1": f1, "iou": iou, "precision": p, "recall": r,
            "total": cfg.w_format * fmt + cfg.w_f1 * f1 + cfg.w_iou * iou}


def _random_case(rng: np.random.Generator, box_format: str) -> tuple[str, list, tuple[int, int]]:
    w, h = [(320, 240), (240, 320), (480, 480)][rng.integers(3)]
    m = int(rng.integers(0, 6))
    gt = []
    for _ in range(m):
        x1, y1 = rng.uniform(0, w - 30), rng.uniform(0, h - 30)
        gt.append([x1, y1, x1 + rng.uniform(5, 30), y1 + rng.uniform(5, 30)])
    side = max(w, h)
    boxes = []
    for _ in range(int(rng.integers(0, 13))):
        px = np.array(gt[rng.integers(m)]) + rng.normal(0, 4, 4) if m and rng.random() < 0.7 else \
            np.array([rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0, h)])
        if box_format == "norm":
            ox, oy = (side - w) // 2, (side - h) // 2
            vals = [(px[0] + ox) / side, (px[1] + oy) / side, (px[2] + ox) / side, (px[3] + oy) / side]
            boxes.append("[" + ",".join(f"{v:.3f}" for v in vals) + "]")
        elif box_format == "qwen1000":
            boxes.append(str([round(px[0] / w * 1000), round(px[1] / h * 1000), round(px[2] / w * 1000),
                              round(px[3] / h * 1000)]))
        else:
            boxes.append(str([round(float(v)) for v in px]))
    text = "[" + ",".join(boxes) + "]"
    if rng.random() < 0.2:
        text = "Here: " + text
    return text, gt, (w, h)


@pytest.mark.parametrize("box_format", ["norm", "qwen1000", "pixel"])
@pytest.mark.parametrize("iou_mode", ["matched", "gt", "max"])
def test_batch_matches_the_per_sample_reference(box_format: str, iou_mode: str) -> None:
    rng = np.random.default_rng(7)
    cfg = RewardConfig(box_format=box_format, iou_mode=iou_mode)
    cases = [_random_case(rng, box_format) for _ in range(300)]
    got = score_batch([c[0] for c in cases], [c[1] for c in cases], [c[2] for c in cases], cfg)
    assert got.n_pairs.max() >= 5  # the exhaustive search and the scipy fall-back are both exercised
    for i, (text, gt, size) in enumerate(cases):
        ref = reference_score(text, gt, size, cfg)
        for name, value in ref.items():
            assert getattr(got, name)[i] == pytest.approx(value, abs=1e-9), (name, text, gt, size)


def test_large_problems_use_scipy_and_agree() -> None:
    assert rewards._injections(4, 6) is None and rewards._injections(3, 6) is not None
    rng = np.random.default_rng(3)
    cfg = RewardConfig(max_boxes=10)
    gt = [[float(x), float(y), float(x) + 20, float(y) + 20] for x, y in rng.uniform(0, 200, (6, 2))]
    preds = [[(x + rng.normal(0, 2)) / 240, (y + 40 + rng.normal(0, 2)) / 320, (x + 20) / 240, (y + 60) / 320]
             for x, y, _, _ in gt[::-1]] + [[0.9, 0.9, 0.95, 0.95]] * 4
    text = "[" + ",".join("[" + ",".join(f"{v:.3f}" for v in p) + "]" for p in preds) + "]"
    ref = reference_score(text, gt, (240, 320), cfg)
    got = score_completion(text, gt, (240, 320), cfg)
    assert got.f1 == pytest.approx(ref["f1"]) and got.iou == pytest.approx(ref["iou"])


# ---------------------------------------------------------------------------------------------- text paths

_PIECES = st.sampled_from(["[", "]", ",", " ", "\n", "\t", "\u00a0", "0.5", "0.125", "1", "0", ".5", "5.", "+0.1",
                           "-0.2", "1e999", "1e-3", "2.5", "e", "..", "a", "\x00", "```json\n", "\n```", "<think>",
                           "</think>", "[0.1,0.2,0.3,0.4]", "[0.1, 0.2, 0.3, 0.4]", "[[0.1,0.2,0.3,0.4]]", '"', "{",
                           "}", ":", "bbox_2d", "nan", "[[0.2,0.3,0.6,0.9],[0.1,0.1,0.5,0.5]]", "1000"])


_NUMBERS = st.sampled_from(["0.5", "0.125", "1", "0", ".5", "5.", "+0.1", "-0.2", "1e999", "1e-3", "2", "300", " 0.25 "])


@st.composite
def _near_box_lists(draw: st.DrawFn) -> str:
    """A list of boxes, then a few random pieces inserted anywhere: the edge of the fast path."""
    boxes = [f"[{draw(_NUMBERS)},{draw(_NUMBERS)},{draw(_NUMBERS)},{draw(_NUMBERS)}]"
             for _ in range(draw(st.integers(0, 4)))]
    text = "[" + draw(st.sampled_from([",", ", ", ",\n"])).join(boxes) + "]"
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(_PIECES | _NUMBERS) + text[at:]
    return text


def _assert_reads_like_the_general_parser(texts: list[str], box_format: str = "norm", max_boxes: int = 3) -> None:
    cfg = RewardConfig(box_format=box_format, max_boxes=max_boxes)
    size = (300, 200)
    got = score_batch(texts, [[]] * len(texts), [size] * len(texts), cfg)
    scale = np.array({"norm": [1, 1, 1, 1], "qwen1000": [1000] * 4, "pixel": [300, 200, 300, 200]}[box_format])
    for i, text in enumerate(texts):
        answer = answer_text(text)
        assert got.format[i] == format_reward(answer, cfg, *size), repr(text)
        boxes = parse_boxes(answer)
        assert got.n_pred[i] == len(boxes), repr(text)
        expect = canonical(boxes[:max_boxes] / scale)
        assert np.array_equal(got.sample(i).pred_unit, expect), repr(text)
        assert np.array_equal(np.signbit(got.sample(i).pred_unit), np.signbit(expect)), repr(text)  # -0.0


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(_PIECES, max_size=25).map("".join) | _near_box_lists(), min_size=1, max_size=8),
       st.sampled_from(["norm", "qwen1000", "pixel"]))
def test_fast_text_path_equals_the_general_parser(texts: list[str], box_format: str) -> None:
    _assert_reads_like_the_general_parser(texts, box_format)


# slots numpy's parsers would read as numbers although float (and the box grammar) does not
_ODD_LISTS = ["[[ ,0.1,0.2,0.3]]", "[[0.1,0.2,0.3, ]]", "[[0.1,\t,0.2,0.3]]", "[[-,0.1,0.2,0.3]]", "[[0.1,0.2,0.3,+]]",
              "[[.,0.1,0.2,0.3]]", "[[- 0.5,0.1,0.2,0.3]]", "[[+ 5,1,2,3]]", "[[. 5,1,2,3]]", "[[5 .,1,2,3]]",
              "[[.-5,1,2,3]]", "[[-. 5,1,2,3]]", "[[1,2,3,4.5 .]]", "[[0.50.5,1,2,3]]", "[[1..2,3,4,5]]",
              # a number outside the boxes, next to an empty slot it would otherwise fill
              "0.5[[,0,-.5,+0.1]]", "[[0.1,0.2,0.3,]]0.4", "[[0.1,0.2,0.3,0.4],5[,1,2,3]]", "[5[,1,2,3]]",
              "[[0.1,0.2,0.3,]5]", "5 [[ ,1,2,3]]", "[[1,2,3,4]]5", "[5[1,2,3,4]]",
              # plain decimals at their edges, and numbers only the float parser reads
              "[[-0,-0.0,+0,0.]]", "[[.5,5.,-.5,+.5]]", "[[1e5,1E-3,-2.5e+2,1e999]]", "[[ 1 , 2 ,\n3 ,\t4 ]]",
              "[[9007199254740993,900719925474099.3,0.1234567890123456789012,0.00000000000000000000001]]",
              "[[007,0,00.50,1]]"]


def test_odd_slots_read_like_the_general_parser() -> None:
    for box_format in ("norm", "qwen1000", "pixel"):
        _assert_reads_like_the_general_parser(_ODD_LISTS, box_format, max_boxes=10)
        for text in _ODD_LISTS:  # alone, and among well-formed lists (one joined text)
            _assert_reads_like_the_general_parser([text], box_format, max_boxes=10)
            _assert_reads_like_the_general_parser(["[[0.1,0.2,0.3,0.4]]", text, "[[0.5,0.5,0.6,0.6]]"], box_format)


def test_box_lists_read_in_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lists are read a few at a time: an unreadable list in a later piece is found and dropped by index."""
    monkeypatch.setattr(rewards, "_LISTS_AT_ONCE", 3)
    texts = [f"[[0.{i},0.2,0.3,0.4]]" for i in range(10)]
    texts[7] = "[[0.1,0.2,0.3,0.4e]]"
    texts[8] = "[5[,0.2,0.3,0.4]]"
    _assert_reads_like_the_general_parser(texts)
    values, bad = rewards._floats(texts, np.ones(10, dtype=np.int64))
    good = np.repeat(~np.isin(np.arange(10), [7, 8]), 4)
    assert bad.tolist() == [7, 8] and len(values) == 40
    assert values[good].tolist() == [float(v) for i in (0, 1, 2, 3, 4, 5, 6, 9) for v in (f"0.{i}", 0.2, 0.3, 0.4)]


_DECIMALS = st.one_of(st.sampled_from(["0", "-0", "+0", "0.", ".0", "-.5", "+.5", "5.", "007", "1e5", ".", "-", "",
                                       "9007199254740993", "12345678901234567890", "0." + "0" * 22 + "1"]),
                      st.text(st.sampled_from("0123456789.-+ \t\n"), max_size=12))


@settings(max_examples=300, deadline=None)
@given(st.lists(_DECIMALS, min_size=1, max_size=6))
def test_plain_decimals_read_as_float_does(tokens: list[str]) -> None:
    """When the integer-mantissa reader answers, its values are float's, to the bit (signed zeros too)."""
    text = ",".join(tokens).encode()
    if any(not any(ch.isdigit() for ch in t) for t in tokens):
        return  # its callers only pass slots that hold a digit
    got = rewards._plain_decimals(text, len(tokens))
    if got is not None:
        expect = [float(t) for t in tokens]  # raises if the reader took something float does not
        assert np.array_equal(got, expect) and np.array_equal(np.signbit(got), np.signbit(expect)), tokens


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.sampled_from(["[", "]", ",", " ", "0.5", "-1", ".5", "1e999", "e", "a", "\x1c", "\u00a0",
                                           "\u0663", "\x00", "[0.1,0.2,0.3,0.4]", "[1, 2, 3, 4]", "+"]),
                         max_size=20).map("".join), min_size=1, max_size=6))
def test_free_text_boxes_are_the_box_regex_matches(answers: list[str]) -> None:
    values, counts = rewards._slow_boxes(answers)
    assert counts.sum() == len(values)
    for answer, part in zip(answers, np.split(values, np.cumsum(counts)[:-1])):
        expect = np.array([[float(v) for v in box] for box in BOX_PATTERN.findall(answer)]).reshape(-1, 4)
        assert np.array_equal(part, expect), repr(answer)


def test_gt_number_types_read_alike() -> None:
    texts = [f"[{TEXT_A}]"] * 5
    gts = [[GT_A], [[float(v) for v in GT_A]], [np.array(GT_A)], [[0, 0.0, 320, np.int64(320)]], [[str(v) for v in GT_A]]]
    got = score_batch(texts, gts, [SIZE] * 5, CFG)
    assert got.total.tolist() == [got.total[0]] * 5 and got.total[0] == pytest.approx(3.0)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200), st.lists(st.tuples(*[st.integers(0, 300)] * 4), max_size=4),
       st.sampled_from(["norm", "qwen1000", "pixel"]), st.booleans())
def test_reward_never_raises_and_stays_in_range(text: str, gt: list, box_format: str, chat: bool) -> None:
    cfg = RewardConfig(box_format=box_format, w_format=0.5, w_f1=2.0, w_iou=1.0)
    completion = [{"role": "assistant", "content": text}] if chat else text
    s = score_completion(completion, [list(b) for b in gt], (300, 301), cfg)
    for value in (s.format, s.f1, s.iou, s.precision, s.recall):
        assert 0.0 <= value <= 1.0
    assert 0.0 <= s.total <= cfg.max_total and not math.isnan(s.total)


# ---------------------------------------------------------------------------------------------- TRL


def test_trl_reward_functions_follow_the_calling_convention() -> None:
    funcs, weights = make_reward_funcs(RewardConfig(w_iou=0.5))
    assert [f.__name__ for f in funcs] == ["dig_format", "dig_f1", "dig_iou"] and weights == [1.0, 1.0, 0.5]
    logged: dict[str, float] = {}
    completions = [[{"role": "assistant", "content": f"[{TEXT_A}]"}], [{"role": "assistant", "content": "no"}]]
    columns = {"boxes": [[GT_A], [GT_A]], "image_size": [list(SIZE), list(SIZE)], "difficulty": ["single"] * 2,
               "trainer_state": object(), "log_extra": lambda *a: None,
               "log_metric": lambda name, value: logged.__setitem__(name, value)}
    out = [f(prompts=["p", "p"], completions=completions, completion_ids=[[1], [2]], **columns) for f in funcs]
    assert out == [[1.0, 0.0], [1.0, 0.0], [pytest.approx(1.0), 0.0]]
    assert all(isinstance(v, float) for row in out for v in row)
    assert logged["dig/recall"] == 0.5 and logged["dig/n_pred"] == 0.5
    total = make_total_reward(RewardConfig())
    assert total(prompts=["p"], completions=[f"[{TEXT_A}]"], boxes=[[GT_A]], width=[640], height=[480]) == [
        pytest.approx(3.0)]
    with pytest.raises(ValueError, match="'boxes'"):
        funcs[0](prompts=["p"], completions=["[]"], image_size=[SIZE])
    with pytest.raises(ValueError, match="image size"):
        funcs[0](prompts=["p"], completions=["[]"], boxes=[[]])


def test_trl_components_share_one_scoring_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = rewards.score_batch
    monkeypatch.setattr(rewards, "score_batch", lambda *a, **k: calls.append(1) or real(*a, **k))
    funcs, _ = make_reward_funcs(CFG)
    kwargs = {"prompts": ["p"], "completions": ["[]"], "boxes": [[]], "image_size": [SIZE]}
    for f in funcs:
        f(**kwargs)
    assert len(calls) == 1
    funcs[0](**{**kwargs, "completions": [f"[{TEXT_A}]"]})  # a new batch is scored again
    assert len(calls) == 2


@pytest.mark.slow
def test_grpo_trainer_logs_each_component(tmp_path) -> None:
    """A real TRL GRPOTrainer run (tiny random text model) calls the functions with the dataset columns and
    logs every component and the dig/* metrics."""
    from datasets import Dataset
    from transformers import Qwen2Config, Qwen2ForCausalLM
    from trl import GRPOConfig, GRPOTrainer

    from tinygg.tokenizer import build_tiny_tokenizer

    tok = build_tiny_tokenizer()
    model = Qwen2ForCausalLM(Qwen2Config(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=256, pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id, bos_token_id=None))
    data = Dataset.from_list([{"prompt": "list the boxes of all differences", "boxes": [[0, 0, 50, 50]],
                               "image_size": [100, 100]}] * 4)
    funcs, weights = make_reward_funcs(RewardConfig(w_iou=0.5))
    args = GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, num_generations=2,
                      max_completion_length=8, max_steps=1, logging_steps=1, report_to=[], reward_weights=weights,
                      use_cpu=True, save_strategy="no")
    trainer = GRPOTrainer(model=model, reward_funcs=funcs, args=args, train_dataset=data, processing_class=tok)
    trainer.train()
    logs = trainer.state.log_history[0]
    for name in ("dig_format", "dig_f1", "dig_iou"):
        assert 0.0 <= logs[f"rewards/{name}/mean"] <= 1.0
    assert logs["dig/n_gt"] == 1.0 and "dig/recall" in logs
