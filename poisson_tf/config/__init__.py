"""The run configuration: frozen dataclasses validated when built (schema), the value checks every module shares
(checks), and the command-line flags derived from the dataclasses (options). Framework-free: importing it loads
neither TensorFlow nor Keras."""
from poisson_tf.config.checks import (MAX_SEED, MAX_THREADS, check_resolution, check_seed,  # noqa: F401
                                      check_threads, require, valid_resolutions)
from poisson_tf.config.options import Option, options, override  # noqa: F401
from poisson_tf.config.schema import (ACTIVATIONS, COARSE_NU, DOWNSAMPLING, INPUT_FEATURES, LR_DECAYS,  # noqa: F401
                                      NORMALIZATIONS, OUTPUT_PRIORS, PRECISIONS, PRESETS, RUNTIME_SETTINGS,
                                      SPEC_SETS, UPSAMPLING, VERBOSITIES, CycleConfig, DataConfig, ModelConfig,
                                      OptimConfig, RunConfig, TrainConfig, preset)
