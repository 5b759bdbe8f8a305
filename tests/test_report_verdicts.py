"""Verdicts a reviewer accepts (issue 14/17): fixed test families, seeds in the uncertainty,
matched settings, unfinished and skipped runs, names, and console width; each checked
against an independent computation (scipy on the per-case files, a gather-based bootstrap
with the same random streams, hand-coded Holm)."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import zlib
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import scipy.stats
from test_report import DOMAINS, make_run

from dwrec.cli import main
from dwrec.errors import UsageError
from dwrec.report import report, stats
from dwrec.report.console import console_text
from dwrec.report.render_text import format_p

GROUP = "sasrec+dynamic"


def _holm(p: list[float]) -> list[float]:
    """Holm step-down, written out plainly (independent of stats.holm)."""
    order = sorted(range(len(p)), key=lambda i: p[i])
    adjusted, running = [0.0] * len(p), 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[index]))
        adjusted[index] = running
    return adjusted


def _cases(run: Path, metric: str = "recall@10") -> dict[int, tuple[float, list[str]]]:
    rows = pq.read_table(run / "per_user.parquet").to_pylist()
    return {r["case_id"]: (r[metric], r["target_domains"]) for r in rows}


def _seed_averaged(runs: list[Path], metric: str = "recall@10"):
    tables = [_cases(r, metric) for r in runs]
    ids = sorted(tables[0])
    values = np.array([[t[i][0] for i in ids] for t in tables]).mean(axis=0)
    domains = [tables[0][i][1] for i in ids]
    return values, domains


def _cell(result, domain, group=GROUP, metric="recall@10", cohort="target"):
    table = next(t for t in result.tables if t.cohort == cohort)
    row = next(r for r in table.rows if r.domain == domain and r.group == group)
    return row.cells[metric]


@pytest.fixture
def one_seed(tmp_path) -> Path:
    root = tmp_path / "runs"
    make_run(root, "generic-0", loss="generic", seed=0)
    make_run(root, "dynamic-0", loss="dynamic", seed=0,
             effect={"Film-Noir": 0.2, "Horror": 0.08, "Drama": -0.05})  # fmt: skip
    return root


# ------------------------------------------------------------------ fixed families


def test_p_value_does_not_depend_on_the_domains_shown_or_the_format(one_seed, capsys):
    kwargs = {"bootstrap": 50, "metrics": ["recall@10"]}
    small = report([one_seed], domains=["Film-Noir"], **kwargs)
    large = report([one_seed], domains=["Film-Noir", "Horror", "Drama"], **kwargs)
    default = report([one_seed], **kwargs)
    p = _cell(small, "Film-Noir").p
    assert p == _cell(large, "Film-Noir").p == _cell(default, "Film-Noir").p
    assert _cell(small, "Film-Noir").lift_low == _cell(large, "Film-Noir").lift_low
    printed = {}
    for domains in (["Film-Noir"], ["Film-Noir", "Horror", "Drama"]):
        assert main(["report", str(one_seed), "--domains", *domains, "--bootstrap", "50",
                     "--metrics", "recall@10"]) == 0  # fmt: skip
        out = capsys.readouterr().out
        line = next(x for x in out.splitlines() if x.startswith("Film-Noir"))
        line = out.splitlines()[out.splitlines().index(line) + 1]  # the dynamic row
        printed[len(domains)] = line.split()[-1]
    assert printed[1] == printed[3] == format_p(_cell(small, "Film-Noir")) == f"{p:.3g}*"
    json_cell = json.loads(large.render("json"))["tables"][0]["rows"]
    noir = next(r for r in json_cell if r["domain"] == "Film-Noir" and r["group"] == GROUP)
    assert noir["cells"]["recall@10"]["p"] == p
    rows = list(csv.DictReader(io.StringIO(small.render("csv"))))
    row = next(r for r in rows if r["domain"] == "Film-Noir" and r["group"] == GROUP
               and r["metric"] == "recall@10")  # fmt: skip
    assert float(row["p"]) == p and row["family"] == "exploratory"
    assert f"| {p:.3g}* " in small.render("md") and f"{p:.3g}*" in small.render("latex")


def test_families_are_corrected_as_scipy_and_a_hand_written_holm_say(one_seed):
    """Raw p: scipy.stats.wilcoxon on the per-case differences read from the files;
    confirmatory family {Film-Noir, Horror}; exploratory: the other 4 domains and overall."""
    generic, domains = _seed_averaged([one_seed / "generic-0"])
    dynamic, _ = _seed_averaged([one_seed / "dynamic-0"])
    difference = dynamic - generic

    def raw_p(domain):
        mask = np.array([domain == "overall" or domain in d for d in domains])
        return scipy.stats.wilcoxon(difference[mask]).pvalue

    result = report([one_seed], domains=DOMAINS, family=["Film-Noir", "Horror"],
                    metrics=["recall@10"], bootstrap=20)  # fmt: skip
    confirmatory = ["Film-Noir", "Horror"]
    exploratory = ["Comedy", "Documentary", "Drama", "Western", "overall"]
    for family, members in (("confirmatory", confirmatory), ("exploratory", exploratory)):
        expected = _holm([raw_p(d) for d in members])
        for domain, p in zip(members, expected, strict=True):
            cell = _cell(result, domain)
            assert cell.family == family
            assert cell.p_raw == pytest.approx(raw_p(domain), rel=1e-9)
            assert cell.p == pytest.approx(p, rel=1e-9), domain
    notes = " ".join(result.tables[0].footnotes)
    assert "Confirmatory family (declared by --family): Film-Noir, Horror; 2 comparisons" in notes
    assert "Exploratory family: the other 4 domain(s)" in notes and "; 5 comparisons" in notes
    # the same family declared from the CLI, with commas
    assert _cell(report([one_seed], domains=["Film-Noir"], family=["Film-Noir,Horror"],
                        metrics=["recall@10"], bootstrap=20), "Film-Noir").p == _cell(
        result, "Film-Noir").p  # fmt: skip


def test_domains_below_min_cases_are_shown_but_not_tested(one_seed):
    # every domain has 200 test cases: with --min-cases 201 only overall is tested
    result = report([one_seed], domains=["Film-Noir"], min_cases=201, bootstrap=20,
                    metrics=["recall@10"])  # fmt: skip
    cell = _cell(result, "Film-Noir")
    assert np.isnan(cell.p) and "--min-cases" in cell.note and np.isfinite(cell.lift)
    generic, domains = _seed_averaged([one_seed / "generic-0"])
    dynamic, _ = _seed_averaged([one_seed / "dynamic-0"])
    overall = _cell(result, "overall")
    assert overall.p == pytest.approx(scipy.stats.wilcoxon(dynamic - generic).pvalue, rel=1e-9)
    assert "all 0 domain(s)" in " ".join(result.tables[0].footnotes)
    with pytest.raises(UsageError, match="--min-cases"):
        report([one_seed], min_cases=1)


# ------------------------------------------------------------------ seeds


def test_two_level_bootstrap_equals_a_gather_with_the_same_draws():
    rng = np.random.default_rng(3)
    n, resamples = 40, 30
    per_seed = [rng.random((2, n, 2)), rng.random((3, n, 2)), rng.random((1, n, 2))]
    masks = np.column_stack([rng.random(n) < 0.3, rng.random(n) < 0.6, np.ones(n, bool)])
    got = stats.two_level_bootstrap_means(per_seed, masks, resamples,
                                          np.random.default_rng(11), np.random.default_rng(12))  # fmt: skip
    cases = np.random.default_rng(11).integers(0, n, size=(resamples, n))
    seed_rng = np.random.default_rng(12)
    seeds = [seed_rng.integers(0, v.shape[0], size=(resamples, v.shape[0])) for v in per_seed]
    for b in range(resamples):
        for g, values in enumerate(per_seed):
            per_case = values[seeds[g][b]].mean(axis=0)  # [n, k]: drawn seeds averaged
            for s in range(masks.shape[1]):
                drawn = cases[b][masks[cases[b], s]]
                expected = per_case[drawn].mean(axis=0) if drawn.size else np.full(2, np.nan)
                np.testing.assert_allclose(got[b, s, g], expected, rtol=1e-12)


def test_two_level_bootstrap_with_one_seed_is_the_case_bootstrap():
    rng = np.random.default_rng(5)
    values = rng.random((60, 3))
    masks = np.column_stack([rng.random(60) < 0.4, np.ones(60, bool)])
    one = stats.two_level_bootstrap_means([values[None, :, :]], masks, 25,
                                          np.random.default_rng(1), np.random.default_rng(2))  # fmt: skip
    cases = stats.bootstrap_subset_means(values, masks, 25, np.random.default_rng(1))
    np.testing.assert_array_equal(one[:, :, 0, :], cases)


def test_two_level_bootstrap_variance_has_the_seed_component():
    """Closed form: with per-case values x_si = mu_s (constant over cases), the case level adds
    nothing and the resampled mean is the mean of S draws from {mu_s}: its variance is
    var_pop(mu) / S."""
    mu = np.array([0.1, 0.4, 0.2, 0.7])
    values = np.repeat(mu[:, None, None], 50, axis=1)  # [S, n, 1]
    masks = np.ones((50, 1), bool)
    got = stats.two_level_bootstrap_means([values], masks, 20_000, np.random.default_rng(0),
                                          np.random.default_rng(1))[:, 0, 0, 0]  # fmt: skip
    assert got.mean() == pytest.approx(mu.mean(), abs=3e-3)
    assert got.var() == pytest.approx(mu.var() / mu.size, rel=0.05)


def _two_seed_runs(root: Path, second_effect: float) -> Path:
    for seed in (0, 1):
        make_run(root, f"generic-{seed}", loss="generic", seed=seed)
    make_run(root, "dynamic-0", loss="dynamic", seed=0, effect={"Film-Noir": 0.45})
    make_run(root, "dynamic-1", loss="dynamic", seed=1, effect={"Film-Noir": second_effect})
    return root


def test_report_ci_is_the_two_level_bootstrap_recomputed_by_hand(tmp_path):
    root = _two_seed_runs(tmp_path, 0.25)
    resamples = 200
    result = report([root], domains=["Film-Noir"], metrics=["recall@10"], bootstrap=resamples)
    cell = _cell(result, "Film-Noir")
    per_seed = {g: np.array([[v for v, _ in _cases(root / f"{g}-{s}").values()] for s in (0, 1)])
                for g in ("generic", "dynamic")}  # fmt: skip
    domains = [d for _, d in _cases(root / "generic-0").values()]
    in_noir = np.array(["Film-Noir" in d for d in domains])
    # the report's streams: (seed 0, crc32 of "bootstrap/target" and "bootstrap-seeds/target")
    case_rng = np.random.default_rng([0, zlib.crc32(b"bootstrap/target")])
    seed_rng = np.random.default_rng([0, zlib.crc32(b"bootstrap-seeds/target")])
    n = in_noir.size
    cases = case_rng.integers(0, n, size=(resamples, n))
    seeds = {g: seed_rng.integers(0, 2, size=(resamples, 2)) for g in ("generic", "dynamic")}
    lifts = []
    for b in range(resamples):
        drawn = cases[b][in_noir[cases[b]]]
        means = {g: per_seed[g][seeds[g][b]].mean(axis=0)[drawn].mean() for g in per_seed}
        lifts.append((means["dynamic"] - means["generic"]) / means["generic"])
    tail = (1 - 0.95) / 2  # as computed in float (a hair above 0.025: B * tail is not 5)
    low, high = np.quantile(lifts, [tail, 1 - tail], method="inverted_cdf")
    assert cell.lift_low == pytest.approx(low, rel=1e-12)
    assert cell.lift_high == pytest.approx(high, rel=1e-12)
    assert any("two-level percentile bootstrap" in n for n in result.tables[0].footnotes)


@pytest.mark.parametrize("second_effect", [0.25, -0.15])
def test_significance_needs_the_same_sign_in_every_seed_pair(tmp_path, second_effect):
    root = _two_seed_runs(tmp_path, second_effect)
    result = report([root], domains=["Film-Noir"], metrics=["recall@10"], bootstrap=100)
    cell = _cell(result, "Film-Noir")
    noir = {}
    for name in ("generic-0", "generic-1", "dynamic-0", "dynamic-1"):
        values = [v for v, d in _cases(root / name).values() if "Film-Noir" in d]
        noir[name] = sum(values) / len(values)
    pairs = [(noir[f"dynamic-{i}"] - noir[f"generic-{j}"]) / noir[f"generic-{j}"]
             for i in (0, 1) for j in (0, 1)]  # fmt: skip
    assert cell.seed_lift_min == pytest.approx(min(pairs), rel=1e-12)
    assert cell.seed_lift_max == pytest.approx(max(pairs), rel=1e-12)
    assert cell.p < 1e-3  # the pooled test passes in both cases
    consistent = all(p > 0 for p in pairs)
    assert cell.sign_consistent is consistent and cell.significant is consistent
    md = result.render("md")
    assert ("!" in md.split("## Cohort")[1].split("\n- ")[0]) is not consistent
    assert "seed lifts recall@10 %" in md


def test_one_seed_footnote_says_the_ci_ignores_seed_variance(one_seed):
    result = report([one_seed], domains=["Film-Noir"], bootstrap=20)
    assert any("the CI ignores seed variance" in n for n in result.tables[0].footnotes)
    assert _cell(result, "Film-Noir").sign_consistent is None


# ------------------------------------------------------------------ matched settings


def test_groups_trained_with_another_lr_are_refused_naming_lr(tmp_path, capsys):
    make_run(tmp_path, "generic", loss="generic", seed=0, lr=0.001)
    make_run(tmp_path, "dynamic", loss="dynamic", seed=0, lr=0.002)
    assert main(["report", str(tmp_path), "--bootstrap", "20"]) == 2
    err = capsys.readouterr().err
    assert "train.lr 0.002 vs 0.001" in err and "--allow-mismatch" in err
    out = tmp_path / "r.md"
    assert main(["report", str(tmp_path), "--bootstrap", "20", "--allow-mismatch",
                 "--out", str(out)]) == 0  # fmt: skip
    assert "Settings that differ between groups (--allow-mismatch): sasrec+dynamic vs " \
           "sasrec+generic: train.lr 0.002 vs 0.001" in out.read_text()  # fmt: skip


def test_loss_settings_label_seed_and_operational_keys_may_differ(tmp_path):
    make_run(tmp_path, "generic", loss="generic", seed=0)
    dynamic = make_run(tmp_path, "dynamic", loss="dynamic", seed=3, label="mine")
    config = json.loads((dynamic / "config.json").read_text())
    config["loss"]["w_max"] = 5.0
    config["train"].update(device="cuda", threads=4)
    config["dataset"]["path"] = "/elsewhere"
    (dynamic / "config.json").write_text(json.dumps(config))
    result = report([tmp_path], bootstrap=10)
    assert [g.label for g in result.groups] == ["sasrec+generic", "mine"]
    config["model"]["name"] = "bert4rec"
    (dynamic / "config.json").write_text(json.dumps(config))
    with pytest.raises(UsageError, match="model.name 'bert4rec' vs 'sasrec'"):
        report([tmp_path], bootstrap=10)


# ------------------------------------------------------------------ runs: status and names


def test_unfinished_runs_are_marked_and_never_silently_the_baseline(tmp_path, capsys):
    make_run(tmp_path, "generic", loss="generic", seed=0, finished=False)
    make_run(tmp_path, "dynamic", loss="dynamic", seed=0)
    with pytest.raises(UsageError, match="baseline group sasrec\\+generic holds unfinished"):
        report([tmp_path], bootstrap=10)
    result = report([tmp_path], baseline="sasrec+generic", bootstrap=10)
    assert any("unfinished" in w for w in result.warnings)
    assert "sasrec+generic (baseline) (unfinished)" in result.render("md")
    (tmp_path / "generic" / "train_done.json").write_text("{}")
    (tmp_path / "dynamic" / "train_done.json").unlink()
    out = tmp_path / "r.md"
    assert main(["report", str(tmp_path), "--bootstrap", "10", "--out", str(out)]) == 0
    assert "group sasrec+dynamic holds unfinished runs" in capsys.readouterr().err
    text = out.read_text()
    assert "sasrec+dynamic (unfinished)" in text and "unfinished: 1 of 1 runs" in text


def test_skipped_runs_are_listed_with_their_split(tmp_path, monkeypatch, capsys):
    ratio = make_run(tmp_path / "runs", "ratio", loss="generic", seed=0, split_scheme="ratio",
                     split_fingerprint="fp-ratio")  # fmt: skip
    old = (ratio / "metrics.json").stat().st_mtime - 100
    os.utime(ratio / "metrics.json", (old, old))
    make_run(tmp_path / "runs", "a", loss="generic", seed=0)
    make_run(tmp_path / "runs", "b", loss="dynamic", seed=0)
    monkeypatch.chdir(tmp_path)
    assert main(["report", "--bootstrap", "10"]) == 0
    out = capsys.readouterr().out
    assert "Skipped:" in out and "runs/ratio [split ratio]: another dataset or split" in out
    assert "1 run(s) skipped" in out
    assert "runs/a [split loo] (seed 0)" in out


# ------------------------------------------------------------------ names and width


def test_unknown_domains_list_the_valid_names_close_matches_first(one_seed, capsys):
    with pytest.raises(UsageError) as caught:
        report([one_seed], domains=["rock", "Horor"])
    message = str(caught.value)
    assert "unknown domains 'rock', 'Horor'" in message and "did you mean Horror" in message
    valid = message.split("valid names: ")[1].split(", ")
    assert valid[0] == "Horror" and sorted(valid) == sorted(DOMAINS)
    assert main(["report", str(one_seed), "--domains", "rock"]) == 2
    err = capsys.readouterr().err
    assert "unknown domain 'rock'" in err and "Film-Noir" in err and "\n" not in err.strip()
    with pytest.raises(UsageError, match="--family: unknown domain 'Noir'.*Film-Noir"):
        report([one_seed], family=["Noir"])


def test_domains_accept_commas_as_train_does(one_seed, tmp_path):
    out = tmp_path / "r.csv"
    assert main(["report", str(one_seed), "--domains", "Film-Noir,Horror", "--format", "csv",
                 "--bootstrap", "10", "--out", str(out)]) == 0  # fmt: skip
    assert {r["domain"] for r in csv.DictReader(io.StringIO(out.read_text()))} == {
        "Film-Noir", "Horror", "overall"}  # fmt: skip


def test_zero_over_zero_lift_prints_a_dash(tmp_path):
    for loss in ("generic", "dynamic"):
        make_run(tmp_path, loss, loss=loss, seed=0, base_rate={"Western": 0.0},
                 effect={"Film-Noir": 0.1})  # fmt: skip
    result = report([tmp_path], domains=["Western", "Film-Noir"], metrics=["recall@10"],
                    bootstrap=20)  # fmt: skip
    cell = _cell(result, "Western")
    assert cell.mean == 0 and np.isnan(cell.lift)
    row = next(x for x in result.render("md").splitlines() if x.startswith("| Western")
               and GROUP in x)  # fmt: skip
    assert "+0.0% [+0.0, +0.0]" not in result.render("md")
    assert row.split("|")[5].strip() == "-"
    assert "+0.0% [+0.0, +0.0]" not in console_text(result)


def _long_labelled(tmp_path) -> Path:
    root = tmp_path / ("a-rather-long-folder-name-for-runs-" * 3)
    for seed in (0, 1):
        make_run(root, f"g{seed}", loss="generic", seed=seed)
        make_run(root, f"d{seed}", loss="dynamic", seed=seed, effect={"Film-Noir": 0.2},
                 label="sasrec+dynamic-with-a-long-label",
                 weights={d: 2.0 for d in DOMAINS})  # fmt: skip
    return root


def test_console_report_fits_100_columns(tmp_path, capsys):
    root = _long_labelled(tmp_path)
    result = report([root], domains=DOMAINS, cohorts=["target", "power"], bootstrap=20)
    text = console_text(result, 100)
    assert max(len(line) for line in text.splitlines()) <= 100
    assert "target cohort: recall@10" in text and "seeds %" in text
    assert main(["report", str(root), "--bootstrap", "20", "--allow-mismatch"]) == 0
    out = capsys.readouterr().out
    assert "Film-Noir" in out and max(len(line) for line in out.splitlines()) <= 100
    assert re.search(r"sasrec\+dynamic-with-a-long-label +sasrec +dynamic +ce", out)


def test_quickstart_prints_the_report_within_100_columns(tmp_path, capsys, monkeypatch):
    import dwrec.quickstart as quickstart_module

    root = _long_labelled(tmp_path)
    result = report([root], cohorts=["target", "power"], bootstrap=20)

    def fake_quickstart(out, **kwargs):
        return quickstart_module.QuickstartResult(root, [root], root / "report.md",
                                                  result.render("md"), [], report=result)  # fmt: skip

    monkeypatch.setattr(quickstart_module, "quickstart", fake_quickstart)
    assert main(["quickstart", "--out", str(tmp_path / "q")]) == 0
    out = capsys.readouterr().out
    assert "power cohort: ndcg@10" in out
    report_part = out.split("dataset:  ")[0]
    assert max(len(line) for line in report_part.splitlines()) <= 100


def test_cli_family_takes_several_values_before_the_runs(one_seed, capsys):
    assert main(["report", "--family", "Film-Noir", "Horror", str(one_seed), "--format", "json",
                 "--bootstrap", "10", "--domains", "Film-Noir"]) == 0  # fmt: skip
    data = json.loads(capsys.readouterr().out)
    assert data["settings"]["family"] == ["Film-Noir", "Horror"]
    assert data["tables"][0]["families"][0] == ["confirmatory", ["Film-Noir", "Horror"], 4]


# ------------------------------------------------------------------ --effect


def _compared_cells(result) -> list[dict]:
    """Every compared cell of the report's JSON, with its domain and metric."""
    data = json.loads(result.render("json"))
    return [
        dict(cell, domain=row["domain"], metric=metric)
        for table in data["tables"]
        for row in table["rows"]
        if not row["baseline"]
        for metric, cell in row["cells"].items()
        if cell["lift"] is not None
    ]


