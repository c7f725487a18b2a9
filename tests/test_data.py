"""Training data: schema validation, converters, mixing, image roots, batching."""

import json
import pickle

import numpy as np
import pytest
import torch
from conftest import make_rec_jsonl

from tinygg.boxes import parse_box, square_to_pixel
from tinygg.data.convert import REC_TEMPLATES, convert_jsonl, convert_refer
from tinygg.data.dataset import (
    Collator,
    DataSource,
    SupervisedDataset,
    length_grouped_batches,
    mix,
    padding_fraction,
)
from tinygg.data.schema import SampleError, read_samples, validate_sample


def _good(**kw):
    s = {"id": "a", "image": "x.png", "conversations": [{"from": "human", "value": "<image>\nhi"},
                                                          {"from": "gpt", "value": "[0.1,0.1,0.2,0.2]"}]}
    s.update(kw)
    return s


@pytest.mark.parametrize("record,field,msg", [
    (_good(conversations=[{"from": "human", "value": "<image> hi"}]), "conversations", "no 'gpt' turn"),
    (_good(conversations=[{"from": "bot", "value": "hi"}]), "conversations[0].from", "human/gpt"),
    (_good(image=None), "conversations", "1 <image> placeholder"),
    (_good(objects=[[1, 2, 3, 4]]), "objects", "0 <object> placeholder"),
    (_good(objects=[[5, 2, 3, 4]], conversations=[{"from": "human", "value": "<image><object>"},
                                                  {"from": "gpt", "value": "a"}]), "objects[0]", "inverted"),
    (_good(objects="nope"), "objects", "list of"),
])
def test_validation_names_file_row_field(record, field, msg):
    with pytest.raises(SampleError) as e:
        validate_sample(record, "train.json", 7)
    assert e.value.field == field and msg in str(e.value)
    assert str(e.value).startswith(f"train.json, row 7, field '{field}'")


