"""`python -m poisson_tf.solve`: poisson-tf-solve, whose code is poisson_tf/cli/solve.py (kept for the launch scripts and
every command line written before the cli package)."""
from poisson_tf.cli.solve import run

if __name__ == "__main__":
    run()
