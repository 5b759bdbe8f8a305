"""The scripts the RecBole harness (:mod:`dwrec.baselines.recbole`) runs inside RecBole's venv.

They are text, written into a scratch folder per run, never imported by dwrec (RecBole is not
a dependency): :data:`DRIVER` trains and evaluates RecBole's SASRec; :data:`SPEED_DRIVER`
(which imports the trainer and helpers of ``driver.py``) answers timed requests.
"""

DRIVER = r'''
"""RecBole SASRec driver (runs inside the RecBole venv; written by dwrec.baselines.recbole)."""
import json
import platform
import sys
import time
import warnings

# RecBole 1.2.1 on current pandas/torch: deprecation notices on every run, not errors.
warnings.filterwarnings("ignore", category=FutureWarning)

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
        self.fit_started = None

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

    def end_of_epoch(self, epoch_idx, valid_score):
        """fit's callback_fn, called after each validation (and checkpoint save): the
        cumulative wall time since fit began."""
        self.valid_log[-1]["wall_seconds"] = time.perf_counter() - self.fit_started

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


def load_spec(spec_path):
    """The run's spec (JSON) and RecBole's Config of it; sets torch's threads and the seeds."""
    spec = json.load(open(spec_path))
    torch.set_num_threads(spec["threads"])
    config = Config(model="SASRec", dataset=spec["name"], config_dict=spec["config"])
    init_seed(config["seed"], config["reproducibility"])
    return spec, config


def load_best(trainer):
    """The best checkpoint fit saved, into the model.

    RecBole 1.2.1's ``evaluate(load_best_model=True)`` calls ``torch.load`` with torch's
    default ``weights_only``, True since torch 2.6, and its checkpoint (it pickles the
    Config) fails to load that way. The file is the one this process wrote during fit, so
    it is trusted and loaded with ``weights_only=False``; every evaluation then runs with
    ``load_best_model=False``.
    """
    checkpoint = torch.load(trainer.saved_model_file, map_location=trainer.device, weights_only=False)
    trainer.model.load_state_dict(checkpoint["state_dict"])
    trainer.model.load_other_parameter(checkpoint.get("other_parameter"))
    return checkpoint["epoch"] + 1  # RecBole counts epochs from 0


def evaluate_pass(trainer, loader, phase):
    trainer.phase = phase
    trainer.records = []
    started = time.perf_counter()
    result = trainer.evaluate(loader, load_best_model=False)
    seconds = time.perf_counter() - started
    users = np.concatenate([r[0] for r in trainer.records])
    targets = np.concatenate([r[1] for r in trainer.records])
    ranks = np.concatenate([r[2] for r in trainer.records])
    trainer.records = None
    return {k: float(v) for k, v in result.items()}, seconds, users, targets, ranks


def main(spec_path, result_path):
    spec, config = load_spec(spec_path)
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
    trainer.fit_started = started = time.perf_counter()
    best_score, best_valid = trainer.fit(
        train_data, valid_data, saved=True, show_progress=False, callback_fn=trainer.end_of_epoch
    )
    train_wall = time.perf_counter() - started

    scores = [entry[config["valid_metric"].lower()] for entry in trainer.valid_log]
    best_epoch = max(i for i, s in enumerate(scores) if s == max(scores)) + 1  # RecBole: >=
    checkpoint_epoch = load_best(trainer)
    if checkpoint_epoch != best_epoch:
        raise SystemExit(f"best checkpoint is epoch {checkpoint_epoch}, best valid {best_epoch}")
    valid_ranks = evaluate_pass(trainer, valid_data, "valid")[4]
    masked, seconds, users, targets, ranks = evaluate_pass(trainer, test_data, "test")
    trainer.mask_history = False
    unmasked, seconds_unmasked, *_ = evaluate_pass(trainer, test_data, "test")
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
"""RecBole SASRec speed driver (runs inside the RecBole venv; written by dwrec.baselines.recbole).

Builds RecBole's data, SASRec and Trainer once, sends its setup figures as one JSON line,
then answers one JSON request per stdin line with one JSON line (see RecBoleSession in
dwrec/baselines/recbole.py), timing RecBole's own code paths. Its log goes to stderr.
"""
import json
import resource
import sys
import time

import numpy as np
import torch

PROTOCOL = sys.stdout
sys.stdout = sys.stderr  # anything RecBole prints must not mix with the protocol

from recbole.data import create_dataset, data_preparation
from recbole.model.sequential_recommender import SASRec
from recbole.trainer import Trainer
from recbole.utils import init_seed

from driver import (
    HarnessTrainer,
    evaluate_pass,
    history_csr,
    load_spec,
    log,
    metrics_from_ranks,
    sequences,
)


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
    spec, config = load_spec(spec_path)
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
                trainer, loaders[request["split"]], request["split"]
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
