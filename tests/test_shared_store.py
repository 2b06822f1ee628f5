"""Runs sharing one store (the ``_cpu`` presets share one, with ``final.top_k: 1``): every finalist
starts full training from its own proxy weights, even when another run's better student pushed them
out of the store."""
import pytest
import torch

from nascomp.config import compose
from nascomp.schema import validate

from test_run import TINY


@pytest.mark.slow
def test_each_finalist_starts_from_its_own_proxy_weights(tmp_path, monkeypatch):
    from nascomp import pipeline

    starts = []  # the weights each full training starts from, in order
    full_train = pipeline.full_train

    def recording_full_train(student, dataset, cfg):
        starts.append({k: v.detach().clone() for k, v in student.state_dict().items()})
        return full_train(student, dataset, cfg)

    monkeypatch.setattr(pipeline, "full_train", recording_full_train)
    base = TINY + [f"teacher_dir={tmp_path / 'teachers'}", f"store.path={tmp_path / 'shared.sqlite'}", "logger=none",
                   "search.method=random", "seed=0", "space.shrink_groups=width",
                   "space.ops=[remove,shrink,skip]"]  # the space whose draws make the case below
    # The wide run: 8 students. The narrow run: T=0, its K=2 first random students, which every method
    # and budget shares with the wide run, so they come from the store; the wide run's best is not among them.
    wide = validate(compose(base + ["search.T=3"]))
    narrow = validate(compose(base + ["search.T=0"]))
    pipeline.run(wide, tmp_path / "wide")
    wide_start = starts.pop()

    setup = pipeline.Setup.build(narrow, tmp_path / "narrow")
    first = sorted(pipeline.run_search(setup.space, setup.open_run("probe", True), narrow, seed=0).history,
                   key=lambda r: -r.f)[0]
    assert setup.store.weights(setup.context, first.arch.key) is None  # pushed out by the wide run's better student
    own = setup.proxy.train([first.arch])[0].state_dict  # its proxy weights, trained again another way: alone
    setup.store.close()

    summary = pipeline.run(narrow, tmp_path / "narrow")
    assert summary["finalists"][0]["key"] == first.arch.key
    (narrow_start,) = starts
    assert narrow_start.keys() == own.keys() and all(torch.equal(narrow_start[k], own[k]) for k in own)
    # and it is not what the teacher's inherited weights would give
    inherited = first.arch.build(setup.teacher, inherit=narrow.inherit).state_dict()
    assert not all(torch.equal(narrow_start[k], inherited[k]) for k in own)
    assert wide_start  # the wide run's finalist had its weights in the store


def test_a_run_directory_rerun_with_another_config_warns_of_the_new_run(tmp_path, caplog):
    """The README promised that a store holding another config says which keys differ; a changed config has
    another run id, so the directory's store silently gained a second run whose outputs replaced the first's.
    Now a WARNING names the keys that differ from the run registered last and the new run id."""
    import logging
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    from nascomp.pipeline import run_id_of, stored_config, warn_new_run
    from nascomp.store import RunStore

    first = OmegaConf.to_container(validate(compose(TINY)), resolve=True)
    second = OmegaConf.to_container(validate(compose(TINY + ["search.T=2"])), resolve=True)
    store = RunStore(tmp_path / "store.sqlite")
    store.open_run(run_id_of(first), stored_config(first))  # as Setup.open_run records it
    store.finish_run(run_id_of(first))
    setup = lambda config, path=None: SimpleNamespace(cfg=OmegaConf.create({"store": {"path": path}}), store=store, config=config)
    with caplog.at_level(logging.WARNING, logger="nascomp"):
        warn_new_run(setup(first), run_id_of(first), tmp_path)  # the same config resumes: nothing to say
        warn_new_run(setup(second, str(tmp_path / "store.sqlite")), run_id_of(second), tmp_path)  # a shared store.path
        assert caplog.records == []
        warn_new_run(setup(second), run_id_of(second), tmp_path)
    (record,) = caplog.records
    assert record.levelname == "WARNING"
    assert record.getMessage() == (
        f"{tmp_path / 'store.sqlite'} already holds run {run_id_of(first)} (finished) with another config "
        f"(search.T: 1 -> 2): starting a new run {run_id_of(second)} in the same store (stored evaluations are "
        f"reused); its history.csv, summary.json, report.md and plots replace that run's in {tmp_path}. Rerun with "
        f"the earlier config to resume that run, or give each config its own hydra.run.dir")
    store.close()
