"""The function served by a runtime: the Runtime Interface Emulator, the streaming runtime, the task root,
make serve."""
