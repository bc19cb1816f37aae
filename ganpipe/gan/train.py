"""The one training loop for every GAN in the registry.

Design choices, each for a reason:
- The whole training split lives on the device as one uint8 tensor and is normalised per batch:
  no per-sample PIL decoding, no DataLoader workers.
- Critic steps draw fakes under no_grad: the generator's graph is only needed for its own step.
- Real and fake go through the critic as one batch (the critic has no batch norm, so this is the
  same function as two calls, at better matrix sizes).
- Every random draw comes from a generator whose state is checkpointed, and the data order of an
  epoch is a pure function of (seed, epoch), so a resumed run is bit-identical to an uninterrupted one.
- Checkpoints live under train.checkpoint_dir, keyed by a hash of everything that shapes the
  result, because DVC deletes a stage's declared outputs before it re-runs the stage; a relative
  checkpoint_dir is under the repository an experiment was queued from (ganpipe.gan.checkpoint).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import random
import sys
import time
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ganpipe.data.labels import check_conditional_data, class_prior, draw_labels, is_conditional
from ganpipe.gan import ddp
from ganpipe.gan.augment import DiffAugment
from ganpipe.gan.checkpoint import claim, load_checkpoint, prepare_checkpoint_dir
from ganpipe.gan.losses import (
    LECAM_DECAY,
    LOSSES,
    auxiliary_classifier_loss,
    gradient_penalty,
    lecam_regulariser,
)
from ganpipe.gan.models import build_models, memory_format, to_uint8
from ganpipe.pipeline import paths
from ganpipe.pipeline.deps import code_digest
from ganpipe.pipeline.device import resolve_device
from ganpipe.pipeline.errors import GanpipeError, ParamsError, run_first
from ganpipe.pipeline.io import file_md5, save_npz, save_torch, write_json, write_text
from ganpipe.pipeline.params import model_config, recipe
from ganpipe.pipeline.precision import autocast, check_precision, cpu_bf16_support
from ganpipe.pipeline.processed import read_info, read_split
from ganpipe.pipeline.stage import progress_disabled
from ganpipe.pipeline.streams import seed_globals, torch_generator

FIXED_NOISE_COUNT = 16  # samples per epoch in the epoch-progression grid
# Batches of noise that re-estimate the EMA generator's batch-norm statistics (refresh_ema_statistics).
EMA_STATS_BATCHES, EMA_STATS_BATCH = 20, 64
LOG_COLUMNS = ("step", "epoch", "loss_g", "loss_d", "wasserstein", "gp")
# FID during training: fid is the sampling generator's (the EMA's when EMA is on), fid_generator the
# trained weights' own (the same number without EMA); train_seconds as train.json's train_time_s.
FID_COLUMNS = ("epoch", "step", "train_seconds", "fid", "fid_generator")
FINAL_WINDOW = 50  # train.json reports losses averaged over the last this-many generator steps
TRAIN_SCRIPT = "stages/train.py"  # its import closure (ganpipe.pipeline.deps) keys the checkpoints


def run_key(params: dict[str, Any], device: torch.device, data_md5: str, code: str | None = None) -> str:
    """Hash of everything that shapes the trained weights: params, data and the stage's code.

    `code`: the code's digest (code_digest(TRAIN_SCRIPT)) when the caller has it already.
    """
    train = {
        k: v
        for k, v in params["train"].items()
        # world_size is left out on purpose: a resume with another one is refused in one line
        # (ddp.check_world_size) instead of silently starting afresh.
        if k not in ("checkpoint_every", "checkpoint_dir", "tensorboard", "world_size")
    }
    shaped_by = {
        "model": model_config(params),
        "arch": params["arch"],
        "data": params["data"],
        "seed": params["seed"],
        "train": {**train, "device": device.type},
        "train_samples": params["score"]["train_samples"],
        "data_md5": data_md5,
        # The train stage's import closure: the same list dvc.yaml's deps are checked against.
        "code": code or code_digest(TRAIN_SCRIPT),
    }
    return hashlib.sha256(json.dumps(shaped_by, sort_keys=True).encode()).hexdigest()[:16]


def epoch_order(seed: int, epoch: int, n: int, device: torch.device) -> torch.Tensor:
    """The data order of one epoch, a pure function of (seed, epoch) so resume needs no saved state."""
    return torch.randperm(n, generator=torch_generator(seed, "train.order", epoch)).to(device)


def make_optimizer(
    cfg: dict[str, Any], parameters: Any, lr: float, capturable: bool
) -> torch.optim.Optimizer:
    """`capturable` keeps the optimizer's step counters on the device, as CUDA graphs need."""
    if cfg["optimizer"] == "adam":
        # With capturable (CUDA) the fused kernel updates every tensor in one launch.
        return torch.optim.Adam(
            parameters, lr=lr, betas=tuple(cfg["betas"]), fused=capturable or None, capturable=capturable
        )
    if cfg["optimizer"] == "rmsprop":
        return torch.optim.RMSprop(parameters, lr=lr, capturable=capturable)
    return torch.optim.SGD(parameters, lr=lr)


