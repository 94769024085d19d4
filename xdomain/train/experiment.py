"""`Experiment`: everything one run is made of, built once from a `Config`.

    experiment = Experiment(config, workdir)
    state = experiment.prepare_state()          # initialised, --init_from applied
    loader = experiment.training_loader()
    state, metrics = experiment.train_step(state, experiment.global_batch(next(loader)),
                                           experiment.step_rng)
    experiment.evaluator.evaluate(state)

The loop (`xdomain.train.loop`), `--plots`, `benchmarks/throughput.py` and the
tests all use it, so they train and evaluate exactly what a run does.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from xdomain import checkpoint
from xdomain import data
from xdomain import methods
from xdomain import tasks
from xdomain import transfer
from xdomain.config import Config
from xdomain.config import ConfigError
from xdomain.config import check_positive
from xdomain.data import checks as data_checks
from xdomain.data import text_pipeline
from xdomain.evaluate.evaluator import Evaluator
from xdomain.models import zoo
from xdomain.train import optimizers
from xdomain.train import step as step_lib


def validate_config(config: Config):
  """Checks every flag, each by its owner (data, models, methods, transfer,
  the optimizer, the loop); raises `ConfigError` naming the first bad one.

  Returns:
    `(source_info, target_info, task, spec)`, resolved once for the run.
  """
  source_info, target_info = data_checks.validate_config(config)
  task = tasks.for_domain(source_info)
  spec = zoo.validate_config(config, task.name)
  task.validate_config(config)
  methods.validate_config(config, task.name)
  transfer.validate_config(config)
  if config.remove_domain_direction and source_info.modality != "text":
    raise ConfigError(
        f"--remove_domain_direction acts on word vectors; {config.source} is an"
        f" {source_info.modality} domain: drop the flag.")
  optimizers.validate_config(config)
  check_positive(config, "steps", "batch_size", "eval_batch_size", "log_every",
                 "eval_every", "checkpoint_every", "keep_checkpoints")
  if config.plots_baseline and not (config.plots and os.path.isdir(config.plots_baseline)):
    raise ConfigError(
        f"--plots_baseline={config.plots_baseline!r} goes with --plots and names the workdir"
        " of a finished run of the same model.")
  multihost = (config.coordinator_address, config.num_processes, config.process_id)
  if any(v is not None for v in multihost) and any(v is None for v in multihost):
    raise ConfigError(
        "--coordinator_address, --num_processes and --process_id go"
        " together: set all three, or none.")
  return source_info, target_info, task, spec


class Experiment:
  """One run: its domains, task, model, method, optimizer, data and steps.

  Attributes:
    config, workdir: as given.
    source_info, target_info: the domains' `DomainInfo`.
    task: the `xdomain.tasks.Task` of the source domain.
    spec, model: the `--model`'s `ModelSpec` and Flax module.
    method: the `--method`'s `methods.Method`.
    preprocess, buckets: the loader's preprocessor and (text) batch lengths.
    learning_rates: the schedule of each optimizer group (`transfer`).
    tx: the optimizer.
    mesh, data_sharding, replicated: the ('data',) mesh and its shardings.
    init_rng, step_rng: keys of initialisation and of the steps.
  """

  def __init__(self, config: Config, workdir: str, *,
               devices: Sequence[jax.Device] | None = None):
    self.config, self.workdir = config, workdir
    self.source_info, self.target_info, self.task, self.spec = validate_config(config)

    devices = jax.devices() if devices is None else list(devices)
    for name in ("batch_size", "eval_batch_size"):
      if getattr(config, name) % len(devices):
        raise ConfigError(
            f"--{name}={getattr(config, name)} is not divisible by the {len(devices)}"
            f" devices; use a multiple of {len(devices)}.")
    # Auto axes: XLA propagates the batch sharding (Explicit, the default in
    # recent JAX, would make every op name its sharding).
    self.mesh = jax.sharding.Mesh(np.array(devices), ("data",),
                                  axis_types=(jax.sharding.AxisType.Auto,))
    self.data_sharding = NamedSharding(self.mesh, P("data"))
    self.replicated = NamedSharding(self.mesh, P())

    self.method = methods.METHODS[config.method](config)
    if not self.method.uses_source:  # text: it cannot build a vocabulary from the source
      transfer.adopt_vocabulary(config.init_from, workdir, write=jax.process_index() == 0)
    self.preprocess = self.task.make_preprocess(config, workdir,
                                                write=jax.process_index() == 0)
    self.buckets = self.task.buckets(config)
    self.model = self.spec.build(config, self.source_info.num_classes,
                                 **self.task.model_kwargs(config, self.preprocess))
    self.learning_rates = transfer.learning_rate_groups(
        config, optimizers.learning_rate_schedule(config))
    self.tx = transfer.make_optimizer(
        config, self.learning_rates, functools.partial(optimizers.make_optimizer, config))
    self.init_rng, self.step_rng = jax.random.split(jax.random.key(config.seed))

  @property
  def labelled_domain(self) -> str:
    """The domain of the labelled stream: the source; the target for the
    oracle or with --target_labelled_fraction (its few labels)."""
    config = self.config
    if self.method.train_on_target_labels or config.target_labelled_fraction > 0:
      return config.target
    return config.source

  @property
  def labelled_fraction(self) -> float:
    """The share of the labelled domain's training split that the labelled
    stream draws from: --target_labelled_fraction's few labels, else all."""
    return self.config.target_labelled_fraction or 1.0

  def training_loader(self) -> data.CrossDomainLoader:
    """The labelled stream (less its --source_val_fraction) beside the
    unlabelled target (and --general_text's); the target alone for a
    source-free method."""
    config = self.config
    return data.CrossDomainLoader(
        self.labelled_domain if self.method.uses_source else None, config.target,
        target_index=self.method.target_labels is not None, batch_size=config.batch_size,
        preprocess=self.preprocess, seed=config.seed, data_dir=config.data_dir,
        buckets=self.buckets,
        source_fraction=self.labelled_fraction,
        source_holdout=config.source_val_fraction, length_grouping=config.length_grouping,
        general=methods.pretrain.general_text_domains(config))

  @functools.cached_property
  def source_vocabulary(self) -> np.ndarray:
    """Text: bool [vocab size], the token ids of the source's training split."""
    return text_pipeline.source_vocabulary(self.config, self.preprocess.vocab)

  def make_train_step(self):
    """The pure train step (`step.make_train_step`), for callers that jit it
    their own way (e.g. inside a scan)."""
    config = self.config
    logged = {f"learning_rate{'' if group == transfer.OTHER else '/' + group}": schedule
              for group, schedule in self.learning_rates.items()}
    return step_lib.make_train_step(
        self.model, self.spec, self.task, self.method, config, self.tx, logged,
        transfer.regularizer(config),
        teacher_vocabulary=self.source_vocabulary if config.teacher_unseen_as_unk else None)

  @functools.cached_property
  def train_step(self):
    """The jitted train step `(state, batch, rng) -> (state, metrics)`, batch
    sharded over the mesh, state donated."""
    return jax.jit(
        self.make_train_step(),
        in_shardings=(self.replicated, self.data_sharding, self.replicated),
        out_shardings=(self.replicated, self.replicated), donate_argnums=0)

  @functools.cached_property
  def evaluator(self) -> Evaluator:
    """The test-split evaluator (its batches are built on first use)."""
    return Evaluator(self)

  def global_batch(self, local: Any) -> Any:
    """Process-local numpy arrays -> global arrays sharded over the mesh."""
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(self.data_sharding, x), local)

  def init_state(self) -> step_lib.TrainState:
    """The freshly initialised state (random weights), replicated."""
    init = functools.partial(step_lib.init_state, self.model, self.spec, self.task,
                             self.method, self.tx, self.task.sample_part(self.config))
    state = jax.jit(init, out_shardings=self.replicated)(self.init_rng)
    if self.method.target_labels is not None:  # filled by the first refresh
      rows = self.target_info.split_sizes["train"]
      labels = jax.device_put(np.zeros(rows, np.int32), self.replicated)
      state = state.replace(untrained=dict(state.untrained, target_labels=labels))
    return state

  def refresh_target_labels(self, state: step_lib.TrainState) -> step_lib.TrainState:
    """`state` with the method's `TargetLabels` recomputed from its model over
    the target's whole training split (labels never read)."""
    features, logits = self.evaluator.target_train_outputs(state)
    labels = self._compute_target_labels(features, logits)
    return state.replace(untrained=dict(state.untrained, target_labels=labels))

  @functools.cached_property
  def _compute_target_labels(self):
    return jax.jit(self.method.target_labels.compute, out_shardings=self.replicated)

  def prepare_state(self) -> step_lib.TrainState:
    """`init_state` with `--init_from`/`--restore`, the L2-SP anchor and the
    teachers applied (`transfer.prepare_state`): the state a run starts from."""
    counts = None
    if self.config.remove_domain_direction:
      counts = tuple(text_pipeline.token_counts(self.config, self.preprocess.vocab, domain)
                     for domain in (self.config.source, self.config.target))
    return transfer.prepare_state(self.config, self.method, self.init_state(),
                                  self.replicated, workdir=self.workdir, token_counts=counts)

  def meta(self, state: step_lib.TrainState) -> dict:
    """What a checkpoint records about the run, checked on resume."""
    c = self.config
    return {"model": c.model, "method": c.method, "source": c.source, "target": c.target,
            "seed": c.seed, "batch_size": c.batch_size, "image_size": c.image_size,
            "channels": c.channels, "num_classes": self.source_info.num_classes,
            "param_shapes": checkpoint.param_shapes(state.params)}

