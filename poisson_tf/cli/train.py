"""poisson-tf-train: multigrid-cycle training of a neural Poisson solver (single process or under Horovod).

The defaults are the embedded demo: single-level training at 64^3 with the `small` preset (config.schema).
"""
from __future__ import annotations

import json
import sys

from absl import flags

from poisson_tf import cli, config, modeldir
from poisson_tf.training import checkpoint, rundir, signals

FLAGS = flags.FLAGS


def _define_config_flags() -> None:
    """One flag per config field (--depth, --levels, --data_seed, ...), derived from the dataclasses."""
    define = {"int": flags.DEFINE_integer, "float": flags.DEFINE_float, "str": flags.DEFINE_string,
              "bool": flags.DEFINE_bool, "tuple": flags.DEFINE_list}
    for option in config.options():
        if option.default is None:  # a model field (the preset's), or a family parameter (its help says whose)
            define[option.kind](option.flag, None, option.help + (" Default: the preset's."
                                                                  if option.path.startswith("model.") else ""))
        else:
            define[option.kind](option.flag, list(map(str, option.default)) if option.kind == "tuple"
                                else option.default, option.help)


class _ResumeParser(flags.ArgumentParser):
    """--resume, --resume=true|false|auto, --noresume: a boolean flag that also takes `auto`."""

    def parse(self, argument) -> str:
        value = {"1": "true", "t": "true", "0": "false", "f": "false"}.get(str(argument).lower(), str(argument).lower())
        if value not in rundir.RESUME_MODES:
            raise ValueError(f"must be true, false or auto (--resume alone means true), got {argument!r}")
        return value

    def flag_type(self) -> str:
        return "string"


_define_config_flags()
flags.DEFINE_flag(flags.Flag(
    _ResumeParser(), flags.ArgumentSerializer(), "resume", "false",
    "true (or --resume alone): continue model_dir's run from its checkpoint (saved config unless flags override); "
    "auto: continue when model_dir has a checkpoint, else start a new run (preemptible VMs, SLURM --requeue); "
    "false: a new run, refused in a non-empty model_dir unless --overwrite.", boolean=True))
flags.DEFINE_bool("overwrite", False, "A new run replaces the run in model_dir (removes its config, checkpoints, "
                  "model, sample sets, logs and eval/; nothing else).")
flags.DEFINE_integer("stop_after_epochs", None, "Stop after this many epochs of the cycle (resume later).")
cli.define_memory_flags()


def settle(given: dict, resume: str, overwrite: bool, stop_after_epochs: int | None = None) -> tuple:
    """What this launch does, decided from model_dir before anything is written (and before TensorFlow loads).

    Args:
      given: config path -> value of the flags given explicitly (and run.model_dir, run.threads).
      resume, overwrite: the flags (see rundir.decide).

    Returns:
      (the configuration as a dict: the saved one with `given` applied when resuming, else the defaults with
      `given`; resume: bool; clear: whether a new run removes the previous run's files; done: None, or for a
      resume with nothing left to train (epochs done, epochs to do)).

    Raises:
      ValueError: a refused value or model_dir, a model_dir in use, or a checkpoint that cannot be resumed.
    """
    model_dir = given["run.model_dir"]
    resume_run, clear = rundir.decide(model_dir, resume, overwrite)
    rundir.check_unlocked(model_dir)
    cfg = config.override(given, modeldir.load_config(model_dir) if resume_run else None)
    done = None
    if resume_run:
        state = checkpoint.Checkpointer(model_dir, cfg.fingerprint()).load()[1]  # refused now, before TensorFlow
        if cfg.run.deterministic and cfg.run.threads:  # an explicit count (0, the rank's share, is checked later)
            checkpoint.check_threads(model_dir, state, cfg.run.threads)
        num_epochs = cfg.plan().num_epochs
        end = min(num_epochs, stop_after_epochs or num_epochs)
        if "partial" not in state and state["epoch"] + 1 >= end:
            done = (state["epoch"] + 1, end)  # nothing to train: the launch ends before it claims model_dir
    return cfg.to_dict(), resume_run, clear, done


