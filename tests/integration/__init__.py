"""The tiny model and/or moto server in this process; quick child processes."""
