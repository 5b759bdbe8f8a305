"""RecBole baseline harness: a separate venv, the run configuration, and the SASRec drivers.

RecBole is never a dependency of dwrec. It lives in its own virtual environment
(``.bench/recbole-venv``, git-ignored) because it pins old numpy/pandas, and runs in a
subprocess of that venv; the driver writes its results as JSON. The data it trains on is a
dwrec dataset exported by :func:`dwrec.data.export.export_recbole`.

Protocol differences that this harness removes (so both libraries see the same task):

* **Order.** RecBole sorts by (user, timestamp); dwrec by (user, timestamp, original
  order). The export writes each row's rank within its user as the timestamp, so the order
  is carried by the timestamp alone and ties cannot be broken differently.
* **History masking.** RecBole's full-sort evaluation of sequential models masks nothing;
  dwrec excludes the case's history except the target. The driver masks the same items
  (for validation too, so early stopping sees the same metric) and ranks with dwrec's tie
  rule (equal scores: smaller dwrec item id first).
* **Checkpoint reload.** torch >= 2.6 loads with ``weights_only=True`` by default, which
  RecBole 1.2.1's checkpoints (they pickle the config) fail, so its
  ``evaluate(load_best_model=True)`` breaks. The driver never asks RecBole to reload: it
  loads the best checkpoint itself, the file its own fit wrote, with
  ``weights_only=False`` (trusted; an explicit argument, independent of environment
  variables), checks it is the best validation epoch, and evaluates that model.

Differences that remain, and are reported: RecBole trains one sample per prefix of each
training sequence (loss at the last position only), dwrec one window per user (loss at
every position); RecBole's SASRec is post-LayerNorm (BERT style) and includes the padding
item in its softmax; users with exactly 3 interactions give their second interaction to
training in RecBole but to validation in dwrec (test cases are identical for every user).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import venv
from pathlib import Path
from typing import Any

from dwrec.baselines.recbole_drivers import DRIVER, SPEED_DRIVER
from dwrec.errors import DwrecError, UsageError

DEFAULT_VENV = Path(".bench/recbole-venv")

# torch first: the CPU wheel on this machine's disk, so RecBole's "torch>=1.10" is already
# met and pip fetches no CUDA build.
TORCH_REQUIREMENT = "torch==2.13.0"
# RecBole 1.2.1 (2023) breaks on numpy 2 (np.float_ etc.) and on newer pandas; its wheel
# pulls ray<=2.6.3, colorlog, colorama, texttable, thop, tensorboard, psutil, plotly itself.
RECBOLE_REQUIREMENTS = ("recbole==1.2.1", "numpy<2", "pandas<2.3")
# `recbole.quick_start` imports ray, and ray 2.6.3 imports pkg_resources, which newer
# setuptools no longer ships. torch 2.13 declares setuptools>=77 (needed only to build C++
# extensions), so pip cannot resolve both: this one is installed without dependency checks.
LEGACY_SETUPTOOLS = "setuptools<70"


class RecBoleError(DwrecError):
    """The RecBole venv could not be built, or the RecBole run failed."""


# ---------------------------------------------------------------- venv


def venv_python(path: str | os.PathLike = DEFAULT_VENV) -> Path:
    return Path(path) / "bin" / "python"


def ensure_venv(path: str | os.PathLike = DEFAULT_VENV) -> Path:
    """Create (if missing) the RecBole venv at ``path``; return its python executable.

    The venv counts as ready when RecBole's modules import in it; a half-built one is
    completed by running pip again (pip skips what is already there).
    """
    path = Path(path)
    python = venv_python(path)
    if python.exists() and _recbole_importable(python):
        return python
    if not python.exists():
        venv.EnvBuilder(with_pip=True, clear=False).create(path)
    _pip(python, [TORCH_REQUIREMENT])
    _pip(python, [TORCH_REQUIREMENT, *RECBOLE_REQUIREMENTS])
    _pip(python, ["--no-deps", LEGACY_SETUPTOOLS])
    if not _recbole_importable(python):
        raise RecBoleError(f"{path}: RecBole is installed but does not import; delete the folder")
    return python


def _pip(python: Path, arguments: list[str]) -> None:
    result = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", *arguments],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise RecBoleError(
            f"pip install {' '.join(arguments)} failed in {python.parent.parent}:\n"
            + result.stderr[-4000:]
        )


def _recbole_importable(python: Path) -> bool:
    probe = "import recbole.quick_start, recbole.trainer, recbole.data, recbole.model"
    result = subprocess.run([str(python), "-c", probe], capture_output=True, text=True)
    return result.returncode == 0


# ---------------------------------------------------------------- configuration


def sasrec_config(
    *,
    epochs: int,
    patience: int,
    batch_size: int,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    seed: int = 0,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 2,
    ffn: int | None = None,
    dropout: float = 0.2,
    max_len: int = 200,
    eval_batch_size: int = 512,
    use_gpu: bool = False,
) -> dict[str, Any]:
    """RecBole settings for SASRec trained with full cross-entropy, matching dwrec's names.

    ``patience`` follows dwrec: stop after ``patience`` validations without improvement
    (RecBole stops when its counter exceeds ``stopping_step``, hence ``patience - 1``).
    ReLU and LayerNorm eps 1e-5 match dwrec's SASRec (RecBole defaults: GELU, 1e-12).
    """
    return {
        "USER_ID_FIELD": "user_id",
        "ITEM_ID_FIELD": "item_id",
        "TIME_FIELD": "timestamp",
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "user_inter_num_interval": "[0,inf)",
        "item_inter_num_interval": "[0,inf)",
        "MAX_ITEM_LIST_LENGTH": max_len,
        "hidden_size": hidden,
        "n_layers": layers,
        "n_heads": heads,
        "inner_size": ffn or 4 * hidden,
        "hidden_dropout_prob": dropout,
        "attn_dropout_prob": dropout,
        "hidden_act": "relu",
        "layer_norm_eps": 1e-5,
        "initializer_range": 0.02,
        "loss_type": "CE",
        "train_neg_sample_args": None,
        "learner": "adamw",
        "learning_rate": lr,
        "weight_decay": weight_decay,
        "epochs": epochs,
        "train_batch_size": batch_size,
        "eval_batch_size": eval_batch_size,
        "stopping_step": max(0, patience - 1),
        "eval_step": 1,
        "eval_args": {
            "split": {"LS": "valid_and_test"},
            "order": "TO",
            "group_by": "user",
            "mode": "full",
        },
        "metrics": ["Recall", "NDCG", "Hit", "MRR"],
        "topk": [10],
        "valid_metric": "NDCG@10",
        "seed": seed,
        "reproducibility": True,
        "use_gpu": use_gpu,
        "show_progress": False,
        "worker": 0,
    }


# ---------------------------------------------------------------- run


def run_recbole(
    dataset_atomic_dir: str | os.PathLike,
    name: str,
    config: dict[str, Any],
    *,
    threads: int,
    venv_path: str | os.PathLike = DEFAULT_VENV,
) -> dict[str, Any]:
    """Train and evaluate RecBole's SASRec on ``dataset_atomic_dir/name.inter``.

    Runs :data:`DRIVER` with the venv's python in a scratch directory (RecBole writes
    checkpoints and tensorboard logs into it), with ``threads`` torch/OpenMP threads.
    Progress lines go to stderr. Returns the driver's result: ``valid`` and ``test``
    (history-masked ``recall@10``, ``ndcg@10``, ``mrr@10`` from dwrec-rule ranks),
    ``test_recbole_masked`` / ``test_recbole_unmasked`` (RecBole's own evaluator),
    ``epochs_run``, ``best_epoch``, ``valid_log`` (per epoch: RecBole's validation metrics,
    history-masked, and ``wall_seconds``, the time since fit began at the end of that epoch's
    validation and checkpoint), ``train_wall_seconds`` (fit, incl. validation),
    ``epoch_train_seconds`` and ``epoch_valid_seconds`` (lists), ``train_samples`` (prefix
    samples), ``train_batches_per_epoch``, ``test_eval_seconds`` (one full-sort pass over
    the test users, masked, RecBole's evaluator) and ``test_eval_seconds_unmasked``,
    ``split_check`` (RecBole's held-out cases equal the export's), ``per_case`` (user,
    target, rank lists, dwrec ids), versions and the resolved config.
    """
    with tempfile.TemporaryDirectory(prefix="recbole-run-") as scratch:
        scratch_dir = Path(scratch)
        command, env = _prepare_run(
            scratch_dir,
            "driver.py",
            dataset_atomic_dir,
            name,
            config,
            threads=threads,
            venv_path=venv_path,
        )
        completed = subprocess.run(command, cwd=scratch_dir, env=env)
        result_path = scratch_dir / "result.json"
        if completed.returncode != 0 or not result_path.exists():
            raise RecBoleError(f"the RecBole run failed (exit code {completed.returncode})")
        return json.loads(result_path.read_text())


class RecBoleSession:
    """A RecBole SASRec process (:data:`SPEED_DRIVER`) that times one operation per request.

    Built once (``create_dataset`` + ``data_preparation`` + a randomly initialised SASRec
    + RecBole's ``Trainer``), then driven step by step, so a benchmark can interleave dwrec
    and RecBole timings on a shared, noisy machine: while dwrec runs, this process waits on
    its stdin and uses no CPU. Requests (dicts; see :meth:`call`):

    * ``{"op": "train", "batches": n}``: ``Trainer._train_epoch`` over the next ``n``
      batches of the training loader (epochs continue across requests, reshuffled as
      RecBole does). Returns ``seconds``, ``samples`` (prefix samples = loss positions),
      ``batches_total``, ``epochs_total`` (fractional).
    * ``{"op": "eval", "split": "test" | "valid", "masked": bool}``: one full-sort pass,
      ``Trainer.evaluate``. Unmasked = RecBole's own protocol and code, untouched; masked =
      the harness's history mask and dwrec's tie rule (:data:`DRIVER`'s trainer), which also
      returns ``ndcg@10`` and ``recall@10`` from dwrec-rule ranks. Returns ``seconds``.
    * ``{"op": "rss"}``: ``peak_rss_bytes`` of the RecBole process.

    :attr:`info` (sent once ready) holds ``data_seconds``, ``train_samples``,
    ``train_batches_per_epoch``, ``test_cases``, ``valid_cases``, ``n_items``, ``threads``
    and ``versions``.
    """

    def __init__(
        self,
        dataset_atomic_dir: str | os.PathLike,
        name: str,
        config: dict[str, Any],
        *,
        threads: int,
        venv_path: str | os.PathLike = DEFAULT_VENV,
    ):
        scratch = tempfile.TemporaryDirectory(prefix="recbole-session-")
        try:
            command, env = _prepare_run(
                Path(scratch.name),
                "speed_driver.py",
                dataset_atomic_dir,
                name,
                config,
                threads=threads,
                venv_path=venv_path,
            )
        except BaseException:
            scratch.cleanup()
            raise
        self._scratch = scratch
        self._process = subprocess.Popen(
            command,
            cwd=scratch.name,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.info = self._receive()

    def call(self, request: dict[str, Any]) -> dict[str, Any]:
        """Send one request; wait for its result."""
        assert self._process.stdin is not None
        try:
            self._process.stdin.write(json.dumps(request) + "\n")
            self._process.stdin.flush()
        except BrokenPipeError:
            pass  # the process has ended: _receive reads end-of-file and says how
        answer = self._receive()
        if "error" in answer:
            raise RecBoleError(f"RecBole driver: {answer['error']}")
        return answer

    def _receive(self) -> dict[str, Any]:
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            code = self._process.wait()
            self.close()
            raise RecBoleError(f"the RecBole process ended (exit code {code})")
        return json.loads(line)

    def close(self) -> None:
        """End the process (end of its input) and remove its scratch folder."""
        if self._process.poll() is None:
            try:
                assert self._process.stdin is not None
                self._process.stdin.close()
                self._process.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                self._process.kill()
                self._process.wait()
        self._scratch.cleanup()

    def __enter__(self) -> RecBoleSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _prepare_run(
    scratch_dir: Path,
    script: str,
    dataset_atomic_dir: str | os.PathLike,
    name: str,
    config: dict[str, Any],
    *,
    threads: int,
    venv_path: str | os.PathLike,
) -> tuple[list[str], dict[str, str]]:
    """Write the drivers and ``spec.json`` into ``scratch_dir``; return command and env."""
    atomic_dir = Path(dataset_atomic_dir).resolve()
    if atomic_dir.name != name or not (atomic_dir / f"{name}.inter").exists():
        raise UsageError(f"{atomic_dir}: expected {name}.inter in a folder named {name!r}")
    if threads < 1:
        raise UsageError(f"--threads must be >= 1, got {threads}")
    # Not .resolve(): a venv's bin/python is a symlink to the base interpreter, and only
    # the link's own path makes Python use the venv's site-packages.
    python = venv_python(venv_path).absolute()
    if not python.exists():
        raise RecBoleError(f"no RecBole venv at {venv_path}: call ensure_venv() first")
    env = dict(os.environ)
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[variable] = str(threads)
    spec = {
        "name": name,
        "threads": threads,
        "config": {
            **config,
            "data_path": str(atomic_dir.parent),
            "checkpoint_dir": str(scratch_dir / "saved"),
        },
    }
    (scratch_dir / "spec.json").write_text(json.dumps(spec))
    # speed_driver.py imports the harness trainer and helpers from driver.py.
    (scratch_dir / "driver.py").write_text(DRIVER)
    (scratch_dir / "speed_driver.py").write_text(SPEED_DRIVER)
    return [str(python), script, "spec.json", str(scratch_dir / "result.json")], env
