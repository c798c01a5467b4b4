"""The optimisation of one trial: its stages, each step's effective batch in micro-batches
(gradient accumulation), a real out-of-memory halving the micro-batch and repeating the step,
and the gradient exchange of a data-parallel trial.

The loss of every micro-batch is its summed answer-token loss divided by the answer tokens of
the whole effective batch (on every rank), so any micro-batch size and any number of ranks
give the same gradient as the whole batch in one forward.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from search_space import Stage, TrainConfig
from trials.conversations import Conversations
from trials.features import FeatureBatches
from trials.outcome import NonFiniteLoss, out_of_memory
from trials.parallel import Single
from trials.recipe import Recipe
from trials.vlm.model import VLM

StepHook = Callable[[int, float], bool]  # (global step, loss) -> stop now?


class OutOfMemoryAtOne(MemoryError):
    """Even one sample per forward does not fit."""


def warmup_cosine(steps: int, warmup: float) -> Callable[[int], float]:
    """LR multiplier: linear warm-up over `warmup * steps`, then cosine to zero."""
    ramp = max(1, round(warmup * steps))

    def factor(step: int) -> float:
        if step < ramp:
            return (step + 1) / ramp
        progress = (step - ramp) / max(1, steps - ramp)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def batch_order(n: int, batch_size: int, steps: int, seed: int) -> list[Tensor]:
    """`steps` index batches: seeded epochs of a random permutation."""
    generator = torch.Generator().manual_seed(seed)
    size = min(batch_size, n)
    flat = torch.cat([torch.randperm(n, generator=generator)
                      for _ in range(math.ceil(steps * size / n))])
    return [flat[i * size:(i + 1) * size] for i in range(steps)]


def optimizer_for(vlm: VLM, stage: Stage, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over what trains in `stage`, one group per part with that part's learning rate."""
    lrs = {"lm": stage.lr, "connector": stage.connector_lr or stage.lr,
           "experts": stage.expert_lr or stage.lr}
    groups = [{"params": [p for p in vlm.trainable_parts[part] if p.requires_grad], "lr": lrs[part]}
              for part in ("experts", "connector", "lm")]
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise ValueError(f"stage {stage.train} trains nothing: every part it names is frozen "
                         "(check language_model.train and the experts' train modes)")
    return torch.optim.AdamW(groups, lr=stage.lr, weight_decay=cfg.weight_decay)


@dataclass
class Loop:
    """Trains `vlm` on the split `feats` (its conversations: `text`) through every stage."""

    vlm: VLM
    text: Conversations
    feats: FeatureBatches
    recipe: Recipe
    device: torch.device
    ranks: Single
    current: int = 0  # the step in progress (or the last one done)

    def run(self, cfg: TrainConfig, after_step: StepHook) -> bool:
        """Every stage's steps; False when `after_step` stopped it early."""
        order: Iterator[Tensor] = iter(batch_order(len(self.feats.data), cfg.batch_size, cfg.steps,
                                                   cfg.seed))
        for stage in cfg.stage_list():
            self.vlm.train_only(stage.train)
            optimizer = optimizer_for(self.vlm, stage, cfg)
            schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(stage.steps, cfg.warmup))
            params = [p for p in self.vlm.parameters() if p.requires_grad]
            self.vlm.train()
            for _ in range(stage.steps):
                self.current += 1
                step = self.current
                loss = self.step(next(order), params, optimizer, step)
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                optimizer.step()
                schedule.step()
                if after_step(step, loss):
                    return False
            del optimizer  # its state is not carried into the next stage (LLaVA's stages)
        return True

    def step(self, idx: Tensor, params: list[nn.Parameter], optimizer: torch.optim.Optimizer,
             step: int) -> float:
        """One effective batch, accumulated; repeated at half the micro-batch on out-of-memory."""
        local = self.ranks.shard(idx)
        items = self.ranks.total(self.text.answer_tokens(local))
        while True:
            optimizer.zero_grad(set_to_none=True)
            loss, failed = self._accumulate(local, items, len(idx))
            if not self.ranks.any(failed is not None):
                break
            self._halve(failed)
        loss = self.ranks.sum_value(loss)  # every rank sees the same loss, so all stop together
        if not math.isfinite(loss):
            raise NonFiniteLoss(f"loss became {loss} at step {step}; lower the learning rate")
        self.ranks.sum_grads(params)
        return loss

    def _accumulate(self, local: Tensor, items: int, whole: int) -> tuple[float, BaseException | None]:
        """Forward and backward over `local` in micro-batches; (this rank's share of the loss,
        the out-of-memory error if one struck). A single forward over the whole effective batch
        keeps the LM's own mean loss (bit for bit what one batch always gave)."""
        total = 0.0
        try:
            for start in range(0, len(local), self.recipe.micro_batch):
                micro = local[start:start + self.recipe.micro_batch]
                whole_batch = len(micro) == whole and items > 0  # no answer token left: a zero loss
                loss = self.vlm(**self.text.batch(micro, self.device),
                                features=self.feats.batch(micro, self.device),
                                images=self.feats.images(micro, self.device),
                                num_items=None if whole_batch else max(1, items))
                loss.backward()
                total += float(loss.detach())
        except out_of_memory() as exc:
            return total, exc
        return total, None

    def _halve(self, error: BaseException | None) -> None:
        """Free what the failed step held and halve the micro-batch (an error at 1 is final)."""
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        if self.recipe.micro_batch == 1:
            message = f"{error}" if error is not None else "another rank ran out of memory"
            raise OutOfMemoryAtOne(f"even micro-batch 1 does not fit ({self.recipe.memory_note()}): "
                                   f"{message}")
        self.recipe.micro_batch = max(1, self.recipe.micro_batch // 2)
        self.recipe.halvings += 1

