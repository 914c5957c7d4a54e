"""The CPU this process runs on (model, ISA class) and TensorFlow's oneDNN switch, which depends on it.

TensorFlow 2.18 turns its oneDNN kernels on by default only on CPUs with AVX-512 VNNI/BF16 or AMX; on an
AVX2-only CPU (AMD Zen 2/3, e.g. the EPYC 7742 of PSC Bridges-2) it falls back to Eigen convolutions, which
measured 13x slower for this package's training step (benchmarks/bench_profile.py). Importing poisson_tf
therefore sets TF_ENABLE_ONEDNN_OPTS=1 unless the user set it; TensorFlow reads it once, at its import.
For the same reason (TensorFlow and tf.data size their thread pools by the CPUs a process may use when they
start) a Horovod rank takes its share of the host's cores at that moment too (bind_local_rank).
"""
from __future__ import annotations

import functools
import os
import platform
import sys
import warnings

ONEDNN_VARIABLE = "TF_ENABLE_ONEDNN_OPTS"
#: oneDNN's documented runtime cap on the instruction set it dispatches to (e.g. AVX2 on an AVX-512 CPU).
MAX_ISA_VARIABLE = "ONEDNN_MAX_CPU_ISA"
#: How the package's 'same' convolutions pad (conv_padding): "auto" (by the ISA), "explicit" or "implicit".
PADDING_VARIABLE = "POISSON_TF_CONV_PADDING"
CONV_PADDINGS = ("explicit", "implicit")
#: ISA flags recorded with every benchmark: what decides which oneDNN kernels run.
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")


def request_onednn() -> None:
    """Asks TensorFlow for its oneDNN kernels on every x86 CPU (a no-op once TensorFlow is imported, or when
    the user chose TF_ENABLE_ONEDNN_OPTS themselves)."""
    if "tensorflow" not in sys.modules and platform.machine() in ("x86_64", "AMD64"):
        os.environ.setdefault(ONEDNN_VARIABLE, "1")


def onednn_enabled() -> bool:
    """Whether this process's TensorFlow runs its oneDNN kernels (imports TensorFlow)."""
    from tensorflow.python.util import _pywrap_util_port

    return bool(_pywrap_util_port.IsMklEnabled())


def check_onednn() -> None:
    """Warns when TensorFlow came up without oneDNN on an x86 CPU although nobody asked for that (it was
    imported before poisson_tf): training then runs on Eigen kernels, up to 13x slower on AVX2."""
    if os.environ.get(ONEDNN_VARIABLE) == "0" or platform.machine() not in ("x86_64", "AMD64"):
        return
    if not onednn_enabled():
        warnings.warn("TensorFlow's oneDNN kernels are off (TensorFlow was imported before poisson_tf on a CPU "
                      f"without AVX-512 VNNI); training will be several times slower. Import poisson_tf first or "
                      f"set {ONEDNN_VARIABLE}=1 before starting Python.", stacklevel=2)


