import torch
from torch import nn

from cnn.model import CNN


class TutorialCNN(nn.Module):
    """The PyTorch tutorial's own class, verbatim in structure, to check state_dict compatibility."""

    def __init__(self):
        super(TutorialCNN, self).__init__()
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_channels=1, out_channels=16, kernel_size=5, stride=1, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=2),
        )
        self.conv2 = nn.Sequential(nn.Conv2d(16, 32, 5, 1, 2), nn.ReLU(), nn.MaxPool2d(2))
        self.out = nn.Linear(32 * 7 * 7, 10)

    def forward(self, x):
        x = self.conv1(x)
        x = self.conv2(x)
        x = x.view(x.size(0), -1)
        output = self.out(x)
        return output, x


def test_parameter_count():
    assert sum(p.numel() for p in CNN().parameters()) == 28_938


def test_shapes():
    model = CNN()
    x = torch.rand(5, 1, 28, 28)
    assert model.conv1(x).shape == (5, 16, 14, 14)
    assert model.conv2(model.conv1(x)).shape == (5, 32, 7, 7)
    assert model(x).shape == (5, 10)
    assert model(x[:1]).shape == (1, 10)


def test_tutorial_state_dict_loads_strictly_and_agrees():
    torch.manual_seed(1)
    tutorial = TutorialCNN().eval()
    model = CNN().eval()
    model.load_state_dict(tutorial.state_dict(), strict=True)
    x = torch.rand(3, 1, 28, 28)
    torch.testing.assert_close(model(x), tutorial(x)[0])
