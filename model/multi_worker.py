"""Multi-instance training with Keras 3 ``model.fit`` under MultiWorkerMirroredStrategy.

Why this module exists: Keras 3's TensorFlow trainer cannot ``fit`` under a
MultiWorkerMirroredStrategy with more than one worker (keras-team/keras#20585, open; the
code is unchanged on Keras master of August 2026). Two places fail, one after the other:

1. ``TensorFlowTrainer._maybe_symbolic_build`` takes one distributed batch to build the
   model's state and calls ``strategy.reduce("MEAN", (x, y, ...), axis=None)`` on the whole
   batch structure; the collective reduce of MWMS takes one value, not a tuple, and fails
   with "Attempt to convert a value (PerReplica:{...}) with an unsupported type ... to a
   Tensor". Only the batch's shapes and dtypes are used there, so the patch takes the
   first local replica's batch instead (no collective at all).
2. ``reduce_per_replica(..., reduction="auto")`` in every train/test step reduces the
   step's scalar logs with ``strategy.reduce("MEAN", v, axis=0)`` in multi-worker mode:
   "Invalid reduction dimension 0 for input with 0 dimensions". The patch averages over
   replicas only (``axis=None``), what the single-worker branch does with
   ``tf.reduce_mean(local_results, axis=0)``. The epoch logs are exact anyway: the
   metrics' variables are ON_READ/SUM, read across all workers at the epoch's end.

The patches change Keras in the training script's own process only, and ``train.py``
applies them only on a multi-worker job (``_strategy``, when TF_CONFIG is set). They were
written for and tested with ``TESTED_KERAS``; on another version they warn and are still
applied. (Not part of the bug but of the same setup: after training, ``predict`` under
MWMS gathers across workers, so the chief alone predicts only after
``predict_on_this_worker``.)

How to remove it: ``tests/model/test_multi_worker.py`` pins the bug -- plain ``fit`` with
two workers must fail with the error above. When an upgrade of Keras makes that test fail
(fit works), delete ``apply_keras_workaround`` and its call in ``train.py``'s ``_strategy``.

Independently of the bug, workers must run the same number of steps (each step is a
collective: a worker that stops early leaves the others waiting). With a train channel
``ShardedByS3Key`` each instance holds a different part of the data, so ``fit_on_shards``
gives ``fit`` a per-worker dataset: this worker's rows, shuffled, repeated, in per-replica
batches (the global batch is still ``batch_size``), and ``steps_per_epoch`` from the total
row count summed over the workers -- one epoch is as many global batches as a single
worker runs on all the data.
"""
from __future__ import annotations

import json
import math
import os
import warnings

import keras
import numpy as np
import tensorflow as tf

TESTED_KERAS = "3.15.1"
SHARDED = "ShardedByS3Key"


def is_multi_worker(strategy) -> bool:
    return (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
            and strategy.extended._in_multi_worker_mode())


# -- keras#20585 --------------------------------------------------------------------------

def _local_batch_build(self, iterator=None, data_batch=None):
    """``TensorFlowTrainer._maybe_symbolic_build`` (Keras 3.15.1) with the distributed batch
    replaced by this worker's first replica's batch: ``_symbolic_build`` reads its shapes
    and dtypes only."""
    if self._distribute_strategy is None:
        return
    if iterator is not None:
        for _, _, it in iterator:
            batch = next(it)
            strategy = self.distribute_strategy
            data_batch = tf.nest.map_structure(
                lambda v: (strategy.experimental_local_results(v)[0]
                           if isinstance(v, tf.distribute.DistributedValues) else v), batch)
            break
    with self.distribute_strategy.scope():
        self._symbolic_build(data_batch=data_batch)


def _trainer_module():
    from keras.src.backend.tensorflow import trainer as tf_trainer

    missing = [name for name in ("reduce_per_replica", "_collective_all_reduce_multi_worker",
                                 "TensorFlowTrainer") if not hasattr(tf_trainer, name)]
    if not missing and not hasattr(tf_trainer.TensorFlowTrainer, "_maybe_symbolic_build"):
        missing.append("TensorFlowTrainer._maybe_symbolic_build")
    if missing:
        raise RuntimeError(f"keras.src.backend.tensorflow.trainer (Keras {keras.__version__}) "
                           f"has no {', '.join(missing)}: the keras#20585 workaround in "
                           "model/multi_worker.py does not fit this Keras; check whether the "
                           "bug is fixed and remove the workaround")
    return tf_trainer


def patch_symbolic_build() -> None:
    """Part 1 of the workaround (see the module docstring)."""
    _trainer_module().TensorFlowTrainer._maybe_symbolic_build = _local_batch_build


def patch_step_reduction() -> None:
    """Part 2 of the workaround (see the module docstring)."""
    tf_trainer = _trainer_module()
    if getattr(tf_trainer.reduce_per_replica, "_multi_worker_workaround", False):
        return
    original_reduce = tf_trainer.reduce_per_replica
    multi_worker = tf_trainer._collective_all_reduce_multi_worker

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and multi_worker(strategy):
            return tf.nest.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None),
                                         values)
        return original_reduce(values, strategy, reduction)

    reduce_per_replica._multi_worker_workaround = True
    # looked up as a module global when the train/test function is traced
    tf_trainer.reduce_per_replica = reduce_per_replica


