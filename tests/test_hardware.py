"""CPU identification, the oneDNN switch and the binding of Horovod ranks to their share of the cores."""
import json
import os
import subprocess
import sys

import pytest

from poisson_tf import hardware

PROBE = ("import json, os, sys; import poisson_tf; "
         "print(json.dumps({'cpus': sorted(os.sched_getaffinity(0)), 'onednn': os.environ.get('TF_ENABLE_ONEDNN_OPTS'),"
         " 'tf_loaded': 'tensorflow' in sys.modules}))")


def probe(**env) -> dict:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("OMPI_", "HOROVOD_", "SLURM_", "PMI", "POISSON_TF_BIND", "TF_ENABLE_ONEDNN"))}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**clean, **env}, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout)


def test_cpu_info_names_model_and_isa_class():
    info = hardware.cpu_info()
    assert info["isa_class"] in ("avx512", "avx2", "other") and info["cpu_model"]
    with open("/proc/cpuinfo") as f:
        flags = next(line for line in f if line.startswith("flags")).split()
    assert info["isa_class"] == ("avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else "other")
    assert set(info["isa_flags"]) == set(hardware.ISA_FLAGS) & set(flags)


def test_importing_the_package_turns_onednn_on_without_loading_tensorflow():
    seen = probe()
    assert seen["onednn"] == "1" and not seen["tf_loaded"]
    assert probe(TF_ENABLE_ONEDNN_OPTS="0")["onednn"] == "0"  # the user's choice stands


@pytest.mark.skipif(len(hardware.usable_cpus()) < 2 or len(hardware.usable_cpus()) != os.cpu_count(),
                    reason="needs an unbound process on >= 2 CPUs")
@pytest.mark.parametrize("launcher", [("OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE"),
                                      ("HOROVOD_LOCAL_RANK", "HOROVOD_LOCAL_SIZE")])
def test_unbound_ranks_take_disjoint_slices_of_the_cores(launcher):
    cpus = hardware.usable_cpus()
    rank_var, size_var = launcher
    slices = [probe(**{rank_var: str(r), size_var: "2"})["cpus"] for r in range(2)]
    half = len(cpus) // 2
    assert slices == [cpus[:half], cpus[half:2 * half]]
    assert probe(**{rank_var: "0", size_var: "1"})["cpus"] == cpus           # alone on the host: unbound
    assert probe(**{rank_var: "1", size_var: "2", "POISSON_TF_BIND": "0"})["cpus"] == cpus  # opted out


@pytest.mark.skipif(len(hardware.usable_cpus()) < 2, reason="needs >= 2 CPUs")
def test_a_launcher_binding_is_kept():
    first = hardware.usable_cpus()[0]
    out = subprocess.run(["taskset", "-c", str(first), sys.executable, "-c", PROBE], capture_output=True, text=True,
                         check=True, env={**os.environ, "OMPI_COMM_WORLD_LOCAL_RANK": "1",
                                          "OMPI_COMM_WORLD_LOCAL_SIZE": "2"})
    assert json.loads(out.stdout)["cpus"] == [first]


PADDING_PROBE = ("import poisson_tf.hardware as h; "
                 "print(h.onednn_isa_class(), h.conv_padding(), h.native_bfloat16())")


def padding_probe(**env):
    clean = {k: v for k, v in os.environ.items() if k not in ("ONEDNN_MAX_CPU_ISA", hardware.PADDING_VARIABLE)}
    return subprocess.run([sys.executable, "-c", PADDING_PROBE], env={**clean, **env}, capture_output=True,
                          text=True)


def test_the_convolution_padding_follows_the_isa_onednn_dispatches_to():
    own = hardware.cpu_info()["isa_class"]
    isa, padding, bf16 = padding_probe().stdout.split()
    native = own == "avx512" and bool({"avx512_bf16", "amx_bf16"} & set(hardware.cpu_info()["isa_flags"]))
    assert isa == own and padding == ("explicit" if own == "avx2" else "implicit") and bf16 == str(native)
    if own in ("avx2", "avx512"):  # oneDNN capped at AVX2 takes AVX2's kernels, whatever the CPU
        assert padding_probe(ONEDNN_MAX_CPU_ISA="AVX2").stdout.split() == ["avx2", "explicit", "False"]
        assert padding_probe(ONEDNN_MAX_CPU_ISA="avx512_core_amx").stdout.split() == [own, padding, str(native)]
        assert padding_probe(ONEDNN_MAX_CPU_ISA="AVX512_CORE").stdout.split()[2] == "False"  # no bf16 below it
    for chosen in hardware.CONV_PADDINGS:
        assert padding_probe(POISSON_TF_CONV_PADDING=chosen).stdout.split()[1] == chosen
    bad = padding_probe(POISSON_TF_CONV_PADDING="sometimes")
    assert bad.returncode != 0 and "POISSON_TF_CONV_PADDING must be one of auto, explicit, implicit, got " \
                                   "'sometimes'" in bad.stderr