def test_read_samples_jsonl_bad_json_line(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text(json.dumps(_good()) + "\n{oops\n")
    with pytest.raises(SampleError, match=r"d.jsonl, row 2, field '<json>'"):
        read_samples(p)


def test_skip_invalid_keeps_rejects(tmp_path):
    p = tmp_path / "d.json"
    p.write_text(json.dumps([_good(), _good(conversations=[]), _good(id="c")]))
    rejects = []
    got = read_samples(p, skip_invalid=True, rejects=rejects)
    assert [s.id for s in got] == ["a", "c"]
    assert rejects[0]["row"] == 1 and rejects[0]["field"] == "conversations" and rejects[0]["record"]["id"] == "a"


def test_convert_jsonl_round_trips_boxes(tmp_path):
    src = make_rec_jsonl(tmp_path, n=10, bad_rows=True)
    with pytest.raises(SampleError, match=r"rec.jsonl, row 11, field 'image'.*missing.png"):
        convert_jsonl(src, tmp_path / "imgs")
    rejects = []
    samples = convert_jsonl(src, tmp_path / "imgs", rejects=rejects)
    assert len(samples) == 10 and [r["field"] for r in rejects] == ["image", "bbox"]
    rows = [json.loads(x) for x in src.read_text().splitlines()][:10]
    from PIL import Image
    for s, r in zip(samples, rows):
        prompt = s["conversations"][0]["value"]
        assert prompt.startswith("<image>\n") and r["expression"] in prompt
        w, h = Image.open(tmp_path / "imgs" / r["image"]).size
        back = square_to_pixel(parse_box(s["conversations"][1]["value"]), w, h)
        assert np.abs(back - np.array(r["bbox"])).max() <= 0.5e-3 * max(w, h) + 1e-9
    assert len({s["conversations"][0]["value"].split(" the ")[0] for s in samples}) > 1  # varied templates


def test_convert_refer_files(tmp_path):
    refs = [{"ref_id": 1, "ann_id": 10, "image_id": 5, "split": "train", "file_name": "a_1.jpg",
             "sentences": [{"sent": "man on left"}, {"sent": "left guy"}]},
            {"ref_id": 2, "ann_id": 11, "image_id": 5, "split": "val", "sentences": [{"sent": "dog"}]},
            {"ref_id": 3, "ann_id": 99, "image_id": 5, "split": "train", "sentences": [{"sent": "ghost"}]}]
    with open(tmp_path / "refs(unc).p", "wb") as f:
        pickle.dump(refs, f)
    inst = {"images": [{"id": 5, "file_name": "COCO_train2014_5.jpg", "width": 640, "height": 480}],
            "annotations": [{"id": 10, "bbox": [10, 20, 100, 200], "image_id": 5},
                            {"id": 11, "bbox": [0, 0, 5, 5], "image_id": 5}]}
    (tmp_path / "instances.json").write_text(json.dumps(inst))
    with pytest.raises(SampleError, match=r"row 2, field 'ann_id'"):
        convert_refer(tmp_path / "refs(unc).p", tmp_path / "instances.json")
    rejects = []
    out = convert_refer(tmp_path / "refs(unc).p", tmp_path / "instances.json", rejects=rejects)
    assert [s["id"] for s in out] == ["refer-1-0", "refer-1-1"] and len(rejects) == 1
    assert out[0]["conversations"][1]["value"] == "[0.016,0.156,0.172,0.469]"  # (10+0)/640, (20+80)/640, ...
    assert out[0]["image"] == "COCO_train2014_5.jpg"


def test_image_paths_may_not_escape_root(tmp_path, tiny_model):
    _, processor = tiny_model
    p = tmp_path / "d.json"
    p.write_text(json.dumps([_good(image="../../etc/passwd")]))
    items = mix([DataSource(str(p))])
    with pytest.raises(SampleError, match="escapes the image root"):
        SupervisedDataset(items, processor)


def test_mixing_ratios(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps([_good(id=f"a{i}") for i in range(10)]))
    b.write_text(json.dumps([_good(id=f"b{i}") for i in range(8)]))
    items = mix([DataSource(str(a), ratio=2), DataSource(str(b), ratio=0.25)], seed=1)
    ids = [s.id for s, _ in items]
    assert sum(i.startswith("a") for i in ids) == 20 and sum(i.startswith("b") for i in ids) == 2
    assert ids == [s.id for s, _ in mix([DataSource(str(a), ratio=2), DataSource(str(b), ratio=0.25)], seed=1)]
    with pytest.raises(ValueError, match="ratio must be > 0"):
        DataSource(str(a), ratio=0)


def test_dataset_and_collator(rec_train_json, tiny_model):
    _, processor = tiny_model
    ds = SupervisedDataset(mix([DataSource(str(rec_train_json), image_root=str(rec_train_json.parent / "imgs"))]),
                           processor)
    feats = [ds[0], ds[1], ds[2]]
    batch = Collator(processor.tokenizer.pad_token_id)(feats)
    assert batch["input_ids"].shape[0] == 3 and batch["pixel_values"].shape[0] == 3
    assert (batch["labels"] != -100).sum() == sum((f["labels"] != -100).sum() for f in feats)
    est = ds.lengths[:3]
    assert all(abs(e - len(f["input_ids"])) <= 16 for e, f in zip(est, feats))


def test_length_grouping_reduces_padding():
    rng = np.random.default_rng(0)
    lengths = rng.integers(20, 800, 2000).tolist()
    grouped = length_grouped_batches(lengths, 8, seed=0)
    assert sorted(i for b in grouped for i in b) == list(range(2000))
    plain = [rng.permutation(2000)[k:k + 8].tolist() for k in range(0, 2000, 8)]
    assert padding_fraction(lengths, grouped) < 0.5 * padding_fraction(lengths, plain)


def test_collator_shapes_with_objects(tiny_model):
    _, processor = tiny_model
    from conftest import random_image
    enc = processor.encode_conversation([{"from": "human", "value": "<image><object>"},
                                         {"from": "gpt", "value": "ok"}], [random_image(30, 30)], [[1, 1, 9, 9]])
    f = {"input_ids": torch.tensor(enc["input_ids"]), "labels": torch.tensor(enc["labels"]),
         "pixel_values": torch.from_numpy(enc["pixel_values"])}
    batch = Collator(0)([f, f])
    assert batch["pixel_values"].shape[0] == 4


def test_templates_include_the_paper_prompt():
    assert "Output the coordinate of {exp}" in REC_TEMPLATES
