"""How training runs on this machine: precision, CPU thread pools, XLA, memory (docs/design.md §5).

None of these choices changes the algorithm; they change its speed (and,
for precision, the rounding of the convolutions). Each has a fixed form
(``--precision float32``, ``--cpu-threads 1,2``, ``--jit off``) and an
``auto`` form that is decided on the user's machine by timing the real
training step, not from CPU flags:

* ``Tuner`` chooses precision and XLA per scale. It times a few iterations
  of every candidate at the scale's own geometry, within a budget (3% of
  the run's estimated training time), and keeps the fastest. A choice
  that would cost more than the budget to measure falls back to the prior
  (the flag-based rule below) and says so.
* ``choose_threads`` chooses the thread pools once per process, before
  TensorFlow starts (pools cannot change afterwards). Its candidates are
  measured in probe processes (``python -m singan_tf.tune``), again only
  within the budget; the run's own in-process timings also count.
* Every timing lands in ``TuningCache``: a JSON file in the user's cache
  directory, keyed by the machine (CPU model, core count, TensorFlow
  version, GPUs) and the step's geometry. A second run of the same
  geometry on the same machine decides without measuring.

Every decision is logged in one line and recorded per scale in the run
directory (``pyramid.json``: ``runtime``); a resumed scale keeps its
recorded precision. ``--deterministic`` fixes every choice: float32,
the prior thread pools, no XLA, nothing measured.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import logging
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from singan_tf.config import TrainConfig
from singan_tf.errors import ConfigError

log = logging.getLogger(__name__)

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
SHORT_PRECISION = {"float32": "float32", "mixed_bfloat16": "bfloat16", "mixed_float16": "float16"}


# -- the machine ----------------------------------------------------------------
def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def core_count() -> int:
    """Cores this process may run on (its affinity mask, not the whole machine)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def gpu_devices() -> list:
    import tensorflow as tf

    return tf.config.list_physical_devices("GPU")


def gpu_capability(gpu) -> tuple[int, int]:
    import tensorflow as tf

    return tuple(tf.config.experimental.get_device_details(gpu).get("compute_capability") or (0, 0))


def machine_key() -> str:
    """What the cached timings are valid for: CPU model, cores, TensorFlow version, GPUs."""
    import tensorflow as tf

    gpus = ",".join(
        tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in gpu_devices()
    )
    return f"{cpu_model()} | {core_count()} cores | TensorFlow {tf.__version__} | GPU: {gpus or 'none'}"


# -- precision ------------------------------------------------------------------
def precision_candidates() -> list[str]:
    """What ``--precision auto`` chooses from here: float32 and the reduced precisions
    this device computes natively (emulated bfloat16 is never faster, so it is not tried)."""
    gpus = gpu_devices()
    if gpus:
        capability = gpu_capability(gpus[0])
        return (
            ["float32"]
            + (["mixed_bfloat16"] if capability >= (8, 0) else [])
            + (["mixed_float16"] if capability >= (7, 0) else [])
        )
    return ["float32"] + (["mixed_bfloat16"] if cpu_flags() & {"avx512_bf16", "amx_bf16"} else [])


def prior_precision() -> str:
    """The flag-based guess, used where nothing was measured: bfloat16 on GPUs of compute
    capability 8.0+ and CPUs with bfloat16 dot products, float16 on GPUs of 7.x, else float32."""
    gpus = gpu_devices()
    if gpus:
        capability = gpu_capability(gpus[0])
        if capability >= (8, 0):
            return "mixed_bfloat16"
        return "mixed_float16" if capability >= (7, 0) else "float32"
    return "mixed_bfloat16" if cpu_flags() & {"avx512_bf16", "amx_bf16"} else "float32"


def resolve_precision(precision: str) -> str:
    """A concrete precision: ``auto`` becomes the prior (where no timing decides)."""
    return prior_precision() if precision == "auto" else precision


def dtype_policy(precision: str) -> str | None:
    """The Keras dtype policy of a precision (None: Keras' default, float32)."""
    precision = resolve_precision(precision)
    return None if precision == "float32" else precision


# -- CPU thread pools -----------------------------------------------------------
# On a few CPU cores most of the training step's ops are small (a 3x3 conv
# over a 32-channel map takes well under a millisecond), and splitting each
# across the cores costs more in synchronisation than it gains; one thread
# per op, with the independent ops (the critic's real, fake and gradient
# penalty passes) side by side, is the prior there. Elsewhere TensorFlow's
# own pools are. Measurements decide between them (``choose_threads``).
SMALL_CPU_CORES = 4

ThreadPlan = tuple[int, int] | None  # (intra-op, inter-op) threads; None: TensorFlow's pools


def thread_label(plan: ThreadPlan) -> str:
    return "tf" if plan is None else f"{plan[0]},{plan[1]}"


def describe_threads(plan: ThreadPlan) -> str:
    if plan is None:
        return "TensorFlow's pools"
    return f"{plan[0]} per op, up to {plan[1]} ops at a time"


def thread_candidates(cores: int, gpus: int) -> list[ThreadPlan]:
    """The plans ``--cpu-threads auto`` chooses from, prior first."""
    if gpus:
        return [None]
    one_per_op: ThreadPlan = (1, max(cores, 1))
    return [one_per_op, None] if cores <= SMALL_CPU_CORES else [None, one_per_op]


def thread_plan(setting: str, cores: int, gpus: int) -> ThreadPlan:
    """The plan of a ``--cpu-threads`` value; ``auto`` gives the prior (unmeasured) plan."""
    if setting == "tf":
        return None
    if setting == "auto":
        return thread_candidates(cores, gpus)[0]
    try:
        intra, inter = (int(v) for v in setting.split(","))
    except ValueError:
        intra = inter = 0
    if intra < 1 or inter < 1:
        raise ConfigError(f"--cpu-threads must be auto, tf or INTRA,INTER (two counts), not {setting!r}")
    return intra, inter


