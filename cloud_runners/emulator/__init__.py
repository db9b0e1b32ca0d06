"""The embedded AWS emulator: moto in server mode on 127.0.0.1, Step Functions execution
on, the gaps of moto's state-machine interpreter closed (``moto_gaps``), and the compute
bridge (``bridge``) that runs the local runners when an emulated job starts."""
from cloud_runners.emulator.server import EmbeddedEmulator

__all__ = ["EmbeddedEmulator"]
