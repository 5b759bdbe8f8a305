"""`dwrec report` over synthetic run dirs written here in the contract's format
(config.json + per_user.parquet + metrics.json + log.jsonl, see docs/train.md)."""

from __future__ import annotations

import csv
import io
import json
import math
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from dwrec.cli import main
from dwrec.errors import UsageError
from dwrec.io import write_json, write_parquet
from dwrec.losses.base import WEIGHTING_CLASSES, Weighting
from dwrec.report import report, write_report
from dwrec.report.plots import lift_points

DOMAINS = ["Film-Noir", "Documentary", "Western", "Comedy", "Drama", "Horror"]
SHARES = {"Film-Noir": 0.005, "Documentary": 0.01, "Western": 0.02, "Comedy": 0.2,
          "Drama": 0.3, "Horror": 0.1}  # fmt: skip
N_CASES = 1200


def _case_domains(rng: np.random.Generator, n: int) -> list[list[str]]:
    """Each case's target in one domain, drawn so that every domain has >= 150 cases."""
    index = np.arange(n) % len(DOMAINS)
    rng.shuffle(index)
    return [[DOMAINS[i]] for i in index]


def make_run(
    root: Path,
    name: str,
    *,
    loss: str,
    seed: int,
    base_rate: dict[str, float] | None = None,
    effect: dict[str, float] | None = None,
    fingerprint: str = "fp-dataset",
    split_fingerprint: str = "fp-split",
    dataset_path: Path | None = None,
    weights: dict[str, float] | None = None,
    label: str | None = None,
    lr: float = 1e-3,
    n_cases: int = N_CASES,
    noise_seed: int | None = None,
    finished: bool = True,
    split_scheme: str = "loo",
) -> Path:
    """Write an evaluated run dir whose per-case recall@10 is Bernoulli(base + effect[domain]).

    Cases (ids, targets, domains) depend only on the dataset, never on the run, as in reality;
    ``noise_seed`` (default: ``seed`` + hash of the loss) draws the run's own outcomes.
    """
    case_rng = np.random.default_rng(12345)
    case_id = np.sort(case_rng.choice(10 * n_cases, size=n_cases, replace=False)).astype(np.int64)
    target_domains = _case_domains(case_rng, n_cases)
    user_dense = case_rng.random((n_cases, len(DOMAINS))) < 0.3
    power = [[d for d, f in zip(DOMAINS, row, strict=True) if f] for row in user_dense]
    general = [[d for d, f in zip(DOMAINS, row, strict=True) if not f] for row in user_dense]
    base_rate = base_rate or {}
    effect = effect or {}
    rate = np.array([base_rate.get(d[0], 0.3) + effect.get(d[0], 0.0) for d in target_domains])
    seed_material = noise_seed if noise_seed is not None else seed * 1000 + sum(map(ord, loss))
    noise = np.random.default_rng(seed_material)
    uniform = noise.random(n_cases)
    hit = (uniform < rate).astype(np.float64)
    rank = np.where(hit > 0, 1 + (uniform * 9).astype(np.int64), 50)
    ndcg = np.where(hit > 0, 1.0 / np.log2(rank + 1.0), 0.0)
    run = root / name
    run.mkdir(parents=True)
    dataset = {"path": str(dataset_path or root / "no-dataset"), "name": "synthetic",
               "fingerprint": fingerprint}  # fmt: skip
    config = {
        "dataset": dataset,
        "split": {"scheme": split_scheme, "fingerprint": split_fingerprint},
        "model": {"name": "sasrec", "d_model": 64},
        "loss": {"loss": loss, "objective": "ce"},
        "train": {"epochs": 3, "batch_size": 128, "lr": lr, "weight_decay": 0.01, "seed": seed,
                  "patience": 2, "device": "cpu", "compile": False, "amp": False},
        "dwrec_version": "test", "git_commit": None,
    }  # fmt: skip
    if label:
        config["label"] = label
    write_json(run / "config.json", config)
    table = pa.table(
        {
            "case_id": pa.array(case_id, pa.int64()),
            "user_id": pa.array(np.arange(n_cases), pa.int32()),
            "target_item": pa.array(np.arange(n_cases) % 97, pa.int32()),
            "rank": pa.array(rank, pa.int64()),
            "recall@10": pa.array(hit, pa.float64()),
            "ndcg@10": pa.array(ndcg, pa.float64()),
            "target_domains": pa.array(target_domains, pa.list_(pa.string())),
            "power_domains": pa.array(power, pa.list_(pa.string())),
            "general_domains": pa.array(general, pa.list_(pa.string())),
        }
    )
    write_parquet(run / "per_user.parquet", table)
    metrics = {
        "run": str(run.resolve()), "label": label or f"sasrec+{loss}", "split": "test",
        "ks": [10], "dataset": dataset, "split_scheme": split_scheme,
        "split_fingerprint": split_fingerprint, "n_cases": n_cases, "masked_history": True,
        "sampled": None, "overall": {"recall@10": float(hit.mean())},
        "domains": {d: {"train_share": SHARES[d]} for d in DOMAINS},
        "thresholds": {"power": 0.5, "general": 0.1},
    }  # fmt: skip
    write_json(run / "metrics.json", metrics)
    if finished:
        write_json(run / "train_done.json", {"best_epoch": 2, "epochs_run": 3})
    lines = [{"epoch": e, "train_loss": 1.0, "valid": {"ndcg@10": 0.1},
              "domain_weights": weights if weights else None} for e in range(3)]  # fmt: skip
    (run / "log.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return run


def _rows(result, cohort: str = "target") -> dict[tuple[str, str], object]:
    table = next(t for t in result.tables if t.cohort == cohort)
    return {(row.domain, row.group): row for row in table.rows}


@pytest.fixture
def planted(tmp_path) -> Path:
    """generic vs dynamic, 2 seeds each: +0.25 recall@10 planted in Film-Noir only."""
    effect = {"Film-Noir": 0.25}
    for seed in (0, 1):
        make_run(tmp_path / "runs", f"generic-{seed}", loss="generic", seed=seed)
        make_run(tmp_path / "runs", f"dynamic-{seed}", loss="dynamic", seed=seed, effect=effect,
                 weights={d: 5.0 if d == "Film-Noir" else 0.8 for d in DOMAINS})  # fmt: skip
    return tmp_path / "runs"


def test_planted_effect_is_found_in_its_domain_only(planted):
    result = report([planted], domains=DOMAINS, metrics=["recall@10"], bootstrap=300)
    rows = _rows(result)
    assert result.baseline == "sasrec+generic"
    noir = rows[("Film-Noir", "sasrec+dynamic")].cells["recall@10"]
    assert noir.significant and noir.p < 1e-4
    assert noir.lift_low > 0.3  # rate 0.30 -> 0.55: lift about +83%
    for domain in DOMAINS[1:]:
        cell = rows[(domain, "sasrec+dynamic")].cells["recall@10"]
        assert not cell.significant, (domain, cell)
    assert rows[("overall", "sasrec+generic")].n == N_CASES


def test_identical_runs_find_nothing(tmp_path):
    for seed in (0, 1):
        make_run(tmp_path, f"generic-{seed}", loss="generic", seed=seed)
        make_run(tmp_path, f"dynamic-{seed}", loss="dynamic", seed=seed,
                 noise_seed=seed * 1000 + sum(map(ord, "generic")))  # fmt: skip
    for test in ("wilcoxon", "ttest", "permutation"):
        result = report([tmp_path], domains=DOMAINS, test=test, bootstrap=50, permutations=200)
        cells = [row.cells[m] for row in result.tables[0].rows if not row.baseline
                 for m in row.cells]  # fmt: skip
        assert all(c.p == 1.0 and c.lift == 0.0 and not c.significant for c in cells)
        assert any("every paired difference is 0" in note for note in result.tables[0].footnotes)
        assert "| 1†" in result.render("md")


def test_seeds_are_pooled_mean_and_std_over_seeds(planted):
    result = report([planted], domains=["Horror"], metrics=["recall@10"], bootstrap=20)
    row = _rows(result)[("Horror", "sasrec+generic")]
    import pyarrow.parquet as pq

    per_seed = []
    for seed in (0, 1):
        table = pq.read_table(planted / f"generic-{seed}" / "per_user.parquet").to_pylist()
        values = [r["recall@10"] for r in table if "Horror" in r["target_domains"]]
        per_seed.append(sum(values) / len(values))
    assert row.seeds == 2
    assert row.cells["recall@10"].mean == pytest.approx(np.mean(per_seed), abs=1e-12)
    assert row.cells["recall@10"].std == pytest.approx(np.std(per_seed, ddof=1), abs=1e-12)
    assert any("averaged over seeds" in note for note in result.tables[0].footnotes)
    assert any("sasrec+generic: 0, 1" in note for note in result.tables[0].footnotes)


def test_mismatched_dataset_fingerprints_are_refused_naming_the_runs(tmp_path):
    make_run(tmp_path, "a", loss="generic", seed=0)
    make_run(tmp_path, "b", loss="dynamic", seed=0, fingerprint="another")
    with pytest.raises(UsageError, match=r"a \(dataset fingerprint fp-dataset\).*b \(dataset"):
        report([tmp_path / "a", tmp_path / "b"])


def test_mismatched_split_fingerprints_are_refused(tmp_path):
    make_run(tmp_path, "a", loss="generic", seed=0)
    make_run(tmp_path, "b", loss="dynamic", seed=0, split_fingerprint="ratio-split")
    with pytest.raises(UsageError, match="split fingerprint"):
        report([tmp_path])


def test_different_test_cases_are_refused(tmp_path):
    make_run(tmp_path, "a", loss="generic", seed=0)
    make_run(tmp_path, "b", loss="dynamic", seed=0, n_cases=N_CASES - 10)
    with pytest.raises(UsageError, match="not evaluated on the same test cases"):
        report([tmp_path])


def test_group_members_differing_beyond_seed_are_refused(tmp_path):
    make_run(tmp_path, "a", loss="generic", seed=0)
    make_run(tmp_path, "b", loss="generic", seed=1, lr=0.01)
    make_run(tmp_path, "c", loss="dynamic", seed=0)
    with pytest.raises(UsageError, match=r"differ in train\.lr"):
        report([tmp_path])
    with pytest.raises(UsageError, match=r"train\.lr 0\.01 vs 0\.001.*--allow-mismatch"):
        report([tmp_path], labels=["b=sasrec+generic-lr0.01"], bootstrap=10)
    result = report([tmp_path], labels=["b=sasrec+generic-lr0.01"], bootstrap=10,
                    allow_mismatch=True)  # fmt: skip
    assert any("train.lr 0.01 vs 0.001" in note for note in result.tables[0].footnotes)
    assert {row.group for row in result.tables[0].rows} == {
        "sasrec+generic",
        "sasrec+generic-lr0.01",
        "sasrec+dynamic",
    }


def test_seeds_of_one_dataset_pool_whatever_path_spelling_their_configs_hold(tmp_path):
    # a run kept with paths made relative (dwrec.export) beside one trained in place: the
    # same data by fingerprint, so the same group; the path alone decides nothing
    make_run(tmp_path, "a", loss="generic", seed=0, dataset_path=Path("datasets/d"))
    make_run(tmp_path, "b", loss="generic", seed=1, dataset_path=tmp_path / "datasets" / "d")
    make_run(tmp_path, "c", loss="dynamic", seed=0)
    result = report([tmp_path], bootstrap=10)
    assert [g.seeds for g in result.groups] == [[0, 1], [0]]
    make_run(tmp_path, "d", loss="dynamic", seed=1, fingerprint="other-data")
    with pytest.raises(UsageError, match="fingerprint"):
        report([tmp_path], bootstrap=10)


def test_baseline_falls_back_to_ce_and_unknown_baseline_suggests(tmp_path):
    make_run(tmp_path, "a", loss="ce", seed=0)
    make_run(tmp_path, "b", loss="dynamic", seed=0)
    result = report([tmp_path], bootstrap=10)
    assert result.baseline == "sasrec+ce"
    assert any("+ce" in line for line in result.header)
    with pytest.raises(UsageError, match="did you mean sasrec\\+dynamic"):
        report([tmp_path], baseline="sasrec+dynamc")


def test_default_domains_are_three_sparsest_and_three_densest(tmp_path):
    make_run(tmp_path, "a", loss="generic", seed=0)
    make_run(tmp_path, "b", loss="dynamic", seed=0)
    # two domains with training shares but no test case
    for name in ("a", "b"):
        path = tmp_path / name / "metrics.json"
        metrics = json.loads(path.read_text())
        metrics["domains"].update({"Musical": {"train_share": 0.001}, "War": {"train_share": 0.05}})
        path.write_text(json.dumps(metrics))
    result = report([tmp_path], bootstrap=10)
    shown = [row.domain for row in result.domain_rows]
    assert shown == ["Musical", "Film-Noir", "Documentary", "Horror", "Comedy", "Drama"]
    musical = _rows(result)[("Musical", "sasrec+dynamic")]
    assert musical.n == 0 and math.isnan(musical.cells["recall@10"].p)
    assert "n = 0" in result.render("md") and "| Musical " in result.render("md")


def test_unknown_domain_and_metric_suggest_close_names(planted):
    with pytest.raises(UsageError, match="did you mean Film-Noir"):
        report([planted], domains=["Film-noir"])
    with pytest.raises(UsageError, match="did you mean ndcg@10"):
        report([planted], metrics=["ndcg@100"])


def test_default_runs_are_those_of_the_latest_dataset(tmp_path, monkeypatch):
    make_run(tmp_path / "runs", "old-a", loss="generic", seed=0, fingerprint="old")
    make_run(tmp_path / "runs", "old-b", loss="dynamic", seed=0, fingerprint="old")
    make_run(tmp_path / "runs", "new-a", loss="generic", seed=0, fingerprint="new")
    make_run(tmp_path / "runs", "new-b", loss="dynamic", seed=0, fingerprint="new")
    trained_only = tmp_path / "runs" / "new-c"
    trained_only.mkdir()
    write_json(trained_only / "config.json", {"label": "x"})
    monkeypatch.chdir(tmp_path)
    result = report(bootstrap=10)
    text = result.render("md")
    assert "new-a" in text and "new-b" in text and "old-a (seed" not in text
    assert "fingerprint new" in text and "Baseline: sasrec+generic" in text
    assert "new-c: not evaluated" in text
    with pytest.raises(UsageError, match="trained but not evaluated"):
        report([trained_only, tmp_path / "runs" / "new-a"])


def test_final_dynamic_weights_appear_in_the_domain_table(planted):
    result = report([planted], domains=["Film-Noir", "Horror"], bootstrap=10)
    weights = {row.domain: row.weights for row in result.domain_rows}
    assert weights["Film-Noir"]["sasrec+dynamic"] == 5.0
    assert weights["Horror"]["sasrec+generic"] is None
    assert "final weight sasrec+dynamic" in result.render("md")


class _LearnedToy(Weighting):
    name = "toy-learned"
    learns_weights = True


class _FixedToy(Weighting):
    name = "toy-fixed"


def test_final_weight_columns_follow_the_learns_weights_capability(tmp_path, monkeypatch):
    """Every run below logs domain weights; only weightings that declare ``learns_weights``
    get a column: a new name that learns them does, ``fixed`` (its constant weights) and a
    new name that does not learn them do not."""
    monkeypatch.setitem(WEIGHTING_CLASSES, _LearnedToy.name, _LearnedToy)
    monkeypatch.setitem(WEIGHTING_CLASSES, _FixedToy.name, _FixedToy)
    logged = {d: 3.0 if d == "Film-Noir" else 1.0 for d in DOMAINS}
    for seed in (0, 1):
        make_run(tmp_path, f"generic-{seed}", loss="generic", seed=seed)
        for loss in ("fixed", "toy-learned", "toy-fixed", "dynamic"):
            make_run(tmp_path, f"{loss}-{seed}", loss=loss, seed=seed, weights=logged)
    result = report([tmp_path], domains=["Film-Noir", "Horror"], bootstrap=10)
    film_noir = next(row for row in result.domain_rows if row.domain == "Film-Noir")
    assert film_noir.weights == {
        "sasrec+generic": None,
        "sasrec+fixed": None,
        "sasrec+toy-learned": 3.0,
        "sasrec+toy-fixed": None,
        "sasrec+dynamic": 3.0,
    }
    text = result.render("md")
    assert "final weight sasrec+toy-learned" in text and "final weight sasrec+dynamic" in text
    assert "final weight sasrec+fixed" not in text and "final weight sasrec+toy-fixed" not in text


def _markdown_table(text: str, title: str) -> list[dict[str, str]]:
    block = text.split(title, 1)[1].strip().split("\n\n", 1)[0].splitlines()
    headers = [h.strip() for h in block[0].strip("|").split("|")]
    return [dict(zip(headers, [c.strip() for c in line.strip("|").split("|")], strict=True))
            for line in block[2:]]  # fmt: skip


def test_md_json_csv_latex_carry_the_same_numbers(planted, tmp_path):
    result = report([planted], domains=["Film-Noir", "Horror"], bootstrap=100)
    outputs = {}
    for fmt in ("md", "json", "csv", "latex"):
        out = tmp_path / f"report.{fmt}"
        write_report(result, fmt, out)
        outputs[fmt] = out.read_text()
    data = json.loads(outputs["json"])
    md_rows = _markdown_table(outputs["md"], "## Cohort: target")
    csv_rows = list(csv.DictReader(io.StringIO(outputs["csv"])))
    json_rows = data["tables"][0]["rows"]
    assert len(md_rows) == len(json_rows) == 6 and len(csv_rows) == 12
    for md_row, json_row in zip(md_rows, json_rows, strict=True):
        assert md_row["domain"] == json_row["domain"] and md_row["n"] == str(json_row["n"])
        for metric, cell in json_row["cells"].items():
            mean = float(md_row[metric].split("±")[0])
            assert mean == pytest.approx(cell["mean"], abs=5e-5)
            csv_row = next(r for r in csv_rows if r["domain"] == json_row["domain"]
                           and r["group"] == json_row["group"] and r["metric"] == metric)  # fmt: skip
            assert float(csv_row["mean"]) == cell["mean"]
            assert csv_row["significant"] == str(cell["significant"])
            if cell["p"] is None:
                assert md_row[f"p {metric}"] == "-" and csv_row["p"] == ""
                continue
            assert float(csv_row["p"]) == cell["p"]
            assert float(md_row[f"p {metric}"].rstrip("*†")) == pytest.approx(cell["p"], rel=2e-2)
            assert md_row[f"p {metric}"].endswith("*") == cell["significant"]
            lift = re.match(r"([+-][\d.]+)% \[([+-][\d.]+), ([+-][\d.]+)\]",
                            md_row[f"lift {metric} % (95% CI)"])  # fmt: skip
            for got, key in zip(lift.groups(), ("lift", "lift_low", "lift_high"), strict=True):
                assert float(got) == pytest.approx(100 * cell[key], abs=0.051)
                assert float(csv_row[key]) == cell[key]
            assert f"{100 * cell['lift']:+.1f}\\%" in outputs["latex"]
    assert r"\begin{tabular}" in outputs["latex"] and r"\toprule" in outputs["latex"]


def test_cli_writes_report_atomically_and_prints_without_out(planted, tmp_path, capsys):
    out = tmp_path / "out" / "report.md"
    code = main([
        "report", str(planted), "--domains", "Film-Noir", "Horror", "--metrics", "recall@10",
        "--bootstrap", "50", "--test", "ttest", "--correction", "bonferroni", "--out", str(out),
    ])  # fmt: skip
    assert code == 0
    text = out.read_text()
    assert "| Film-Noir " in text and "| Horror " in text and "| Comedy " not in text
    assert "paired t-test" in text and "Bonferroni" in text
    assert [p.name for p in out.parent.iterdir()] == ["report.md"]
    code = main(["report", str(planted), "--domains", "Horror", "--format", "json",
                 "--bootstrap", "20"])  # fmt: skip
    assert code == 0
    assert json.loads(capsys.readouterr().out)["baseline"] == "sasrec+generic"


def test_cli_errors_are_one_line_with_exit_codes(planted, tmp_path, capsys):
    assert main(["report", str(planted), "--test", "anova"]) == 2
    assert "--test must be one of" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["report", str(planted), "--domains", "Horor"]) == 2
    assert "did you mean Horror" in capsys.readouterr().err


