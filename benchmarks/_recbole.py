"""RecBole baseline harness: a separate venv, atomic-file export, and a SASRec driver.

RecBole is never a dependency of dwrec. It lives in its own virtual environment
(``.bench/recbole-venv``, git-ignored) because it pins old numpy/pandas, and runs in a
subprocess of that venv; the driver writes its results as JSON.

Protocol differences that this harness removes (so both libraries see the same task):

* **Order.** RecBole sorts by (user, timestamp); dwrec by (user, timestamp, original
  order). The export writes each row's rank within its user as the timestamp, so the order
  is carried by the timestamp alone and ties cannot be broken differently.
* **History masking.** RecBole's full-sort evaluation of sequential models masks nothing;
  dwrec excludes the case's history except the target. The driver masks the same items
  (for validation too, so early stopping sees the same metric) and ranks with dwrec's tie
  rule (equal scores: smaller dwrec item id first).
* **Checkpoint reload.** torch >= 2.6 loads with ``weights_only=True`` by default, which
  RecBole 1.2.1's checkpoints (they pickle the config) fail; the driver runs with
  ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``, affecting only the RecBole subprocess.

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

import numpy as np

from dwrec.data.dataset import load_dataset
from dwrec.data.split import make_split
from dwrec.errors import DwrecError, UsageError
from dwrec.io import atomic_path, write_json

DEFAULT_VENV = Path(".bench/recbole-venv")
INTER_HEADER = "user_id:token\titem_id:token\ttimestamp:float"

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
# Names RecBole must not be given: it silently loads its bundled example for "ml-100k".
RESERVED_NAMES = ("ml-100k",)


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


# ---------------------------------------------------------------- export


def export_atomic(dataset_dir: str | os.PathLike, out_dir: str | os.PathLike, name: str) -> Path:
    """Write a prepared dwrec dataset as RecBole atomic files; return the atomic dir.

    Writes ``out_dir/name/name.inter`` (header :data:`INTER_HEADER`): one row per
    interaction, in dwrec's order, with ``user_id`` and ``item_id`` the dwrec ids as tokens
    and ``timestamp`` the row's 0-based rank within its user. RecBole's leave-one-out split
    (``eval_args: {split: {LS: valid_and_test}, order: TO}``) then holds out, per user, the
    same test interaction as dwrec's ``loo`` split, and the same validation interaction for
    every user with at least 4 interactions. ``out_dir/name/export.json`` records the source
    dataset, the row count and the users (exactly 3 interactions) whose validation differs.
    """
    if not name or any(c in name for c in "/\\") or name in RESERVED_NAMES:
        raise UsageError(f"RecBole dataset name {name!r} is not allowed (no slashes; not ml-100k)")
    dataset = load_dataset(dataset_dir)
    indptr = dataset.user_indptr
    rank_in_user = np.arange(len(dataset.user_ids)) - indptr[dataset.user_ids]
    rows = np.column_stack([dataset.user_ids, dataset.item_ids, rank_in_user]).astype(np.int64)
    atomic_dir = Path(out_dir) / name
    atomic_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(atomic_dir / f"{name}.inter") as tmp:
        np.savetxt(tmp, rows, fmt="%d", delimiter="\t", header=INTER_HEADER, comments="")
    lengths = np.diff(indptr)
    split = make_split(dataset, "loo")
    write_json(
        atomic_dir / "export.json",
        {
            "source": str(Path(dataset_dir).resolve()),
            "dataset_name": dataset.name,
            "dataset_fingerprint": dataset.fingerprint,
            "split_fingerprint": split.fingerprint,
            "interactions": int(len(rows)),
            "users": int(dataset.n_users),
            "items": int(dataset.n_items),
            "test_cases": int(len(split.test)),
            "valid_cases": int(len(split.valid)),
            "users_with_3_interactions": int(np.sum(lengths == 3)),
            "timestamp": "rank of the interaction within its user (dwrec order)",
        },
    )
    return atomic_dir


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
    ``epochs_run``, ``best_epoch``, ``train_wall_seconds`` (fit, incl. validation),
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
    env["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
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


DRIVER = r'''
"""RecBole SASRec driver (runs inside the RecBole venv; written by benchmarks/_recbole.py)."""
import json
import platform
import sys
import time
import warnings

# RecBole 1.2.1 on current pandas/torch: deprecation notices on every run, not errors.
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", message=".*TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD.*")

import numpy as np
import recbole
import torch
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.model.sequential_recommender import SASRec
from recbole.trainer import Trainer
from recbole.utils import init_seed


def log(message):
    print(f"[recbole] {message}", file=sys.stderr, flush=True)


class HarnessTrainer(Trainer):
    """RecBole's Trainer, plus dwrec's history masking, dwrec-rule ranks and timings."""

    def __init__(self, config, model, histories, dwrec_item_ids):
        super().__init__(config, model)
        self.histories = histories  # phase -> (indptr over internal users, internal items)
        self.dwrec_item_ids = torch.as_tensor(dwrec_item_ids)
        self.phase = "valid"
        self.mask_history = True
        self.records = None
        self.epoch_train_seconds, self.epoch_valid_seconds, self.valid_log = [], [], []

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        started = time.perf_counter()
        loss = super()._train_epoch(train_data, epoch_idx, loss_func, show_progress)
        self.epoch_train_seconds.append(time.perf_counter() - started)
        return loss

    def _valid_epoch(self, valid_data, show_progress=False):
        self.phase = "valid"
        started = time.perf_counter()
        score, result = super()._valid_epoch(valid_data, show_progress)
        self.epoch_valid_seconds.append(time.perf_counter() - started)
        self.valid_log.append({k: float(v) for k, v in result.items()})
        epoch = len(self.valid_log)
        log(
            f"epoch {epoch}: train {self.epoch_train_seconds[-1]:.1f}s, "
            f"valid {self.epoch_valid_seconds[-1]:.1f}s, {self.valid_metric} {score:.4f}"
        )
        return score, result

    def _full_sort_batch_eval(self, batched_data):
        interaction, scores, positive_u, positive_i = super()._full_sort_batch_eval(batched_data)
        users = interaction[self.config["USER_ID_FIELD"]].cpu().numpy()
        rows = torch.as_tensor(positive_u, device=scores.device)
        targets = torch.as_tensor(positive_i, device=scores.device)
        target_scores = scores[rows, targets].clone()
        if self.mask_history:
            indptr, items = self.histories[self.phase]
            starts, ends = indptr[users], indptr[users + 1]
            lengths = ends - starts
            case = np.repeat(np.arange(len(users)), lengths)
            offset = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
            columns = items[np.repeat(starts, lengths) + offset]
            scores[torch.as_tensor(case, device=scores.device),
                   torch.as_tensor(columns, device=scores.device)] = -np.inf
            scores[rows, targets] = target_scores  # the target itself is never masked
        if self.records is not None:
            ids = self.dwrec_item_ids.to(scores.device)
            higher = (scores > target_scores[:, None]).sum(dim=1)
            tied = ((scores == target_scores[:, None]) & (ids[None, :] < ids[targets][:, None]))
            ranks = 1 + higher + tied.sum(dim=1)
            self.records.append((users, targets.cpu().numpy(), ranks.cpu().numpy()))
        return interaction, scores, positive_u, positive_i


def sequences(dataset):
    """Per internal user, internal items in time order (CSR)."""
    frame = dataset.inter_feat
    users = np.asarray(frame[dataset.uid_field], dtype=np.int64)
    items = np.asarray(frame[dataset.iid_field], dtype=np.int64)
    times = np.asarray(frame[dataset.time_field], dtype=np.float64)
    order = np.lexsort((times, users))
    users, items = users[order], items[order]
    counts = np.bincount(users, minlength=dataset.user_num)
    indptr = np.concatenate([[0], np.cumsum(counts)])
    return indptr, items


def history_csr(indptr, items, held_out):
    """Per user, the items before its last ``held_out`` interactions (users with >= 3)."""
    lengths = np.diff(indptr)
    keep = np.where(lengths >= 3, lengths - held_out, 0)
    new_indptr = np.concatenate([[0], np.cumsum(keep)])
    case = np.repeat(np.arange(len(keep)), keep)
    offset = np.arange(int(keep.sum())) - np.repeat(new_indptr[:-1], keep)
    return new_indptr, items[indptr[case] + offset]


def held_out_cases(indptr, items, from_end, min_length):
    lengths = np.diff(indptr)
    users = np.flatnonzero(lengths >= min_length)
    return set(zip(users.tolist(), items[indptr[users + 1] - from_end].tolist()))


def loader_cases(loader, dataset):
    inter = loader._dataset.inter_feat
    users = inter[dataset.uid_field].numpy().tolist()
    items = inter[dataset.iid_field].numpy().tolist()
    return set(zip(users, items)), len(users)


def metrics_from_ranks(ranks, k=10):
    ranks = np.asarray(ranks, dtype=np.float64)
    hit = ranks <= k
    return {
        f"recall@{k}": float(hit.mean()) if len(ranks) else 0.0,
        f"ndcg@{k}": float(np.where(hit, 1.0 / np.log2(ranks + 1.0), 0.0).mean()) if len(ranks) else 0.0,
        f"mrr@{k}": float(np.where(hit, 1.0 / ranks, 0.0).mean()) if len(ranks) else 0.0,
    }


def evaluate_pass(trainer, loader, phase, load_best):
    trainer.phase = phase
    trainer.records = []
    started = time.perf_counter()
    result = trainer.evaluate(loader, load_best_model=load_best)
    seconds = time.perf_counter() - started
    users = np.concatenate([r[0] for r in trainer.records])
    targets = np.concatenate([r[1] for r in trainer.records])
    ranks = np.concatenate([r[2] for r in trainer.records])
    trainer.records = None
    return {k: float(v) for k, v in result.items()}, seconds, users, targets, ranks


def main(spec_path, result_path):
    spec = json.load(open(spec_path))
    torch.set_num_threads(spec["threads"])
    config = Config(model="SASRec", dataset=spec["name"], config_dict=spec["config"])
    init_seed(config["seed"], config["reproducibility"])
    started = time.perf_counter()
    dataset = create_dataset(config)
    indptr, items = sequences(dataset)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    data_seconds = time.perf_counter() - started
    log(f"data ready in {data_seconds:.1f}s: {len(train_data._dataset)} training samples")

    valid_cases, n_valid = loader_cases(valid_data, dataset)
    test_cases, n_test = loader_cases(test_data, dataset)
    split_check = {
        "test_cases": n_test,
        "valid_cases": n_valid,
        "test_equal": test_cases == held_out_cases(indptr, items, 1, 3),
        "valid_equal": valid_cases == held_out_cases(indptr, items, 2, 4),
    }
    tokens = dataset.field2id_token[dataset.iid_field]
    dwrec_item_ids = np.array([-1] + [int(t) for t in tokens[1:]], dtype=np.int64)
    user_tokens = dataset.field2id_token[dataset.uid_field]
    histories = {"valid": history_csr(indptr, items, 2), "test": history_csr(indptr, items, 1)}

    model = SASRec(config, train_data._dataset).to(config["device"])
    trainer = HarnessTrainer(config, model, histories, dwrec_item_ids)
    started = time.perf_counter()
    best_score, best_valid = trainer.fit(train_data, valid_data, saved=True, show_progress=False)
    train_wall = time.perf_counter() - started

    scores = [entry[config["valid_metric"].lower()] for entry in trainer.valid_log]
    best_epoch = max(i for i, s in enumerate(scores) if s == max(scores)) + 1  # RecBole: >=
    valid_ranks = evaluate_pass(trainer, valid_data, "valid", True)[4]
    masked, seconds, users, targets, ranks = evaluate_pass(trainer, test_data, "test", False)
    trainer.mask_history = False
    unmasked, seconds_unmasked, *_ = evaluate_pass(trainer, test_data, "test", False)
    result = {
        "valid": metrics_from_ranks(valid_ranks),
        "test": metrics_from_ranks(ranks),
        "test_recbole_masked": masked,
        "test_recbole_unmasked": unmasked,
        "best_valid_recbole": {k: float(v) for k, v in (best_valid or {}).items()},
        "epochs_run": len(trainer.epoch_train_seconds),
        "best_epoch": best_epoch,
        "valid_log": trainer.valid_log,
        "train_wall_seconds": train_wall,
        "data_seconds": data_seconds,
        "epoch_train_seconds": trainer.epoch_train_seconds,
        "epoch_valid_seconds": trainer.epoch_valid_seconds,
        "train_samples": len(train_data._dataset),
        "train_batches_per_epoch": len(train_data),
        "test_eval_seconds": seconds,
        "test_eval_seconds_unmasked": seconds_unmasked,
        "split_check": split_check,
        "per_case": {
            "user": [int(user_tokens[u]) for u in users],
            "target": dwrec_item_ids[targets].tolist(),
            "rank": ranks.astype(int).tolist(),
        },
        "n_items": len(tokens) - 1,
        "versions": {
            "recbole": recbole.__version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "device": str(config["device"]),
        "threads": torch.get_num_threads(),
        "config": {k: config[k] for k in sorted(spec["config"]) if k in config},
    }
    with open(result_path, "w") as handle:
        json.dump(result, handle, default=str)


if __name__ == "__main__":
    spec_path, result_path = sys.argv[1], sys.argv[2]
    sys.argv = sys.argv[:1]  # RecBole's Config parses the command line for --key=value
    main(spec_path, result_path)
'''


SPEED_DRIVER = r'''
"""RecBole SASRec speed driver (runs inside the RecBole venv; written by benchmarks/_recbole.py).

