"""The config groups of what is trained and how: the model, the optimizer and schedule, the step, the loss,
regularisation, evaluation."""

from __future__ import annotations

import dataclasses
from typing import Literal

from src.config.choices import HEADS, LOSSES, OPTIMIZERS, OUTPUT_STRIDES, SCHEDULERS
from src.config.fields import Group, require, setting
from src.metrics import get_metric


@dataclasses.dataclass
class ModelConfig(Group):
    """Model: the architecture, its head and its regularisation."""

    arch: str = "effnet-b0"
    """Model architecture; `--list-archs` prints the known names."""
    pretrained: str | None = None
    """None (random init), 'imagenet' (the library's own download) or a path to a local state dict."""
    activation: str | None = None
    """Replace the model's ReLU/SiLU/Swish modules with this activation ('mish', 'relu', 'silu')."""
    num_classes: int | None = setting(None, inferred=True)
    """Number of classes; None infers it from the data."""
    in_chans: int | None = setting(None, inferred=True)
    """Input channels; None infers it from the data (1 for the bundled digits). The pixel-CSV and parquet layouts
    read this many values per pixel (1 when None)."""
    meta_features: int | None = setting(None, inferred=True)
    """Width of the encoded metadata (--meta-cols), set from the train fold; None or 0: images only."""
    hidden_size: int = 256
    """GRU state size of --arch gru (QuickDraw strokes)."""
    num_layers: int = 2
    """Stacked GRU layers of --arch gru."""
    drop_rate: float = 0.2
    """Dropout probability before the classifier layer."""
    head: Literal[HEADS] = "linear"
    """Classifier head: 'linear' (dropout -> linear), 'bn-dropout' (BatchNorm -> dropout -> linear), or a margin
    head 'arcface' / 'cosface' (scaled cosine logits; the margin is applied in the training loss), or 'lsoftmax'
    (a bias-free linear layer; set by --loss lsoftmax)."""
    margin: float | None = None
    """Margin of an ArcFace head (degrees), a CosFace head (cosine) or L-softmax (the integer angle multiplier m,
    1..4); None: 28.6 degrees (0.5 rad), 0.35 and 4."""
    margin_scale: float = 30.0
    """Logit scale s of an ArcFace / CosFace head."""
    drop_path_rate: float = 0.2
    """Stochastic depth (drop connect) of EfficientNet blocks (Huang et al. 2016); other archs ignore it."""
    output_stride: Literal[OUTPUT_STRIDES] = 32
    """Total downsampling of the backbone: 32 (the arch's own), or 16 / 8 to run the last one / two
    downsampling stages at stride 1, so small images keep a larger final map (EfficientNets, ResNet / SENet)."""

    def check(self) -> None:
        require("num_classes", self.num_classes, self.num_classes is None or self.num_classes >= 2, ">= 2 or None")
        require("in_chans", self.in_chans, self.in_chans is None or self.in_chans >= 1, "an integer >= 1 or None")
        require("hidden_size", self.hidden_size, self.hidden_size >= 1, "an integer >= 1")
        require("num_layers", self.num_layers, self.num_layers >= 1, "an integer >= 1")
        require("drop_rate", self.drop_rate, 0.0 <= self.drop_rate < 1.0, "0 <= drop_rate < 1")
        require("drop_path_rate", self.drop_path_rate, 0.0 <= self.drop_path_rate < 1.0, "0 <= drop_path_rate < 1")
        require("margin", self.margin, self.margin is None or self.margin >= 0, "a margin >= 0 or None")
        require("margin_scale", self.margin_scale, self.margin_scale > 0, "a positive float")



@dataclasses.dataclass
class OptimConfig(Group):
    """Optimisation: epochs, optimizer, learning rate and its schedule, fine-tuning."""

    epochs: int = setting(18, resumable=True)
    """Maximum number of epochs."""
    optimizer: Literal[OPTIMIZERS] = "adamw"
    """Optimizer; no weight decay is applied to biases and normalisation weights."""
    lr: float = 4e-3
    """Peak learning rate."""
    weight_decay: float = 1e-2
    """Weight decay (decoupled for AdamW)."""
    freeze_epochs: int = 0
    """Train only the head for this many epochs (backbone frozen), then the whole model."""
    backbone_lr_mult: float = 1.0
    """The backbone's learning rate is lr x this (e.g. 0.1 when fine-tuning pretrained weights); every schedule
    keeps the ratio."""
    scheduler: Literal[SCHEDULERS] = "onecycle"
    """LR schedule: linear one-cycle, cosine with linear warmup, step (/10 at 50% and 75%, after a warmup),
    reduce-on-plateau of the valid metric, none."""
    warmup_epochs: float = 1.0
    """Warmup length in epochs (a fraction allowed): the lr rises linearly from lr/25 to lr under 'onecycle',
    'cosine' and 'step'; 'plateau' and 'none' start at lr."""

    def check(self) -> None:
        require("epochs", self.epochs, self.epochs >= 1, "an integer >= 1")
        require("lr", self.lr, self.lr > 0, "a positive float")
        require("weight_decay", self.weight_decay, self.weight_decay >= 0, "a float >= 0")
        ok = self.freeze_epochs >= 0
        require("freeze_epochs", self.freeze_epochs, ok, "an integer >= 0 (0: no freezing)")
        ok = self.backbone_lr_mult > 0
        require("backbone_lr_mult", self.backbone_lr_mult, ok, "a positive float (1: the head's lr)")
        require("warmup_epochs", self.warmup_epochs, self.warmup_epochs >= 0, "a float >= 0")