def check_thread_setting(setting: str) -> None:
    """Reject a malformed ``--cpu-threads`` before anything is loaded."""
    thread_plan(setting, 1, 0)


def apply_thread_plan(plan: ThreadPlan) -> bool:
    """Set this process's pools; call before TensorFlow runs its first op. False if too late."""
    if plan is None:
        return True
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(plan[0])
        tf.config.threading.set_inter_op_parallelism_threads(plan[1])
    except RuntimeError:  # TensorFlow already started in this process
        log.debug("CPU threads: TensorFlow is already running; its thread pools stay as they are")
        return False
    return True


def active_thread_plan() -> ThreadPlan:
    """The pools this process runs with (None: TensorFlow's defaults)."""
    import tensorflow as tf

    intra = tf.config.threading.get_intra_op_parallelism_threads()
    inter = tf.config.threading.get_inter_op_parallelism_threads()
    return None if intra == 0 and inter == 0 else (intra, inter)


def configure_threads(setting: str = "auto") -> ThreadPlan:
    """Apply the plan of ``setting`` (``auto``: the prior) without measuring.

    For training from Python: call before TensorFlow runs its first op.
    ``choose_threads`` is the measured form the CLI uses.
    """
    plan = thread_plan(setting, core_count(), len(gpu_devices()))
    if not apply_thread_plan(plan):
        return active_thread_plan()
    log.debug("CPU threads: %s", describe_threads(plan))
    return plan


# -- XLA --------------------------------------------------------------------------
# XLA fuses the many small ops of the coarse scales but compiles once per
# scale shape (seconds); its CPU program is one op to TensorFlow's executor,
# so with one thread per op it runs on one core.
XLA_MAX_PIXELS = 40 * 40
XLA_MIN_ITERS = 1000


def xla_prior(config: TrainConfig, size: tuple[int, int], iters: int, plan: ThreadPlan) -> bool:
    """XLA where nothing is measured: ``--jit on``; with ``auto``, small maps that train long
    enough to repay the compile time, unless each op has a single thread."""
    if config.jit_compile != "auto" or config.deterministic:
        return config.jit_compile == "on"
    one_thread = plan is not None and plan[0] == 1
    return size[0] * size[1] <= XLA_MAX_PIXELS and iters >= XLA_MIN_ITERS and not one_thread


# -- graph optimisation ------------------------------------------------------------
@contextlib.contextmanager
def training_graph_options():
    """TensorFlow's graph optimiser (grappler) off while training on a CPU-only machine.

    On 2 CPU cores it spent 1.5-2 s optimising each traced training step
    and the step ran no faster for it (bench/README.md, "Tracing"); on a
    GPU it stays on (its layout and fusion passes matter there). Functions
    first called inside keep their setting; the previous one is restored.
    """
    import tensorflow as tf

    if gpu_devices():
        yield
        return
    before = tf.config.optimizer.get_experimental_options().get("disable_meta_optimizer", False)
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    try:
        yield
    finally:
        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": before})


def enable_determinism() -> None:
    """TensorFlow's op determinism for this process (``--deterministic``), with a warning when
    oneDNN's kernels, which differ run to run in the last bits, were left on."""
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()
    if os.environ.get("TF_ENABLE_ONEDNN_OPTS") != "0":
        log.warning(
            "deterministic: oneDNN kernels are on, so runs may differ in the last bits; set "
            "TF_ENABLE_ONEDNN_OPTS=0 before importing TensorFlow (the CLI does) for bit-identical runs"
        )


# -- memory -----------------------------------------------------------------------
# Bytes per activation element held during one iteration at the finest scale,
# relative to one forward pass's activations (GP double backward, Adam, BN
# saves); calibrated with bench/train_speed.py's peak RSS.
ACTIVATION_FACTOR = 30
RUNTIME_BASE_BYTES = 900 * 2**20  # TensorFlow + Keras resident before training


def _pass_bytes(config: TrainConfig, size: tuple[int, int], ch: int) -> int:
    """float32 activations of one generator pass on ``size``."""
    (h, w), k, layers = size, config.kernel_size - 1, config.num_layers
    return sum((h + k * (layers - i)) * (w + k * (layers - i)) for i in range(layers)) * ch * 4


def scale_memory(config: TrainConfig, geometry, n: int) -> int:
    """Rough bytes of scale n's training iteration (activations, kept for the backward passes;
    with G_{n-1} trained along, its two passes per generator step too)."""
    total = _pass_bytes(config, geometry.sizes[n], config.channels(n)) * ACTIVATION_FACTOR
    if (co := config.coarser_channels(n)) is not None:
        total += _pass_bytes(config, geometry.sizes[n - 1], co) * 2 * 2
    return total


def estimate_memory(config: TrainConfig, geometry) -> int:
    """Rough peak resident memory of training, in bytes (dominated by the finest scale)."""
    return RUNTIME_BASE_BYTES + max(scale_memory(config, geometry, n) for n in range(geometry.num_scales))


def fits_beside(config: TrainConfig, geometry, n: int) -> bool:
    """Whether scale n+1's iteration may run beside scale n's (compiling it ahead) in the
    memory available now."""
    have = available_memory()
    need = RUNTIME_BASE_BYTES + scale_memory(config, geometry, n) + scale_memory(config, geometry, n + 1)
    return have is None or need <= have


def available_memory() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_memory(config: TrainConfig, geometry) -> None:
    """Say the estimate; refuse sizes that clearly cannot fit in memory."""
    need, have = estimate_memory(config, geometry), available_memory()
    gib = 2**30
    log.info(
        "estimated peak memory %.1f GiB%s", need / gib, f" ({have / gib:.1f} GiB available)" if have else ""
    )
    if have is not None and need > 1.5 * have:
        raise ConfigError(
            f"training at max size {config.max_size} needs about {need / gib:.1f} GiB, but only "
            f"{have / gib:.1f} GiB is available; lower --max-size"
        )


