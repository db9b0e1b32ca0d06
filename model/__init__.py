"""The code shipped to SageMaker: the training entry point ``train.py`` (as
``sourcedir.tar.gz``; it writes the drift baseline with ``drift_baseline.py`` beside the
model), the evaluation processing job's script ``evaluate.py`` and the drift check
``drift_check.py`` (with ``drift_features``, ``drift_capture``, ``drift_plot``), which
runs as a Model Monitor bring-your-own-container processing job.

Only numpy, pyarrow, TensorFlow/Keras here, plus scipy for the drift check's tests and
matplotlib for plots when present: this folder runs inside the SageMaker TensorFlow
container, where ``harness`` is not installed.
"""