def _rng_state(noise: torch.Generator, device: torch.device) -> dict[str, Any]:
    mt_name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "noise": noise.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "numpy": [mt_name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "python": random.getstate(),
    }


def _restore_rng(state: dict[str, Any], noise: torch.Generator, device: torch.device) -> None:
    noise.set_state(state["noise"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None:
        torch.cuda.set_rng_state(state["cuda"], device)
    mt_name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((mt_name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def is_penalty_step(step: int, gp_lambda: float, gp_every: int) -> bool:
    """Whether critic step `step` (0-based: `run.step` before it runs) computes the gradient penalty.

    A pure function of the step counter, so a resumed run picks the same steps as an uninterrupted
    one; the first critic step is always one.
    """
    return gp_lambda > 0 and step % gp_every == 0


def ema_decay_at(decay: float, generator_step: int) -> float:
    """The EMA decay of 0-based generator step t: min(decay, (1 + t) / (10 + t)).

    The warm-up (TensorFlow's ExponentialMovingAverage with num_updates) lets the first steps'
    weights fade fast: at decay 0.999 a plain average would still hold a third of the random
    initialisation after 1,100 steps, most of a short run on a small set.
    """
    return min(decay, (1 + generator_step) / (10 + generator_step))


class Run:
    """Everything one training run holds; `state_dict()` is exactly what a checkpoint stores."""

    def __init__(
        self,
        params: dict[str, Any],
        device: torch.device,
        channels: int,
        size: int,
        prior: torch.Tensor,
    ) -> None:
        self.cfg = model_config(params)
        self.device = device
        seed = self.seed = params["seed"]
        self.nz = params["arch"]["nz"]
        # The training split's class frequencies (n_classes,): conditional runs draw labels from it.
        self.class_prior = prior
        n_classes = len(prior)
        self.conditional = is_conditional(self.cfg)
        seed_globals(seed, "train.weights")  # weight init and dropout draw from the global RNGs
        generator, critic = build_models(self.cfg, params["arch"], channels, size, n_classes)
        self.generator, self.critic = generator.to(device), critic.to(device)
        layout = memory_format(params["arch"], params["train"]["precision"])
        if layout != torch.contiguous_format:  # the architecture's layout, or bf16's (models.memory_format)
            # Before the EMA copy, so it matches.
            self.generator.to(memory_format=layout)
            self.critic.to(memory_format=layout)
        self.ema = copy.deepcopy(self.generator).eval() if self.cfg["ema_decay"] else None
        # This generator step's EMA weight 1 - decay (ema_weight) and the LeCam anchors' update weight,
        # device tensors that are filled before each step: CUDA graphs read them at fixed addresses.
        self.ema_weight = torch.ones((), device=device)
        self.lecam_weight = torch.ones((), device=device)
        # LeCam's moving averages of the critic's mean score on real and on fake images.
        self.lecam_anchors = torch.zeros(2, device=device)
        capturable = device.type == "cuda" and params["train"]["cuda_graphs"]
        self.opt_g = make_optimizer(self.cfg, self.generator.parameters(), self.cfg["lr_g"], capturable)
        self.opt_d = make_optimizer(self.cfg, self.critic.parameters(), self.cfg["lr_d"], capturable)
        self.noise = torch_generator(seed, "train.noise", device=device)
        self.fixed_noise = torch.randn(
            FIXED_NOISE_COUNT, params["arch"]["nz"], generator=torch_generator(seed, "train.fixed_noise")
        ).to(device)
        # Fixed labels beside the fixed noise: column k of the progression grid is class k mod n_classes.
        self.fixed_labels = (
            (torch.arange(FIXED_NOISE_COUNT) % n_classes).to(device) if self.conditional else None
        )
        self.step = 0  # critic steps done; the data position is derived from it
        # The latest gradient penalty (unweighted), logged until the next penalty step; checkpointed
        # because with models.<m>.gp_every > 1 it may come from a step before the checkpoint.
        self.penalty = torch.zeros((), device=device)
        self.log: list[list[float | None]] = []
        self.fid_log: list[list[float]] = []  # FID_COLUMNS rows
        # Fixed-noise sample grids of some epochs (sample_epochs): every sample_stride-th one, the
        # stride doubling whenever more than train.epoch_grids are kept (keep_epoch_samples).
        self.epoch_samples: list[torch.Tensor] = []
        self.sample_epochs: list[int] = []
        self.sample_stride = 1
        self.train_seconds = 0.0  # time inside training steps, summed across resumes
        self.wall_seconds = 0.0

    def wants_epoch_samples(self, epoch: int, last: bool) -> bool:
        """Whether epoch `epoch`'s grid would be kept: it falls on the stride, or is the last one."""
        return last or epoch % self.sample_stride == 0

    def keep_epoch_samples(self, epoch: int, samples: torch.Tensor, most: int, last: bool) -> None:
        """Keep epoch `epoch`'s grid if it is wanted (wants_epoch_samples), at most `most`.

        Past `most` grids the stride doubles and the kept grids off it go: on 500 images an epoch is
        7 steps, and one grid per epoch piled up 5,000 grids (72 MB in every checkpoint) in a
        36,000-step run. The record stays spread over the whole run, which is what the progression
        figure draws from.
        """
        if not self.wants_epoch_samples(epoch, last):
            return
        self.epoch_samples.append(samples)
        self.sample_epochs.append(epoch)
        while len(self.sample_epochs) > most:
            self.sample_stride *= 2
            kept = [
                index
                for index, kept_epoch in enumerate(self.sample_epochs)
                if kept_epoch % self.sample_stride == 0 or (last and kept_epoch == epoch)
            ]
            self.epoch_samples = [self.epoch_samples[index] for index in kept]
            self.sample_epochs = [self.sample_epochs[index] for index in kept]

    def state_dict(self) -> dict[str, Any]:
        return {
            "generator": self.generator.state_dict(),
            "critic": self.critic.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "rng": _rng_state(self.noise, self.device),
            "step": self.step,
            "penalty": self.penalty,
            "lecam_anchors": self.lecam_anchors,
            "log": self.log,
            "fid_log": self.fid_log,
            "epoch_samples": self.epoch_samples,
            "sample_epochs": self.sample_epochs,
            "sample_stride": self.sample_stride,
            "train_seconds": self.train_seconds,
            "wall_seconds": self.wall_seconds,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.load_state_dict(state["generator"])
        self.critic.load_state_dict(state["critic"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        _restore_rng(state["rng"], self.noise, self.device)
        self.step, self.log, self.fid_log = state["step"], state["log"], state["fid_log"]
        self.penalty.copy_(state["penalty"])  # in place: CUDA graphs hold its address
        self.lecam_anchors.copy_(state["lecam_anchors"])
        self.epoch_samples = state["epoch_samples"]
        self.sample_epochs, self.sample_stride = state["sample_epochs"], state["sample_stride"]
        self.train_seconds, self.wall_seconds = state["train_seconds"], state["wall_seconds"]

    @property
    def sampler(self) -> nn.Module:
        """The generator that sampling uses: the EMA copy when EMA is on."""
        return self.ema if self.ema is not None else self.generator

    @torch.no_grad()
    def update_ema(self) -> None:
        """Move the EMA weights towards the generator's by run.ema_weight (1 - this step's decay)."""
        for ema_param, param in zip(self.ema.parameters(), self.generator.parameters()):
            ema_param.lerp_(param, self.ema_weight)
        for ema_buffer, buffer in zip(self.ema.buffers(), self.generator.buffers()):
            ema_buffer.copy_(buffer)

    @torch.no_grad()
    def refresh_ema_statistics(self, epoch: int) -> None:
        """Re-estimate the EMA generator's batch-norm running statistics from its own activations on
        EMA_STATS_BATCHES batches of fresh noise (StudioGAN's "standing statistics"), before it generates.

        update_ema copies the trained generator's running statistics, which belong to its weights,
        not to their average: in eval mode they shift and scale every activation of the EMA copy
        (on BreastMNIST that made the EMA FID worse than the trained generator's in every run). The
        noise comes from its own stream, keyed by `epoch`, so refreshing never shifts a training draw.
        """
        norms = [m for m in self.ema.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if not norms:
            return
        noise = torch_generator(self.seed, "train.ema_statistics", epoch)
        momenta = [norm.momentum for norm in norms]
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None  # a plain average over the batches
        self.ema.train()
        for _ in range(EMA_STATS_BATCHES):
            z = torch.randn(EMA_STATS_BATCH, self.nz, generator=noise).to(self.device)
            if self.conditional:
                self.ema(z, draw_labels(self.class_prior, EMA_STATS_BATCH, noise).to(self.device))
            else:
                self.ema(z)
        self.ema.eval()
        for norm, momentum in zip(norms, momenta, strict=True):
            norm.momentum = momentum

    @torch.no_grad()
    def generate(
        self, noise: torch.Tensor, labels: torch.Tensor | None = None, model: nn.Module | None = None
    ) -> torch.Tensor:
        """uint8 images from `model` (default: the sampling generator) in eval mode (batch norm
        running stats); `labels` (on the device) condition a conditional generator."""
        model = model or self.sampler
        was_training = model.training
        model.eval()
        images = to_uint8(model(noise) if labels is None else model(noise, labels)).cpu()
        model.train(was_training)
        return images


class Steps:
    """The critic and generator updates, reading fixed input buffers.

    Fixed buffers make each update a function of no Python state, so on CUDA (train.cuda_graphs)
    each is captured once as a CUDA graph and replayed: one launch per step instead of hundreds,
    which is what bounds a small GAN on a big GPU. On CPU the same functions run eagerly. Noise is
    drawn into the buffers outside the graphs, from the checkpointed generator `run.noise`.

    With a lazy gradient penalty (models.<m>.gp_every = k > 1) the critic update has two variants,
    with and without the penalty, chosen per step by `is_penalty_step`; on CUDA each is captured as
    its own graph ("critic_gp", "critic"), each after its own eager warm-up, because a graph cannot
    branch. The two-graph path is untested here: it was written on a machine without a GPU.
    """

    WARMUP_STEPS = 3  # eager steps before capture (lazy optimizer state, cuDNN autotuning)

    def __init__(self, run: Run, params: dict[str, Any], images: torch.Tensor, labels: torch.Tensor) -> None:
        cfg, train_cfg, device = run.cfg, params["train"], run.device
        batch, nz = train_cfg["batch_size"], params["arch"]["nz"]
        self.run, self.images, self.loss = run, images, LOSSES[cfg["loss"]]
        self.smoothing, self.clip, self.gp_lambda = cfg["label_smoothing"], cfg["clip"], cfg["gp_lambda"]
        self.lecam_lambda = cfg["lecam_lambda"]
        self.gp_every = cfg["gp_every"]
        # Lazy regularisation: one penalty every k steps at k times the weight keeps its average pull.
        self.gp_weight = self.gp_lambda * self.gp_every
        self.last_critic = "critic"  # the variant of the latest critic step, whose outputs are logged
        self.real_uint8 = torch.empty((batch, *images.shape[1:]), dtype=torch.uint8, device=device)
        self.z_critic = torch.empty(batch, nz, device=device)
        self.z_generator = torch.empty(batch, nz, device=device)
        self.alpha = torch.empty(batch, 1, 1, 1, device=device)
        self.finite = torch.ones((), dtype=torch.bool, device=device)
        # Class conditioning: labels are fixed device buffers like the noise. Critic steps give the
        # fakes the real batch's labels (gradient-penalty interpolates stay inside one class);
        # generator steps draw labels from the class prior into `gen_labels`, with run.noise.
        self.conditional = run.conditional
        self.acgan_weight = cfg.get("acgan_weight", 0.0)
        if self.conditional:
            self.labels = labels  # int64 (N,) on the device, beside self.images
            self.prior = run.class_prior.to(device=device, dtype=torch.float32)
            self.real_labels = torch.zeros(batch, dtype=torch.int64, device=device)
            self.gen_labels = torch.zeros(batch, dtype=torch.int64, device=device)
        # DiffAugment (train.augment): T on every critic input; its random parameters are drawn from
        # run.noise into fixed buffers before each update, like the noise (ganpipe.gan.augment).
        policy, side = train_cfg["augment"], images.shape[-1]
        self.augment_critic = DiffAugment(policy, 2 * batch, side, device) if policy else None
        self.augment_generator = DiffAugment(policy, batch, side, device) if policy else None
        self.generator, self.critic = run.generator, run.critic
        if train_cfg["compile"]:
            self.generator, self.critic = torch.compile(run.generator), torch.compile(run.critic)
        self.use_graphs = device.type == "cuda" and train_cfg["cuda_graphs"]
        # train.precision bf16: the forwards (and the penalty's double backward) under bf16 autocast.
        self.autocast = autocast(train_cfg["precision"], device, cache_enabled=not self.use_graphs)
        self.graphs: dict[str, torch.cuda.CUDAGraph] = {}
        self.eager_runs = {"critic": 0, "critic_gp": 0, "generator": 0}
        self.outputs: dict[str, tuple[torch.Tensor, ...]] = {}

    def critic_step(self, indices: torch.Tensor) -> None:
        torch.index_select(self.images, 0, indices, out=self.real_uint8)
        if self.conditional:
            torch.index_select(self.labels, 0, indices, out=self.real_labels)
        # Data-parallel: each rank keeps its rows of the global batch's draw (ddp.draw_).
        ddp.draw_(self.z_critic, lambda z: z.normal_(generator=self.run.noise))
        with_penalty = is_penalty_step(self.run.step, self.gp_lambda, self.gp_every)
        if with_penalty:
            # Drawn only on penalty steps, after z: with gp_every 1 the draws are the same as ever.
            ddp.draw_(self.alpha, lambda alpha: alpha.uniform_(generator=self.run.noise))
        if self.augment_critic is not None:
            self.augment_critic.draw(self.run.noise)
        # The anchors start at the first step's mean scores, then move by 1 - LECAM_DECAY per step.
        self.run.lecam_weight.fill_(1.0 if self.run.step == 0 else 1.0 - LECAM_DECAY)
        self.last_critic = "critic_gp" if with_penalty else "critic"
        self._execute(self.last_critic, lambda: self._critic_update(with_penalty))

    def generator_step(self) -> None:
        ddp.draw_(self.z_generator, lambda z: z.normal_(generator=self.run.noise))
        if self.conditional:
            # On the device, into the fixed buffer: no host sync, and the graphs read the same address.
            ddp.draw_(
                self.gen_labels,
                lambda out: torch.multinomial(self.prior, len(out), True, generator=self.run.noise, out=out),
            )
        if self.augment_generator is not None:
            self.augment_generator.draw(self.run.noise)
        if self.run.ema is not None:  # generator step t = run.step // n_critic - 1, 0-based
            decay = ema_decay_at(self.run.cfg["ema_decay"], self.run.step // self.run.cfg["n_critic"] - 1)
            self.run.ema_weight.fill_(1.0 - decay)
        self._execute("generator", self._generator_update)

    def read_losses(self) -> tuple[float, float, float, float | None, bool]:
        """(loss_g, loss_d, Wasserstein estimate, gradient penalty or None, all finite so far).

        The penalty is the latest one computed (unweighted), see `_critic_update` for loss_d.
        """
        (loss_g,), (loss_d, gap) = self.outputs["generator"], self.outputs[self.last_critic]
        values = torch.stack([loss_g, loss_d, gap, self.run.penalty, self.finite.float()]).tolist()
        return values[0], values[1], values[2], values[3] if self.gp_lambda > 0 else None, bool(values[4])

    def _execute(self, name: str, update: Any) -> None:
        if not self.use_graphs:
            self.outputs[name] = update()
            return
        if name not in self.graphs:
            if self.eager_runs[name] < self.WARMUP_STEPS:
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    self.outputs[name] = update()
                torch.cuda.current_stream().wait_stream(side)
                self.eager_runs[name] += 1
                return
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self.outputs[name] = update()  # captured, not run: the replay below runs it
            self.graphs[name] = graph
        self.graphs[name].replay()

    def _critic_update(self, with_penalty: bool) -> tuple[torch.Tensor, ...]:
        run = self.run
        real = self.real_uint8.float().div_(127.5).sub_(1.0)  # normalised per batch, on the device
        with self.autocast:
            labels = self.real_labels if self.conditional else None
            with torch.no_grad():  # the fakes need no generator graph in a critic step
                fake = self.generator(self.z_critic, labels)
            # Real and fake in one batch: the critic has no batch norm, so this is the same function.
            both = torch.cat([real, fake.to(real.dtype)])
            batch = real.shape[0]
            if self.augment_critic is not None:
                # DiffAugment: the critic compares the augmented distributions T(real) and T(fake), so
                # its gradient penalty is taken where it is evaluated, on interpolates between the
                # augmented reals and fakes (no third, unaugmented pass through T).
                both = self.augment_critic(both)
                real, fake = both[:batch], both[batch:]
            scores, logits = self.critic(both, None if labels is None else labels.repeat(2))
            scores = scores.float()
            score_real, score_fake = scores[:batch], scores[batch:]
            critic_loss = loss_d = self.loss.critic(score_real, score_fake, self.smoothing)
            if logits is not None:
                # ACGAN: the critic also classifies the real images (its logits on fakes are unused).
                aux = auxiliary_classifier_loss(logits[:batch], self.real_labels)
                critic_loss = loss_d = critic_loss + self.acgan_weight * aux
            if self.lecam_lambda > 0:
                # LeCam (Tseng et al. 2021): anchors updated with this batch's means first, as in the
                # authors' code; the anchors carry no gradient.
                means = torch.stack([score_real.mean(), score_fake.mean()]).detach()
                run.lecam_anchors.lerp_(means, run.lecam_weight)
                anchor_real, anchor_fake = run.lecam_anchors[0], run.lecam_anchors[1]
                lecam = lecam_regulariser(score_real, score_fake, anchor_real, anchor_fake)
                critic_loss = loss_d = critic_loss + self.lecam_lambda * lecam
            if with_penalty:
                penalty = gradient_penalty(self.critic, real, fake, self.alpha, labels).float()
                loss_d = critic_loss + self.gp_weight * penalty
                run.penalty.copy_(penalty.detach())
        run.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        run.opt_d.step()
        if self.clip is not None:
            with torch.no_grad():
                for param in run.critic.parameters():
                    param.clamp_(-self.clip, self.clip)
        self.finite &= torch.isfinite(loss_d)
        # Logged loss_d with gp_every > 1: the penalty at its average per-step weight λ, with its latest
        # value, so the curve has no spike every k steps and compares across gp_every. (With gp_every 1
        # that is the loss minimised, as it always was.)
        lazy = self.gp_every > 1
        logged = critic_loss.detach() + self.gp_lambda * run.penalty if lazy else loss_d.detach()
        return logged, (score_real.mean() - score_fake.mean()).detach()

    def _generator_update(self) -> tuple[torch.Tensor, ...]:
        run = self.run
        run.critic.requires_grad_(False)  # the generator step needs no critic weight gradients
        with self.autocast:
            labels = self.gen_labels if self.conditional else None
            # fp32 like the critic step's fakes (a no-op in fp32): DiffAugment and the critic's
            # input get one dtype in both steps.
            fake = self.generator(self.z_generator, labels).float()
            if self.augment_generator is not None:
                fake = self.augment_generator(fake)  # the same T as the critic steps, new draws
            scores, logits = self.critic(fake, labels)
            loss_g = self.loss.generator(scores.float())
            if logits is not None:
                loss_g = loss_g + self.acgan_weight * auxiliary_classifier_loss(logits, self.gen_labels)
        run.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        run.opt_g.step()
        run.critic.requires_grad_(True)
        if run.ema is not None:
            run.update_ema()
        self.finite &= torch.isfinite(loss_g)
        return (loss_g.detach(),)


def _load_training_images(device: torch.device) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """The training split on the device: images uint8 (N, C, H, W), labels int64 (N,); and info.json."""
    images, labels = read_split(paths.PROCESSED_TRAIN)
    return torch.from_numpy(images).to(device), torch.from_numpy(labels).to(device), read_info()


def _check_options(params: dict[str, Any], device: torch.device, n_images: int) -> None:
    train = params["train"]
    check_precision(train["precision"], device)
    if train["compile"] and device.type != "cuda":
        raise ParamsError(
            f"params.yaml: train.compile = true needs a CUDA device, but training runs on {device.type}; "
            "set train.compile=false"
        )
    if train["compile"] and train["cuda_graphs"] and device.type == "cuda":
        raise ParamsError(
            "params.yaml: train.compile = true with train.cuda_graphs = true: both capture the "
            "training step; set one of them to false"
        )
    if train["compile"] and model_config(params)["gp_lambda"] > 0:
        raise ParamsError(
            "params.yaml: train.compile = true cannot run the gradient penalty (torch.compile has "
            "no double backward); set train.compile=false or gp_lambda=0"
        )
    if train["eval_every"] is not None:
        # FID during training reads the classifier and the reference statistics: fail before training.
        needs = ((paths.CLASSIFIER_WEIGHTS, "classifier"), (paths.TRAIN_REFERENCE_DIR, "train_reference"))
        for needed, stage in needs:
            if not needed.exists():
                raise run_first(needed, stage, "not found, and train.eval_every needs it")
    if train["batch_size"] > n_images:
        raise ParamsError(
            f"params.yaml: train.batch_size = {train['batch_size']} exceeds the {n_images} training "
            "images; lower it or raise data.limit"
        )


def _tensorboard_writer(params: dict[str, Any], key: str, step: int) -> Any:
    if not params["train"]["tensorboard"]:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise GanpipeError(
            "train.tensorboard = true needs the tensorboard package: pip install tensorboard"
        ) from None
    return SummaryWriter(log_dir=f"runs/{params['model']}-{key[:8]}", purge_step=step or None)


# FID during training: (uint8 images N×C×H×W, device) -> the domain FID against train_reference.
# The measure layer sits above this one and supplies it (ganpipe.measure.score.domain_fid, which
# stages/train.py hands in), so the training loop imports no measuring code.
FidFn = Callable[[np.ndarray, torch.device], float]


def train(params: dict[str, Any], fid: FidFn | None = None) -> dict[str, Any]:
    """Train the model that params['model'] selects; write its outputs; return metrics/train.json.

    `fid` measures the generator every train.eval_every epochs; it must be given when that is set.
    """
    wall_start = time.perf_counter()
    cfg, train_cfg = model_config(params), params["train"]
    world_size = train_cfg["world_size"]
    if world_size > 1:  # a torchrun rank (stages/train.py starts them): join the group, its device
        ranks, device = ddp.setup(train_cfg["device"], world_size)
    else:
        ranks, device = ddp.ranks(), resolve_device(train_cfg["device"])
    checkpoints = prepare_checkpoint_dir(train_cfg["checkpoint_dir"])  # before loading data: fail at once
    images, labels, info = _load_training_images(device)
    _check_options(params, device, len(images))
    if train_cfg["eval_every"] is not None and fid is None:
        raise GanpipeError(
            "train.eval_every is set but train() was given no FID to measure with: pass "
            "fid=ganpipe.measure.score.domain_fid (stages/train.py does), or set train.eval_every: null"
        )
    check_conditional_data(params, info)

    batch = train_cfg["batch_size"]
    steps_per_epoch = len(images) // batch  # the last partial batch is dropped: equal-size steps
    total_steps = train_cfg["epochs"] * steps_per_epoch
    if train_cfg["max_steps"] is not None:
        total_steps = min(total_steps, train_cfg["max_steps"])

    data_md5, code = file_md5(paths.PROCESSED_TRAIN), code_digest(TRAIN_SCRIPT)
    key = run_key(params, device, data_md5, code)
    # What made the key (its device and data cannot be recomputed from params later), for the
    # `ganpipe checkpoints` list; the folder is refused in one line while another process trains it.
    record = {"device": device.type, "data_md5": data_md5, "code": code, "params": params}
    checkpoint_folder = claim(checkpoints / key, record, hold=ranks.is_main)  # rank 0 holds it
    checkpoint = checkpoint_folder.path
    prior = class_prior(labels.cpu().numpy(), info["n_classes"])
    run = Run(params, device, info["channels"], info["size"], prior)
    if world_size > 1:
        ddp.seed_rank(params["seed"])  # before a resume restores this rank's RNG states
    state = load_checkpoint(checkpoint, map_location=device)  # None: none, or a corrupt one set aside
    if state is not None:
        run.load_state_dict(ddp.resume_state(state, checkpoint))
        print(f"resuming from {checkpoint} at step {run.step}/{total_steps}", file=sys.stderr)

    if world_size > 1:  # each rank's steps hold its share of the batch; G and D through DDP
        steps = Steps(run, ddp.local_params(params), images, labels)
        ddp.wrap_models(steps, run.generator, run.critic)
    else:
        steps = Steps(run, params, images, labels)
    writer = _tensorboard_writer(params, key, run.step) if ranks.is_main else None  # rank 0 writes
    quiet = progress_disabled()
    bar = tqdm(
        total=total_steps,
        initial=run.step,
        desc=f"train {params['model']}",
        unit="step",
        disable=quiet or not ranks.is_main,
    )
    order = None
    step_start = time.perf_counter()

    while run.step < total_steps:
        epoch, position = divmod(run.step, steps_per_epoch)
        if order is None or position == 0:
            order = epoch_order(params["seed"], epoch, len(images), device)
        # This rank's rows of the global batch (all of it with one rank).
        steps.critic_step(order[position * batch : (position + 1) * batch][ranks.batch_slice(batch)])
        run.step += 1

        if run.step % cfg["n_critic"] == 0:
            steps.generator_step()
            # One device sync per generator step reads the log row and the divergence guard together.
            loss_g, loss_d, gap, penalty, finite = steps.read_losses()
            if world_size > 1:  # the global batch's losses; every rank stops on a bad one together
                loss_g, loss_d, gap, penalty, all_finite = ddp.mean_over_ranks(
                    [loss_g, loss_d, gap, penalty, float(finite)]
                )
                finite = all_finite == 1.0
            row = [run.step, round(run.step / steps_per_epoch, 4), loss_g, loss_d, gap, penalty]
            if not finite:
                # The critic loss comes first: a bad critic step poisons the generator step after it.
                bad, value = ("loss_d", loss_d) if not math.isfinite(loss_d) else ("loss_g", loss_g)
                raise GanpipeError(
                    f"training diverged at step {run.step} (epoch {row[1]:.2f}): {bad} = {value}"
                    f"; the last good checkpoint is kept in {checkpoint.parent}; lower the learning rates "
                    "or add a gradient penalty / spectral norm"
                )
            run.log.append(row)
            if writer is not None:
                for name, value in zip(LOG_COLUMNS[2:], row[2:]):
                    if value is not None:
                        writer.add_scalar(f"train/{name}", value, run.step)
            bar.set_postfix(loss_g=f"{loss_g:.3f}", loss_d=f"{loss_d:.3f}", refresh=False)
        bar.update(1)

        epoch_done = run.step % steps_per_epoch == 0 or run.step == total_steps
        # Checkpoints follow the step count only, not epoch ends: on a few hundred images an epoch is
        # 7 steps, and a checkpoint (which carries every epoch's samples) at each one made a long
        # run's saving grow with the square of its length.
        checkpoint_due = run.step % train_cfg["checkpoint_every"] == 0
        if epoch_done or checkpoint_due:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            now = time.perf_counter()
            run.train_seconds += now - step_start
            if epoch_done and ranks.is_main:
                _end_of_epoch(run, params, epoch + 1, writer, quiet, last=run.step == total_steps, fid=fid)
            run.wall_seconds += time.perf_counter() - wall_start
            wall_start = time.perf_counter()
            if checkpoint_due:
                state = ddp.checkpoint_state(run.state_dict())  # every rank's RNG states
                if ranks.is_main:
                    save_torch(checkpoint, state)
            step_start = time.perf_counter()
    bar.close()
    if writer is not None:
        writer.close()

    run.wall_seconds += time.perf_counter() - wall_start
    if not ranks.is_main:
        ddp.teardown()
        return {}
    metrics = _write_outputs(run, params, steps_per_epoch, batch)
    checkpoint_folder.finish()  # outputs are complete; a finished run needs no resume point
    ddp.teardown()
    return metrics


def _end_of_epoch(
    run: Run,
    params: dict[str, Any],
    epoch: int,
    writer: Any,
    quiet: bool,
    last: bool,
    fid: FidFn | None = None,
) -> None:
    # The fixed-noise grid only where it is kept or shown: past the first doublings of the stride
    # most epochs keep none, and on CUDA each grid is a device-to-host copy. It draws no random
    # numbers, so skipping it changes nothing else.
    eval_every = params["train"]["eval_every"]
    fid_due = eval_every is not None and epoch % eval_every == 0 and fid is not None
    show_samples = writer is not None or run.wants_epoch_samples(epoch, last)
    if run.ema is not None and (show_samples or fid_due):
        run.refresh_ema_statistics(epoch)
    if show_samples:
        samples = run.generate(run.fixed_noise, run.fixed_labels)
        run.keep_epoch_samples(epoch, samples, params["train"]["epoch_grids"], last)
        if writer is not None:
            from ganpipe.pipeline.images import make_grid

            writer.add_image("samples", make_grid(samples.numpy(), nrow=4), epoch, dataformats="HWC")
    fid_text = ""
    if fid_due:
        count, nz = params["score"]["train_samples"], params["arch"]["nz"]
        labels = None
        if run.conditional:  # from the class prior, as the scored samples (sample.labels: prior)
            label_noise = torch_generator(params["seed"], "train.eval_labels", epoch)
            labels = draw_labels(run.class_prior, count, label_noise)

        def fid_of(model: nn.Module) -> float:
            # A separate noise source, so evaluating never shifts the training draws; the same for both.
            noise = torch_generator(params["seed"], "train.eval_noise", epoch)
            batches = [
                run.generate(
                    torch.randn(min(500, count - start), nz, generator=noise).to(run.device),
                    None if labels is None else labels[start : start + 500].to(run.device),
                    model,
                )
                for start in range(0, count, 500)
            ]
            return float(fid(torch.cat(batches).numpy(), run.device))

        value = fid_of(run.sampler)
        # With EMA, the trained weights too: the curve then shows what the EMA gains.
        own = fid_of(run.generator) if run.ema is not None else value
        run.fid_log.append([epoch, run.step, round(run.train_seconds, 3), value, own])
        fid_text = f" fid={value:.2f}"
        if writer is not None:
            writer.add_scalar("eval/fid", value, run.step)
    if quiet:
        last = run.log[-1] if run.log else None
        losses = f" loss_g={last[2]:.4f} loss_d={last[3]:.4f}" if last else ""
        print(f"epoch {epoch}: step {run.step}{losses}{fid_text}", flush=True)


def numeric_environment(device: torch.device, precision: str = "fp32") -> str:
    """What beside code, params and data can change a run's numbers: the releases of the numeric
    packages and the kernels torch dispatched to (the GPU, or the CPU's vector extension and torch's
    thread count, which splits reductions differently), and under train.precision bf16 that precision
    with the CPU's bf16 arithmetic (so a results table never puts bf16 and fp32 rows together; fp32
    environments read as they always did).

    CPU reruns are bit-identical only where this string is the same too: an earlier session's
    environment gave another domain FID for the same commit, params and data (README, "Results table"),
    and one torch thread against two gave other weights for the same run.
    """
    # torch's own string: it carries the build (+cu130, +cpu), whose kernels differ too.
    packages = ", ".join(
        [
            f"torch {torch.__version__}",
            *(f"{name} {version(name)}" for name in ("numpy", "scipy", "torch-fidelity")),
        ]
    )
    kernels = (
        f"cuda {torch.cuda.get_device_name(device)}"
        if device.type == "cuda"
        else f"cpu {torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads"
    )
    if precision == "bf16":
        kernels += ", bf16 autocast" + ("" if device.type == "cuda" else f" ({cpu_bf16_support()})")
    return f"{packages}, {kernels}"


def _mean_tail(values: list[float | None]) -> float | None:
    tail = [v for v in values[-FINAL_WINDOW:] if v is not None]
    return round(float(np.mean(tail)), 6) if tail else None


def _write_outputs(run: Run, params: dict[str, Any], steps_per_epoch: int, batch: int) -> dict[str, Any]:
    def weights(model: nn.Module) -> dict[str, Any]:
        return {"config": model.config, "state_dict": model.state_dict()}

    save_torch(paths.GENERATOR, weights(run.generator))
    save_torch(paths.CRITIC, weights(run.critic))
    if run.ema is not None:
        run.refresh_ema_statistics(0)  # key 0: noise of its own (epochs count from 1)
        save_torch(paths.GENERATOR_EMA, weights(run.ema))
    # Conditional runs also store the fixed labels, so the progression figure can name each column.
    fixed_labels = {} if run.fixed_labels is None else {"labels": run.fixed_labels.cpu().numpy()}
    save_npz(
        paths.EPOCH_SAMPLES,
        images=torch.stack(run.epoch_samples).numpy(),
        epochs=np.array(run.sample_epochs, dtype=np.int64),
        **fixed_labels,
    )

    def tsv(columns: tuple[str, ...], rows: list[list[Any]]) -> str:
        lines = ["\t".join(columns)]
        lines += [
            "\t".join("" if v is None else f"{v:.6g}" if isinstance(v, float) else str(v) for v in row)
            for row in rows
        ]
        return "\n".join(lines) + "\n"

    write_text(paths.LOSSES_TSV, tsv(LOG_COLUMNS, run.log))
    write_text(paths.FID_TSV, tsv(FID_COLUMNS, run.fid_log))

    cfg = model_config(params)
    columns = list(zip(*run.log)) if run.log else [[]] * len(LOG_COLUMNS)
    metrics = {
        "model": params["model"],
        "loss": cfg["loss"],
        "conditional": cfg["conditional"],
        "loss_g": _mean_tail(list(columns[2])),
        "loss_d": _mean_tail(list(columns[3])),
        "wasserstein": _mean_tail(list(columns[4])),
        "gp": _mean_tail(list(columns[5])),
        "steps": run.step,
        "generator_steps": len(run.log),
        "epochs": round(run.step / steps_per_epoch, 4),
        "recipe": recipe(params)[0],
        "final_fid": run.fid_log[-1][3] if run.fid_log else None,
        # FID against training time, for `ganpipe results`' curves (dvc exp show carries no plots).
        "fid_curve": {column: [row[i] for row in run.fid_log] for i, column in enumerate(FID_COLUMNS)},
        "wall_time_s": round(run.wall_seconds, 3),
        "train_time_s": round(run.train_seconds, 3),
        "critic_images_per_s": round(run.step * batch / max(run.train_seconds, 1e-9), 1),
        "device": run.device.type,
        "precision": params["train"]["precision"],
        "cpu_bf16": cpu_bf16_support(),  # amx, avx512_bf16 or none: what this host's CPU computes bf16 with
        "environment": numeric_environment(run.device, params["train"]["precision"]),
    }
    write_json(paths.TRAIN_METRICS, metrics)
    return metrics
