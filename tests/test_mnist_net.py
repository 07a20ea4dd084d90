import torch

from mnist_net import Net

ARTICLE_PRINT = """Net(
  (conv1_1): Conv2d(1, 32, kernel_size=(5, 5), stride=(1, 1), padding=(2, 2))
  (prelu1_1): PReLU(num_parameters=1)
  (conv1_2): Conv2d(32, 32, kernel_size=(5, 5), stride=(1, 1), padding=(2, 2))
  (prelu1_2): PReLU(num_parameters=1)
  (conv2_1): Conv2d(32, 64, kernel_size=(5, 5), stride=(1, 1), padding=(2, 2))
  (prelu2_1): PReLU(num_parameters=1)
  (conv2_2): Conv2d(64, 64, kernel_size=(5, 5), stride=(1, 1), padding=(2, 2))
  (prelu2_2): PReLU(num_parameters=1)
  (conv3_1): Conv2d(64, 128, kernel_size=(5, 5), stride=(1, 1), padding=(2, 2))
  (prelu3_1): PReLU(num_parameters=1)
  (conv3_2): Conv2d(128, 128, kernel_size=(5, 5), stride=(1, 1), padding=(2, 2))
  (prelu3_2): PReLU(num_parameters=1)
  (ip1): Linear(in_features=1152, out_features=2, bias=True)
  (preluip1): PReLU(num_parameters=1)
  (ip2): Linear(in_features=2, out_features=10, bias=False)
)"""


def test_print_matches_article():
    assert str(Net()) == ARTICLE_PRINT


def test_forward_shapes_and_log_softmax():
    model = Net()
    feat, log_probs = model(torch.randn(5, 1, 28, 28))
    assert feat.shape == (5, 2)
    assert log_probs.shape == (5, 10)
    assert torch.allclose(log_probs.exp().sum(1), torch.ones(5), atol=1e-5)
    # ip2 has no bias: the logits are exactly ip2's weight applied to the 2-D feature.
    assert torch.allclose(log_probs, torch.log_softmax(feat @ model.ip2.weight.T, dim=1), atol=1e-5)


def test_pooling_after_each_pair():
    model = Net()
    x = torch.randn(1, 1, 28, 28)
    # Three 2x2 pools take 28 -> 14 -> 7 -> 3, giving ip1's 1152 inputs.
    assert model.ip1.in_features == 128 * 3 * 3
    assert model.ip2.bias is None
    model(x)  # runs without a shape error


def test_parameter_names_are_the_articles():
    names = {name.split(".")[0] for name in Net().state_dict()}
    assert names == {"conv1_1", "prelu1_1", "conv1_2", "prelu1_2", "conv2_1", "prelu2_1", "conv2_2",
                     "prelu2_2", "conv3_1", "prelu3_1", "conv3_2", "prelu3_2", "ip1", "preluip1",
                     "ip2"}


def test_the_articles_layer_list_loads_strictly_and_computes_the_same():
    from article_net import ArticleNet
    model = Net().eval()
    article = ArticleNet().eval()
    article.load_state_dict(model.state_dict(), strict=True)
    images = torch.randn(3, 1, 28, 28)
    for ours, theirs in zip(model(images), article(images)):
        assert torch.equal(ours, theirs)


def test_a_wider_feature_keeps_the_articles_names():
    model = Net(num_classes=8, feat_dim=128)
    assert list(model.state_dict()) == list(Net().state_dict())
    assert model.ip1.weight.shape == (128, 1152) and model.ip2.weight.shape == (8, 128)
    feat, log_probs = model(torch.randn(3, 1, 28, 28))
    assert feat.shape == (3, 128) and log_probs.shape == (3, 8)
