"""The embedded AWS emulator: moto in server mode on 127.0.0.1, Step Functions execution
on, the gaps of moto's state-machine interpreter closed (``moto_gaps``), the compute
bridges (``bridge``, ``training_bridge``) that run the local runners when an emulated job
starts, and the hosting bridge (``hosting_bridge``) that serves an emulated endpoint with
the local model server and answers ``InvokeEndpoint`` through it."""
from cloud_runners.emulator.server import EmbeddedEmulator

__all__ = ["EmbeddedEmulator"]