Builds RecBole's data, SASRec and Trainer once, sends its setup figures as one JSON line,
then answers one JSON request per stdin line with one JSON line (see RecBoleSession in
_recbole.py), timing RecBole's own code paths. Its log goes to stderr.
"""
import json
import resource
import sys
import time

import numpy as np
import torch

PROTOCOL = sys.stdout
sys.stdout = sys.stderr  # anything RecBole prints must not mix with the protocol

from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.model.sequential_recommender import SASRec
from recbole.trainer import Trainer
from recbole.utils import init_seed

from driver import HarnessTrainer, evaluate_pass, history_csr, log, metrics_from_ranks, sequences


class BatchStream:
    """Batches of a RecBole train loader drawn in chunks; a new epoch (reshuffled) starts
    when one runs out, so chunks of any size walk through whole epochs in order."""

    def __init__(self, loader):
        self.loader, self.iterator = loader, iter(loader)
        self.samples = self.batches = 0

    def take(self, n):
        return Chunk(self, n)

    def next_batch(self):
        try:
            batch = next(self.iterator)
        except StopIteration:
            self.iterator = iter(self.loader)
            batch = next(self.iterator)
        self.samples += batch.length
        self.batches += 1
        return batch


class Chunk:
    """What ``Trainer._train_epoch`` iterates over: ``n`` batches of a :class:`BatchStream`."""

    shuffle = False  # read by _train_epoch only in distributed mode

    def __init__(self, stream, n):
        self.stream, self.n = stream, n

    def __len__(self):
        return self.n

    def __iter__(self):
        for _ in range(self.n):
            yield self.stream.next_batch()


def send(message):
    PROTOCOL.write(json.dumps(message) + "\n")
    PROTOCOL.flush()


def main(spec_path):
    spec = json.load(open(spec_path))
    torch.set_num_threads(spec["threads"])
    config = Config(model="SASRec", dataset=spec["name"], config_dict=spec["config"])
    init_seed(config["seed"], config["reproducibility"])
    started = time.perf_counter()
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    data_seconds = time.perf_counter() - started
    log(f"data ready in {data_seconds:.1f}s: {len(train_data._dataset)} training samples")
    init_seed(config["seed"], config["reproducibility"])
    model = SASRec(config, train_data._dataset).to(config["device"])

    indptr, items = sequences(dataset)
    tokens = dataset.field2id_token[dataset.iid_field]
    dwrec_item_ids = np.array([-1] + [int(t) for t in tokens[1:]], dtype=np.int64)
    histories = {"valid": history_csr(indptr, items, 2), "test": history_csr(indptr, items, 1)}
    trainer = HarnessTrainer(config, model, histories, dwrec_item_ids)  # trains; masked eval
    plain = Trainer(config, model)  # RecBole's own full sort, untouched
    stream = BatchStream(train_data)
    loaders = {"valid": valid_data, "test": test_data}
    send(
        {
            "data_seconds": data_seconds,
            "train_samples": len(train_data._dataset),
            "train_batches_per_epoch": len(train_data),
            "valid_cases": len(valid_data._dataset),
            "test_cases": len(test_data._dataset),
            "n_items": dataset.item_num - 1,
            "threads": torch.get_num_threads(),
            "versions": {"recbole": __import__("recbole").__version__, "torch": torch.__version__},
        }
    )
    for line in sys.stdin:
        request = json.loads(line)
        op = request["op"]
        if op == "train":
            before = stream.samples
            started = time.perf_counter()
            trainer._train_epoch(stream.take(request["batches"]), stream.batches)
            seconds = time.perf_counter() - started
            send(
                {
                    "seconds": seconds,
                    "samples": stream.samples - before,
                    "batches_total": stream.batches,
                    "epochs_total": stream.batches / len(train_data),
                }
            )
        elif op == "eval" and not request["masked"]:
            started = time.perf_counter()
            plain.evaluate(loaders[request["split"]], load_best_model=False)
            send({"seconds": time.perf_counter() - started})
        elif op == "eval":
            _, seconds, _, _, ranks = evaluate_pass(
                trainer, loaders[request["split"]], request["split"], False
            )
            send({"seconds": seconds, **metrics_from_ranks(ranks)})
        elif op == "rss":
            send({"peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024})
        else:
            send({"error": f"unknown request {request!r}"})


if __name__ == "__main__":
    spec_path = sys.argv[1]
    sys.argv = sys.argv[:1]  # RecBole's Config parses the command line for --key=value
    main(spec_path)
'''