@dataclasses.dataclass
class StepConfig(Group):
    """The training step: gradient accumulation and clipping, mixed precision, memory format, compilation."""

    accumulation_steps: int = 1
    """Micro-batches per optimizer step; the update equals one batch of accumulation_steps x batch_size."""
    effective_batch_size: int | None = None
    """Images per optimizer step: sets --accumulation-steps to the nearest whole multiple of the batch size (with
    --batch-size auto, of the batch found). None: --accumulation-steps as given."""
    clip_grad_norm: float | None = None
    """Clip the global gradient L2 norm to this value before each optimizer step."""
    amp: Literal["auto", "none", "fp16", "bf16"] = "auto"
    """Automatic mixed precision: 'auto' (bf16 on a GPU that has it, else fp16; none on the CPU), 'fp16' (with a
    grad scaler, CUDA only), 'bf16' or 'none'."""
    channels_last: bool = True
    """Use the channels-last memory format (about 1.8x faster training on CPU for effnet-b0, see NOTES.md)."""
    compile: bool = False
    """torch.compile the training step's model, once per image size (the first steps compile; no gain on CPU, see
    NOTES.md); evaluation runs eagerly; recompilations are logged. Checkpoints hold the plain model's weights."""
    sync_bn: bool = False
    """With several processes (torchrun), BatchNorm layers normalise with the statistics of the global batch
    (SyncBatchNorm) instead of each process's share."""

    def check(self) -> None:
        ok = self.accumulation_steps >= 1
        require("accumulation_steps", self.accumulation_steps, ok, "an integer >= 1")
        ok = self.effective_batch_size is None or self.effective_batch_size >= 1
        require("effective_batch_size", self.effective_batch_size, ok, "an integer >= 1 or None")
        ok = self.clip_grad_norm is None or self.clip_grad_norm > 0
        require("clip_grad_norm", self.clip_grad_norm, ok, "a positive float or None")


@dataclasses.dataclass
class LossConfig(Group):
    """Loss: the criterion, label smoothing and the center loss."""

    loss: Literal[LOSSES] = "ce"
    """Training loss: 'ce' (cross entropy; BCE for multi-label), 'focal' (Lin et al. 2017; sigmoid if multi-label),
    'soft_margin' (torch's MultiLabelSoftMarginLoss; multi-label only) or 'lsoftmax' (L-softmax, Liu et al. 2016:
    the angle multiplier --margin m of 1..4 (None: 4) on its own bias-free linear head; single-label only)."""
    lsoftmax_gamma: float = 1.0
    """L-softmax: the margin's weight 1 / (1 + lambda) anneals in with lambda = max(lambda_min, 1000 / (1 + gamma
    t)) at optimizer step t (the paper's schedule); 1.0 brings lambda to 1 by step 1,000."""
    lsoftmax_lambda_min: float = 0.0
    """L-softmax: the floor of lambda (0: the margin ends with its full weight)."""
    focal_gamma: float = 2.0
    """Focusing parameter of the focal loss (0 = cross entropy)."""
    center_loss: float = 0.0
    """Weight (lambda) of the center loss (Wen et al. 2016) added to the classification loss; 0 = off."""
    center_lr: float = 0.5
    """Step size (alpha) of the center loss's own SGD on the class centers."""
    label_smoothing: float = 0.1
    """Label smoothing of the cross-entropy targets, with or without mixup."""

    def check(self) -> None:
        require("focal_gamma", self.focal_gamma, self.focal_gamma >= 0, "a float >= 0")
        require("lsoftmax_gamma", self.lsoftmax_gamma, self.lsoftmax_gamma >= 0, "a float >= 0")
        ok = self.lsoftmax_lambda_min >= 0
        require("lsoftmax_lambda_min", self.lsoftmax_lambda_min, ok, "a float >= 0")
        require("center_loss", self.center_loss, self.center_loss >= 0, "a weight >= 0 (0 = off)")
        require("center_lr", self.center_lr, self.center_lr > 0, "a positive float")
        ok = 0.0 <= self.label_smoothing < 1.0
        require("label_smoothing", self.label_smoothing, ok, "0 <= label_smoothing < 1")