# -- the cost model -----------------------------------------------------------------
def conv_flops(h: int, w: int, channels: int, num_layers: int = 5, k: int = 3, out_last: int = 3, pad=True):
    """FLOPs (2 per multiply-add) of one forward pass of a net of valid convs on h x w.

    With ``pad`` (the generator) the input is h+10 x w+10, so the output is h x w;
    without (the critic) the input is h x w.
    """
    total = 0
    cin = 3
    size_h, size_w = (h + (k - 1) * num_layers, w + (k - 1) * num_layers) if pad else (h, w)
    for i in range(num_layers):
        cout = out_last if i == num_layers - 1 else channels
        size_h, size_w = size_h - (k - 1), size_w - (k - 1)
        total += 2 * k * k * cin * cout * max(size_h, 0) * max(size_w, 0)
        cin = cout
    return total


def iteration_flops(config: TrainConfig, sizes: Sequence[tuple[int, int]], scale: int) -> int:
    """Convolution FLOPs of one training iteration at ``scale`` (backward ~ 2x forward).

    Per critic step: G forward (the fake), D forward + backward on real and
    fake, and on the GP's steps the GP (D forward and double backward, ~3 D
    passes). Per generator step: G forward + backward twice (fake and
    reconstruction) and D forward + backward on the fake. Plus one forward
    pass of every frozen coarser generator (the random ``prev``), and where
    G_{n-1} trains along (``concurrent``), its forward + backward twice per
    generator step.
    """
    h, w = sizes[scale]
    ch = config.channels(scale)
    g = conv_flops(h, w, ch, config.num_layers, config.kernel_size, 3, pad=True)
    d = conv_flops(h, w, ch, config.num_layers, config.kernel_size, 1, pad=False)
    prev = sum(
        conv_flops(*sizes[m], config.channels(m), config.num_layers, config.kernel_size, 3, pad=True)
        for m in range(scale)
    )
    coarser = 0
    if (co := config.coarser_channels(scale)) is not None:
        coarser = conv_flops(*sizes[scale - 1], co, config.num_layers, config.kernel_size)
    return (
        config.critic_steps * (g + 3 * d * 2)
        + len(config.gp_steps) * 3 * d
        + config.generator_steps * (2 * 3 * (g + coarser) + 3 * d)
        + prev
    )


# -- the cache of timings -------------------------------------------------------------
CACHE_FORMAT = 1


