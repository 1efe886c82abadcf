"""``MlopCallback``: what ``TrainingArguments(report_to="mlop")`` puts into a transformers ``Trainer``.

Environment:

- ``MLOP_PROJECT``: the project of the runs (default: ``TrainingArguments.project``, ``"huggingface"``).
- ``MLOP_LOG_MODEL``: ``checkpoint`` stores every checkpoint the Trainer saves as an artifact,
  ``end`` the final model; ``false`` (the default) neither.
- ``MLOP_WATCH``: ``gradients``, ``parameters`` or ``all`` has ``run.watch`` record them (needs mlop-torch);
  ``false`` (the default) does not.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from typing import Any, Final

from transformers.trainer_callback import TrainerCallback

try:  # transformers 4.41 and later keep such callbacks' state in each checkpoint's trainer_state.json
    from transformers.trainer_callback import ExportableState
except ImportError:  # pragma: no cover - older transformers: a resumed training starts a new run
    ExportableState = object  # type: ignore[assignment,misc]

import mlop
from mlop_hf import _cleanup, _register
from mlop_hf._config import trainer_config

__all__ = ["SUMMARY_KEYS", "MlopCallback", "prefixed"]

logger = logging.getLogger("mlop_hf")

_LOG_MODEL: Final = {"checkpoint": "checkpoint", "end": "end", "true": "end", "1": "end"}
_OFF: Final = frozenset({"", "0", "false", "no", "off", "none"})
_WATCH: Final = frozenset({"gradients", "parameters", "all"})
#: What the Trainer reports once, when training ends: the run's summary, not step series.
SUMMARY_KEYS: Final = frozenset(
    {"train_runtime", "train_samples_per_second", "train_steps_per_second", "total_flos", "train_loss"}
)


def prefixed(logs: Mapping[str, Any]) -> dict[str, Any]:
    """Trainer log keys as transformers' own trackers show them.

    ``eval_loss`` becomes ``eval/loss``, ``test_accuracy`` becomes ``test/accuracy``, and everything else goes
    under ``train/`` (``loss``, ``learning_rate``, ``train_runtime``...).
    """
    out: dict[str, Any] = {}
    for key, value in logs.items():
        for prefix in ("eval", "test"):
            if key.startswith(prefix + "_"):
                out[f"{prefix}/{key[len(prefix) + 1 :]}"] = value
                break
        else:
            out[f"train/{key}"] = value
    return out


def _env_choice(name: str, allowed: Mapping[str, str] | frozenset[str]) -> str | None:
    raw = os.environ.get(name, "").strip().lower()
    if raw in _OFF:
        return None
    if raw in allowed:
        return allowed[raw] if isinstance(allowed, Mapping) else raw
    logger.warning("mlop: %s=%r is not one of %s; ignored", name, raw, ", ".join(sorted(allowed)))
    return None


class MlopCallback(TrainerCallback, ExportableState):
    """Log a transformers ``Trainer`` to mlop.

    Picked by ``TrainingArguments(report_to="mlop")``, or passed as ``Trainer(callbacks=[MlopCallback()])``.
    Only the world's process zero logs; the other processes of a distributed job do nothing.

    The run starts when training does (or at the first log outside training), named after
    ``TrainingArguments.run_name``, with the model's config, the training arguments (tokens masked) and
    the PEFT config if the model has one as its config. Each log of the Trainer lands at
    ``state.global_step`` with the ``train/``, ``eval/`` and ``test/`` prefixes of transformers' own
    trackers, together with ``train/global_step``; what the Trainer reports once when training ends
    (``train_runtime``, ``train_samples_per_second``, ``train_steps_per_second``, ``total_flos``,
    ``train_loss``) goes into ``run.summary``. One Trainer is one live run: it stays RUNNING after
    training, so the metrics of ``trainer.evaluate()`` and ``trainer.predict()`` land in it at the last
    global step, and it ends when the process does, when the user calls ``mlop.finish()`` (a later
    evaluate() continues it), or when the next ``train()`` starts a fresh run. A run the user owns (passed
    as ``run``, or started with ``mlop.init()`` before training) is never ended here. In a hyperparameter
    search each trial gets a fresh run, named after the trial, that ends when the next trial starts.

    Args:
        run: a run to log into; the user finishes it.
        project: the project of new runs (default: ``MLOP_PROJECT``, else ``TrainingArguments.project``).
        log_model: ``"checkpoint"``, ``"end"`` or None (default: ``MLOP_LOG_MODEL``).
        watch: ``"gradients"``, ``"parameters"``, ``"all"`` or None (default: ``MLOP_WATCH``).
        **init_kwargs: passed to :func:`mlop.init` for new runs (``dir``, ``tags``, ``settings``, ...).
    """

    def __init__(
        self,
        run: mlop.Run | None = None,
        project: str | None = None,
        log_model: str | None = None,
        watch: str | None = None,
        **init_kwargs: Any,
    ) -> None:
        self._run: Any = run
        self._owned = False
        self._project = project
        self._log_model = log_model if log_model is not None else _env_choice("MLOP_LOG_MODEL", _LOG_MODEL)
        if self._log_model not in (None, "checkpoint", "end"):
            raise ValueError(f"log_model must be 'checkpoint', 'end' or None, got {log_model!r}")
        self._watch = watch if watch is not None else _env_choice("MLOP_WATCH", _WATCH)
        if self._watch not in (None, *_WATCH):
            raise ValueError(f"watch must be 'gradients', 'parameters', 'all' or None, got {watch!r}")
        self._init_kwargs = init_kwargs
        self._trained = False  # a training ended in the current run: the next train() gets a fresh one
        # The run a checkpoint names ({"run_id", "project"}): transformers restores it with the callback
        # when restore_callback_states_from_checkpoint=True; otherwise it is read from the loaded state.
        self._checkpoint_run: dict[str, str] | None = None
        self._watched: Any = None  # the run that watches the model

    @property
    def run(self) -> Any:
        """The run this callback logs to, or None before it has one."""
        return self._run

    # -- the run ------------------------------------------------------------------------------------------

    def setup(self, args: Any, state: Any, model: Any = None, **kwargs: Any) -> None:
        """Start (or take) the run, store the config and watch the model. World process zero only."""
        if self._run is None:
            active = mlop.ops[-1] if mlop.ops else None
            if active is not None and not state.is_hyper_param_search and not _cleanup.is_ours(active):
                self._run, self._owned = active, False
            else:
                self._run, self._owned = self._new_run(args, state), True
        try:
            config = trainer_config(args, model)
            if state.trial_params:
                config["trial_params"] = dict(state.trial_params)
            self._run.update_config(config)
        except Exception:  # broad: a config that cannot be read must not stop training
            logger.exception("mlop could not store the training config")
        if self._watch and model is not None and self._watched is not self._run:
            self._watched = self._run
            try:
                self._run.watch(model, log=self._watch, log_freq=max(100, int(state.logging_steps or 0)))
            except Exception as exc:  # broad: watching is optional; mlop-torch may be missing
                logger.warning("mlop: MLOP_WATCH=%s, but the model cannot be watched: %s", self._watch, exc)

    def _new_run(self, args: Any, state: Any) -> Any:
        kwargs = dict(self._init_kwargs)
        project = self._project or os.environ.get("MLOP_PROJECT") or getattr(args, "project", None)
        kwargs.setdefault("project", project or "huggingface")
        resumed = self._checkpoint_run
        if resumed is not None:  # continue the run the checkpoint names
            kwargs.update(run_id=resumed["run_id"], resume=True)
            if resumed["project"]:
                kwargs["project"] = resumed["project"]
        if state.is_hyper_param_search:
            if state.trial_name:
                kwargs.setdefault("name", state.trial_name)
            group = args.run_name or os.path.basename(os.path.normpath(args.output_dir or "")) or "hp-search"
            tags = kwargs.get("tags") or []
            kwargs["tags"] = [*([tags] if isinstance(tags, str) else tags), f"group:{group}"]
        elif args.run_name:
            kwargs.setdefault("name", args.run_name)
        run = mlop.init(**kwargs)
        _cleanup.mark_ours(run)
        return run

    def _reopen(self) -> None:
        """Continue our run after something ended it (``mlop.finish()``), for the logs that come later."""
        run = self._run
        root = _run_root(run)
        skip = ("name", "tags", "config", "dir", "save_dir", "project", "run_id", "resume")
        kwargs = {k: v for k, v in self._init_kwargs.items() if k not in skip}
        try:
            self._run = mlop.init(project=run.project, run_id=run.id, resume=True, dir=root, **kwargs)
        except Exception:  # broad: a run that cannot be reopened just gets no more logs
            logger.exception("mlop could not reopen run %s for the logs after training", run.id)
            self._run = None
            return
        _cleanup.mark_ours(self._run)

    def _ready(self, args: Any, state: Any, model: Any = None) -> bool:
        """Whether this process logs; gets the run first when there is none yet."""
        if not state.is_world_process_zero:
            return False
        if self._run is not None and self._owned and not _live(self._run):
            self._reopen()
        if self._run is None:
            self.setup(args, state, model)
        return self._run is not None

    def _finish(self) -> None:
        """Finish the run if it is ours; forget it either way."""
        run, self._run = self._run, None
        if run is not None and self._owned:
            run.finish()
            _cleanup.run_finished(run)
        self._owned = self._trained = False

    # -- Trainer events -------------------------------------------------------------------------------------

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        resumed = None if state.is_hyper_param_search else self._resumed_run(state)
        if resumed is not None and self._run is not None and self._run.id == resumed["run_id"]:
            resumed = None  # resuming in the process that holds the run: it goes on
            self._trained = False
        elif self._owned and (
            state.is_hyper_param_search or self._trained or resumed is not None or not _live(self._run)
        ):
            self._finish()  # a fresh run for each trial, and for each train() after the first
        self._checkpoint_run = resumed
        self.setup(args, state, model)
        self._checkpoint_run = None

    def _resumed_run(self, state: Any) -> dict[str, str] | None:
        """The run named by the checkpoint this training resumes from, if any (``resume_from_checkpoint``).

        Each checkpoint's ``trainer_state.json`` holds this callback's state (:meth:`state`), which the
        Trainer loads before ``on_train_begin``.
        """
        if not state.global_step:
            return None
        saved: Any = (getattr(state, "stateful_callbacks", None) or {}).get(type(self).__name__)
        if isinstance(saved, list):
            saved = saved[0] if saved else None
        found = (
            (saved or {}).get("attributes", {}).get("_checkpoint_run") if isinstance(saved, dict) else None
        )
        found = found or self._checkpoint_run
        if isinstance(found, dict) and isinstance(found.get("run_id"), str):
            return {"run_id": found["run_id"], "project": str(found.get("project") or "")}
        return None

    def state(self) -> dict[str, Any]:
        """What each checkpoint keeps of this callback: the run it logs to, so a training resumed from the
        checkpoint (``trainer.train(resume_from_checkpoint=...)``, on any machine) continues that run."""
        run = self._run
        ident = None
        if isinstance(run, mlop.Run):
            ident = {"run_id": str(run.id), "project": str(run.project)}
        return {"args": {}, "attributes": {"_checkpoint_run": ident}}

    def on_log(
        self,
        args: Any,
        state: Any,
        control: Any,
        model: Any = None,
        logs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if not logs or not self._ready(args, state, model):
            return
        final = {k: v for k, v in logs.items() if k in SUMMARY_KEYS}
        series = {k: v for k, v in logs.items() if k not in SUMMARY_KEYS}
        if final:  # the end of training: one value each, the run's summary rather than a series
            self._run.summary.update(final)
        if series:
            self._run.log(
                {**prefixed(series), "train/global_step": state.global_step}, step=state.global_step
            )

    def on_predict(self, args: Any, state: Any, control: Any, metrics: Any = None, **kwargs: Any) -> None:
        if not metrics or not self._ready(args, state, kwargs.get("model")):
            return
        self._run.log({**prefixed(metrics), "train/global_step": state.global_step}, step=state.global_step)

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._log_model != "checkpoint" or not self._ready(args, state, kwargs.get("model")):
            return
        name = f"checkpoint-{state.global_step}"
        path = os.path.join(args.output_dir, name)
        if not os.path.isdir(path):
            logger.warning("mlop: the checkpoint %s is not there; it was not stored", path)
            return
        metadata = {"global_step": state.global_step, "epoch": state.epoch, "checkpoint": name}
        self._log_artifact("model/checkpoint", path, name, metadata, state.global_step)

    def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero or self._run is None:
            return
        if self._log_model == "end" and model is not None:
            self._log_final_model(model, kwargs.get("processing_class"), state)
        self._trained = True  # the run stays live: evaluate(), predict() and a search's objective log to it

    # -- models ---------------------------------------------------------------------------------------------

    def _log_final_model(self, model: Any, processing_class: Any, state: Any) -> None:
        staging = tempfile.mkdtemp(prefix="mlop-hf-model-")
        try:
            if hasattr(model, "save_pretrained"):
                model.save_pretrained(staging)
            else:  # a plain torch module, which Trainer takes too: its weights, as Trainer saves them
                _save_state_dict(model, staging)
            if processing_class is not None and hasattr(processing_class, "save_pretrained"):
                processing_class.save_pretrained(staging)
        except Exception:  # broad: a model that cannot be saved must not fail the end of training
            logger.exception("mlop could not save the final model")
            shutil.rmtree(staging, ignore_errors=True)
            return
        metadata = {"global_step": state.global_step, "epoch": state.epoch, "final_model": True}
        if self._log_artifact("model/final", staging, "final model", metadata, state.global_step):
            # The artifact's files may still be copied in the background until the run finishes.
            _cleanup.remove_after_finish(self._run, staging)
        else:
            shutil.rmtree(staging, ignore_errors=True)

    def _log_artifact(self, key: str, path: str, caption: str, metadata: dict[str, Any], step: int) -> bool:
        try:
            artifact = mlop.Artifact(path, caption=caption, metadata=metadata)
        except Exception:  # broad: an unreadable checkpoint is reported, training goes on
            logger.exception("mlop could not store %s as an artifact", path)
            return False
        self._run.log({key: artifact}, step=step)
        return True


def _save_state_dict(model: Any, folder: str) -> None:
    """Save a torch module's weights as ``model.safetensors`` (``pytorch_model.bin`` if that fails)."""
    state = model.state_dict()
    try:
        from safetensors.torch import save_file

        save_file(state, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
    except Exception:  # broad: shared or non-contiguous tensors, or no safetensors; torch.save takes all
        import torch

        torch.save(state, os.path.join(folder, "pytorch_model.bin"))


def _live(run: Any) -> bool:
    """Whether ``run`` has not ended."""
    return getattr(run, "status", "RUNNING") == "RUNNING"


def _run_root(run: Any) -> str | None:
    """The folder a run was created under (``<root>/.mlop/<project>/<id>``), to reopen it."""
    run_dir = getattr(run, "dir", None)
    if run_dir is None:
        return None
    return str(os.fspath(run_dir.parent.parent.parent))


# When this module's own import is what loaded the framework, the import hook could not register the class
# yet (it was not defined); register it now.
_register.patch_imported(callback=MlopCallback)
