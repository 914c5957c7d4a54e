"""`python -m poisson_tf.evaluate`: poisson-tf-evaluate, whose code is poisson_tf/cli/evaluate.py (kept for the launch scripts and
every command line written before the cli package)."""
from poisson_tf.cli.evaluate import run

if __name__ == "__main__":
    run()
