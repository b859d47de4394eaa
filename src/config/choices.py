"""The names the config's choice flags accept, one tuple per registry, written here and nowhere else.

`src.config` types each flag with its tuple (``Literal[choices.LOSSES]``: tyro's ``{ce,focal,...}`` in ``--help``,
the check of a config file's value), and the module that builds the choice checks and lists the same tuple:
`src.losses.task_criterion` (``--loss``), `src.model.Classifier` (``--head``), `src.layers.backbones.set_output_stride`
(``--output-stride``), `src.training.optim.OPTIMIZERS` (``--optimizer``, its keys) and
`src.training.optim.build_lr_scheduler` (``--scheduler``), `src.inference.submission.make_submission`
(``--submission-format``). The names live in this module, which imports nothing,
because those modules import `src.config` for their groups: `src.config` importing them would close an import cycle.
Tests check that each flag's choices in ``--help`` are the tuple and that each builder takes every name
(``tests/test_choices.py``).

Registries that `src.config` does not type as choices keep their names themselves: ``--arch`` (`src.model.ARCHS`,
checked when the model is built; ``--list-archs`` prints them) and ``--metric`` (`src.metrics`, whose names the
config's check asks for).
"""

LOSSES = ("ce", "focal", "soft_margin", "lsoftmax")
"""``--loss``: cross entropy (BCE for multi-label), focal, torch's multi-label soft margin, L-softmax."""
HEADS = ("linear", "bn-dropout", "arcface", "cosface", "lsoftmax")
"""``--head``: the classifier heads of `src.model.Classifier`."""
OUTPUT_STRIDES = (8, 16, 32)
"""``--output-stride``: the backbone's total downsampling (`src.layers.backbones.set_output_stride`)."""
OPTIMIZERS = ("adamw", "adam", "sgd")
"""``--optimizer``: the keys of `src.training.optim.OPTIMIZERS`."""
SCHEDULERS = ("onecycle", "cosine", "step", "plateau", "none")
"""``--scheduler``: the lr schedules of `src.training.optim.build_lr_scheduler`."""
SUBMISSION_FORMATS = ("label", "topk", "tags", "long", "probs")
"""``--submission-format``: the formats of `src.inference.submission` (train, predict and ensemble take them)."""
ANNEALING_SCHEDULERS = ("onecycle", "cosine")
"""The schedules whose lr follows one curve over the whole run, a warmup then a decay to the last step
(`src.training.optim`'s curves); early stopping waits for the last quarter of the decay
(`src.config.Config.early_stopping_start`)."""
