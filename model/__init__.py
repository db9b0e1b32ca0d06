"""The code shipped to SageMaker: the training entry point ``train.py`` (as
``sourcedir.tar.gz``) and the evaluation processing job's script ``evaluate.py``.

Only numpy, pyarrow, TensorFlow/Keras here: this folder runs inside the SageMaker
TensorFlow container, where ``harness`` is not installed.
"""
