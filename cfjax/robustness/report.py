"""robustness.md and the plots of `--mode=attack`; the plotting functions take several models' results
(one run's models, or the models of many runs in experiments/robustness_table.py)."""

import io
import os

from cfjax import storage

_AXES = {"paper": ("step size alpha (x 1/255), epsilon = 10 alpha", 255.0), "linf": ("L-inf epsilon (x 1/255)", 255.0),
         "l2": ("L2 epsilon", 1.0)}


def _fmt(value, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _budget(row: dict) -> str:
    scale = 255 if row["norm"] == "linf" else 1
    unit = "/255" if row["norm"] == "linf" else ""
    if row.get("attack") == "ensemble":  # parameter-free: no step size
        return f"{row['norm']} ε={row['epsilon'] * scale:g}{unit}"
    return f"{row['norm']} ε={row['epsilon'] * scale:g}{unit}, α={row['step_size'] * scale:.3g}{unit}"


def _effort(row: dict) -> str:
    """PGD: iterations × restarts; the ensemble: its iterations, targets, queries and who broke what."""
    if row.get("attack") != "ensemble":
        return f"{row['iterations']} × {row['restarts']}"
    broken = ", ".join(f"{name} {count}" for name, count in row.get("broken_by", {}).items() if count)
    return (f"ensemble: {row['iterations']} it., {row['targets']} targets, {row['queries']} queries"
            + (f" (broken by {broken})" if broken else ""))


def _attack_name(row: dict) -> str:
    return (row["group"] + (f" from {row['source']}" if "source" in row else "")
            + (" (CW margin)" if row["loss"] == "margin" else ""))


def _by_budget(rows: list[dict]) -> list[dict]:
    """Each attack's rows by increasing budget, the attacks in the order they first ran: a config may list its
    budgets in any order, and a table read down a column should not zig-zag."""
    first_seen = {}
    for row in rows:
        first_seen.setdefault((_attack_name(row), row["norm"]), len(first_seen))
    return sorted(rows, key=lambda row: (first_seen[(_attack_name(row), row["norm"])], row["epsilon"]))


def markdown(results: dict) -> str:
    """Clean scores, then every attack per model, then the gradient-masking checks."""
    lines = [f"# Robustness of {results['workdir']} (step {results['step']})", "",
             (f"{results['data']['num_images']} images of {results['data']['source']}; "
              "PGD from a uniform random start, and the AutoAttack-style ensemble (worst case over its members); "
             "accuracy and F1 of the attacked decision."), "",
             ("| model | clean acc | clean F1 | AUROC wrong vs correct: p_fake | … 1 − max softmax | AURC p_fake | "
              "AURC 1 − max softmax |"), "|---|---|---|---|---|---|---|"]
    for name, model in results["models"].items():
        clean, aurc = model["clean"], model["clean"]["aurc"]
        lines.append(f"| {name} | {_fmt(clean['accuracy'])} | {_fmt(clean['f1'])} | "
                     f"{_fmt(clean.get('auroc_p_fake_wrong_vs_correct'))} | "
                     f"{_fmt(clean.get('auroc_max_softmax_wrong_vs_correct'))} | "
                     f"{_fmt(aurc.get('p_fake_clean'))} | {_fmt(aurc.get('max_softmax_clean'))} |")
    for name, model in results["models"].items():
        lines += ["", f"## {name}", "", ("| attack | budget | effort | accuracy | F1 | mean p_fake | "
                                          "AUROC clean vs adv: p_fake | … 1 − max softmax | successful attacks | "
                                          "AUROC clean vs successful: p_fake | … 1 − max softmax |"),
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for row in _by_budget(model["sweeps"]) + model["checks"]:
            lines.append(f"| {_attack_name(row)} | {_budget(row)} | {_effort(row)} | "
                         f"{_fmt(row['accuracy'])} | {_fmt(row['f1'])} | {_fmt(row.get('mean_p_fake'))} | "
                         f"{_fmt(row.get('auroc_p_fake_clean_vs_adversarial'))} | "
                         f"{_fmt(row['auroc_max_softmax_clean_vs_adversarial'])} | "
                         f"{row.get('num_successful', '—')} | "  # absent from results written before it existed
                         f"{_fmt(row.get('auroc_p_fake_clean_vs_successful'))} | "
                         f"{_fmt(row.get('auroc_max_softmax_clean_vs_successful'))} |")
    return "\n".join(lines) + "\n"


def _pyplot():
    """matplotlib without a display (imported here: only the report needs it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, figure, path: str) -> str:
    """The figure as a PNG at `path`, written atomically (a failed write is a StorageError naming it)."""
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format=os.path.splitext(path)[1].lstrip(".") or "png", dpi=110)
    plt.close(figure)
    storage.write_bytes_atomic(path, buffer.getvalue())
    return path


def sweep_curve(model: dict, group: str, drawn: str, field: str) -> tuple[list, list]:
    """One line of the sweep plot: `field` of the clean images at x = 0, then of the rows of `drawn` in
    increasing budget (an attack may run its budgets in any order, e.g. the one an aim needs first); empty
    where no row of `drawn` has `field`."""
    scale = _AXES[group][1]
    rows = [r for r in model["sweeps"] if r["group"] == drawn and field in r]
    points = sorted(((r["step_size"] if group == "paper" else r["epsilon"]) * scale, r[field]) for r in rows)
    if not points:
        return [], []
    return [0.0] + [x for x, _ in points], [model["clean"][field]] + [y for _, y in points]


def plot_sweeps(models: dict, path: str) -> str:
    """Accuracy and F1 against the paper's step size; accuracy against L-inf and L2 budgets; mean p_fake
    against the L-inf budget. `models` maps a label to a model's results."""
    plt = _pyplot()
    panels = [("paper", "accuracy"), ("paper", "f1"), ("linf", "accuracy"), ("l2", "accuracy"),
              ("linf", "mean_p_fake")]
    groups = {"linf": ("linf", "ensemble")}  # the ensemble dashed beside PGD on the L-inf panels
    figure, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.4))
    for ax, (group, field) in zip(axes, panels):
        label_x = _AXES[group][0]
        for index, (label, model) in enumerate(models.items()):  # one colour per model across panels
            for drawn in groups.get(group, (group,)):
                x, y = sweep_curve(model, group, drawn, field)
                if not x:
                    continue
                ax.plot(x, y, marker="o", label=label + (" (ensemble)" if drawn == "ensemble" else ""),
                        color=f"C{index % 10}", linestyle="--" if drawn == "ensemble" else "-")
        ax.set_xlabel(label_x)
        ax.set_ylabel(field.replace("_", " "))
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    return _save(plt, figure, path)


def plot_risk_coverage(models: dict, path: str) -> str:
    """Error rate among kept examples against coverage, abstaining on the most uncertain first."""
    plt = _pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True)
    for ax, mix in zip(axes, ("clean", "clean_and_adversarial")):
        for label, model in models.items():
            for name, curve in model["risk_coverage"].items():
                if name.endswith("_" + mix):
                    ax.plot(curve["coverage"], curve["risk"], label=f"{label}: {name.removesuffix('_' + mix)}")
        ax.set_title(mix.replace("_", " ") + " examples", fontsize=10)
        ax.set_xlabel("coverage")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("risk (error rate of kept)")
    axes[1].legend(fontsize=7)
    return _save(plt, figure, path)


def write(out_dir: str, results: dict) -> dict:
    """robustness.md, robustness.png and risk_coverage.png in `out_dir`; their paths."""
    storage.make_dirs(out_dir)
    paths = {"table": os.path.join(out_dir, "robustness.md")}
    storage.write_text_atomic(paths["table"], markdown(results))
    paths["sweeps"] = plot_sweeps(results["models"], os.path.join(out_dir, "robustness.png"))
    paths["risk_coverage"] = plot_risk_coverage(results["models"], os.path.join(out_dir, "risk_coverage.png"))
    return paths

