"""``dwrec train``: dataset dir -> run dir (a thin layer over :func:`dwrec.train.trainer.train`).

Every flag defaults to "not given" (``None``) so that the library can tell flags from TOML
values from defaults: flags override ``--config FILE.toml``, which overrides the defaults.
"""

from __future__ import annotations

import re
from pathlib import Path

import typer

from dwrec.commands._common import THREADS_HELP, console, err_console, next_step, set_threads
from dwrec.errors import UsageError

MODEL = "Model"
LOSS = "Loss"
TRAINING = "Training"


def _floats(values: list[str] | None, flag: str) -> list[float] | None:
    """``["0.9,0.6", "0.3"]`` -> ``[0.9, 0.6, 0.3]`` (comma/space separated or repeated)."""
    if not values:
        return None
    parts = [p for value in values for p in re.split(r"[,\s]+", value.strip()) if p]
    try:
        return [float(p) for p in parts]
    except ValueError:
        raise UsageError(f"{flag}: expected numbers, got {' '.join(values)!r}") from None


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train_command(
        dataset: str = typer.Option(
            None, "--dataset", help="Dataset dir or prepared name \\[default: the latest prepared]."
        ),
        model: str = typer.Option(
            None, "--model", help="sasrec, bert4rec, gru4rec, pinnerformer, pop \\[sasrec]."
        ),
        loss: str = typer.Option(
            None,
            "--loss",
            help="Objective (ce, sampled-softmax, bce, gbce, dsl, mml) or domain weighting "
            "(generic, fixed, dynamic, adc; composed with --objective) \\[ce].",
        ),
        out: Path = typer.Option(
            None, "--out", help="Run dir \\[default: runs/<dataset>-<model>-<loss>-s<seed>]."
        ),
        config: Path = typer.Option(
            None, "--config", help="TOML file of options; flags override it."
        ),
        resume: Path = typer.Option(
            None, "--resume", help="Continue the stopped run RUN from its last.pt."
        ),
        label: str = typer.Option(None, "--label", help="Label in reports \\[<model>+<loss>]."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or epoch lines."),
        # model
        hidden: int = typer.Option(
            None, "--hidden", help="Embedding size [64].", rich_help_panel=MODEL
        ),
        layers: int = typer.Option(None, "--layers", help="Blocks [2].", rich_help_panel=MODEL),
        heads: int = typer.Option(
            None, "--heads", help="Attention heads [2].", rich_help_panel=MODEL
        ),
        ffn: int = typer.Option(
            None, "--ffn", help="Feed-forward width [4 x hidden].", rich_help_panel=MODEL
        ),
        dropout: float = typer.Option(
            None, "--dropout", help="Dropout [0.2].", rich_help_panel=MODEL
        ),
        max_len: int = typer.Option(
            None, "--max-len", help="Sequence length [200].", rich_help_panel=MODEL
        ),
        mask_prob: float = typer.Option(
            None, "--mask-prob", help="bert4rec masking [0.2].", rich_help_panel=MODEL
        ),
        # training
        epochs: int = typer.Option(
            None, "--epochs", help="Maximum epochs [100].", rich_help_panel=TRAINING
        ),
        batch_size: int = typer.Option(
            None, "--batch-size", help="Sequences per batch [128].", rich_help_panel=TRAINING
        ),
        lr: float = typer.Option(
            None, "--lr", help="AdamW learning rate [0.001].", rich_help_panel=TRAINING
        ),
        weight_decay: float = typer.Option(
            None,
            "--weight-decay",
            help="AdamW weight decay on matrices [0].",
            rich_help_panel=TRAINING,
        ),
        seed: int = typer.Option(None, "--seed", help="Random seed [0].", rich_help_panel=TRAINING),
        split: str = typer.Option(
            None, "--split", help="loo or ratio \\[loo].", rich_help_panel=TRAINING
        ),
        patience: int = typer.Option(
            None,
            "--patience",
            help="Stop after this many epochs without a better valid NDCG@10 [5].",
            rich_help_panel=TRAINING,
        ),
        device: str = typer.Option(
            None, "--device", help="auto, cpu, cuda or cuda:N \\[auto].", rich_help_panel=TRAINING
        ),
        compile: bool = typer.Option(
            None,
            "--compile/--no-compile",
            help="torch.compile the model \\[no].",
            rich_help_panel=TRAINING,
        ),
        amp: bool = typer.Option(
            None, "--amp/--no-amp", help="bf16 autocast on CUDA \\[amp].", rich_help_panel=TRAINING
        ),
        eval_batch_size: int = typer.Option(
            None, "--eval-batch-size", help="Validation batch size [512].", rich_help_panel=TRAINING
        ),
        threads: int = typer.Option(None, "--threads", help=THREADS_HELP, rich_help_panel=TRAINING),
        nproc: int = typer.Option(
            None,
            "--nproc",
            help="Train with N local processes (DistributedDataParallel: gloo on CPU, one GPU "
            "per process on CUDA); --batch-size stays the global batch [1].",
            rich_help_panel=TRAINING,
        ),
        # loss
        objective: str = typer.Option(
            None,
            "--objective",
            help="Objective under a domain weighting \\[ce].",
            rich_help_panel=LOSS,
        ),
        negatives: int = typer.Option(
            None, "--negatives", help="Sampled negatives [256].", rich_help_panel=LOSS
        ),
        softmax_chunk: int = typer.Option(
            None,
            "--softmax-chunk",
            help="ce: items per logits chunk, bounding memory; 0 never chunks "
            "\\[auto: chunk above 2^28 logits].",
            rich_help_panel=LOSS,
        ),
        gbce_t: float = typer.Option(
            None, "--gbce-t", help="gBCE calibration t [0.75].", rich_help_panel=LOSS
        ),
        weight_domains: list[str] = typer.Option(
            None,
            "--weight-domains",
            help="Target domains of --loss fixed; repeat the flag or separate with commas/spaces.",
            rich_help_panel=LOSS,
        ),
        fixed_weight: float = typer.Option(
            None, "--fixed-weight", help="Fixed weight [2.0].", rich_help_panel=LOSS
        ),
        ema_beta: float = typer.Option(
            None, "--ema-beta", help="EMA of domain shares [0.9].", rich_help_panel=LOSS
        ),
        weight_alpha: float = typer.Option(
            None, "--weight-alpha", help="(1/f)^alpha [1.0].", rich_help_panel=LOSS
        ),
        weight_scale: str = typer.Option(
            None, "--weight-scale", help="power or log \\[power].", rich_help_panel=LOSS
        ),
        w_min: float = typer.Option(
            None, "--w-min", help="Lower weight bound [0.25].", rich_help_panel=LOSS
        ),
        w_max: float = typer.Option(
            None, "--w-max", help="Upper weight bound [10].", rich_help_panel=LOSS
        ),
        sparsity_signal: str = typer.Option(
            None,
            "--sparsity-signal",
            help="interactions, users or entropy \\[interactions].",
            rich_help_panel=LOSS,
        ),
        multi_domain: str = typer.Option(
            None, "--multi-domain", help="max or mean \\[max].", rich_help_panel=LOSS
        ),
        weight_reduction: str = typer.Option(
            None,
            "--weight-reduction",
            help="normalized or mean \\[normalized].",
            rich_help_panel=LOSS,
        ),
        dsl_lh: float = typer.Option(
            None, "--dsl-lh", help="DSL hardness scale [1].", rich_help_panel=LOSS
        ),
        dsl_ls: float = typer.Option(
            None, "--dsl-ls", help="DSL similarity scale [1].", rich_help_panel=LOSS
        ),
        dsl_m: int = typer.Option(
            None, "--dsl-m", help="DSL slate size [20].", rich_help_panel=LOSS
        ),
        dsl_t0: float = typer.Option(
            None, "--dsl-t0", help="DSL base temperature [1].", rich_help_panel=LOSS
        ),
        dsl_k: float = typer.Option(
            None, "--dsl-k", help="DSL temperature slope [0.5].", rich_help_panel=LOSS
        ),
        dsl_tmin: float = typer.Option(
            None, "--dsl-tmin", help="DSL min temperature [0.05].", rich_help_panel=LOSS
        ),
        dsl_tmax: float = typer.Option(
            None, "--dsl-tmax", help="DSL max temperature [5].", rich_help_panel=LOSS
        ),
        mml_margins: list[str] = typer.Option(
            None, "--mml-margins", help="MML margins [0.9,0.6,0.3].", rich_help_panel=LOSS
        ),
        mml_weights: list[str] = typer.Option(
            None, "--mml-weights", help="MML weights [1,0.5,0.25].", rich_help_panel=LOSS
        ),
        adc_gamma: float = typer.Option(
            None, "--adc-gamma", help="ADC gamma [1.5].", rich_help_panel=LOSS
        ),
        adc_lr: float = typer.Option(
            None, "--adc-lr", help="ADC weight step size [0.025].", rich_help_panel=LOSS
        ),
    ) -> None:
        """Train a model with a loss on a prepared dataset; writes a run dir.

        The run dir holds config.json (fully resolved), model.pt (best valid NDCG@10),
        last.pt (resume state), log.jsonl (one line per epoch), environment.json and, when
        finished, train_done.json. Ctrl-C saves last.pt; continue with --resume RUN.
        """
        from dwrec.train.trainer import TrainingInterrupted, train

        set_threads(threads)

        options = {
            "label": label, "hidden": hidden, "layers": layers, "heads": heads, "ffn": ffn,
            "dropout": dropout, "max_len": max_len, "mask_prob": mask_prob, "epochs": epochs,
            "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay, "seed": seed,
            "split": split, "patience": patience, "device": device, "compile": compile,
            "amp": amp, "eval_batch_size": eval_batch_size, "objective": objective,
            "softmax_chunk": softmax_chunk,
            "negatives": negatives, "gbce_t": gbce_t, "weight_domains": weight_domains or None,
            "fixed_weight": fixed_weight, "ema_beta": ema_beta, "weight_alpha": weight_alpha,
            "weight_scale": weight_scale, "w_min": w_min, "w_max": w_max,
            "sparsity_signal": sparsity_signal, "multi_domain": multi_domain,
            "weight_reduction": weight_reduction, "dsl_lh": dsl_lh, "dsl_ls": dsl_ls,
            "dsl_m": dsl_m, "dsl_t0": dsl_t0, "dsl_k": dsl_k, "dsl_tmin": dsl_tmin,
            "dsl_tmax": dsl_tmax, "mml_margins": _floats(mml_margins, "--mml-margins"),
            "mml_weights": _floats(mml_weights, "--mml-weights"), "adc_gamma": adc_gamma,
            "adc_lr": adc_lr,
        }  # fmt: skip
        if resume is not None:
            new_run = {"--dataset": dataset, "--model": model, "--loss": loss, "--out": out,
                       "--config": config}  # fmt: skip
            given = [flag for flag, value in new_run.items() if value is not None]
            if given:
                raise UsageError(
                    f"--resume {resume}: {', '.join(given)} cannot be given with --resume "
                    "(a resumed run keeps the settings it started with); to change them, "
                    "start a new run"
                )
        try:
            result = train(
                dataset,
                model=model,
                loss=loss,
                out=out,
                config_file=config,
                resume=resume,
                quiet=quiet,
                console=console,
                nproc=nproc,
                threads=threads,
                **{k: v for k, v in options.items() if v is not None},
            )
        except TrainingInterrupted as stop:
            err_console.print(f"[yellow]{stop}[/]", highlight=False, soft_wrap=True)
            raise typer.Exit(130) from None
        if not quiet and result is not None:
            next_step(f"dwrec evaluate {result.run_dir}")
