"""A small CNN for the 8x8 digits, written as ordinary PyTorch and trained through SMLT:

    smlt train --dataset digits --model function --function "python3 python/examples/digits_cnn.py" \
        --workers 4 --epochs 10 --lr 0.1 --momentum 0.9

(with a python3 that has smlt[torch] installed). Every invocation (describe, each worker, evaluate)
runs this file; smlt.torch.main does the rest.
"""

from torch import nn
from torch.nn import functional as F

import smlt.torch


class DigitsCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)    # 8x8 -> 8x8, pooled to 4x4
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)   # 4x4 -> 4x4, pooled to 2x2
        self.fc = nn.Linear(16 * 2 * 2, 10)

    def forward(self, x):
        x = x.view(-1, 1, 8, 8)                       # 64 features, scaled to 0..1
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc(x.flatten(1))


if __name__ == "__main__":
    smlt.torch.main(DigitsCNN, F.cross_entropy)
