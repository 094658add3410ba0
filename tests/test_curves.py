"""Training curves (minillama/curves.py): a real PNG of the loss per step and the dev metric per
epoch, the best epoch marked, the one whose weights the run kept; and <out>-curves.png from a
training run through the CLI."""
import os
import re

import matplotlib
matplotlib.use("Agg")  # files only
import matplotlib.pyplot as plt  # noqa: E402
import pytest

from minillama.cli import main
from minillama.curves import curves_path, plot_curves
from minillama.train import EpochResult
from conftest import course_argv, data_slice

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SIZE = (396, 1100)  # figsize (10, 3.6) inches at 110 dpi


@pytest.fixture
def figures(monkeypatch):
    """The figures plot_curves draws, kept open for inspection."""
    kept, close = [], plt.close
    monkeypatch.setattr(plt, "close", lambda fig=None: kept.append(fig))
    yield kept
    for fig in kept:
        close(fig)


def marked(fig):
    """(the best epoch's (x, y) marked on the dev panel, the legend's text)."""
    dev = fig.axes[1]
    (x, y), = dev.collections[0].get_offsets().tolist()
    return (x, y), dev.get_legend().get_texts()[0].get_text()


def history(metric, by_loss=False, steps=4):
    return [EpochResult(e, 1.0, None, step_losses=[2.0 - 0.1 * (e * steps + i) for i in range(steps)],
                        **({"dev_loss": m} if by_loss else {"dev_acc": m})) for e, m in enumerate(metric)]


def test_curves_png_is_real_and_marks_the_best_epoch(tmp_path, figures):
    path = str(tmp_path / "c.png")
    runs = history([0.3, 0.55, 0.5])
    plot_curves(runs, path, "lora on sst")
    with open(path, "rb") as f:
        assert f.read(8) == PNG_MAGIC
    assert plt.imread(path).shape == (*SIZE, 4)
    fig, = figures
    assert marked(fig) == ((1, 0.55), "best: epoch 1 (0.550)")
    loss, = fig.axes[0].get_lines()[-1:]  # the loss line comes after the epoch boundaries
    assert loss.get_xdata().tolist() == list(range(1, 13))
    assert loss.get_ydata().tolist() == [l for r in runs for l in r.step_losses]
    assert fig.axes[1].get_ylabel() == "dev accuracy" and fig._suptitle.get_text() == "lora on sst"


def test_a_dev_loss_marks_its_lowest_epoch(tmp_path, figures):
    plot_curves(history([3.0, 2.5, 2.7, 2.6], by_loss=True), str(tmp_path / "c.png"))
    assert marked(figures[0]) == ((1, 2.5), "best: epoch 1 (2.500)")
    assert figures[0].axes[1].get_ylabel() == "dev loss"


def test_the_marked_epoch_is_the_one_fit_keeps_under_min_delta(tmp_path, figures):
    """fit keeps a later epoch only when it beats the kept one by more than --min_delta;
    ties keep the first."""
    plot_curves(history([0.50, 0.52, 0.50]), str(tmp_path / "a.png"), min_delta=0.05)
    plot_curves(history([0.50, 0.58, 0.60]), str(tmp_path / "b.png"), min_delta=0.05)
    plot_curves(history([0.40, 0.40]), str(tmp_path / "c.png"))
    plot_curves(history([3.0, 2.98, 2.5], by_loss=True), str(tmp_path / "d.png"), min_delta=0.1)
    assert [marked(f)[0][0] for f in figures] == [0, 1, 0, 2]


def test_curves_path_sits_beside_the_output():
    assert curves_path("out/sst-dev-lora-output.txt") == "out/sst-dev-lora-output-curves.png"
    assert curves_path("mmlu-prefix-adapter") == "mmlu-prefix-adapter-curves.png"


@pytest.mark.slow
def test_a_training_run_writes_its_curves(tmp_path, capsys, figures, tiny_ckpt):  # noqa: F811
    data = data_slice(tmp_path, "sst", n=24)
    dev_out = str(tmp_path / "dev.txt")
    argv = course_argv("lora", tiny_ckpt, data, "--epochs", "3", "--batch_size", "8", "--lr", "1e-2",
                       "--max_sentence_len", "32", "--min_delta", "0.05", "--dev_out", dev_out,
                       "--test_out", str(tmp_path / "test.txt"))
    assert main(argv) == 0
    out = capsys.readouterr().out
    path = str(tmp_path / "dev-curves.png")
    assert f"wrote training curves to {path}" in out
    with open(path, "rb") as f:
        assert f.read(8) == PNG_MAGIC
    assert plt.imread(path).shape == (*SIZE, 4)
    fig, = figures
    epochs = [float(a) for a in re.findall(r"^epoch \d+: .* dev acc :: ([0-9.]+)$", out, re.M)]
    final = float(re.search(r"^dev acc :: ([0-9.]+)$", out, re.M).group(1))
    assert len(epochs) == 3 and len(fig.axes[0].get_lines()[-1].get_xdata()) == 3 * 3  # 3 steps an epoch
    assert [round(y, 3) for y in fig.axes[1].get_lines()[0].get_ydata()] == epochs
    (x, y), label = marked(fig)
    assert round(y, 3) == final == epochs[int(x)]  # marked: the epoch whose weights wrote the predictions
    assert os.path.basename(path) in os.listdir(tmp_path)
