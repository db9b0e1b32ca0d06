"""The embedded AWS emulator: moto in server mode on 127.0.0.1, Step Functions execution
on, the gaps of moto's state-machine interpreter closed (``moto_gaps``), and the compute
bridges that run the local runners when an emulated job starts (``bridge`` for Glue,
``training_bridge``, ``processing_bridge``) or an endpoint is created (``hosting_bridge``:
the local model server answers ``InvokeEndpoint``), and ``scheduler_bridge`` that fires
EventBridge Scheduler schedules (``at()``/``rate()``) whose target is a state machine.
``backend`` is the ``emulator``
backend: it installs the bridges a workflow's step kinds name."""
from cloud_runners.emulator.server import EmbeddedEmulator

__all__ = ["EmbeddedEmulator"]
