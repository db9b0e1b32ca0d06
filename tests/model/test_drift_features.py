"""model/drift_features.py: the drift features of images and class probabilities, on
hand-made images with known answers and on real digits."""
import math
import time

import numpy as np
from drift_support import CentroidModel, digits

from model.drift_features import compute_features, feature_names, inferred_type


def test_known_images_give_known_features():
    blank = np.zeros((4, 4), np.float32)
    box = np.zeros((4, 4), np.float32)
    box[1:3, 2:4] = 1.0                        # 2x2 of full ink, rows 1-2, columns 2-3
    images = np.stack([blank.ravel(), box.ravel()])
    probabilities = np.array([[0.25] * 4, [0.1, 0.7, 0.1, 0.1]])
    f = compute_features(images, probabilities)
    assert list(f) == feature_names(4)
    assert f["mean_intensity"].tolist() == [0.0, 0.25]
    assert f["ink_mass"].tolist() == [0.0, 0.25]
    assert f["centroid_row"].tolist() == [0.5, 0.5]          # rows 1.5 of 0..3
    assert np.allclose(f["centroid_col"], [0.5, 2.5 / 3])
    assert f["bbox_height"].tolist() == [0.0, 0.5]
    assert f["bbox_width"].tolist() == [0.0, 0.5]
    assert f["confidence"].tolist() == [0.25, 0.7]
    assert f["predicted_class"].tolist()[1] == 1.0
    assert math.isclose(f["entropy"][0], 1.0)                # uniform: the maximum
    assert f["p_1"].tolist() == [0.25, 0.7]
    assert inferred_type("predicted_class") == "Integral"
    assert inferred_type("mean_intensity") == "Fractional"


def test_real_digits_features_are_in_range_and_fast():
    x, y = digits()
    p = CentroidModel(x[:2500], y[:2500]).predict(x)
    x10k, p10k = np.concatenate([x, x]), np.concatenate([p, p])
    start = time.perf_counter()
    f = compute_features(x10k, p10k)
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0, f"10,000 records took {elapsed:.2f} s"
    for name, values in f.items():
        assert values.shape == (10_000,) and np.isfinite(values).all(), name
        if name != "predicted_class":
            assert values.min() >= 0 and values.max() <= 1, name
    # MNIST digits are centred by their centre of mass, in a 20x20 box inside 28x28
    assert abs(np.median(f["centroid_row"]) - 0.5) < 0.05
    assert 0.5 < np.median(f["bbox_height"]) < 0.8
