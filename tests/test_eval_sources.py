"""Each REC/POPE data source read from files in its real on-disk format, written here; bad rows are named
(file, row, field) and skipped."""

import io
import json
import pickle
from collections import OrderedDict

import pytest
from conftest import random_image

from tinygg.evaluate.sources import (
    dataset_name,
    jsonl_split_name,
    load_rec_data,
    parse_spec,
    pope_subset_name,
    read_jsonl,
    read_parquet,
    read_pope,
    read_refer,
    select_splits,
    split_word,
)


def _refer_tree(root):
    """refer API layout: ROOT/refcoco/{refs(unc).p, instances.json}, ROOT/refcocog/..., ROOT/images/..."""
    imgs = root / "images" / "train2014"
    imgs.mkdir(parents=True)
    random_image(64, 48, seed=1).save(imgs / "COCO_train2014_000000000001.jpg")
    random_image(40, 70, seed=2).save(imgs / "COCO_train2014_000000000002.jpg")
    instances = {
        "images": [{"id": 1, "file_name": "COCO_train2014_000000000001.jpg", "width": 64, "height": 48},
                   {"id": 2, "file_name": "COCO_train2014_000000000002.jpg", "width": 40, "height": 70},
                   {"id": 3, "file_name": "COCO_train2014_000000000003.jpg", "width": 50, "height": 50}],
        "annotations": [{"id": 10, "image_id": 1, "bbox": [4.0, 6.0, 20.0, 10.0], "category_id": 1},
                        {"id": 11, "image_id": 2, "bbox": [0.5, 1.5, 30.0, 60.0], "category_id": 1},
                        {"id": 12, "image_id": 1, "bbox": [50.0, 40.0, 30.0, 30.0], "category_id": 1},
                        {"id": 13, "image_id": 3, "bbox": [1, 1, 5, 5], "category_id": 1}],
    }

    def ref(ref_id, ann_id, image_id, split, *sents):
        return {"ref_id": ref_id, "ann_id": ann_id, "image_id": image_id, "split": split, "category_id": 1,
                "file_name": f"COCO_train2014_{image_id:012d}_{ann_id}.jpg",
                "sent_ids": list(range(len(sents))),
                "sentences": [{"sent": s, "raw": s, "tokens": s.split(), "sent_id": k}
                              for k, s in enumerate(sents)]}

    refs = [ref(0, 10, 1, "testA", "left man", "man in red"), ref(1, 11, 2, "val", "tall thing"),
            ref(2, 10, 1, "train", "not evaluated"), ref(3, 12, 1, "testB", "box outside the image"),
            ref(4, 13, 3, "val", "image file missing"), ref(5, 99, 1, "val", "unknown annotation")]
    for name, refs_file, these in (("refcoco", "refs(unc).p", refs), ("refcocog", "refs(umd).p", refs[1:2])):
        (root / name).mkdir()
        (root / name / "instances.json").write_text(json.dumps(instances))
        with open(root / name / refs_file, "wb") as f:
            pickle.dump(these, f, protocol=2)


def test_refer_files(tmp_path):
    _refer_tree(tmp_path)
    samples, problems = read_refer(tmp_path)
    by_id = {(s.split, s.id): s for s in samples}
    assert set(by_id) == {("refcoco_testA", "0_0"), ("refcoco_testA", "0_1"), ("refcoco_val", "1_0"),
                          ("refcocog_val", "1_0")}
    s = by_id[("refcoco_testA", "0_1")]
    assert s.expression == "man in red" and s.bbox == (4.0, 6.0, 24.0, 16.0)
    assert (s.width, s.height) == (64, 48)
    assert s.load_image().size == (64, 48)
    assert by_id[("refcoco_val", "1_0")].bbox == (0.5, 1.5, 30.5, 61.5)
    fields = {(p.field, str(p.row)) for p in problems}
    assert ("bbox", "annotation id 12") in fields  # names instances.json and the annotation
    assert ("image_id", "4") in fields and ("ann_id", "5") in fields
    assert all("refs(unc).p" in p.file or "instances.json" in p.file for p in problems)
    only_g, _ = read_refer(tmp_path, ["refcocog"])
    assert {s.split for s in only_g} == {"refcocog_val"}
    with pytest.raises(FileNotFoundError, match="refcoco\\+"):
        read_refer(tmp_path, ["refcoco+"])
    # through data specs: explicit, auto-detected from the folder, and one dataset's own folder
    assert len(load_rec_data([f"refer:{tmp_path}:refcocog"])[0]) == 1
    assert len(load_rec_data([str(tmp_path)], splits=["testA"])[0]) == 2
    own_folder = load_rec_data([f"refer:{tmp_path / 'refcoco'}"])[0]
    assert {s.split for s in own_folder} == {"refcoco_testA", "refcoco_val"}


