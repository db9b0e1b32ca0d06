"""The Keras network and its export as a TF Serving SavedModel.

Serving contract (the SageMaker TensorFlow serving container and TF Serving load it):
``<model_dir>/<version>/saved_model.pb`` + ``variables/``, signature ``serving_default``
taking ``pixels`` float32 ``[None, H*W]`` (values in [0, 1]) and returning
``probabilities`` float32 ``[None, num_classes]`` and ``classes`` int64 ``[None]``. The
input range is declared next to the model in ``<version>/assets.extra/input_ranges.json``
(``{"pixels": [0.0, 1.0]}``; TF Serving ignores the file, the embedded model server answers
400 to values outside it).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import keras
import tensorflow as tf
from keras import layers

SIGNATURE = "serving_default"
INPUT_NAME = "pixels"
OUTPUT_PROBABILITIES = "probabilities"
OUTPUT_CLASSES = "classes"
INPUT_RANGE = (0.0, 1.0)          # pixels are scaled to [0, 1] by the ETL
RANGES_FILE = os.path.join("assets.extra", "input_ranges.json")


CLASSIFIER = "classifier"


def build_classifier(image_height: int, image_width: int, num_classes: int,
                     filters: tuple[int, int] = (32, 64), units: int = 128,
                     dropout: float = 0.3) -> keras.Model:
    """The served network: flat pixels -> HxWx1 -> two conv/pool blocks -> dropout ->
    dense (``units`` wide) -> softmax."""
    inputs = keras.Input(shape=(image_height * image_width,), name=INPUT_NAME)
    x = layers.Reshape((image_height, image_width, 1), name="image")(inputs)
    x = layers.Conv2D(filters[0], 3, activation="relu", name="conv1")(x)
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = layers.Conv2D(filters[1], 3, activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D(2, name="pool2")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    x = layers.Dense(units, activation="relu", name="dense")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name=OUTPUT_PROBABILITIES)(x)
    return keras.Model(inputs, outputs, name=CLASSIFIER)


def build_model(image_height: int, image_width: int, num_classes: int,
                learning_rate: float = 0.003, shift: float = 0.1,
                filters: tuple[int, int] = (32, 64), units: int = 128,
                dropout: float = 0.3) -> keras.Model:
    """The compiled training model: random shifts (training only) in front of the classifier.

    ``shift`` is the fraction of the image by which training images are randomly
    translated; 0 disables it. Only the classifier is exported for serving, so the
    augmentation (and its random state) never reaches the endpoint.
    """
    classifier = build_classifier(image_height, image_width, num_classes, filters, units,
                                  dropout)
    inputs = keras.Input(shape=(image_height * image_width,), name=INPUT_NAME)
    x = inputs
    if shift > 0:
        x = layers.Reshape((image_height, image_width, 1), name="image")(x)
        x = layers.RandomTranslation(shift, shift, fill_mode="constant", fill_value=0.0,
                                     name="random_shift")(x)
        x = layers.Reshape((image_height * image_width,), name="flat")(x)
    model = keras.Model(inputs, classifier(x), name="digits_training")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def classifier_of(model: keras.Model) -> keras.Model:
    """The servable part of a model from :func:`build_model` (or the model itself)."""
    try:
        return model.get_layer(CLASSIFIER)
    except ValueError:
        return model


class _Serving(tf.Module):
    """Wraps the trained model with the serving signature (inference mode only)."""

    def __init__(self, model: keras.Model, num_pixels: int):
        super().__init__(name="serving")
        self.model = model
        self.serve = tf.function(
            self._serve,
            input_signature=[tf.TensorSpec([None, num_pixels], tf.float32, name=INPUT_NAME)])

    def _serve(self, pixels):
        probabilities = self.model(pixels, training=False)
        classes = tf.argmax(probabilities, axis=1, output_type=tf.int64)
        return {OUTPUT_PROBABILITIES: probabilities, OUTPUT_CLASSES: classes}


def export_saved_model(model: keras.Model, model_dir: str | os.PathLike, version: int = 1
                       ) -> Path:
    """Write the SavedModel to ``<model_dir>/<version>/`` (with its declared input range)
    and return that directory."""
    model = classifier_of(model)
    num_pixels = int(model.inputs[0].shape[-1])
    export_dir = Path(model_dir) / str(version)
    if export_dir.exists():
        raise FileExistsError(f"{export_dir}: a model version is already exported there")
    module = _Serving(model, num_pixels)
    tf.saved_model.save(module, str(export_dir), signatures={SIGNATURE: module.serve})
    ranges = export_dir / RANGES_FILE
    ranges.parent.mkdir(exist_ok=True)
    ranges.write_text(json.dumps({INPUT_NAME: list(INPUT_RANGE)}) + "\n")
    return export_dir
