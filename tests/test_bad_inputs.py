"""Bad inputs refused at startup with a message naming the key and what to do (issue 11, point 8):
mandatory keys left unset, and the teacher cache keyed by everything the teacher depends on."""
import subprocess
import sys

import pytest

from nascomp.config import compose
from nascomp.schema import ConfigError, validate


@pytest.mark.parametrize("overrides, message", [
    (["dataset=imagefolder"], "dataset.root: no value given (???); dataset=imagefolder needs dataset.root=/path/to/images"),
    (["teacher=custom", "teacher.name=torchvision.models:resnet18"],
     "teacher.checkpoint: no value given (???); teacher=custom needs its trained weights: teacher.checkpoint="),
    (["teacher=custom", "teacher.checkpoint=t.pt"], "teacher.name: no value given (???); teacher=custom needs teacher.name="),
])
def test_mandatory_keys_left_unset_are_named(overrides, message):
    with pytest.raises(ConfigError) as info:
        validate(compose(overrides))
    assert str(info.value).startswith(message)


def test_mandatory_keys_once_set_validate():
    cfg = validate(compose(["dataset=imagefolder", "dataset.root=/data/images", "teacher=custom",
                            "teacher.name=pkg.mod:Net", "teacher.checkpoint=t.pt"]))
    assert (cfg.dataset.root, cfg.teacher.checkpoint) == ("/data/images", "t.pt")