def test_refer_pickle_with_objects_is_refused(tmp_path):
    _refer_tree(tmp_path)
    with open(tmp_path / "refcoco" / "refs(unc).p", "wb") as f:
        pickle.dump([OrderedDict(ref_id=0)], f)  # needs an import to unpickle
    with pytest.raises(ValueError, match="refused"):
        read_refer(tmp_path, ["refcoco"])


def _png_bytes(w, h, seed):
    buf = io.BytesIO()
    random_image(w, h, seed).save(buf, format="PNG")
    return buf.getvalue()


def test_lmms_lab_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "RefCOCOplus" / "data"
    folder.mkdir(parents=True)
    rows = [
        {"question_id": "100", "image": {"bytes": _png_bytes(60, 30, 1), "path": None},
         "question": "Please carefully observe the area circled in the image and come up with a caption.",
         "answer": ["guy on left", "left person"], "segmentation": [1.0, 2.0], "bbox": [2.0, 3.0, 20.0, 10.0],
         "iscrowd": 0, "file_name": "COCO_train2014_000000000100.jpg"},
        {"question_id": "101", "image": {"bytes": _png_bytes(30, 60, 2), "path": None}, "question": "q",
         "answer": ["too wide"], "segmentation": [1.0], "bbox": [10.0, 3.0, 40.0, 10.0], "iscrowd": 0,
         "file_name": "b.jpg"},
        {"question_id": "102", "image": {"bytes": b"not an image", "path": None}, "question": "q",
         "answer": ["broken"], "segmentation": [1.0], "bbox": [1.0, 1.0, 2.0, 2.0], "iscrowd": 0,
         "file_name": "c.jpg"},
    ]
    schema = pa.schema([("question_id", pa.string()),
                        ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
                        ("question", pa.string()), ("answer", pa.list_(pa.string())),
                        ("segmentation", pa.list_(pa.float32())), ("bbox", pa.list_(pa.float32())),
                        ("iscrowd", pa.int8()), ("file_name", pa.string())])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), folder / "testA-00000-of-00001.parquet")

    samples, problems = read_parquet(str(folder / "*.parquet"))
    assert [(s.split, s.id, s.expression) for s in samples] == [("refcoco+_testA", "100_0", "guy on left"),
                                                                 ("refcoco+_testA", "100_1", "left person")]
    assert samples[0].bbox == (2.0, 3.0, 22.0, 13.0) and (samples[0].width, samples[0].height) == (60, 30)
    assert samples[0].load_image().size == (60, 30)
    assert [(p.row, p.field) for p in problems] == [(1, "bbox"), (2, "image")]
    # the same files through a spec, a folder, and with the dataset named explicitly
    assert len(load_rec_data([f"parquet:{tmp_path / 'RefCOCOplus'}"])[0]) == 2
    named, _ = load_rec_data([f"parquet:{folder / '*.parquet'}:refcocog"])
    assert {s.split for s in named} == {"refcocog_testA"}


def test_parquet_written_by_datasets(tmp_path):
    """The hub's files are written by `datasets` (Image feature = struct of bytes and path)."""
    from datasets import Dataset, Features, Image, Sequence, Value

    features = Features({"question_id": Value("string"), "image": Image(), "question": Value("string"),
                         "answer": Sequence(Value("string")), "bbox": Sequence(Value("float32")),
                         "file_name": Value("string")})
    pil = random_image(48, 36, seed=5)
    ds = Dataset.from_dict({"question_id": ["7"], "image": [pil], "question": ["q"], "answer": [["the dog"]],
                            "bbox": [[1.0, 2.0, 10.0, 20.0]], "file_name": ["x.jpg"]}, features=features)
    folder = tmp_path / "lmms-lab" / "RefCOCOg" / "data"
    folder.mkdir(parents=True)
    ds.to_parquet(str(folder / "val-00000-of-00001.parquet"))
    samples, problems = load_rec_data([str(folder / "val-00000-of-00001.parquet")])
    assert problems == []
    assert [(s.split, s.id, s.expression) for s in samples] == [("refcocog_val", "7_0", "the dog")]
    assert samples[0].bbox == (1.0, 2.0, 11.0, 22.0)
    assert list(samples[0].load_image().getdata()) == list(pil.getdata())


