"""REC Acc@0.5 semantics: the threshold is inclusive, a missing box is a counted miss, boxes live in the
padded square, and the frame the IoU is computed in does not change it."""

import numpy as np
import pytest

from tinygg.boxes import box_iou_aligned, format_box, pixel_to_square
from tinygg.evaluate.rec import make_prompt, score_answer, summarise
from tinygg.evaluate.report import rec_table


def test_iou_exactly_half_is_a_hit_and_just_below_is_a_miss():
    # 8x4 image: padded square side 8, image at y offset 2. "[0,.25,.5,.75]" is pixels [0,0,4,4]; the GT
    # covers [0,0,8,4]: IoU = 16/32 = 0.5 exactly in binary floating point.
    s = score_answer("[0.000,0.250,0.500,0.750]", [0, 0, 8, 4], 8, 4)
    assert s.parsed and s.pred_box == [0.0, 0.0, 4.0, 4.0]
    assert s.iou == 0.5 and s.hit
    below = score_answer("[0.000,0.250,0.499,0.750]", [0, 0, 8, 4], 8, 4)
    assert below.iou < 0.5 and not below.hit


def test_parse_failure_is_a_counted_miss():
    s = score_answer("I cannot see it.", [0, 0, 8, 4], 8, 4)
    assert (s.parsed, s.hit, s.iou, s.pred_box) == (False, False, 0.0, None)
    rows = [{"split": "a", "hit": True, "parsed": True}, {"split": "a", "hit": False, "parsed": False},
            {"split": "a", "hit": False, "parsed": True}, {"split": "b", "hit": True, "parsed": True}]
    m = summarise(rows)
    assert m["splits"]["a"] == {"acc": pytest.approx(1 / 3), "n": 3, "parse_failures": 1, "hits": 1}
    assert m["splits"]["b"]["acc"] == 1.0
    assert m["average"] == pytest.approx((1 / 3 + 1) / 2)  # unweighted mean of the splits, as the paper's Avg
    assert m["metric"] == "acc@0.5" and m["iou_threshold"] == 0.5


def test_boxes_are_read_in_the_padded_square_of_a_non_square_image():
    width, height, gt = 100, 50, [10.0, 10.0, 30.0, 20.0]  # square side 100, image at y offset 25
    right = format_box(pixel_to_square(gt, width, height))
    assert right == "[0.100,0.350,0.300,0.450]"
    assert score_answer(f"It is at {right}.", gt, width, height).iou == pytest.approx(1.0)
    # the same numbers normalised by the image's own width/height land elsewhere and miss
    naive = format_box([10 / width, 10 / height, 30 / width, 20 / height])
    assert not score_answer(naive, gt, width, height).hit
    # a portrait image is padded on the left and right instead
    assert score_answer(format_box(pixel_to_square([5, 40, 20, 90], 30, 100)), [5, 40, 20, 90], 30, 100).hit


def test_iou_is_the_same_in_the_pixel_and_the_square_frame():
    rng = np.random.default_rng(0)
    for _ in range(200):
        w, h = (int(v) for v in rng.integers(20, 400, 2))
        gt = np.sort(rng.uniform(0, 1, (2, 2)), axis=0).T.reshape(-1)[[0, 2, 1, 3]] * [w, h, w, h]
        pred = np.sort(rng.uniform(0, 1, (2, 2)), axis=0).T.reshape(-1)[[0, 2, 1, 3]] * [w, h, w, h]
        pred_sq = pixel_to_square(pred, w, h)
        text = "[" + ",".join(repr(float(v)) for v in pred_sq) + "]"  # full precision: no rounding in the way
        in_square = float(box_iou_aligned(pred_sq, pixel_to_square(gt, w, h)))
        assert score_answer(text, gt, w, h).iou == pytest.approx(in_square, rel=1e-9, abs=1e-12)


def test_inverted_corners_are_ordered_and_boxes_clipped_to_the_image():
    s = score_answer("[0.500,0.750,0.000,0.250]", [0, 0, 8, 4], 8, 4)
    assert s.pred_box == [0.0, 0.0, 4.0, 4.0] and s.hit
    out = score_answer("[-0.500,0.000,0.500,1.000]", [0, 0, 4, 4], 8, 4)  # reaches into the padding
    assert out.pred_box == [0.0, 0.0, 4.0, 4.0] and out.iou == 1.0


def test_prompt_template_and_table_layout():
    prompt = make_prompt("Output the coordinate of <exp>", "the red cube")
    assert prompt == "Output the coordinate of the red cube"
    with pytest.raises(ValueError, match="<exp>"):
        make_prompt("Where is it?", "x")
    m = summarise([{"split": "refcoco+_testB", "hit": True, "parsed": True},
                   {"split": "mine", "hit": False, "parsed": True}])
    table = rec_table(m, "tiny").splitlines()
    assert "RefCOCO+" in table[0] and "other splits" in table[0]
    assert table[1].split("|")[1].split() == ["val", "testA", "testB"]
    values = table[3].split("|")
    assert values[2].split() == ["-", "-", "100.00"]  # RefCOCO+ testB, the others not run
    assert values[4].strip() == "50.00" and values[5].strip() == "0.00"  # Avg, then the extra split


def test_module_doctests():
    import doctest

    import tinygg.evaluate.pope
    import tinygg.evaluate.report

    for module in (tinygg.evaluate.report, tinygg.evaluate.pope):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__


def test_other_systems_box_formats():
    from tinygg.evaluate.rec import answer_box_to_pixels

    gt, w, h = [20.0, 10.0, 60.0, 30.0], 80, 40  # square side 80, image at y offset 20
    assert score_answer("[0.250,0.375,0.750,0.625]", gt, w, h).iou == 1.0  # padded square (default)
    assert score_answer("[0.25,0.25,0.75,0.75]", gt, w, h, box_format="image").iou == 1.0
    assert score_answer("(20,10),(60,30) -> [20, 10, 60, 30]", gt, w, h, box_format="pixel").iou == 1.0
    assert score_answer("[250,250,750,750]", gt, w, h, box_format="grid1000").iou == 1.0
    # the image-normalised box read as a square-normalised one lands elsewhere
    assert score_answer("[0.25,0.25,0.75,0.75]", gt, w, h).iou == 0.5
    assert answer_box_to_pixels(np.array([-5.0, 0, 100, 50]), w, h, "pixel").tolist() == [0, 0, 80, 40]
    with pytest.raises(ValueError, match="box format"):
        answer_box_to_pixels(np.zeros(4), w, h, "xywh")