#: Environment variables set by the launchers this package supports (horovodrun with MPI or Gloo, mpirun, srun).
_LAUNCHER_VARIABLES = ("HOROVOD_RANK", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MV2_COMM_WORLD_SIZE")
#: (local rank, ranks on this host) variables of the launchers poisson_tf supports, set before Python starts.
_LOCAL_RANK_VARIABLES = (("OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE"),  # mpirun, horovodrun
                         ("HOROVOD_LOCAL_RANK", "HOROVOD_LOCAL_SIZE"),                  # horovodrun --gloo
                         ("SLURM_LOCALID", "SLURM_NTASKS_PER_NODE"))                    # srun


def launched() -> bool:
    """True when this process was started by horovodrun, mpirun or srun (or POISSON_TF_HOROVOD=1)."""
    if os.environ.get("POISSON_TF_HOROVOD") == "1":
        return True
    if os.environ.get("SLURM_NTASKS", "1") not in ("", "1") and "SLURM_PROCID" in os.environ:
        return True
    return any(name in os.environ for name in _LAUNCHER_VARIABLES)


def usable_cpus() -> list:
    """The CPUs this process may run on (its affinity), sorted."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def bind_local_rank() -> list:
    """Binds this process to its slice of the host's CPUs when a launcher started several ranks on this host
    and bound none of them (horovodrun's default): local rank r of n takes slice r of the CPUs. A launcher's
    own binding (srun --cpu-bind, mpirun --bind-to) and POISSON_TF_BIND=0 leave the process alone.

    Measured on 2 cores (benchmarks/bench_scaling.py): 2 unbound ranks ran 0.75-0.9x the throughput of one
    2-thread process; bound before TensorFlow starts, >= 1.0x. Returns the CPUs this process may use.
    """
    cpus = usable_cpus()
    if os.environ.get("POISSON_TF_BIND") == "0" or len(cpus) != os.cpu_count() or "tensorflow" in sys.modules:
        return cpus
    for rank_variable, size_variable in _LOCAL_RANK_VARIABLES:
        try:
            local_rank, local_size = int(os.environ[rank_variable]), int(os.environ[size_variable])
        except (KeyError, ValueError):  # not this launcher (or SLURM's "8(x2)" form: srun binds itself)
            continue
        if 1 < local_size <= len(cpus) and 0 <= local_rank < local_size:
            per_rank = len(cpus) // local_size
            cpus = cpus[local_rank * per_rank:(local_rank + 1) * per_rank]
            os.sched_setaffinity(0, cpus)
        break
    return cpus


def onednn_isa_class() -> str:
    """The ISA class oneDNN dispatches to: this CPU's (cpu_info), capped by ONEDNN_MAX_CPU_ISA when set (AVX2,
    AVX2_VNNI, ... -> "avx2"; AVX512_*, AVX10_*, AMX -> the CPU's own)."""
    cap = os.environ.get(MAX_ISA_VARIABLE, "").strip().upper()
    own = cpu_info()["isa_class"]
    if cap and not cap.startswith(("AVX512", "AVX10", "AMX", "ALL", "DEFAULT")):
        return "avx2" if cap.startswith("AVX2") and own in ("avx2", "avx512") else "other"
    return own


def native_bfloat16() -> bool:
    """Whether oneDNN runs bfloat16 convolutions natively here: the CPU has avx512_bf16 or AMX-BF16 and
    ONEDNN_MAX_CPU_ISA (if set) does not cap oneDNN below them. TensorFlow sends bfloat16 ops to oneDNN only on
    AVX-512 CPUs; elsewhere they run on Eigen (slow, and the source of corrupt gradients measured on AVX2)."""
    flags = cpu_info()["isa_flags"]
    if onednn_isa_class() != "avx512" or not ("avx512_bf16" in flags or "amx_bf16" in flags):
        return False
    cap = os.environ.get(MAX_ISA_VARIABLE, "").strip().upper()
    return not cap or cap == "ALL" or cap == "DEFAULT" or any(part in cap for part in ("BF16", "FP16", "AMX",
                                                                                      "AVX10"))


@functools.lru_cache(maxsize=1)
def conv_padding() -> str:
    """How the network's 'same' convolutions are computed on this CPU: "explicit" (zero padding, then a
    'valid' convolution) or "implicit" (the convolution pads itself). The same function and weights either way.

    oneDNN's direct AVX2 weight-gradient kernel (jit:avx2) refuses a 3D convolution with padding along depth,
    so every implicitly padded 3^3 layer falls back to im2col + GEMM (x64:gemm:jit) there, ~3x slower for
    the whole layer; with the padding made explicit it runs jit:avx2. AVX-512's kernels pad themselves and
    are faster without the extra copy (the kernel names are recorded by benchmarks/bench_profile.py).
    POISSON_TF_CONV_PADDING=explicit|implicit overrides the choice; it is read once per process.

    Raises:
      ValueError: POISSON_TF_CONV_PADDING set to something else than auto, explicit or implicit.
    """
    chosen = os.environ.get(PADDING_VARIABLE, "auto").strip().lower() or "auto"
    if chosen in CONV_PADDINGS:
        return chosen
    if chosen != "auto":
        raise ValueError(f"{PADDING_VARIABLE} must be one of auto, {', '.join(CONV_PADDINGS)}, got {chosen!r}")
    return "explicit" if onednn_isa_class() == "avx2" else "implicit"


@functools.lru_cache(maxsize=1)
def cpu_info() -> dict:
    """Model name, ISA class ("avx512", "avx2" or "other"), the ISA_FLAGS present, and logical CPUs."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model in ("", platform.machine(), platform.processor()):
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                    break
    except OSError:  # not Linux: the class stays unknown
        pass
    isa_class = "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else "other"
    return {"cpu_model": model, "isa_class": isa_class, "isa_flags": [f for f in ISA_FLAGS if f in flags],
            "logical_cpus": os.cpu_count()}
