"""One worker of a two-worker MultiWorkerMirroredStrategy (TF_CONFIG set by the test) that
tries Keras 3 ``model.fit`` three times on the project's network: without the keras#20585
workaround, with its first part only, with all of it. Prints one ``<phase>: ok ...`` or
``<phase>: error <first line>`` line per phase (and the ``multi-worker:`` line of
``fit_on_shards``) (both workers go through the same phases
in step, so a failure never leaves a collective waiting). Run as
``python mwms_fit_probe.py MODEL_DIR``."""
import sys

sys.path.insert(0, sys.argv[1])  # model/: the training script's own modules

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import multi_worker  # noqa: E402
from network import build_model  # noqa: E402

strategy = tf.distribute.MultiWorkerMirroredStrategy()
keras.utils.set_random_seed(3)
rng = np.random.default_rng(strategy.cluster_resolver.task_id)
x = rng.random((256, 144), dtype=np.float32)
y = rng.integers(0, 4, 256)
vx, vy = np.random.default_rng(9).random((64, 144), dtype=np.float32), np.arange(64) % 4
with strategy.scope():
    model = build_model(12, 12, 4, shift=0.0, filters=(4, 4), units=8)

logged = []


class EpochLogs(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        logged.append(dict(logs or {}))


def attempt(phase: str) -> None:
    try:
        model.fit(x, y, batch_size=None if y is None else 32, epochs=1, verbose=0,
                  validation_data=(vx, vy), callbacks=[EpochLogs()])
        loss, accuracy = model.evaluate(vx, vy, verbose=0)
        print(f"{phase}: ok epochs={len(logged)} keys={sorted(logged[-1])} "
              f"loss={loss:.6f} accuracy={accuracy:.6f}", flush=True)
    except Exception as e:  # noqa: BLE001 - the test reads the message
        print(f"{phase}: error {type(e).__name__}: {str(e).splitlines()[0]}", flush=True)


attempt("plain")
multi_worker.patch_symbolic_build()
attempt("part1")
multi_worker.apply_keras_workaround()
attempt("workaround")

# shards of different sizes (ShardedByS3Key): 256 rows on worker 0, 160 on worker 1; plain
# fit would run 8 and 5 steps and the longer worker would wait forever
n = 256 if strategy.cluster_resolver.task_id == 0 else 160
multi_worker.fit_on_shards(model, strategy, seed=3)
x, y = x[:n], y[:n]
attempt("shards-arrays")
x = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)  # what a streamed split gives
y = None
attempt("shards-dataset")
