"""`python -m poisson_tf.train`: poisson-tf-train, whose code is poisson_tf/cli/train.py (kept for the launch scripts and
every command line written before the cli package)."""
from poisson_tf.cli.train import run

if __name__ == "__main__":
    run()
