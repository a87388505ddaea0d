"""Issue 21, "where the filters came from": the tutorial's training replayed as shipped snapshots.

Each snapshot in weights/replay loads strictly into the tutorial CNN and scores the test accuracy
its card records; the last one is, bit for bit, what ``train.py --recipe seed`` trains (run here
again, without snapshots: taking them changes nothing).
"""
from __future__ import annotations

import torch

import train
from cnn import data, replay
from cnn.evaluate import test as hits_of


def test_every_snapshot_loads_strictly_and_scores_its_recorded_accuracy():
    networks = replay.load()
    assert list(networks) == [replay.name(s) for s in replay.STEPS]
    split = data.load(train=False)
    accuracies = []
    for name, (model, card) in networks.items():
        hits = hits_of(model, split, "cpu")
        assert round(hits.float().mean().item(), 4) == card["test_accuracy"], name
        assert round(hits[:2000].float().mean().item(), 4) == card["test_accuracy_first2000"], name
        assert card["calibrated"] is False and card["step"] == int(name.split("-")[1])
        accuracies.append(card["test_accuracy"])
    assert accuracies[0] < 0.2 and accuracies[-1] > 0.97  # from a random start to the tutorial's ~98 %
    total = sum(replay.file_for(replay.DEFAULT_FOLDER, s).stat().st_size for s in replay.STEPS)
    assert total <= 1_500_000, total


def test_the_last_step_is_the_seed_recipes_final_weights_bit_for_bit(tmp_path):
    threads = torch.get_num_threads()
    try:
        assert train.main(["--recipe", "seed", "--out", str(tmp_path / "seed.pt")]) == 0
    finally:
        torch.set_num_threads(threads)
    seed = torch.load(tmp_path / "seed.pt", weights_only=True)
    last = torch.load(replay.file_for(replay.DEFAULT_FOLDER, replay.STEPS[-1]), weights_only=True)
    assert list(seed) == list(last)
    for key in seed:
        assert torch.equal(seed[key], last[key]), key
