"""The classic PyTorch-tutorial MNIST CNN, and nothing else.

Two conv blocks (conv -> ReLU -> 2x2 max-pool) and one linear layer: 28,938
parameters. The attribute names and the Sequential layout match the tutorial
exactly so a state_dict saved from the tutorial's own class loads with
strict=True, and so the feature-map code can replay ``conv1[0]``, ``conv1[1]``,
``conv1[2]`` ... without writing the forward pass a second time.
"""
import torch
from torch import nn


class CNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        # padding=2 keeps 28x28 through the 5x5 conv so each pool halves exactly.
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_channels=1, out_channels=16, kernel_size=5, stride=1, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=2),
        )
        self.conv2 = nn.Sequential(
            nn.Conv2d(16, 32, 5, 1, 2),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.out = nn.Linear(32 * 7 * 7, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, 1, 28, 28) in [0, 1], ink high (ToTensor range)
        x = self.conv1(x)  # (B, 16, 14, 14)
        x = self.conv2(x)  # (B, 32, 7, 7)
        x = x.flatten(1)  # (B, 1568)
        return self.out(x)  # (B, 10) logits
