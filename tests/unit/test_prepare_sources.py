"""data_prep sources: class order, val labels in every form people have them, CIFAR/digits/synthetic."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import scipy.io

from dtrain_prep import fixtures
from dtrain_prep.errors import DataPrepError
from dtrain_prep.sources.arrays import cifar_plan, digits_plan, synthetic_plan
from dtrain_prep.sources.folder import folder_plan
from dtrain_prep.sources.imagenet import imagenet_plan, read_val_labels


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagenet_tree")
    facts = fixtures.build_imagenet_tree(root, per_class=2, val_per_class=2)
    return root, facts


def test_classes_are_sorted_synsets_with_names(tree):
    root, _ = tree
    plan = imagenet_plan(root)
    assert [c.synset for c in plan.classes] == sorted(fixtures.SYNSETS)
    assert plan.classes[0].name.startswith("tench")
    assert [s.position for s in plan.splits["train"]] == list(range(len(plan.splits["train"])))


def test_flat_val_gets_labels_from_loc_csv(tree):
    root, facts = tree
    plan = imagenet_plan(root)
    labels = {s.source.split("/")[-1]: s.synset for s in plan.splits["val"]}
    assert labels == facts.val_labels


def test_synset_per_line_and_devkit_ground_truth_give_same_labels(tree, tmp_path):
    root, facts = tree
    names = sorted(facts.val_labels)
    synsets = [facts.val_labels[n] for n in names]
    per_line = tmp_path / "val_synsets.txt"
    per_line.write_text("\n".join(synsets) + "\n")
    assert read_val_labels(per_line, None) == (None, synsets)

    # The devkit: 1-based ILSVRC2012_IDs mapped to WNIDs by meta.mat (leaf synsets only).
    devkit = tmp_path / "ILSVRC2012_devkit_t12"
    (devkit / "data").mkdir(parents=True)
    fields = ["ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children", "wordnet_height",
              "num_train_images"]
    ids = {s: 10 + i for i, s in enumerate(sorted(fixtures.SYNSETS))}  # ids need not follow sorted order
    rows = [(ids[s], s, s, "", 0, np.zeros(0), 0, 1) for s in fixtures.SYNSETS]
    rows.append((1001, "n00001740", "entity", "", 2, np.array([10, 11]), 18, 0))  # not a leaf
    meta = np.zeros((len(rows), 1), dtype=[(f, "O") for f in fields])
    for i, row in enumerate(rows):
        for name, value in zip(fields, row, strict=True):
            meta[i, 0][name] = value
    scipy.io.savemat(devkit / "data" / "meta.mat", {"synsets": meta})
    truth = devkit / "data" / "ILSVRC2012_validation_ground_truth.txt"
    truth.write_text("".join(f"{ids[s]}\n" for s in synsets))
    assert read_val_labels(truth, devkit) == (None, synsets)


def test_val_already_in_class_folders_needs_no_label_file(tree, tmp_path):
    root, facts = tree
    copy = _copy(root, tmp_path)
    (copy / "LOC_val_solution.csv").unlink()
    for name, synset in facts.val_labels.items():
        (copy / "val" / synset).mkdir(exist_ok=True)
        (copy / "val" / name).rename(copy / "val" / synset / name)
    plan = imagenet_plan(copy)
    assert {s.source.split("/")[-1]: s.synset for s in plan.splits["val"]} == facts.val_labels


def _copy(root, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    return copy


def test_missing_val_file_is_an_error_naming_it(tree, tmp_path):
    root, _ = tree
    copy = _copy(root, tmp_path)
    (copy / "val" / "ILSVRC2012_val_00000003.JPEG").unlink()
    with pytest.raises(DataPrepError, match=r"1 val images .*first missing file: ILSVRC2012_val_00000003"):
        imagenet_plan(copy)


def test_unlabelled_val_file_is_an_error_naming_it(tree, tmp_path):
    root, _ = tree
    copy = _copy(root, tmp_path)
    (copy / "val" / "ILSVRC2012_val_00000099.JPEG").write_bytes(b"x")
    with pytest.raises(DataPrepError, match=r"1 val files have no label .*ILSVRC2012_val_00000099"):
        imagenet_plan(copy)


def test_flat_val_without_labels_says_how_to_give_them(tree, tmp_path):
    root, _ = tree
    copy = _copy(root, tmp_path)
    (copy / "LOC_val_solution.csv").unlink()
    with pytest.raises(DataPrepError, match="--val-labels"):
        imagenet_plan(copy)


@pytest.mark.parametrize("make", ["missing", "empty", "no_classes"])
def test_wrong_or_empty_src_is_a_clear_error(tmp_path, make):
    src = tmp_path / "src"
    if make != "missing":
        src.mkdir()
    if make == "no_classes":
        (src / "train").mkdir()
    with pytest.raises(DataPrepError, match="--src|class folders|train"):
        imagenet_plan(src)


def test_folder_holdout_is_stratified_and_deterministic(tmp_path):
    fixtures.build_imagenet_tree(tmp_path, per_class=10, odd_files=False)
    first = folder_plan(tmp_path / "train", val_fraction=0.2, seed=3)
    again = folder_plan(tmp_path / "train", val_fraction=0.2, seed=3)
    assert [s.source for s in first.splits["val"]] == [s.source for s in again.splits["val"]]
    assert sorted(s.synset for s in first.splits["val"]) == sorted(list(fixtures.SYNSETS) * 2)
    assert len(first.splits["train"]) == 24


def test_digits_are_the_real_sklearn_scans_split_80_20():
    plan = digits_plan(size=32)
    train, val = plan.splits["train"], plan.splits["val"]
    assert len(train) + len(val) == 1797 and abs(len(val) - 359) <= 5
    assert [c.synset for c in plan.classes] == [str(i) for i in range(10)]
    assert train[0].pixels.shape == (32, 32, 3) and train[0].pixels.dtype == np.uint8
    assert {s.label for s in val} == set(range(10))


@pytest.mark.parametrize("variant", ["cifar10", "cifar100"])
def test_cifar_reads_the_python_pickle_archive(tmp_path, variant):
    archive = tmp_path / f"{variant}.tar.gz"
    contents = fixtures.build_cifar_archive(archive, variant, per_batch=4)
    plan = cifar_plan(archive, variant)
    train_files = [b for b in contents if b not in ("test_batch", "test")]
    train_labels = [label for b in train_files for label in contents[b][1]]
    assert [s.label for s in plan.splits["train"]] == train_labels
    first = contents[train_files[0]][0][0].reshape(3, 32, 32).transpose(1, 2, 0)
    assert np.array_equal(plan.splits["train"][0].pixels, first)
    assert len(plan.splits["val"]) == len(contents["test_batch" if variant == "cifar10" else "test"][1])
    assert len(plan.classes) == (10 if variant == "cifar10" else 100)


def test_cifar_holdout_takes_a_tenth_of_training_as_val(tmp_path):
    archive = tmp_path / "c.tar.gz"
    fixtures.build_cifar_archive(archive, "cifar10", per_batch=20)
    plan = cifar_plan(archive, "cifar10", holdout=True)
    assert len(plan.splits["train"]) + len(plan.splits["val"]) == 100
    assert 6 <= len(plan.splits["val"]) <= 14


def test_cifar_archive_missing_a_batch_is_a_clear_error(tmp_path):
    (tmp_path / "cifar-10-batches-py").mkdir()
    with pytest.raises(DataPrepError, match="lacks .*data_batch_1"):
        cifar_plan(tmp_path, "cifar10")


def test_synthetic_counts_and_labels():
    plan = synthetic_plan(count=12, val_count=5, width=40, height=30, num_classes=4)
    assert [s.label for s in plan.splits["train"]] == [i % 4 for i in range(12)]
    assert len(plan.splits["val"]) == 5