def test_effect_marks_the_lifts_whose_ci_holds_both_0_and_that_lift(one_seed):
    plain = report([one_seed], bootstrap=50, domains=DOMAINS)
    marked = report([one_seed], bootstrap=50, domains=DOMAINS, effect=0.3)
    cells = _compared_cells(marked)
    # recomputed from the JSON's own fields: not significant, low <= 0 <= 0.3 <= high
    expected = [
        not c["significant"] and float(c["lift_low"]) <= 0 and float(c["lift_high"]) >= 0.3
        for c in cells
    ]
    assert [c["undecided"] for c in cells] == expected
    assert any(expected) and not all(expected), "the fixture should give both kinds"
    assert all(c["undecided"] is None for c in _compared_cells(plain))
    # the same numbers otherwise: --effect marks, it does not change a test
    for a, b in zip(_compared_cells(plain), cells, strict=True):
        assert (a["lift"], a["p"], a["significant"]) == (b["lift"], b["p"], b["significant"])
    md = marked.render("md")
    assert md.count("] ?") == sum(expected) and "] ?" not in plain.render("md")
    assert "? (--effect +30.0%): not significant, and the CI holds both 0 and that lift" in md
    rows = list(csv.DictReader(io.StringIO(marked.render("csv"))))
    assert sum(r["undecided"] == "True" for r in rows) == sum(expected)
    console = console_text(marked)
    assert console.count("] ?") == sum(expected)


