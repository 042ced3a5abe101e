"""Helpers the tests share (not tests themselves): events and proxy events, a Lambda context, the local AWS
stand-ins, the Runtime Interface Emulator, batch-file lines, model files, near ties, and the user-text log guard."""
