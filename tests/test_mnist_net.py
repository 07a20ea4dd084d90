import re

import pytest
import torch

from mnist_net import Net

from conftest import REPO_DIR

DOC = REPO_DIR / "docs" / "evaluation.md"

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


def own_code_snippet():
    """The Python block of docs/evaluation.md's "Use a checkpoint in your own code"."""
    section = DOC.read_text().split("## Use a checkpoint in your own code")[1].split("\n## ")[0]
    [block] = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    return block


@pytest.mark.parametrize("num_classes, feat_dim", [(10, 3), (10, 128), (8, 2)])
def test_the_docs_snippet_loads_a_checkpoint_of_any_width(tmp_path, monkeypatch, num_classes,
                                                          feat_dim):
    saved = Net(num_classes=num_classes, feat_dim=feat_dim).eval()  # (8: two classes held out)
    (tmp_path / "outputs" / "model").mkdir(parents=True)
    torch.save(saved.state_dict(), tmp_path / "outputs" / "model" / "epoch_100.pth")
    monkeypatch.chdir(tmp_path)  # the snippet's path is relative
    names = {"images": torch.randn(4, 1, 28, 28)}
    exec(own_code_snippet(), names)
    assert names["feature"].shape == (4, feat_dim) and names["log_probs"].shape == (4, num_classes)
    with torch.no_grad():
        expected_feature, expected_log_probs = saved(names["images"])
    assert torch.allclose(names["feature"], expected_feature, atol=1e-6)
    assert torch.allclose(names["log_probs"], expected_log_probs, atol=1e-6)


def test_the_articles_net_refuses_another_width_and_from_state_dict_takes_it():
    state = Net(feat_dim=3).state_dict()
    with pytest.raises(RuntimeError, match="size mismatch for ip1.weight"):
        Net().load_state_dict(state)  # the README's Net() alone: the article's 2-D net
    model = Net.from_state_dict(state)
    assert model.ip1.out_features == 3 and model.ip2.weight.shape == (10, 3)
    assert all(torch.equal(model.state_dict()[key], value) for key, value in state.items())


def test_a_held_out_runs_checkpoint_has_fewer_outputs(holdout_run):
    # a checkpoint as the trainer writes it, digits 8 and 9 held out
    state = torch.load(holdout_run / "model" / "epoch_003.pth", weights_only=True)
    model = Net.from_state_dict(state).eval()
    feature, log_probs = model(torch.randn(2, 1, 28, 28))
    assert feature.shape == (2, 2) and log_probs.shape == (2, 8)
