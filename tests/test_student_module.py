"""StudentModule: distillation losses by hand, a cohort equals one-by-one, proxy training learns."""
import math

import pytest
import torch

from nascomp import config, data, teachers, training
from nascomp.student_module import StudentModule, kl, loss_function, mse_logits


pytestmark = pytest.mark.usefixtures("one_thread")


CPU = "trainer.accelerator=cpu"  # deterministic, and what these numbers were measured on


@pytest.fixture(scope="module")
def digits():
    return data.load(config.group("dataset", "digits"))


@pytest.fixture(scope="module")
def teacher(digits):
    torch.manual_seed(0)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    model = teachers.create("small_resnet", width=0.5)
    cfg = config.group("training", "teacher", ["epochs=8", "optimizer.lr=0.05", "scheduler=null", "batch_size=64",
                                                  "trainer.enable_progress_bar=false", CPU])
    module = StudentModule(model, cfg, digits.num_classes, augment=digits.augment)
    training.make_trainer(cfg).fit(module, digits.loader("train", 64, shuffle=True), digits.loader("val", 64))
    torch.set_num_threads(n)
    assert module.best_accuracy[0] > 0.8
    return model.eval()


def test_mse_logits_by_hand():
    s, t = torch.tensor([[1.0, 0.0], [2.0, -1.0]]), torch.tensor([[0.0, 1.0], [2.0, 1.0]])
    assert mse_logits(s, t).item() == pytest.approx((1 + 1 + 0 + 4) / 4)


def test_kl_by_hand():
    s, t, y = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]), torch.tensor([0])
    # softmax([0, 1]) = (1 - p, p) with p = sigmoid(1); KL(t || s) = (2p - 1) * 1 = tanh(1/2)
    assert kl(s, t, y, temperature=1.0, alpha=0.0).item() == pytest.approx(math.tanh(0.5), rel=1e-6)
    # T = 2: logits halved, KL = tanh(1/4) / 2, times T^2 = 4
    assert kl(s, t, y, temperature=2.0, alpha=0.0).item() == pytest.approx(4 * math.tanh(0.25) / 2, rel=1e-6)
    ce = math.log(1 + math.exp(-1))  # CE([1, 0], label 0)
    assert kl(s, t, y, temperature=2.0, alpha=0.25).item() == pytest.approx(0.75 * 2 * math.tanh(0.25) + 0.25 * ce, rel=1e-6)


def test_loss_from_config_and_unknown_loss():
    cfg = config.group("training", "proxy", ["loss=kl", "temperature=2.0", "alpha=0.25"])
    s, t, y = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]), torch.tensor([0])
    assert loss_function(cfg)(s, t, y).item() == pytest.approx(kl(s, t, y, 2.0, 0.25).item())
    with pytest.raises(ValueError, match="mse_logits, kl or ce"):
        loss_function(config.group("training", "proxy", ["loss=l1"]))


def _students(k, width=0.25):
    out = []
    for seed in range(k):
        torch.manual_seed(100 + seed)
        out.append(teachers.create("small_resnet", width=width))
    return out


@pytest.mark.parametrize("loss", ["mse_logits", "kl"])
def test_cohort_equals_one_by_one(digits, teacher, loss):
    cfg = config.group("training", "proxy", ["epochs=2", "batch_size=128", f"loss={loss}", CPU])
    cohort = training.proxy_train(_students(3), teacher, digits, cfg)
    alone = [training.proxy_train(s, teacher, digits, cfg)[0] for s in _students(3)]
    for c, a in zip(cohort, alone):
        assert (c.val_accuracy, c.epoch) == (a.val_accuracy, a.epoch)
        assert all(torch.equal(c.state_dict[k], a.state_dict[k]) for k in a.state_dict)
    assert len({r.val_accuracy for r in cohort} | {str(r.state_dict["linear.bias"]) for r in cohort}) > 1


def test_proxy_training_follows_its_seed_not_the_callers_random_state(digits, teacher):
    """Dropout draws from torch's global generator: proxy training seeds it from the recipe, so a
    student trains the same whatever ran before (a resumed run, whose cached steps train nothing,
    gives the uninterrupted run's figures), and the caller's random state is left as it was."""
    cfg = config.group("training", "proxy", ["epochs=1", "batch_size=128", CPU])
    results = []
    for caller_seed in (1, 2):
        torch.manual_seed(7)
        student = torch.nn.Sequential(teachers.create("small_resnet", width=0.25), torch.nn.Dropout(0.5))
        torch.manual_seed(caller_seed)
        state = torch.get_rng_state()
        results.append(training.proxy_train(student, teacher, digits, cfg)[0])
        assert torch.equal(torch.get_rng_state(), state)
    a, b = results
    assert a.val_accuracy == b.val_accuracy and all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)


def test_proxy_training_learns_and_keeps_the_best_epoch(digits, teacher):
    teacher_state = {k: v.clone() for k, v in teacher.state_dict().items()}
    cfg = config.group("training", "proxy", ["epochs=4", "batch_size=32", CPU])
    student = _students(1, width=0.5)[0]
    (result,) = training.proxy_train(student, teacher, digits, cfg)
    print("proxy val accuracy", result.val_accuracy)
    assert result.val_accuracy > 0.5  # chance is 0.1
    assert 0 <= result.epoch < 4
    # the weights kept are those of the best epoch: they score exactly the reported accuracy
    assert training.accuracy(student, digits, "val", cfg) == pytest.approx(result.val_accuracy)
    # the teacher is frozen: weights and BN running statistics unchanged, still in eval mode
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in teacher_state.items()) and not teacher.training
