"""Every data source, read from real files written by the test."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from learn_fixtures import SAMPLES, sample_arrays, write_coco, write_fmnist, write_image, write_sidecar_folder

from retrieval import datasets
from retrieval.errors import ClipdexError


def test_sidecar_captions(tmp_path: Path):
    folder = write_sidecar_folder(tmp_path / "data", n=3)
    write_image(folder / "uncaptioned.png", 9)
    data = datasets.captioned_folder(folder)
    assert len(data) == 3
    assert [Path(p).name for p in data.images] == ["img0.png", "img1.png", "img2.png"]
    assert data.captions[1] == ["picture number 1", "another caption 1"]
    assert data.load(0).size == (40, 30) and data.load(0).mode == "RGB"


def test_captions_csv_groups_captions_per_image(tmp_path: Path):
    for i in range(2):
        write_image(tmp_path / "pics" / f"{i}.jpg", i)
    with (tmp_path / "captions.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "caption"])
        w.writerows([["pics/0.jpg", "a red thing"], ["pics/1.jpg", "a blue thing"], ["pics/0.jpg", "red again"]])
    data = datasets.captioned_folder(tmp_path)
    assert [Path(p).name for p in data.images] == ["0.jpg", "1.jpg"]
    assert data.captions == [["a red thing", "red again"], ["a blue thing"]]


def test_captions_jsonl(tmp_path: Path):
    write_image(tmp_path / "a.png", 1)
    write_image(tmp_path / "b.png", 2)
    rows = [{"path": "a.png", "caption": "first"}, {"path": "b.png", "text": "second"}]
    (tmp_path / "captions.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    data = datasets.captioned_folder(tmp_path)
    assert data.captions == [["first"], ["second"]]


def test_coco_json(tmp_path: Path):
    file = write_coco(tmp_path, n=4)
    data = datasets.coco_captions(file)
    assert len(data) == 4
    assert data.captions[0] == ["photo 0 view 0", "photo 0 view 1"]
    assert all(len(c) == 2 for c in data.captions)
    assert datasets.captioned_folder(file).images == data.images  # a .json path is read as COCO


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_idx_round_trip(tmp_path: Path, gz: bool):
    folder = write_fmnist(tmp_path / "fm", train_per_class=3, test_per_class=2, gz=gz)
    images, labels = sample_arrays(3)
    got_images, got_labels = datasets.fashion_mnist_arrays(folder, "train")
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)
    test = datasets.fashion_mnist(folder, "test", templates=["a {}", "the {}!"])
    assert len(test) == 20 and test.class_names[9] == "ankle boot"
    y = int(test.labels[0])
    assert test.captions[0] == [f"a {test.class_names[y]}", f"the {test.class_names[y]}!"]
    assert test.load(0).size == (28, 28)


def test_image_only_folder_skips_hidden_and_non_images(tmp_path: Path):
    write_image(tmp_path / "x" / "1.png", 1)
    write_image(tmp_path / "x" / "deeper" / "2.jpg", 2)
    write_image(tmp_path / "x" / ".hidden" / "3.png", 3)
    (tmp_path / "x" / "notes.txt").write_text("not an image")
    data = datasets.image_folder(tmp_path / "x")
    assert [Path(p).name for p in data.images] == ["1.png", "2.jpg"]
    assert data.captions is None and data.labels is None


def test_labelled_folder_reads_the_samples():
    data = datasets.labelled_folder(SAMPLES)
    assert len(data) == 300
    assert sorted(data.class_names) == sorted(datasets.FMNIST_CLASSES)
    assert np.bincount(data.labels).tolist() == [30] * 10


@pytest.mark.parametrize("make, call, message", [
    (lambda p: p, lambda p: datasets.captioned_folder(p / "missing"), "not found"),
    (lambda p: p, lambda p: datasets.captioned_folder(p), "no captioned images"),
    (lambda p: p, lambda p: datasets.image_folder(p), "no images"),
    (lambda p: p, lambda p: datasets.fashion_mnist(p), "not found"),
    (lambda p: (p / "c.json").write_text("{\"images\": 3}"), lambda p: datasets.coco_captions(p / "c.json"),
     "not a COCO"),
    (lambda p: (p / "captions.csv").write_text("file,colour\na.png,red\n"), lambda p: datasets.captioned_folder(p),
     "caption column"),
    (lambda p: (p / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x09\x01\x00\x00\x00\x01x"),
     lambda p: datasets.read_idx(p / "train-images-idx3-ubyte"), "not an unsigned-byte IDX"),
    (lambda p: (p / "t.idx").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x05ab"),
     lambda p: datasets.read_idx(p / "t.idx"), "expected 5 values"),
])
def test_bad_data_is_one_clear_error(tmp_path: Path, make, call, message):
    make(tmp_path)
    with pytest.raises(ClipdexError, match=message):
        call(tmp_path)
