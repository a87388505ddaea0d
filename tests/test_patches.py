"""Issue 21, "what each map looks for": the top MNIST test patches of every conv1 and conv2 map.

``cnn.patches`` is checked against a brute-force search written here from the state dict alone
(``torch.nn.functional.conv2d``, max over positions digit by digit, the field cut pixel by pixel),
on the first 300 test digits; the shipped files are checked to be what the command makes from their
weights on all 10,000 (the shipped weights and a training snapshot).
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnn import __main__ as cli
from cnn import data, patches, replay, weights

SUBSET = 300


@pytest.fixture(scope="module")
def test_images():
    return data.load(train=False).images


def brute_force(model, images: torch.Tensor) -> dict[str, list]:
    """Per layer and map: [(value, digit index, row, col, field)], the TOP largest, by looping."""
    sd = {k: v.double() for k, v in model.state_dict().items()}
    out = {"conv1": [], "conv2": []}
    x = images.double().div(255)[:, None]
    with torch.no_grad():
        c1 = F.relu(F.conv2d(x, sd["conv1.0.weight"], sd["conv1.0.bias"], padding=2))
        c2 = F.relu(F.conv2d(F.max_pool2d(c1, 2), sd["conv2.0.weight"], sd["conv2.0.bias"], padding=2))
    for name, acts, side in (("conv1", c1, 5), ("conv2", c2, 14)):
        for m in range(acts.shape[1]):
            found = []
            for i in range(len(images)):
                a = acts[i, m]
                r, c = divmod(int(torch.argmax(a)), a.shape[1])  # the first maximum, row-major
                found.append((float(a[r, c]), i, r, c))
            found.sort(key=lambda t: -t[0])  # stable: equal values keep the earlier digit first
            top = []
            for v, i, r, c in found[:patches.TOP]:
                # conv1: the 5x5 around (r, c). conv2 at (r, c) reads pool1 rows r-2..r+2, which pool
                # conv1 rows 2r-4..2r+5, which read input rows 2r-6..2r+7: 14 rows (columns alike)
                t0 = r - 2 if name == "conv1" else 2 * r - 6
                l0 = c - 2 if name == "conv1" else 2 * c - 6
                field = np.zeros((side, side), np.uint8)
                for y in range(side):
                    for xx in range(side):
                        if 0 <= t0 + y < 28 and 0 <= l0 + xx < 28:
                            field[y, xx] = images[i, t0 + y, l0 + xx]
                top.append((v, i, r, c, field))
            out[name].append(top)
    return out


def test_the_top_patches_are_the_true_maxima(shipped_model, test_images):
    images = test_images[:SUBSET]
    want = brute_force(shipped_model, images)
    got = patches.compute(shipped_model, images, "x")
    for name in ("conv1", "conv2"):
        for m, top in enumerate(want[name]):
            np.testing.assert_allclose(got[f"{name}.value"][m], [t[0] for t in top], rtol=0, atol=1e-4)
            assert got[f"{name}.index"][m].tolist() == [t[1] for t in top], (name, m)
            assert list(zip(got[f"{name}.row"][m].tolist(), got[f"{name}.col"][m].tolist())) == \
                [(t[2], t[3]) for t in top], (name, m)
            np.testing.assert_array_equal(got[f"{name}.patch"][m], np.stack([t[4] for t in top]), err_msg=f"{name} {m}")


def test_the_shipped_files_are_what_the_command_makes_from_their_weights(tmp_path, capsys):
    """``python -m cnn patches --weights A B`` on copies of the shipped weights and of a training
    snapshot (with their cards) remakes both shipped patches files array for array from all
    10,000 test digits (the snapshot's card has no calibration, which patches do not need)."""
    shipped = [weights.DEFAULT_WEIGHTS, replay.file_for(replay.DEFAULT_FOLDER, 50)]
    copies = []
    for i, path in enumerate(shipped):
        (tmp_path / str(i)).mkdir()
        for f in (path, weights.card_path(path)):
            shutil.copy(f, tmp_path / str(i) / f.name)
        copies.append(tmp_path / str(i) / path.name)
    threads = torch.get_num_threads()
    try:
        assert cli.main(["patches", "--weights", *map(str, copies)]) == 0
    finally:
        torch.set_num_threads(threads)  # the command takes every core; the served app's tests leave 1
    said = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [s["patches"] for s in said] == [str(patches.path_for(c)) for c in copies]
    for path, copy in zip(shipped, copies):
        with np.load(patches.path_for(path)) as want, np.load(patches.path_for(copy)) as made:
            assert sorted(want.files) == sorted(made.files)
            for key in made.files:
                np.testing.assert_array_equal(want[key], made[key], err_msg=f"{path.name} {key}")
            assert int(made["count"]) == 10_000


def test_every_training_snapshot_ships_the_patches_of_its_own_weights():
    """The page shows a snapshot's patches (``model.looks_for``) only from a file made from its
    weights (its sha256); every snapshot has one, and no two snapshots look for the same digits."""
    networks = replay.load()
    found = {name: model.looks_for for name, (model, _) in networks.items()}
    assert [name for name, f in found.items() if not f] == []
    tops = {name: tuple(map(tuple, f["conv2"]["index"])) for name, f in found.items()}
    assert len(set(tops.values())) == len(tops)


def test_patches_made_for_other_weights_are_not_shown(tmp_path, shipped_model):
    """The page shows the patches only for the weights they were computed from."""
    assert patches.load(weights.DEFAULT_WEIGHTS) is not None
    other = tmp_path / "cnn.pt"
    shutil.copy(weights.DEFAULT_WEIGHTS, other)
    shutil.copy(patches.path_for(weights.DEFAULT_WEIGHTS), patches.path_for(other))
    assert patches.load(other) is not None  # the same bytes: the same sha256
    other.write_bytes(other.read_bytes() + b"\0")
    assert patches.load(other) is None
    assert patches.load(tmp_path / "none.pt") is None