def test_effect_must_be_a_lift_other_than_zero(one_seed, capsys):
    for bad in ("0", "-1", "nan"):
        assert main(["report", str(one_seed), "--effect", bad]) != 0
        assert "--effect must be a lift other than 0 and above -1" in capsys.readouterr().err


# ------------------------------------------------------------------ unreachable cells


def test_a_cell_with_too_few_nonzero_differences_is_marked_unreachable(tmp_path):
    """A domain almost nobody hits: its cells' non-zero differences, counted here from the
    per-case values, are so few that no Wilcoxon p can fall below alpha. With 200 cases and
    zeros among them the test is the normal approximation, whose smallest p on n non-zero
    differences is 2 Phi(-sqrt n) (all tied, one sign): at least 0.05 up to n = 3."""
    root = tmp_path / "runs"
    rare = {"Film-Noir": 0.002, "Documentary": 0.012}
    make_run(root, "generic-0", loss="generic", seed=0, base_rate=rare)
    make_run(root, "dynamic-0", loss="dynamic", seed=0, base_rate=rare,
             effect={"Film-Noir": 0.003})  # fmt: skip
    result = report([root], bootstrap=50, domains=DOMAINS)
    cells = _compared_cells(result)
    for metric in ("recall@10", "ndcg@10"):
        group, domains = _seed_averaged([root / "dynamic-0"], metric)
        base, _ = _seed_averaged([root / "generic-0"], metric)
        for domain in DOMAINS:
            inside = np.array([domain in d for d in domains])
            count = int(np.count_nonzero(group[inside] != base[inside]))
            cell = next(c for c in cells if c["domain"] == domain and c["metric"] == metric)
            assert cell["nonzero"] == count, (domain, metric)
            floor = 2 * scipy.stats.norm.sf(np.sqrt(count))
            assert cell["unreachable"] == (0 < count and floor >= 0.05), (domain, count)
    unreachable = [c for c in cells if c["unreachable"]]
    assert unreachable and len(unreachable) < len(cells), "the fixture should give both kinds"
    assert all(not c["significant"] and c["p_raw"] >= 0.05 for c in unreachable)
    md = result.render("md")
    assert md.count("°") == len(unreachable) + 1  # each marked p, and the footnote
    assert "° after p: the tested cases hold so few non-zero paired differences" in md
    rows = list(csv.DictReader(io.StringIO(result.render("csv"))))
    assert sum(r["unreachable"] == "True" for r in rows) == len(unreachable)
    assert r"$^\circ$" in result.render("latex") and "°" not in result.render("latex")
    # the sign-flip test enumerates these few: its floor is 2 / 2^n, at least 0.05 up to n = 5
    flips = report([root], bootstrap=50, domains=DOMAINS, test="permutation", permutations=200)
    for c in _compared_cells(flips):
        assert c["unreachable"] == (0 < c["nonzero"] <= 5), (c["domain"], c["nonzero"])
    assert "(the sign-flip test on n of them: at least 2 / 2^n" in flips.render("md")
