"""Extra Trainer callbacks come from their own config nodes (configs/callbacks/): `callbacks=win_rate` adds the
win-rate callback's node, its fields are overridden in place, and the node is what gets instantiated."""

from __future__ import annotations

from pathlib import Path

import pytest

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
pytestmark = pytest.mark.fast  # composes configs only: no model, subprocess or training


def _compose(*overrides):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIGS), version_base=None):
        return compose(config_name="config", overrides=["experiment=smoke_stage1", *overrides])


def test_the_win_rate_callback_is_built_from_its_node_with_overrides(tmp_path):
    from hydra.utils import instantiate

    from streaming_vlm.training.eval_callback import WinRateCallback

    assert dict(_compose().callbacks) == {}  # none by default
    cfg = _compose(f"data.root={tmp_path}", "callbacks=win_rate", "callbacks.win_rate.minutes=0.5",
                   "callbacks.win_rate.judge.margin=0.1", "callbacks.win_rate.inference.max_new_tokens=3")
    assert list(cfg.callbacks) == ["win_rate"]
    cb = instantiate(cfg.callbacks.win_rate)
    assert isinstance(cb, WinRateCallback)
    assert cb.minutes == 0.5 and cb.max_streams == 2 and cb.every_n_steps == 0
    assert cb.reference_path == f"{tmp_path}/eval_inf.jsonl"
    assert cb.judge_config == {"kind": "offline", "margin": 0.1}
    assert cb.inference["max_new_tokens"] == 3 and cb.inference["fps"] == cfg.data.fps


class _Probe:
    def __init__(self, every: int = 1):
        self.every, self.bound = every, None

    def bind(self, trainer, processor):
        self.bound = (trainer, processor)


def test_instantiate_callbacks_builds_every_node_and_binds_it():
    from streaming_vlm.errors import UserError
    from streaming_vlm.training.callbacks import instantiate_callbacks

    cfg = _compose(f"+callbacks.probe={{_target_: {__name__}._Probe, every: 5}}")
    (cb,) = instantiate_callbacks(cfg.callbacks, trainer="T", processor="P")
    assert isinstance(cb, _Probe) and cb.every == 5 and cb.bound == ("T", "P")
    with pytest.raises(UserError, match="callbacks.probe needs a _target_"):
        instantiate_callbacks(_compose("+callbacks.probe={every: 5}").callbacks)
