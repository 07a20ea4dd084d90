"""The article's network rebuilt from its published layer list (names, channels, kernel
sizes, pooling), written independently of mnist_net.py: a checkpoint of this project
must load into it with strict=True and give the same outputs."""
import torch.nn as nn
import torch.nn.functional as F

# (name of the pair, input channels, output channels), in the article's order.
ARTICLE_CONVOLUTIONS = [("1_1", 1, 32), ("1_2", 32, 32), ("2_1", 32, 64), ("2_2", 64, 64),
                        ("3_1", 64, 128), ("3_2", 128, 128)]


class ArticleNet(nn.Module):
    def __init__(self):
        super().__init__()
        for name, inputs, outputs in ARTICLE_CONVOLUTIONS:
            self.add_module(f"conv{name}", nn.Conv2d(inputs, outputs, kernel_size=5, padding=2))
            self.add_module(f"prelu{name}", nn.PReLU())
        self.ip1 = nn.Linear(128 * 3 * 3, 2)
        self.preluip1 = nn.PReLU()
        self.ip2 = nn.Linear(2, 10, bias=False)

    def forward(self, x):
        for name, _, _ in ARTICLE_CONVOLUTIONS:
            x = getattr(self, f"prelu{name}")(getattr(self, f"conv{name}")(x))
            if name.endswith("_2"):  # a 2x2 max-pool after each pair
                x = F.max_pool2d(x, 2)
        ip1 = self.preluip1(self.ip1(x.view(-1, 128 * 3 * 3)))
        return ip1, F.log_softmax(self.ip2(ip1), dim=1)
