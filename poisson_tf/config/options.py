"""The configuration as command-line flags: every field of config.schema's dataclasses is a flag (`options()`),
and `override()` applies the flags given by one rule: a value given explicitly replaces the saved or preset one
(STYLE rule 15: overrides by path, derived from the dataclasses). Framework-free."""
from __future__ import annotations

import dataclasses

from poisson_tf import cycles
from poisson_tf.config.schema import SECTIONS, SPEC_SETS, TrainConfig, preset


@dataclasses.dataclass(frozen=True)
class Option:
    """One config field as a command-line flag."""

    flag: str       # the flag's name: the field's, or its metadata's `flag`
    path: str       # "preset" or "<section>.<field>", e.g. "model.depth"
    kind: str       # "int", "float", "str", "bool" or "tuple" (of ints, a comma-separated list)
    default: object  # shown by --help; None for model fields (the preset's)
    help: str

    items: type = int  # the element type of a tuple field

    def parse(self, value):
        """A flag's value as the field takes it (comma-separated strings -> a tuple of `items`)."""
        if self.kind != "tuple":
            return value
        try:
            return tuple(self.items(v) for v in value)
        except (TypeError, ValueError):
            kind = "integers" if self.items is int else "numbers"
            raise ValueError(f"--{self.flag} must be a comma-separated list of {kind}, got "
                             f"{','.join(map(str, value))}") from None


def _option(path: str, field: dataclasses.Field, default) -> Option:
    return Option(field.metadata["flag"] or field.name, path, field.type, default, field.metadata["help"],
                  field.metadata["items"])


def options() -> list:
    """Every config field as a flag, derived from the dataclasses: preset, then model, data, cycle, optim, run."""
    defaults = TrainConfig()
    out = [_option("preset", next(f for f in dataclasses.fields(TrainConfig) if f.name == "preset"),
                   defaults.preset)]
    for section, kind in SECTIONS.items():
        for f in dataclasses.fields(kind):
            default = None if section == "model" or f.default is None else getattr(getattr(defaults, section), f.name)
            out.append(_option(f"{section}.{f.name}", f, default))
    return out


def override(values: dict, saved: TrainConfig | None = None) -> TrainConfig:
    """The one override rule: a value given replaces the saved or preset one.

    The starting point is `saved` (a resumed run), or else the defaults with the named preset's model; a
    given `preset` replaces the whole model first, then model fields given replace its fields.

    Args:
      values: path -> value of the fields given explicitly, e.g. {"preset": "tiny", "model.depth": 2,
        "cycle.levels": ["8", "16"]} (tuple fields may come as lists of strings).
      saved: the configuration to continue from, or None.

    Raises:
      ValueError: an unknown path, a value a field refuses, or levels, epochs_per_visit or num_cycles given
        beside a cycle spec (the spec sets them).

    A family given without its eta or num_terms takes its own defaults (fields.FAMILY_DEFAULTS).
    """
    by_path = {o.path: o for o in options()}
    unknown = sorted(set(values) - set(by_path))
    if unknown:
        raise ValueError(f"unknown configuration fields {unknown}; valid: {sorted(by_path)}")
    given = {path: by_path[path].parse(value) for path, value in values.items()}
    base = saved or TrainConfig()
    name = given.get("preset", base.preset)
    cycle = given.get("cycle.cycle", base.cycle.cycle)
    beside = [f"--{by_path['cycle.' + f].flag}" for f in SPEC_SETS if "cycle." + f in given]
    if cycles.is_spec(cycle) and beside:
        raise ValueError(f"{', '.join(beside)} cannot be given with the cycle spec {cycle!r}: the spec sets the "
                         f"levels and the epochs of every visit itself; drop {', '.join(beside)}, or use a named "
                         f"cycle {cycles.CYCLES}")
    sections = {section: getattr(base, section) for section in SECTIONS}
    if saved is None or "preset" in given:
        sections["model"] = preset(name)
    for section, current in sections.items():
        fields_ = {path.partition(".")[2]: value for path, value in given.items() if path.startswith(section + ".")}
        if section == "data" and fields_.get("family", current.family) != current.family:
            # another family: its own defaults for what was not given, not the previous family's values
            fields_ = {"eta": None, "num_terms": None, **fields_}
        sections[section] = dataclasses.replace(current, **fields_)
    return TrainConfig(preset=name, **sections)
