"""Training configs: ``python train.py --config=configs/<name>.py --workdir=<dir>``."""
