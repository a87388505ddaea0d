import shutil

import pytest
import torch
from torchvision.datasets import MNIST

from cnn import data
from cnn.errors import DataError


@pytest.fixture
def raw_copy(tmp_path):
    """A private copy of the four raw MNIST files (so they can be damaged)."""
    src = data.raw_folder(data.default_root())
    data.ensure(data.default_root())
    dst = data.raw_folder(tmp_path)
    dst.mkdir(parents=True)
    for name in data.RAW_MD5:
        shutil.copyfile(src / name, dst / name)
    return tmp_path


def test_verify_accepts_the_published_files():
    assert data.verify(data.default_root()) == []


def test_verify_rejects_a_corrupted_file(raw_copy):
    path = data.raw_folder(raw_copy) / "t10k-labels-idx1-ubyte"
    blob = bytearray(path.read_bytes())
    blob[100] ^= 0xFF  # one flipped byte
    path.write_bytes(bytes(blob))
    with pytest.raises(DataError, match="corrupted"):
        data.load(raw_copy, train=False)


def test_missing_files_offline_say_where_to_put_them(tmp_path, monkeypatch):
    # An address that refuses connections at once stands in for "no internet".
    monkeypatch.setattr(MNIST, "mirrors", ["http://127.0.0.1:9/"])
    with pytest.raises(DataError) as err:
        data.load(tmp_path / "empty", train=False)
    msg = str(err.value)
    assert str(data.raw_folder(tmp_path / "empty")) in msg
    assert "t10k-images-idx3-ubyte" in msg and "MNIST_ROOT" in msg


def test_split_is_one_uint8_tensor_and_batches_match_totensor():
    split = data.load(train=False)
    assert split.images.shape == (10_000, 28, 28) and split.images.dtype == torch.uint8
    assert split.labels.shape == (10_000,)
    x, y = split.batch(torch.tensor([0, 7]))
    assert x.shape == (2, 1, 28, 28) and x.dtype == torch.float32
    # the same numbers torchvision's per-sample ToTensor path gives
    from torchvision.transforms.functional import to_tensor
    ds = MNIST(data.default_root(), train=False)
    torch.testing.assert_close(x[1], to_tensor(ds[7][0]))
    assert int(y[1]) == ds[7][1]
