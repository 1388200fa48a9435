"""What the Keras backend runs on: its devices, their free memory, the CPU's low-precision instructions.

Used by ``fusionnet-keras info``, the predictor (how many windows fit in one
call) and the benchmarks. Every function imports the backend only when called.
"""

from __future__ import annotations

import os
import platform

__all__ = ["backend_name", "devices", "accelerators", "cpu_name", "cpu_low_precision", "free_memory_bytes",
           "native_bfloat16", "fast_bfloat16", "training_jit_compile"]

# /proc/cpuinfo flags that make bfloat16 / float16 convolutions fast on x86-64 CPUs (oneDNN, XLA)
_CPU_FLAGS = {"avx512_bf16": "AVX512-BF16", "amx_bf16": "AMX-BF16", "avx512_fp16": "AVX512-FP16",
              "amx_fp16": "AMX-FP16"}


def backend_name() -> str:
    import keras

    return keras.backend.backend()


def _tf_devices():
    import tensorflow as tf

    out = []
    for d in tf.config.list_physical_devices():
        name = d.name.replace("/physical_device:", "")
        kind = cpu_name() if d.device_type == "CPU" else ""
        if d.device_type == "GPU":
            try:
                kind = tf.config.experimental.get_device_details(d).get("device_name", "")
            except Exception:  # noqa: BLE001 (details are optional)
                kind = ""
        out.append((d.device_type, name, kind))
    return out


def _jax_devices():
    import jax

    return [(d.platform.upper(), f"{d.platform.upper()}:{d.id}",
             cpu_name() if d.platform == "cpu" else getattr(d, "device_kind", "")) for d in jax.devices()]


def _torch_devices():
    import torch

    out = [("CPU", "CPU:0", cpu_name())]
    if torch.cuda.is_available():
        out += [("GPU", f"GPU:{i}", torch.cuda.get_device_name(i)) for i in range(torch.cuda.device_count())]
    return out


def devices() -> list[tuple[str, str, str]]:
    """``(type, name, model)`` of every device the Keras backend sees, e.g. ``("GPU", "GPU:0", "NVIDIA H200")``."""
    backend = backend_name()
    lister = {"tensorflow": _tf_devices, "jax": _jax_devices, "torch": _torch_devices}.get(backend)
    return lister() if lister else [("CPU", "CPU:0", cpu_name())]


def accelerators() -> list[tuple[str, str, str]]:
    """The devices other than CPUs."""
    return [d for d in devices() if d[0] != "CPU"]


def cpu_name() -> str:
    """The CPU model (``/proc/cpuinfo`` on Linux) and the number of cores this process may use."""
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{name}, {cores} cores"


def cpu_low_precision() -> list[str]:
    """The CPU's instructions for fast bfloat16 / float16 arithmetic (e.g. ``["AVX512-BF16", "AMX-BF16"]``)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return []
    return [label for flag, label in _CPU_FLAGS.items() if flag in flags]


def native_bfloat16() -> bool:
    """Whether bfloat16 arithmetic is native where the backend computes: an accelerator, or a CPU with
    AVX512-BF16 / AMX-BF16. Elsewhere (e.g. an AVX2-only CPU) bfloat16 is emulated and slow."""
    return bool(accelerators()) or any(label.endswith("BF16") for label in cpu_low_precision())


def fast_bfloat16() -> bool:
    """Whether bfloat16 convolutions run faster than float32 on this backend and device: the rule of
    ``precision = "auto"`` (prediction and training), backed by measurements (docs/precision.md).

    * an accelerator: yes (bfloat16 is native on GPUs and TPUs);
    * a CPU without AVX512-BF16 / AMX-BF16: no, bfloat16 is emulated (7.9x slower training step on a
      2-core AVX2-only EPYC);
    * a CPU with them, TensorFlow: yes, oneDNN's bf16 kernels (the folded inference graph,
      :mod:`fusionnet_keras.models.inference_graph`, keeps the gain end to end: FusionNet 64/4
      predicts a 512 px section about 2x faster than in float32 on a Zen 4 EPYC);
    * a CPU with them, JAX (XLA CPU) or PyTorch: no. XLA's CPU convolutions do not use the bf16
      instructions (FusionNet 64/4 3x slower in bfloat16 than float32); the torch backend is not measured.
    """
    if accelerators():
        return True
    return native_bfloat16() and backend_name() == "tensorflow"


def free_memory_bytes() -> int | None:
    """Free memory where the backend computes: the first accelerator's, else the machine's available RAM.

    ``None`` when unknown (TensorFlow does not report the size of a GPU's memory).
    """
    if accelerators():
        if backend_name() != "jax":
            return None
        import jax

        stats = jax.devices()[0].memory_stats() or {}
        return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0)) if "bytes_limit" in stats else None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def training_jit_compile(policy=None, volumetric: bool = False):
    """XLA for the training step under dtype ``policy`` (default: the global one): ``True``, ``False`` or
    ``"auto"``; ``volumetric`` for the 3-D networks.

    Keras' ``"auto"`` compiles with XLA everywhere except TensorFlow on a machine
    without accelerators. On CPUs (``benchmarks/xla.py``, FusionNet 64/4) XLA makes the
    float32 training step faster and the bfloat16 step slower (XLA's CPU convolutions
    do not use the bf16 matrix units oneDNN uses); the forward pass alone gains
    nothing in float32 and is slower in bfloat16 (figures: docs/benchmarks.md,
    ``xla.py``). So: ``True`` for TensorFlow on CPUs in float32, Keras' choice otherwise
    (JAX is always compiled; with GPUs XLA is Keras' default, not measured here).

    The 3-D networks (``volumetric``) are the exception: on CPUs XLA made the training
    step of the affinity3d CPU preset's UNet3D and FusionNet3D much *slower*
    (``benchmarks/xla3d.py``: XLA's CPU 3-D convolutions against oneDNN's; figures in
    docs/experiments/affinity3d.md), so TensorFlow on CPUs trains them without XLA (``False``).
    """
    import keras

    compute = keras.dtype_policies.get(policy).compute_dtype if policy is not None else \
        keras.mixed_precision.global_policy().compute_dtype
    if backend_name() == "tensorflow" and not accelerators():
        if volumetric:
            return False
        if compute == "float32":
            return True
    return "auto"
