"""The reference walkthrough's training script, in its own style (SageMaker TensorFlow
script mode): the ``train`` and ``validation`` channels are folders of header-less CSV
files (label first) read with pandas; the metric line ``accuracy=<value>;`` is what the
training job's MetricDefinitions regex ``accuracy=(.*?);`` reads; the SavedModel is saved
under ``model_dir/<timestamp>`` (a version named by an integer, as TF Serving wants)."""
import argparse
import glob
import os
import time

import numpy as np
import pandas as pd
import tensorflow as tf


def read_channel(folder):
    files = sorted(glob.glob(os.path.join(folder, "*.csv")))
    if not files:
        raise SystemExit(f"no CSV files in {folder}")
    data = pd.concat([pd.read_csv(f, header=None) for f in files], ignore_index=True)
    return data.iloc[:, 1:].to_numpy(np.float32), data.iloc[:, 0].to_numpy(np.int64)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=0.002)
    parser.add_argument("--model_dir", default=None)  # the SDK's S3 location; unused here
    parser.add_argument("--sm-model-dir", default=os.environ.get("SM_MODEL_DIR"))
    parser.add_argument("--train", default=os.environ.get("SM_CHANNEL_TRAIN"))
    parser.add_argument("--validation", default=os.environ.get("SM_CHANNEL_VALIDATION"))
    args, _ = parser.parse_known_args()

    tf.keras.utils.set_random_seed(7)
    x_train, y_train = read_channel(args.train)
    x_val, y_val = read_channel(args.validation)
    model = tf.keras.Sequential([
        tf.keras.Input(shape=(x_train.shape[1],), name="pixels"),
        tf.keras.layers.Dense(128, activation="relu"),
        tf.keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer=tf.keras.optimizers.Adam(args.learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=args.epochs, batch_size=args.batch_size, verbose=2)
    loss, accuracy = model.evaluate(x_val, y_val, verbose=0)
    print(f"loss={loss:.4f};")
    print(f"accuracy={accuracy:.4f};")

    version = os.path.join(args.sm_model_dir, str(int(time.time())))
    model.export(version)
    print(f"saved the model to {version}")


if __name__ == "__main__":
    main()