def apply_keras_workaround() -> None:
    """Patch Keras's TensorFlow trainer for keras#20585 (see the module docstring).
    Idempotent; warns on a Keras other than ``TESTED_KERAS``."""
    if keras.__version__ != TESTED_KERAS:
        warnings.warn(f"model/multi_worker.py: the keras#20585 workaround was tested with Keras "
                      f"{TESTED_KERAS}, this is Keras {keras.__version__}; applying it anyway "
                      "(if plain fit works now, remove it: see the module docstring)",
                      RuntimeWarning, stacklevel=2)
    patch_symbolic_build()
    patch_step_reduction()


# -- equal steps on sharded data ---------------------------------------------------------

def channel_distribution(channel: str) -> str:
    """The channel's S3DataDistributionType as the toolkit passes it (``SM_INPUT_DATA_CONFIG``);
    FullyReplicated when not given."""
    config = json.loads(os.environ.get("SM_INPUT_DATA_CONFIG") or "{}")
    return (config.get(channel) or {}).get("S3DistributionType") or "FullyReplicated"


def _all_workers_sum(strategy, value: int) -> int:
    """The sum of ``value`` over the workers (a collective: every worker calls it)."""
    local_replicas = len(strategy.extended.worker_devices)
    per_replica = strategy.run(lambda: tf.constant(float(value) / local_replicas, tf.float64))
    return int(round(float(strategy.reduce("SUM", per_replica, axis=None))))


def _rows(batch) -> tf.Tensor:
    return tf.shape(tf.nest.flatten(batch)[0])[0]


def fit_on_shards(model, strategy, *, seed: int) -> None:
    """Make ``model.fit`` train each worker on its own shard with the same number of steps.

    ``fit(x, y, batch_size=B, shuffle=...)`` with arrays, or ``fit(dataset)`` with a
    ``tf.data.Dataset`` of batches of B rows, becomes ``fit(per_worker_dataset,
    steps_per_epoch=ceil(total rows / B))``: this worker's rows shuffled (seeded by
    ``seed`` and the worker's index), repeated, in batches of B / replicas (so the global
    batch stays B), not sharded again by TensorFlow. A dataset's rows are counted with one
    pass over it (streamed, not held). Everything else (validation_data, callbacks, epochs)
    goes to Keras unchanged: validation and test channels are FullyReplicated, which
    Keras's own sharding of evaluation handles.
    """
    original_fit = model.fit

    def fit(x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None,
            validation_split=0.0, validation_data=None, shuffle=True, steps_per_epoch=None,
            **kwargs):
        unsupported = [k for k in ("sample_weight", "class_weight") if kwargs.get(k) is not None]
        if validation_split:
            unsupported.append("validation_split")
        if isinstance(x, tf.data.Dataset) and y is not None:
            unsupported.append("y beside a dataset")
        if steps_per_epoch is not None:  # one worker's count would leave the others waiting
            unsupported.append("steps_per_epoch (set here from the rows of all workers)")
        if unsupported:
            raise ValueError(f"fit_on_shards: not supported when each worker trains on its "
                             f"own shard: {'; '.join(unsupported)}. Expected validation_data "
                             "for validation, labels and weights in the dataset")
        if isinstance(x, tf.data.Dataset):
            dataset = x
            global_batch = batch_size or int(_rows(next(iter(dataset))))
            local_rows = int(dataset.reduce(tf.constant(0, tf.int64),
                                            lambda n, b: n + tf.cast(_rows(b), tf.int64)))
            make_rows = dataset.unbatch
        else:
            x, y = np.asarray(x), np.asarray(y)
            global_batch = batch_size or 32  # Keras's default
            local_rows = len(x)
            make_rows = (lambda: tf.data.Dataset.from_tensor_slices((x, y)))
        replicas = strategy.num_replicas_in_sync
        if global_batch % replicas:
            raise ValueError(f"hyperparameter 'batch_size': {global_batch} rows do not split "
                             f"evenly over {replicas} replicas (instances x devices). "
                             f"Expected a multiple of {replicas}.")
        total = _all_workers_sum(strategy, local_rows)
        steps = max(1, math.ceil(total / global_batch))

        def per_worker(context: tf.distribute.InputContext) -> tf.data.Dataset:
            data = make_rows()
            if shuffle:  # a full shuffle of arrays (in memory anyway); a bounded buffer of
                # a stream, which comes shuffled by file and buffer already
                data = data.shuffle(max(1, min(local_rows, 10_000)),
                                    seed=seed + context.input_pipeline_id,
                                    reshuffle_each_iteration=True)
            options = tf.data.Options()
            # the instance already holds its own shard (ShardedByS3Key): no sharding again
            options.experimental_distribute.auto_shard_policy = \
                tf.data.experimental.AutoShardPolicy.OFF
            return (data.repeat()
                    .batch(context.get_per_replica_batch_size(global_batch), drop_remainder=True)
                    .with_options(options).prefetch(tf.data.AUTOTUNE))

        print(f"multi-worker: {local_rows} rows here, {total} on all workers, "
              f"{steps} steps of {global_batch} per epoch", flush=True)
        # shuffle=False: the per-worker dataset shuffles (Keras only warns it cannot)
        return original_fit(strategy.distribute_datasets_from_function(per_worker),
                            epochs=epochs, verbose=verbose, callbacks=callbacks,
                            validation_data=validation_data, steps_per_epoch=steps,
                            shuffle=False, **kwargs)

    model.fit = fit


def predict_on_this_worker(model) -> None:
    """Detach ``model`` (and its sub-models) from the multi-worker strategy so that one
    worker alone can ``predict`` after training (the chief's drift baseline): under MWMS
    each ``predict`` step gathers across all workers and would wait for the others."""
    for m in [model, *(layer for layer in model._flatten_layers(include_self=False)
                       if isinstance(layer, keras.Model))]:
        m._distribute_strategy = None
        m.predict_function = None