@dataclasses.dataclass
class RegularisationConfig(Group):
    """Regularisation: mixup, CutMix and weight averages (EMA, SWA)."""

    mixup_alpha: float = 0.0
    """Mixup concentration; 0 disables mixup. Weights ~ Beta(alpha, alpha) or Dirichlet(alpha * 1_k)."""
    mixup_k: int = 2
    """Samples mixed per image: 2 is Beta mixup (Zhang et al. 2018), k > 2 is Dirichlet k-way mixup."""
    mixup_at: Literal["input", "features"] = "input"
    """Where mixup mixes: the input images, or 'features': the hidden state after a stage of the backbone drawn
    uniformly per batch from the input and the stages before the last (manifold mixup, Verma et al. 2019); CNNs
    only."""
    cutmix_alpha: float = 0.0
    """CutMix concentration (Yun et al. 2019); 0 disables CutMix. A box of 1 - lam ~ Beta(alpha, alpha) of the
    image is pasted from another image, lam corrected to the box's area after clipping."""
    mix_prob: float = 1.0
    """Share of the batches mixed (mixup or CutMix), as timm's Mixup."""
    switch_prob: float = 0.5
    """With --mixup-alpha and --cutmix-alpha both > 0: share of the mixed batches that use CutMix, as timm's Mixup."""
    ema: float = 0.0
    """Decay per optimizer step of a moving average of the weights (e.g. 0.99); 0 = off. When on, the EMA model
    is validated alongside the trained one and picks the best checkpoint."""
    swa_start_epoch: int | None = None
    """Stochastic weight averaging from this epoch (1-based) on: the weights at the end of each epoch are
    averaged, BatchNorm statistics recomputed on the train-eval subset, and the average validated ('valid_swa') and
    saved as swa_model_<epoch>.pt. None = off."""

    def check(self) -> None:
        require("mixup_alpha", self.mixup_alpha, self.mixup_alpha >= 0, "a float >= 0 (0 disables mixup)")
        require("mixup_k", self.mixup_k, self.mixup_k >= 2, "an integer >= 2")
        ok = self.mixup_at == "input" or self.mixup_alpha > 0
        require("mixup_at", self.mixup_at, ok, "'input' unless --mixup-alpha > 0 (manifold mixup mixes with it)")
        require("cutmix_alpha", self.cutmix_alpha, self.cutmix_alpha >= 0, "a float >= 0 (0 disables CutMix)")
        ok = self.cutmix_alpha == 0 or self.mixup_k == 2
        require("cutmix_alpha", self.cutmix_alpha, ok, "0 with --mixup-k > 2 (CutMix mixes two images)")
        require("mix_prob", self.mix_prob, 0 <= self.mix_prob <= 1, "a share in [0, 1]")
        require("switch_prob", self.switch_prob, 0 <= self.switch_prob <= 1, "a share in [0, 1]")
        require("ema", self.ema, 0.0 <= self.ema < 1.0, "0 <= ema < 1 (0 turns EMA off)")
        ok = self.swa_start_epoch is None or self.swa_start_epoch >= 1
        require("swa_start_epoch", self.swa_start_epoch, ok, "an epoch >= 1 or None")


@dataclasses.dataclass
class EvalConfig(Group):
    """Evaluation: the competition metric, when to validate, early stopping."""

    metric: str = "accuracy"
    """The competition metric that selects the best checkpoint, drives early stopping and the plateau schedule:
    accuracy, top<k>, map@<k> (QuickDraw: map@3), macro_recall (Bengali.AI with 2:1:1 heads), f<beta>
    (multi-label, Planet: f2), roc_auc, qwk, log_loss (src/metrics.py)."""
    threshold: float = 0.5
    """Probability above which a tag is predicted (multi-label accuracy and f<beta>)."""
    val_every: float | None = None
    """Validate also inside epochs: a fraction of an epoch in (0, 1) (0.25: four times per epoch) or a whole
    number of optimizer steps (500); always after an optimizer step and at every epoch end. None: each epoch."""
    patience: int = 5
    """Early stopping: validations without improvement of the valid metric before stopping, counted from
    --early-stopping-start-epoch on."""
    early_stopping_start_epoch: int | None = None
    """Early stopping watches the validations from this epoch (1-based) on (Keras's start_from_epoch). None: from
    the first epoch for 'plateau', 'step' and 'none'; for 'onecycle' and 'cosine', whose lr anneals over the whole
    run and whose best epochs come at its end, from three quarters of the way between the warmup and the last
    epoch (epoch 14 of 18), so the noisy high-lr phase cannot end a run before it anneals."""

    def check(self) -> None:
        get_metric(self.metric)
        require("threshold", self.threshold, 0.0 < self.threshold < 1.0, "a probability in (0, 1)")
        every = self.val_every
        ok = every is None or 0 < every < 1 or (every >= 1 and every == int(every))
        require("val_every", every, ok, "a fraction of an epoch in (0, 1) or a whole number of optimizer steps")
        require("patience", self.patience, self.patience >= 1, "an integer >= 1")
        start = self.early_stopping_start_epoch
        require("early_stopping_start_epoch", start, start is None or start >= 1, "an epoch >= 1 or None (automatic)")
