"""`python -m poisson_tf.predict`: poisson-tf-predict, whose code is poisson_tf/cli/predict.py (kept for the launch scripts and
every command line written before the cli package)."""
from poisson_tf.cli.predict import run

if __name__ == "__main__":
    run()
