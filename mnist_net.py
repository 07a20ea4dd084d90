"""LeNets++ of the Center Loss paper (Wen et al., ECCV 2016), as in the article.

The layer names and their order are the article's, so that `print(Net())` prints
its text and a saved `state_dict` loads with `strict=True` into the article's code.
"""
import torch.nn as nn
import torch.nn.functional as F


class Net(nn.Module):
    def __init__(self, num_classes=10, feat_dim=2):
        """`feat_dim`: the width of the feature ip1, 2 in the article (to be drawn); the
        embeddings of face recognition and re-identification have 128 or more."""
        super().__init__()
        self.conv1_1 = nn.Conv2d(1, 32, kernel_size=5, padding=2)
        self.prelu1_1 = nn.PReLU()
        self.conv1_2 = nn.Conv2d(32, 32, kernel_size=5, padding=2)
        self.prelu1_2 = nn.PReLU()
        self.conv2_1 = nn.Conv2d(32, 64, kernel_size=5, padding=2)
        self.prelu2_1 = nn.PReLU()
        self.conv2_2 = nn.Conv2d(64, 64, kernel_size=5, padding=2)
        self.prelu2_2 = nn.PReLU()
        self.conv3_1 = nn.Conv2d(64, 128, kernel_size=5, padding=2)
        self.prelu3_1 = nn.PReLU()
        self.conv3_2 = nn.Conv2d(128, 128, kernel_size=5, padding=2)
        self.prelu3_2 = nn.PReLU()
        # 28 -> 14 -> 7 -> 3 after the three 2x2 max-pools: 128 * 3 * 3 = 1152.
        self.ip1 = nn.Linear(128 * 3 * 3, feat_dim)
        self.preluip1 = nn.PReLU()
        # No bias: the classes are separated by angle around the origin of the feature space.
        self.ip2 = nn.Linear(feat_dim, num_classes, bias=False)

    @classmethod
    def sized_for(cls, state_dict):
        """A Net of the shape of a saved `state_dict`, of any width: ip2's weight is
        (num_classes, feat_dim), fewer classes when some were held out in training."""
        num_classes, feat_dim = state_dict["ip2.weight"].shape
        return cls(num_classes=num_classes, feat_dim=feat_dim)

    @classmethod
    def from_state_dict(cls, state_dict):
        """A Net sized for `state_dict` (a checkpoint of the trainer), its weights loaded:
        `Net.from_state_dict(torch.load(path, weights_only=True))`."""
        model = cls.sized_for(state_dict)
        model.load_state_dict(state_dict)
        return model

    def forward(self, x):
        x = self.prelu1_1(self.conv1_1(x))
        x = self.prelu1_2(self.conv1_2(x))
        x = F.max_pool2d(x, 2)
        x = self.prelu2_1(self.conv2_1(x))
        x = self.prelu2_2(self.conv2_2(x))
        x = F.max_pool2d(x, 2)
        x = self.prelu3_1(self.conv3_1(x))
        x = self.prelu3_2(self.conv3_2(x))
        x = F.max_pool2d(x, 2)
        x = x.flatten(1)
        ip1 = self.preluip1(self.ip1(x))
        ip2 = self.ip2(ip1)
        return ip1, F.log_softmax(ip2, dim=1)
