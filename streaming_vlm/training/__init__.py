"""Streaming SFT of Qwen3-VL: what `train.py` runs once Hydra has composed `configs/`.

Read in this order:
- `launch.py`        the command line before Hydra: `+experiment=`, `--local_rank`, group choices, submitit ranks
- `config.py`        checks on the composed config and the batch arithmetic -> TrainingArguments
- `run.py`           one run: checks, model, data, the Trainer with its callbacks, auto-resume, final model + curve
- `model.py`         the model as training wants it (partitioned at load under ZeRO-3, vision frozen, LoRA)
- `data.py`          the data pipeline's training side (`streaming_vlm.data`): sources -> dataset, collator, tracker
- `trainer.py`       `StreamingTrainer`: our loss, bad-sample totals, exact per-step losses, atomic checkpoints
- `loss.py`          the causal-LM loss on labelled positions only
- `checkpointing.py` activation checkpointing per decoder layer, chosen per micro-batch from memory
- `kernels.py`       Liger's fused kernels where they apply (CUDA)
- `checkpoints.py`   checkpoint layout, atomic publication, resume discovery
- `callbacks.py`     per-step loss records, held-out loss, `instantiate_callbacks` (the `callbacks:` config nodes)
- `eval_callback.py` `WinRateCallback`: the Inf-Streams win rate during training through the streaming engine
- `curve.py`         the loss curve; `tracking.py` the wandb mode; `cpu_deepspeed.py` DeepSpeed on CPU-only hosts
"""