def test_plot_without_matplotlib_says_how_to_install(planted, tmp_path, capsys, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    out = tmp_path / "report.md"
    code = main(["report", str(planted), "--plot", str(tmp_path / "lift.png"), "--out", str(out)])
    assert code == 2
    assert "pip install 'dwrec[plot]'" in capsys.readouterr().err
    assert not out.exists()


def test_plot_points_are_lift_against_share(planted):
    result = report([planted], domains=["Film-Noir", "Horror"], metrics=["recall@10"],
                    bootstrap=20)  # fmt: skip
    points = {p.domain: p for p in lift_points(result)}
    assert set(points) == {"Film-Noir", "Horror"}
    assert points["Film-Noir"].share == SHARES["Film-Noir"]
    cell = _rows(result)[("Film-Noir", "sasrec+dynamic")].cells["recall@10"]
    assert points["Film-Noir"].lift == cell.lift


def test_plot_is_drawn_when_matplotlib_is_installed(planted, tmp_path):
    pytest.importorskip("matplotlib")
    from dwrec.report.plots import plot_lift

    result = report([planted], domains=["Film-Noir", "Horror"], bootstrap=20)
    path = plot_lift(result, tmp_path / "lift.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_power_and_general_cohorts_give_one_table_each(planted):
    result = report([planted], domains=["Film-Noir", "Horror"], cohorts=["power", "general"],
                    bootstrap=20)  # fmt: skip
    assert [t.cohort for t in result.tables] == ["power", "general"]
    power, general = (
        _rows(result, c)[("Horror", "sasrec+generic")].n for c in ("power", "general")
    )
    assert power + general == N_CASES  # the fixture puts each user in exactly one of them
    assert 0 < power < N_CASES


def test_cli_domains_take_several_values_before_the_runs(planted, tmp_path):
    out = tmp_path / "r.csv"
    code = main(["report", "--domains", "Film-Noir", "Horror", str(planted), "--format", "csv",
                 "--bootstrap", "20", "--out", str(out)])  # fmt: skip
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert {r["domain"] for r in rows} == {"Film-Noir", "Horror", "overall"}