def _nothing_to_train(model_dir: str, done: int, end: int) -> None:
    print(f"nothing to train: the checkpoint in {model_dir} already completed epoch {done} of {end}; evaluate it "
          f"with poisson-tf-evaluate --model_dir={model_dir}")


def main(argv):
    del argv
    # From the first line: a SIGTERM while TensorFlow loads or the run is set up ends it with the same exit code
    # and message as one during training, at the first point where every worker can agree (loop._run).
    with signals.SignalListener() as listener:
        _main(listener)


def _main(listener: signals.SignalListener) -> None:
    if FLAGS.stop_after_epochs is not None:
        config.require(FLAGS.stop_after_epochs >= 1, "--stop_after_epochs", FLAGS.stop_after_epochs, ">= 1")
    threads = config.check_threads(FLAGS.threads)  # before TensorFlow: it aborts on a negative count
    given = {o.path: FLAGS[o.flag].value for o in config.options() if FLAGS[o.flag].present}
    # Where the run is now and how this launch uses its cores, even if a resumed run's saved config says otherwise.
    given.update({"run.model_dir": FLAGS.model_dir, "run.threads": threads})
    parallel = cli.launched()
    if not parallel:  # alone: every check before TensorFlow loads, so a refused run ends in a second
        settled = settle(given, FLAGS.resume, FLAGS.overwrite, FLAGS.stop_after_epochs)
        if settled[3] is not None:  # a finished run: said before TensorFlow loads, and no file touched
            return _nothing_to_train(FLAGS.model_dir, *settled[3])
    from poisson_tf import distributed, training

    distributed.init(intra_op_threads=threads, inter_op_threads=0 if threads == 0 else 1)
    if parallel:  # Horovod: the chief reads model_dir (the others need no shared file system) and tells all
        settled = distributed.chief_decides(settle, given, FLAGS.resume, FLAGS.overwrite, FLAGS.stop_after_epochs)
        if settled[3] is not None:
            return distributed.on_chief(_nothing_to_train, FLAGS.model_dir, *settled[3])
    cfg_dict, resume, clear, _ = settled
    cfg = config.TrainConfig.from_dict(cfg_dict)
    summary = training.train(cfg, resume=resume, stop_after_epochs=FLAGS.stop_after_epochs, overwrite=clear,
                             memory_limit=FLAGS.memory_limit, force=FLAGS.force, listener=listener)
    if distributed.is_chief():
        if summary["start_epoch"] >= summary["end_epoch"]:
            _nothing_to_train(cfg.run.model_dir, summary["start_epoch"], summary["end_epoch"])
        for n, means in sorted(summary["validation_by_resolution"].items()):
            print(f"validation rel_l2 at {n}^3: {100 * means['rel_l2']:.2f}% ({cfg.data.num_val} samples vs the AMG "
                  "reference)")
        print(json.dumps({k: v for k, v in summary.items() if k not in ("history", "validation_by_resolution")}))
    if "interrupted" in summary:  # every worker: the same distinct exit code, after the chief's checkpoint
        stop = summary["interrupted"]
        if distributed.is_chief():
            if stop.get("before_first_step"):
                held = "before its first step: nothing was trained in this launch, and nothing to save"
            else:
                where = (f"in epoch {stop['epoch']} after {stop['steps_in_epoch']} of its steps"
                         if stop["steps_in_epoch"] else f"after epoch {stop['epoch'] - 1}")
                held = f"{where}; the checkpoint in {cfg.run.model_dir} holds every step trained"
            print(f"poisson-tf-train: stopped by {stop['reason']} {held}: the same command with --resume=auto "
                  f"continues (exit code {cli.EXIT_INTERRUPTED})", file=sys.stderr, flush=True)
        cli.leave(cli.EXIT_INTERRUPTED)


def run():
    """Console-script entry point."""
    cli.run("poisson-tf-train", main)


if __name__ == "__main__":
    run()