def cache_dir() -> Path:
    """``$SINGAN_TF_CACHE_DIR``, else ``$XDG_CACHE_HOME/singan-tf``, else ``~/.cache/singan-tf``."""
    if os.environ.get("SINGAN_TF_CACHE_DIR"):
        return Path(os.environ["SINGAN_TF_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "singan-tf"


# -- XLA's compiled programs, kept between runs ---------------------------------------
COMPILE_AHEAD_ENV = "SINGAN_TF_COMPILE_AHEAD"  # "0": each scale compiles its XLA program itself


def compile_ahead() -> bool:
    """Whether training compiles the next scale's XLA program while a scale trains."""
    return os.environ.get(COMPILE_AHEAD_ENV) != "0"


XLA_CACHE_ENV = "SINGAN_TF_XLA_CACHE"  # "0" turns the program cache off
XLA_CACHE_FLAG = "--tf_xla_persistent_cache_directory"
XLA_CACHE_MAX_BYTES = 512 * 2**20


def xla_cache_dir() -> Path:
    """Where XLA keeps the programs it compiled here: ``cache_dir()/xla/<machine>``.

    The machine is the CPU model, its instruction set and the TensorFlow version: a program
    compiled for one CPU may use instructions another lacks, and another XLA may not read it.
    """
    import importlib.metadata

    try:
        version = importlib.metadata.version("tensorflow")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    machine = "|".join([cpu_model(), " ".join(sorted(cpu_flags())), version])
    return cache_dir() / "xla" / hashlib.sha256(machine.encode()).hexdigest()[:16]


def enable_xla_cache(environ: dict | None = None, quiet: bool = True) -> Path | None:
    """Let XLA keep its compiled training steps on disk, so a later run of the same geometry
    loads them instead of compiling again (27-41 s per scale on an AMD EPYC Zen 3).

    Sets TensorFlow's persistent XLA cache in ``TF_XLA_FLAGS`` (``environ``: the process's
    environment) to ``xla_cache_dir()``, which it first trims to ``XLA_CACHE_MAX_BYTES``. A
    program is found again only when its step traces to the same graph, as the same command
    on the same geometry does (the cache key holds the traced function's name, numbered in
    trace order). TensorFlow logs an error line for every program it loads (it tries to read
    it as text first), so when ``quiet`` (not ``--verbose``) C++ logging defaults to fatal
    errors only (``TF_CPP_MIN_LOG_LEVEL`` 3); the Python errors carry what matters. Nothing
    is set, and None returned, when ``SINGAN_TF_XLA_CACHE=0``, when ``TF_XLA_FLAGS`` already
    names a cache, or once TensorFlow is loaded (it may have read its flags).
    """
    environ = os.environ if environ is None else environ
    flags = environ.get("TF_XLA_FLAGS", "")
    if environ.get(XLA_CACHE_ENV) == "0" or XLA_CACHE_FLAG in flags or "tensorflow" in sys.modules:
        return None
    path = xla_cache_dir()
    try:  # TensorFlow fails the step if it cannot write a program there
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path):
            pass
        trim_xla_cache(path)
    except OSError as err:
        log.debug("no XLA program cache (%s)", err)
        return None
    environ["TF_XLA_FLAGS"] = f"{flags} {XLA_CACHE_FLAG}={path}".strip()
    if quiet:
        environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return path


def without_xla_cache(flags: str) -> str:
    """``TF_XLA_FLAGS`` less the program cache: probes time XLA's real compile."""
    return " ".join(f for f in flags.split() if not f.startswith(XLA_CACHE_FLAG + "="))


def trim_xla_cache(path: Path, max_bytes: int = XLA_CACHE_MAX_BYTES) -> list[Path]:
    """Delete the oldest programs until those left take at most ``max_bytes``, and the temp
    files of writes an hour old (a process killed while writing); returns what it deleted."""
    removed = [f for f in path.glob("*.tmp") if time.time() - f.stat().st_mtime > 3600]
    files = sorted((f for f in path.glob("*.pb") if f.is_file()), key=lambda f: f.stat().st_mtime)
    total = sum(f.stat().st_size for f in files)
    for f in files:
        if total <= max_bytes:
            break
        total -= f.stat().st_size
        removed.append(f)
    for f in removed:
        f.unlink(missing_ok=True)
    return removed


def xla_cache_in_use() -> Path | None:
    """The program cache ``enable_xla_cache`` gave this process's XLA, if any."""
    for flag in os.environ.get("TF_XLA_FLAGS", "").split():
        name, _, value = flag.partition("=")
        if name == XLA_CACHE_FLAG and Path(value).parent == cache_dir() / "xla":
            return Path(value)
    return None


def clear_xla_cache(error: Exception) -> bool:
    """Empty this process's program cache after ``error`` (a program TensorFlow could not
    read, or write: it then fails the step before running it); False if there is none of
    ours to clear, and the step's error stands."""
    path = xla_cache_in_use()
    if path is None:
        return False
    reason = str(getattr(error, "message", error)).strip().splitlines()[0]
    log.warning("XLA's program cache %s could not be used (%s): emptied, compiling anew", path, reason)
    for f in path.iterdir():
        f.unlink(missing_ok=True)
    return True


@dataclasses.dataclass(frozen=True)
class Timing:
    """Measured cost of one candidate at one scale."""

    ms_per_iter: float
    first_call_s: float  # the first iteration: tracing, graph optimisation, first kernels
    timed_iters: int

    def to_dict(self) -> dict:
        return {
            "ms_per_iter": round(self.ms_per_iter, 3),
            "first_call_s": round(self.first_call_s, 3),
            "timed_iters": self.timed_iters,
        }

    @classmethod
    def from_dict(cls, data: dict) -> Timing:
        return cls(float(data["ms_per_iter"]), float(data["first_call_s"]), int(data["timed_iters"]))


class TuningCache:
    """Timings of this machine, one JSON file shared by all runs (``cache_dir()/tuning.json``).

    Writes merge with what is on disk and replace the file atomically, so
    concurrent runs lose at most each other's newest entries. A cache that
    cannot be read or written is ignored (timings then live in memory only).
    """

    def __init__(self, path: str | os.PathLike | None = None, machine: str | None = None):
        self.path = Path(path) if path else cache_dir() / "tuning.json"
        self.machine = machine or machine_key()
        self._entries: dict[str, dict] = self._read().get(self.machine, {})

    def _read(self) -> dict:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT:
            return {}
        machines = data.get("machines")
        return machines if isinstance(machines, dict) else {}

    def get(self, key: str) -> Timing | None:
        entry = self._entries.get(key)
        try:
            return Timing.from_dict(entry) if entry else None
        except (KeyError, TypeError, ValueError):
            return None

    def put(self, key: str, timing: Timing) -> None:
        self._entries[key] = timing.to_dict()
        machines = self._read()
        machines.setdefault(self.machine, {})[key] = timing.to_dict()
        try:
            from singan_tf.images import atomic_write_bytes

            data = {"format": CACHE_FORMAT, "machines": machines}
            atomic_write_bytes(self.path, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode())
        except OSError as err:
            log.debug("tuning cache %s not written: %s", self.path, err)

    def __len__(self) -> int:
        return len(self._entries)


@dataclasses.dataclass(frozen=True)
class Choice:
    """How one scale's training step runs."""

    precision: str
    xla: bool

    @property
    def label(self) -> str:
        return SHORT_PRECISION[self.precision] + (" XLA" if self.xla else "")


def timing_key(
    config: TrainConfig, sizes: Sequence[tuple[int, int]], scale: int, choice: Choice, plan: ThreadPlan
) -> str:
    """The cache key of a timing: everything the step's speed depends on.

    The scale's size and width, a digest of the frozen coarser pyramid
    (its sizes and widths: the random path runs through it every
    iteration), the step's structure, the candidate and the thread pools.
    """
    h, w = sizes[scale]
    frozen = [(*sizes[m], config.channels(m)) for m in range(scale)]
    digest = hashlib.sha1(json.dumps(frozen).encode()).hexdigest()[:10]
    step = (
        f"{config.critic_steps}c{config.generator_steps}g{len(config.gp_steps)}gp"
        f"{config.num_layers}x{config.kernel_size}"
        + (f"+G{co}" if (co := config.coarser_channels(scale)) is not None else "")  # G_{n-1} trained too
    )
    return (
        f"{h}x{w}x{config.channels(scale)} frozen={digest} step={step} "
        f"{choice.precision} xla={int(choice.xla)} threads={thread_label(plan)}"
    )


@dataclasses.dataclass
class Decision:
    """The runtime of one scale, as recorded in the run directory."""

    choice: Choice
    source: str  # measured | cache | inferred | estimated | fixed | prior | recorded | fallback
    timings: dict[str, Timing] = dataclasses.field(default_factory=dict)  # by Choice.label
    tuning_s: float = 0.0
    note: str = ""

    def to_dict(self, plan: ThreadPlan) -> dict:
        return {
            "precision": self.choice.precision,
            "xla": self.choice.xla,
            "threads": thread_label(plan),
            "source": self.source,
            "ms_per_iter": {k: round(t.ms_per_iter, 2) for k, t in self.timings.items()},
            "tuning_s": round(self.tuning_s, 2),
        }

    def describe(self) -> str:
        """One log line: the choice, where it came from, the evidence."""
        evidence = ", ".join(f"{k} {t.ms_per_iter:.0f}" for k, t in self.timings.items())
        why = {
            "measured": f"measured in {self.tuning_s:.1f} s",
            "cache": "cached timings",
            "inferred": "not measured",
            "estimated": "estimated, not measured",
            "fixed": "as asked",
            "prior": "prior, not measured",
            "recorded": "recorded for this scale",
            "fallback": "after a failure",
        }[self.source]
        text = f"{self.choice.label} ({why}"
        if evidence:
            text += f"; ms/iteration: {evidence}"
        return text + (f"; {self.note}" if self.note else "") + ")"


# Measuring a candidate: one iteration to warm up (its first call traces the
# step unless that width and precision was traced already), then a few timed.
WARMUP_ITERS = 1
TIMED_ITERS = 3
# ...and at least this long: three 45 ms iterations at a coarse scale read 46 ms in one probe
# and 78 ms in another on the same machine kind.
MIN_TIMED_S = 0.5
MAX_TIMED_ITERS = 50
DEFAULT_BUDGET = 0.03  # of the run's estimated training time
FIRST_CALL_S = 2.0  # guess for a trace not seen yet
XLA_FIRST_CALL_S = 8.0  # XLA compiles once per shape
# Throughput guess until the first timing: what this step reached per CPU core on the
# machines measured so far (bench/README.md), or a modest GPU.
ASSUMED_GFLOPS_PER_CORE = 25.0
ASSUMED_GPU_GFLOPS = 2000.0
THREAD_BUDGET = 0.06  # probing thread pools: once per machine and geometry, then cached
# Plans whose predicted training times are this close are a tie: one probe of a scale reads a
# few percent apart from the next, and the finest scale, most of the sum, decides it by noise.
THREAD_TIE = 0.05


def measuring_s(iteration_s: float) -> float:
    """Seconds of one measurement's iterations (warm-up and timed), at ``iteration_s`` each."""
    timed = min(max(TIMED_ITERS * iteration_s, MIN_TIMED_S), MAX_TIMED_ITERS * iteration_s)
    return WARMUP_ITERS * iteration_s + timed


def assumed_gflops() -> float:
    return ASSUMED_GPU_GFLOPS if gpu_devices() else ASSUMED_GFLOPS_PER_CORE * core_count()


INFER_MARGIN = 1.15  # a winner this much faster at two scales of a width decides the next ones


def sample_scales(config: TrainConfig, sizes: Sequence[tuple[int, int]]) -> dict[int, int]:
    """Per width, the scale where the thread probe times every candidate, not only the prior:
    the middle one of the width's scales.

    What XLA or bfloat16 gains depends on the machine (XLA with two threads per op was
    1.2-1.9x faster than any plain step on an AMD EPYC Zen 3 and slower on an Intel Xeon
    with AMX, bench/README.md), so a thread plan is judged with its best candidates, not its prior:
    their speed-up is measured once per width, here, and assumed at the width's other
    scales until they are measured. Not the width's first scale: at the coarsest maps
    fixed costs hide what a candidate gains.
    """
    by_width: dict[int, list[int]] = {}
    for n in range(len(sizes)):
        by_width.setdefault(config.channels(n), []).append(n)
    return {ch: scales[len(scales) // 2] for ch, scales in by_width.items()}


def fully_timed_scales(config: TrainConfig, sizes: Sequence[tuple[int, int]]) -> set[int]:
    """Where the thread probe times every candidate: each width's sample scale
    (``sample_scales``) and scale 0. Nothing trains before scale 0 to compile its XLA program
    behind, and a speed-up measured on larger maps does not carry down to it (XLA was 82%
    faster than the plain step at 75x111 and 2% slower at 25x34 on an AMD EPYC Zen 3), so
    there the candidates are compared as timed, compile included."""
    return set(sample_scales(config, sizes).values()) | {0}


class Tuner:
    """Per-scale precision and XLA for one run (``--precision auto``, ``--jit auto``).

    ``decide`` looks the candidates up in the cache, infers a clear winner
    (at two timed scales of the width, or at the width's sample scale, which
    the thread probe times in full), measures the missing ones while the
    budget lasts (``measure(choice, timed_iters)`` runs real training
    iterations and returns a ``Timing``), and picks the one that trains the
    scale soonest: its iterations plus a first call not yet paid (an XLA
    compile, unless measured here; a trace of a width not traced yet).
    The budget is ``budget`` times the run's estimated training time, from
    the analytic cost model at the throughput measured so far.
    """

    def __init__(
        self,
        config: TrainConfig,
        sizes: Sequence[tuple[int, int]],
        plan: ThreadPlan,
        cache: TuningCache | None,
        budget: float = DEFAULT_BUDGET,
    ):
        self.config = config
        self.sizes = list(sizes)
        self.plan = plan
        self.cache = cache
        self.budget = budget
        self.spent_s = 0.0
        self.gflops = assumed_gflops()
        self._rates: list[float] = []
        self.traced: set[tuple[tuple[int, int], Choice]] = set()  # (step width, choice) traced
        self.history: list[tuple[int, int, dict[Choice, Timing]]] = []  # fully timed scales
        self.excluded: set[str] = set()  # precisions that went non-finite in this run
        self.samples = sample_scales(config, self.sizes)  # width -> its sample scale

    # The candidates and the prior.
    def prior(self, scale: int) -> Choice:
        precision = "float32" if self.config.deterministic else resolve_precision(self.config.precision)
        if precision in self.excluded:
            precision = "float32"
        return Choice(precision, xla_prior(self.config, self.sizes[scale], self.iters(scale), self.plan))

    def candidates(self, scale: int) -> list[Choice]:
        """Prior first; a single candidate means nothing to decide."""
        config = self.config
        prior = self.prior(scale)
        if config.deterministic:
            return [prior]
        precisions = precision_candidates() if config.precision == "auto" else [config.precision]
        precisions = [p for p in precisions if p not in self.excluded] or ["float32"]
        # XLA is worth trying only where it can use the cores (not with one thread per op).
        xla_useful = self.plan is None or self.plan[0] > 1 or bool(gpu_devices())
        xlas = [False, True] if config.jit_compile == "auto" and xla_useful else [prior.xla]
        choices = [Choice(p, x) for x in xlas for p in precisions]
        return [prior] + [c for c in choices if c != prior]

    def iters(self, scale: int) -> int:
        return self.config.scale_iters(scale)

    def step_width(self, scale: int) -> tuple[int, int]:
        """What tells one traced step from another: the scale's width, and G_{n-1}'s where the
        scale trains it too (0 where not). A concurrent scale 1 needs its own trace and has its own
        speed ratios, though scale 0 is as wide."""
        return self.config.channels(scale), self.config.coarser_channels(scale) or 0

    # The budget.
    def estimate_s(self, scale: int) -> float:
        """Estimated seconds of one iteration at ``scale``."""
        return iteration_flops(self.config, self.sizes, scale) / (self.gflops * 1e9)

    def run_estimate_s(self) -> float:
        return sum(self.iters(n) * self.estimate_s(n) for n in range(len(self.sizes)))

    def _cost_s(self, scale: int, channels: tuple[int, int], choice: Choice) -> float:
        first = 0.0
        if (channels, choice) not in self.traced:
            first = XLA_FIRST_CALL_S if choice.xla else FIRST_CALL_S
        elif choice.xla:  # XLA compiles again for every new shape
            first = XLA_FIRST_CALL_S
        return first + measuring_s(self.estimate_s(scale))

    def _record_rate(self, scale: int, timing: Timing) -> None:
        self._rates.append(iteration_flops(self.config, self.sizes, scale) / (timing.ms_per_iter * 1e6))
        self.gflops = max(self._rates)

    def key(self, scale: int, choice: Choice) -> str:
        return timing_key(self.config, self.sizes, scale, choice, self.plan)

    # The decision.
    def decide(
        self, scale: int, measure: Callable[[Choice, int], Timing] | None, measure_allowed: bool = True
    ) -> Decision:
        decision = self._decide(scale, measure, measure_allowed)
        if self.excluded and decision.source in ("fixed", "prior"):
            failed = ", ".join(SHORT_PRECISION[p] for p in sorted(self.excluded))
            decision.source, decision.note = "fallback", f"{failed} went non-finite earlier in this run"
        return decision

    def planned(self, scale: int) -> Choice | None:
        """The choice ``decide`` will make at ``scale`` without measuring anything (the only
        candidate, or all timed in the cache, or inferred), or None if it may measure: known
        ahead, the scale's XLA program can be compiled while an earlier scale trains."""
        peek = copy.copy(self)  # deciding records rates and history: keep them out of this tuner
        peek._rates, peek.history = list(self._rates), list(self.history)
        decision = peek.decide(scale, None, measure_allowed=False)
        candidates = self.candidates(scale)
        # Not all cached: deciding would measure the rest, unless they do not fit the budget.
        all_cached = decision.source == "cache" and len(decision.timings) == len(candidates)
        missing = [c for c in candidates if c.label not in decision.timings]
        measures = self._to_measure(scale, candidates, missing)
        unmeasured = decision.source in ("cache", "estimated") and not measures
        settled = decision.source == "inferred" or all_cached or unmeasured or len(candidates) == 1
        return decision.choice if settled else None

    def _decide(self, scale: int, measure, measure_allowed: bool) -> Decision:
        candidates = self.candidates(scale)
        if len(candidates) == 1:
            fixed = self.config.precision != "auto" and self.config.jit_compile != "auto"
            return Decision(candidates[0], "fixed" if fixed else "prior")
        channels = self.step_width(scale)
        timings: dict[Choice, Timing] = {}
        for choice in candidates:
            cached = self.cache.get(self.key(scale, choice)) if self.cache is not None else None
            if cached:
                timings[choice] = cached
                self._record_rate(scale, cached)
        from_cache = set(timings)
        missing = [c for c in candidates if c not in timings]
        if missing:
            inferred = self._infer(channels, candidates) or self._from_sample(scale, candidates)
            if inferred is not None:
                return inferred
        spent = need = 0.0
        skipped = []
        if missing and measure_allowed and measure is not None:
            budget = self.budget * self.run_estimate_s()
            need = sum(self._cost_s(scale, channels, c) for c in missing)
            to_measure = self._to_measure(scale, candidates, missing)
            for choice in missing:
                over = self.spent_s + self._cost_s(scale, channels, choice) > budget and timings
                if choice not in to_measure or over:  # (measuring costs more than guessed: stop)
                    skipped.append(choice)
                    continue
                timing = measure(choice, TIMED_ITERS)
                self.traced.add((channels, choice))
                cost = timing.first_call_s + timing.ms_per_iter * timing.timed_iters / 1e3
                spent += cost
                self.spent_s += cost
                timings[choice] = timing
                self._record_rate(scale, timing)
                if self.cache is not None:
                    self.cache.put(self.key(scale, choice), timing)
        elif missing:
            skipped = missing
        if len(timings) == len(candidates):
            self.history.append((scale, channels, dict(timings)))
        labelled = {c.label: t for c, t in sorted(timings.items(), key=lambda kv: kv[1].ms_per_iter)}
        # What was not measured here is judged on its estimate, as the thread probe judged it
        # (``predicted_scale_s``), not dropped: left out, the timed candidate always won, and an
        # XLA 2-3x faster at the finest scales was never used (bench/README.md).
        estimated = {c: t for c in skipped if (t := self.estimate(scale, c)) is not None}
        if not timings:
            note = f"measuring would take ~{need:.0f} s, over the budget" if measure_allowed else ""
            return Decision(candidates[0], "prior", note=note)
        measured = set(timings) - from_cache
        known = {**timings, **estimated}
        best = min(known, key=lambda c: self._scale_s(scale, c, known[c], c in measured))
        fastest = min(known, key=lambda c: known[c].ms_per_iter)
        sample = self.samples[self.config.channels(scale)]
        notes = [f"{c.label} estimated {t.ms_per_iter:.0f} from scale {sample}" for c, t in estimated.items()]
        unjudged = [c for c in skipped if c not in estimated]
        if unjudged:
            notes.append(f"not measured: {', '.join(c.label for c in unjudged)} (budget)")
        if fastest != best:
            saved_s = self.iters(scale) * (known[best].ms_per_iter - known[fastest].ms_per_iter) / 1e3
            notes.append(
                f"{fastest.label} would save {saved_s:.0f} s of iterations "
                f"for a {known[fastest].first_call_s:.0f} s first call"
            )
        note = "; ".join(notes)
        source = "cache" if set(timings) <= from_cache else "measured"
        source = "estimated" if best in estimated else source
        return Decision(best, source, labelled, spent, note)

    def _to_measure(self, scale: int, candidates: list[Choice], missing: list[Choice]) -> list[Choice]:
        """The missing candidates that measuring at ``scale`` would fit in the budget: all or
        none where none is timed (a lone measured prior decides nothing), else each in turn."""
        channels = self.step_width(scale)
        budget = self.budget * self.run_estimate_s()
        costs = {c: self._cost_s(scale, channels, c) for c in missing}
        if len(missing) == len(candidates):
            return list(missing) if self.spent_s + sum(costs.values()) <= budget else []
        chosen, spent = [], self.spent_s
        for choice in missing:
            if spent + costs[choice] <= budget:
                chosen.append(choice)
                spent += costs[choice]
        return chosen

    def _scale_s(self, scale: int, choice: Choice, timing: Timing, measured: bool) -> float:
        """Seconds ``choice`` would take to train ``scale``: its iterations and its first call,
        unless that is paid (measured here, or a plain step of a width traced already). An XLA
        program compiled ahead is charged too: on a busy CPU its compile takes the time of the
        iterations it runs beside."""
        paid = measured or (not choice.xla and (self.step_width(scale), choice) in self.traced)
        return (0.0 if paid else timing.first_call_s) + self.iters(scale) * timing.ms_per_iter / 1e3

    def _from_sample(self, scale: int, candidates: list[Choice]) -> Decision | None:
        """The winner at the width's sample scale (``sample_scales``: the thread probe timed every
        candidate there), if it beat the rest by ``INFER_MARGIN``."""
        sample = self.samples[self.config.channels(scale)]
        if self.cache is None or sample == scale:
            return None
        timed = {c: self.cache.get(self.key(sample, c)) for c in candidates}
        if not all(timed.values()):
            return None
        winner = min(candidates, key=lambda c: timed[c].ms_per_iter)
        margin = min(timed[c].ms_per_iter for c in candidates if c != winner) / timed[winner].ms_per_iter
        if margin < INFER_MARGIN:
            return None
        if winner.xla and not candidates[0].xla:  # XLA compiles for every shape: does it pay here?
            plain = self.estimate(scale, candidates[0])
            if plain is not None:
                saved_s = self.iters(scale) * plain.ms_per_iter * (1 - 1 / margin) / 1e3
                if saved_s < timed[winner].first_call_s:
                    return None
        note = f"{margin - 1:.0%} faster than the rest at scale {sample}, where this width was sampled"
        return Decision(winner, "inferred", note=note)

    def estimate(self, scale: int, choice: Choice) -> Timing | None:
        """``choice``'s timing at ``scale``: cached, or scaled from the width's sample scale by
        the ratio of a candidate timed at both (None if neither)."""
        if self.cache is None:
            return None
        timing = self.cache.get(self.key(scale, choice))
        sample = self.samples[self.config.channels(scale)]
        if timing is not None or sample == scale:
            return timing
        at_sample = self.cache.get(self.key(sample, choice))
        if at_sample is None:
            return None
        for other in self.candidates(scale):
            here, there = self.cache.get(self.key(scale, other)), self.cache.get(self.key(sample, other))
            if here and there:
                ms = here.ms_per_iter * at_sample.ms_per_iter / there.ms_per_iter
                return Timing(ms, at_sample.first_call_s, 0)
        return None

    def _infer(self, channels: tuple[int, int], candidates: list[Choice]) -> Decision | None:
        """The winner of the two latest fully timed scales of this width, if it won both clearly.

        Speed ratios between candidates change slowly from one scale to the
        next of the same width; measuring again where they are far apart
        spends the budget on a foregone conclusion.
        """
        timed = [(n, t) for n, ch, t in self.history if ch == channels and set(candidates) <= set(t)][-2:]
        if len(timed) < 2:
            return None
        winners = {min(candidates, key=lambda c, t=t: t[c].ms_per_iter) for _, t in timed}
        if len(winners) > 1:
            return None
        (winner,) = winners
        margins = [
            min(t[c].ms_per_iter for c in candidates if c != winner) / t[winner].ms_per_iter for _, t in timed
        ]
        if min(margins) < INFER_MARGIN:
            return None
        scales = " and ".join(str(n) for n, _ in timed)
        note = f"{min(margins) - 1:.0%}-{max(margins) - 1:.0%} faster than the rest at scales {scales}"
        return Decision(winner, "inferred", note=note)


# -- thread pools, decided before TensorFlow starts ----------------------------------------
def predicted_scale_s(
    config: TrainConfig, sizes: Sequence[tuple[int, int]], plan: ThreadPlan, cache: TuningCache
) -> list[float] | None:
    """Each scale's training time under ``plan`` with its fastest candidate, from cached timings
    or estimated from the width's sample scale (``Tuner.estimate``); an XLA candidate pays its
    compile (its first call) at every scale. None if a scale has no timing."""
    tuner = Tuner(config, sizes, plan, cache)
    seconds = []
    for n in range(len(sizes)):
        times = [(c, tuner.estimate(n, c)) for c in tuner.candidates(n)]
        known = [
            (t.first_call_s if c.xla else 0.0) + t.ms_per_iter * config.scale_iters(n) / 1e3
            for c, t in times
            if t
        ]
        if not known:
            return None
        seconds.append(min(known))
    return seconds


PROBE_START_S = 4.0  # a probe process: interpreter, TensorFlow import, first trace


def probe_cost_s(config: TrainConfig, sizes: Sequence[tuple[int, int]], plan: ThreadPlan = None) -> float:
    """Estimated seconds of one probe process (``python -m singan_tf.tune --probe``) for
    ``plan``: start, one trace per width, every scale's prior choice timed, and every other
    candidate at each width's sample scale and at scale 0 (``fully_timed_scales``)."""
    tuner = Tuner(config, sizes, plan, None)
    per_width = {config.channels(n) for n in range(len(sizes))}
    timed = sum(measuring_s(tuner.estimate_s(n)) for n in range(len(sizes)))
    for n in fully_timed_scales(config, sizes):
        for choice in tuner.candidates(n)[1:]:
            timed += (XLA_FIRST_CALL_S if choice.xla else FIRST_CALL_S) + measuring_s(tuner.estimate_s(n))
    return PROBE_START_S + len(per_width) * FIRST_CALL_S + timed


def choose_threads(
    setting: str,
    config: TrainConfig,
    sizes: Sequence[tuple[int, int]],
    cache: TuningCache | None,
    probe: Callable[[ThreadPlan], None] | None = None,
    budget: float = THREAD_BUDGET,
) -> tuple[ThreadPlan, str]:
    """The thread pools for a run, and why (one log line's worth).

    ``setting`` other than ``auto`` is taken as it is. ``auto``: the plan
    with the shortest predicted training time from cached timings; plans
    without them are first measured by ``probe(plan)`` (a probe process
    that times every scale's prior choice and fills the cache) if all the
    missing probes fit in the budget, a one-time cost per machine and
    geometry; otherwise the prior plan. A plan is judged by its best candidates
    (``predicted_scale_s``), so TensorFlow's pools win where XLA, a candidate only
    there, is what makes them faster; plans within ``THREAD_TIE`` of the fastest are
    settled at their worst scale (``_fastest_plan``).
    """
    cores, gpus = core_count(), len(gpu_devices())
    if setting != "auto":
        return thread_plan(setting, cores, gpus), "as asked"
    candidates = thread_candidates(cores, gpus)
    if config.deterministic or len(candidates) == 1 or cache is None:
        return candidates[0], "prior" if len(candidates) > 1 else "the only candidate"
    predicted = {thread_label(p): predicted_scale_s(config, sizes, p, cache) for p in candidates}
    missing = [p for p in candidates if predicted[thread_label(p)] is None]
    probed = False
    if missing and probe is not None:
        tuner = Tuner(config, sizes, candidates[0], cache)
        cost = sum(probe_cost_s(config, sizes, plan) for plan in missing)
        if cost <= budget * tuner.run_estimate_s():
            for plan in missing:
                probe(plan)
            cache = TuningCache(cache.path, cache.machine)  # re-read what the probes wrote
            predicted = {thread_label(p): predicted_scale_s(config, sizes, p, cache) for p in candidates}
            probed = True
        else:
            return candidates[0], f"prior; probing would take ~{cost:.0f} s, over the budget"
    known = {p: predicted[thread_label(p)] for p in candidates if predicted[thread_label(p)] is not None}
    if len(known) < len(candidates):
        return candidates[0], "prior; not every plan could be measured"
    best, tie = _fastest_plan(known)
    evidence = ", ".join(f"{describe_threads(p)} {sum(known[p]):.0f} s" for p in candidates)
    return best, f"{'measured' if probed else 'cached timings'}; predicted training: {evidence}{tie}"


def _fastest_plan(per_scale: dict[ThreadPlan, list[float]]) -> tuple[ThreadPlan, str]:
    """The plan with the shortest predicted training; among plans within ``THREAD_TIE`` of it,
    the one whose slowest scale is nearest that scale's fastest plan (pools are one per
    process, so a tie on the sum is settled where the plans differ most), and a note saying so."""
    totals = {p: sum(s) for p, s in per_scale.items()}
    fastest = min(totals.values())
    tied = [p for p in per_scale if totals[p] <= fastest * (1 + THREAD_TIE)]
    if len(tied) == 1:
        return tied[0], ""
    best_at = [min(at_scale) for at_scale in zip(*per_scale.values(), strict=True)]
    worst = {p: max(t / b for t, b in zip(per_scale[p], best_at, strict=True)) for p in tied}
    best = min(tied, key=lambda p: (worst[p], totals[p]))
    ratios = ", ".join(f"{describe_threads(p)} {worst[p]:.2f}x" for p in tied)
    return best, f"; within {THREAD_TIE:.0%}, so the plan nearest the fastest at its worst scale ({ratios})"
