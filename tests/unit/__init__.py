"""Pure tests: no model file, no AWS, no child process."""
