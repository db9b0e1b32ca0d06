"""The training code shipped to SageMaker as ``sourcedir.tar.gz`` (entry point ``train.py``).

Only numpy, pyarrow, TensorFlow/Keras here: this folder runs inside the SageMaker
TensorFlow container, where ``harness`` is not installed.
"""
