import doctest

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tinygg.boxes as B


def test_doctests():
    assert doctest.testmod(B).failed == 0


@settings(max_examples=200, deadline=None)
@given(w=st.integers(1, 4000), h=st.integers(1, 4000), data=st.data())
def test_text_round_trip_non_square(w, h, data):
    x1 = data.draw(st.floats(0, w - 1e-3)); x2 = data.draw(st.floats(x1, w))
    y1 = data.draw(st.floats(0, h - 1e-3)); y2 = data.draw(st.floats(y1, h))
    box = np.array([x1, y1, x2, y2])
    text = B.format_box(B.pixel_to_square(box, w, h))
    assert " " not in text and text.count(".") == 4
    back = B.square_to_pixel(B.parse_box(text), w, h)
    # three decimals of the padded square: error at most half a unit of 1/1000 of the longest side
    assert np.abs(back - box).max() <= 0.5e-3 * max(w, h) + 1e-9


def test_parse_tolerates_spaces_and_finds_all():
    text = "a [ 0.1 ,0.2, 0.3 , 0.4 ] b [1,2,3,4] c [0.5,0.5] d [.5, 1e-1, -0.2, +0.3]"
    got = B.parse_boxes(text)
    assert got.tolist() == [[0.1, 0.2, 0.3, 0.4], [1, 2, 3, 4], [0.5, 0.1, -0.2, 0.3]]
    assert B.parse_boxes("no boxes here").shape == (0, 4)
    assert B.parse_box("nothing") is None
    assert B.parse_boxes(None).shape == (0, 4)


def test_padded_square_frame():
    # 200x100 image: padded to 200x200 with 50 px above and below
    assert B.square_geometry(200, 100) == (200, 0, 50)
    assert B.pixel_to_square([0, 0, 200, 100], 200, 100).tolist() == [0, 0.25, 1, 0.75]
    assert B.square_to_pixel([0, 0, 1, 1], 200, 100).tolist() == [0, 0, 200, 100]  # clipped to the image


def test_iou_giou_numpy_and_torch_agree():
    a = np.array([[0, 0, 2, 2], [1, 1, 3, 3]], dtype=float)
    b = np.array([[1, 1, 2, 2], [0, 0, 2, 2], [5, 5, 6, 6]], dtype=float)
    iou = B.box_iou(a, b)
    assert iou.shape == (2, 3)
    assert iou[0, 0] == pytest.approx(0.25) and iou[0, 1] == 1 and iou[0, 2] == 0
    assert iou[1, 1] == pytest.approx(1 / 7)
    giou = B.generalized_box_iou(a, b)
    assert giou[0, 2] == pytest.approx(0 - (36 - 5) / 36)
    assert np.allclose(B.box_iou(torch.tensor(a), torch.tensor(b)).numpy(), iou)
    assert np.allclose(B.generalized_box_iou(torch.tensor(a), torch.tensor(b)).numpy(), giou)
    assert np.allclose(B.box_iou_aligned(a, b[:2]), [0.25, 1 / 7])


def test_canonical_orders_corners():
    assert B.canonical([3, 4, 1, 2]).tolist() == [1, 2, 3, 4]


@pytest.mark.parametrize("box,msg", [([10, 10, 5, 20], "inverted"), ([0, 0, 120, 10], "outside"),
                                     ([-5, 0, 10, 10], "outside"), ([0, 0, 1], "4 finite")])
def test_validate_pixel_box_errors(box, msg):
    with pytest.raises(ValueError, match=msg):
        B.validate_pixel_box(box, 100, 50, where="train.json row 3: objects[0]")
