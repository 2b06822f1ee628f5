"""Proxy evaluation across GPUs and machines with Ray (``evaluator=ray``; ``pip install nascomp[ray]``).

The K students of a step train in parallel as Ray tasks, each asking for ``num_gpus`` GPUs
(fractional values share a GPU) and ``num_cpus`` CPUs, on a local Ray instance or the cluster at
``address``. A task whose worker dies is re-run by Ray (``max_retries``); a task that still fails,
or that does not finish within ``timeout_s``, is a failed evaluation, so a step never hangs.
Each task rebuilds the teacher and the student from plain data (graph JSON, state_dicts, configs),
loads the dataset once per worker process, and trains exactly what local evaluation trains: with
the same seeds both give the same results.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

from omegaconf import OmegaConf

from nascomp.proxy_evaluator import ProxyEvaluator
from nascomp.training import Result

_DATASETS: dict[str, Any] = {}  # per worker process: dataset config digest -> Dataset


def proxy_task(payload: dict, arch: dict) -> tuple[float, int, dict, bool]:
    """Runs in a Ray worker: proxy-train one student; returns (val accuracy, epoch, state_dict, diverged)."""
    import ray

    from nascomp import data, teachers, threads
    from nascomp.graph import ArchGraph
    from nascomp.compression_space import CompressionSpace
    from nascomp.store import digest
    from nascomp.training import proxy_train

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)  # evaluator.num_cpus
    threads.apply("auto", cpus=min(cpus, threads.available_cpus()))
    key = digest(payload["dataset"])
    if key not in _DATASETS:
        _DATASETS[key] = data.load(OmegaConf.create(payload["dataset"]))
    t = payload["teacher"]
    teacher = teachers.create(t["name"], num_classes=t["num_classes"], width=t["width"],
                              in_channels=_DATASETS[key].in_channels, **t["kwargs"])
    teacher.load_state_dict(payload["teacher_state"])
    space = CompressionSpace(ArchGraph.from_json(payload["graph"]), **payload["space"])
    student = space.from_dict(arch).build(teacher.eval(), inherit=payload["inherit"])
    (result,) = proxy_train([student], teacher, _DATASETS[key], OmegaConf.create(payload["proxy"]))
    return result.val_accuracy, result.epoch, result.state_dict, result.diverged


class RayEvaluator(ProxyEvaluator):
    """``ProxyEvaluator`` whose training runs as one Ray task per student."""

    def __init__(self, *args, ray_cfg, teacher_spec: dict, dataset_cfg: dict, graph_json: dict, space_options: dict,
                 task: Callable[[dict, dict], tuple] = proxy_task, **kwargs):
        """``args``/``kwargs`` as ``ProxyEvaluator``; ``teacher_spec`` = {name, num_classes, width, kwargs};
        ``task`` is what a worker runs (``proxy_task``)."""
        super().__init__(*args, **kwargs)
        try:
            import ray
        except ImportError as exc:
            raise ImportError("evaluator=ray needs Ray: pip install 'nascomp[ray]'") from exc
        self.ray = ray
        if not ray.is_initialized():
            init = {"address": ray_cfg.address} if ray_cfg.address else {"num_cpus": ray_cfg.local_cpus}
            ray.init(**init, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
        gpus = ray.cluster_resources().get("GPU", 0)
        num_gpus = ray_cfg.num_gpus if ray_cfg.num_gpus != "auto" else (1 if gpus else 0)
        if float(num_gpus) > gpus:
            raise ValueError(f"evaluator.num_gpus={num_gpus} per student, but the Ray cluster has {gpus:g} GPUs")
        self.timeout = ray_cfg.timeout_s
        self.remote = ray.remote(task).options(num_gpus=float(num_gpus), num_cpus=float(ray_cfg.num_cpus),
                                               max_retries=int(ray_cfg.max_retries), retry_exceptions=False)
        self.payload = ray.put({
            "teacher": teacher_spec, "teacher_state": {k: v.cpu() for k, v in self.teacher.state_dict().items()},
            "dataset": dataset_cfg, "proxy": OmegaConf.to_container(self.cfg, resolve=True),
            "graph": graph_json, "space": space_options, "inherit": self.inherit,
        })

    def train(self, archs: Sequence) -> list[Result | Exception]:
        ray = self.ray
        refs = [self.remote.remote(self.payload, a.to_dict()) for a in archs]
        ready, pending = ray.wait(refs, num_returns=len(refs), timeout=self.timeout)
        for ref in pending:
            ray.cancel(ref, force=True)
        out: list[Result | Exception] = []
        for ref in refs:
            if ref in pending:
                out.append(TimeoutError(f"no result within evaluator.timeout_s={self.timeout}"))
                continue
            try:
                acc, epoch, state, diverged = ray.get(ref)
                out.append(Result(acc, epoch, state, diverged=diverged))
            except Exception as exc:  # the task failed after its retries (worker died, OOM, ...)
                out.append(exc)
        return out