def test_shikra_jsonl_and_bad_rows(tmp_path):
    random_image(50, 40, 1).save(tmp_path / "a.png")
    lines = [json.dumps({"img_path": "a.png", "expression": "the cat", "bbox": [1, 2, 30, 40]}),
             json.dumps({"img_path": "a.png", "expression": "sized", "bbox": [0, 0, 50, 40], "width": 50,
                         "height": 40, "id": "x7"}),
             "{not json",
             json.dumps({"img_path": "gone.png", "expression": "missing image", "bbox": [1, 2, 3, 4]}),
             json.dumps({"img_path": "a.png", "expression": "inverted", "bbox": [30, 2, 1, 40]}),
             json.dumps({"img_path": "a.png", "bbox": [1, 2, 3, 4]}),
             ""]
    path = tmp_path / "REC_refcoco+_unc_testA.jsonl"
    path.write_text("\n".join(lines) + "\n")
    samples, problems = read_jsonl(path)
    assert [(s.split, s.id, s.bbox) for s in samples] == [("refcoco+_testA", "1", (1.0, 2.0, 30.0, 40.0)),
                                                           ("refcoco+_testA", "x7", (0.0, 0.0, 50.0, 40.0))]
    assert [(p.row, p.field) for p in problems] == [(3, "(line)"), (4, "img_path"), (5, "bbox"),
                                                    (6, "expression")]
    assert all(p.file == str(path) for p in problems)
    assert "row 5, field 'bbox'" in str(problems[2])
    renamed, _ = load_rec_data([f"jsonl:{path}:mine"])
    assert {s.split for s in renamed} == {"mine"}


def test_names_and_specs(tmp_path):
    assert dataset_name("/d/lmms-lab/RefCOCOplus/data/val-0.parquet") == "refcoco+"
    assert dataset_name("REC_refcocog_umd_test") == "refcocog" and dataset_name("RefCOCO") == "refcoco"
    assert dataset_name("photos") is None
    assert split_word("testA-00000-of-00001.parquet") == "testA" and split_word("val") == "val"
    assert jsonl_split_name("REC_refcoco_unc_testB.jsonl") == "refcoco_testB"
    assert jsonl_split_name("test_rec.jsonl") == "test_rec"
    (tmp_path / "d.jsonl").write_text("")
    assert parse_spec(f"{tmp_path}/d.jsonl") == ("jsonl", f"{tmp_path}/d.jsonl", None)
    assert parse_spec(f"jsonl:{tmp_path}/d.jsonl:synth") == ("jsonl", f"{tmp_path}/d.jsonl", "synth")
    assert parse_spec("parquet:/x/*.parquet:refcoco")[::2] == ("parquet", "refcoco")
    names = ["refcoco_val", "refcoco+_val", "refcoco_testA"]
    assert select_splits(names, ["val"]) == {"refcoco_val", "refcoco+_val"}
    assert select_splits(["refcoco_val", "refcoco_testA"], ["refcoco_testA"]) == {"refcoco_testA"}
    with pytest.raises(ValueError, match="requested splits"):
        (tmp_path / "e.jsonl").write_text(json.dumps({"img_path": "sample:coffee", "expression": "cup",
                                                      "bbox": [10, 10, 100, 100]}) + "\n")
        load_rec_data([str(tmp_path / "e.jsonl")], splits=["testB"])


def test_pope_files(tmp_path):
    random_image(32, 24, 0).save(tmp_path / "COCO_val2014_000000000001.jpg")
    for subset in ("random", "adversarial"):
        image = "COCO_val2014_000000000001.jpg"
        rows = [{"question_id": 1, "image": image, "text": "Is there a dog in the image?", "label": "yes"},
                {"question_id": 2, "image": image, "text": "Is there a car?", "label": "No"},
                {"question_id": 3, "image": "COCO_val2014_000000000001.jpg", "text": "Is there a cat?",
                 "label": "maybe"},
                {"question_id": 4, "image": "missing.jpg", "text": "Is there a cat?", "label": "no"}]
        (tmp_path / f"coco_pope_{subset}.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    qs, problems = read_pope(tmp_path, tmp_path)
    assert [(q.subset, q.id, q.label) for q in qs] == [
        ("adversarial", "1", "yes"), ("adversarial", "2", "no"),
        ("random", "1", "yes"), ("random", "2", "no")]
    assert sorted((p.row, p.field) for p in problems) == [(3, "label"), (3, "label"), (4, "image"),
                                                          (4, "image")]
    assert pope_subset_name("aokvqa_pope_seem_popular.json") == "popular"


def test_gt_boxes_a_hair_outside_are_clipped_not_dropped(tmp_path):
    random_image(200, 100, 1).save(tmp_path / "a.png")
    rows = [{"img_path": "a.png", "expression": "rounding", "bbox": [-0.4, 2, 201.5, 100.2]},  # within 1%
            {"img_path": "a.png", "expression": "far out", "bbox": [10, 2, 215, 50]}]
    (tmp_path / "r.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    samples, problems = read_jsonl(tmp_path / "r.jsonl")
    assert [s.bbox for s in samples] == [(0.0, 2.0, 200.0, 100.0)]
    assert [(p.row, p.field) for p in problems] == [(2, "bbox")]
