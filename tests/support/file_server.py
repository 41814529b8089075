"""A loopback HTTP file server with injectable faults, and builders for small
files in the real dataset formats (LSBG .npy, GalaxyMNIST gzip-HDF5).

    files, images, labels = make_lsbg_files([3, 2])
    with FileServer(files) as server:
        spec = lsbg_spec(server, files)
        samples = load_dataset("lsbg", spec, cache_dir=tmp_path)
"""

from __future__ import annotations

import gzip
import hashlib
import io
import socket
import struct
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import numpy as np


def corrupted(data: bytes) -> bytes:
    """What ``FileServer.corrupt`` serves: same length, first byte flipped."""
    return bytes([data[0] ^ 0xFF]) + data[1:] if data else b"\0"


class FileServer:
    """Serve ``files`` (name -> bytes) at ``http://127.0.0.1:PORT/NAME`` from a daemon thread."""

    def __init__(self, files: dict[str, bytes] | None = None) -> None:
        self.files: dict[str, bytes] = dict(files or {})
        self.hits: Counter[str] = Counter()
        self._faults: dict[str, tuple[str, Any]] = {}
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.base_url = ""

    # -- lifecycle
    def start(self) -> FileServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                owner._serve(self)

            def log_message(self, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        host, port = self._httpd.server_address[:2]
        self.base_url = f"http://{host}:{port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Shut down and close the port (later requests get 'connection refused')."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> FileServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- content and faults
    def url(self, name: str) -> str:
        return f"{self.base_url}/{quote(name)}"

    def add(self, name: str, data: bytes) -> str:
        """Serve ``data`` as ``name``; return its URL."""
        self.files[name] = data
        return self.url(name)

    def cut_off(self, name: str, fraction: float = 0.5) -> None:
        """Send the full Content-Length, then close after ``fraction`` of the body."""
        self._faults[name] = ("cut_off", fraction)

    def reset(self, name: str, fraction: float = 0.5) -> None:
        """Send the full Content-Length, then reset the connection (TCP RST) after ``fraction``."""
        self._faults[name] = ("reset", fraction)

    def corrupt(self, name: str) -> None:
        """Serve ``corrupted(data)`` instead of the real bytes."""
        self._faults[name] = ("corrupt", None)

    def status(self, name: str, code: int = 404) -> None:
        """Answer requests for ``name`` with HTTP status ``code``."""
        self._faults[name] = ("status", code)

    def clear(self, name: str | None = None) -> None:
        """Remove the fault on ``name`` (all faults if ``None``)."""
        if name is None:
            self._faults.clear()
        else:
            self._faults.pop(name, None)

    def _serve(self, req: BaseHTTPRequestHandler) -> None:
        name = unquote(urlsplit(req.path).path.lstrip("/"))
        with self._lock:
            self.hits[name] += 1
        kind, arg = self._faults.get(name, ("", None))
        if name not in self.files:
            req.send_error(404, "Not Found")
            return
        if kind == "status":
            req.send_error(int(arg))
            return
        data = self.files[name]
        body = corrupted(data) if kind == "corrupt" else data
        req.send_response(200)
        req.send_header("Content-Type", "application/octet-stream")
        req.send_header("Content-Length", str(len(body)))
        req.end_headers()
        if kind in ("cut_off", "reset"):
            body = body[: int(len(body) * float(arg))]
            req.close_connection = True
        req.wfile.write(body)
        req.wfile.flush()
        if kind == "reset":  # linger 0: close() sends RST instead of FIN
            req.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            req.connection.close()


# ------------------------------------------------------------ format builders


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def lsbg_image_name(i: int) -> str:
    """File name of the i-th (0-based) LSBG image file: ``X_data_{i+1}.npy``."""
    return f"X_data_{i + 1}.npy"


def make_lsbg_files(
    n_per_file: list[int], *, dtype: str = "uint8", seed: int = 0
) -> tuple[dict[str, bytes], np.ndarray, np.ndarray]:
    """LSBG-format files ``X_data_1.npy``... + ``y_labels.npy`` (float64 0/1).

    Returns (files, images, labels): the images as the loader must return them
    (uint8 NHWC; float files hold values in [0, 1] that truncate to these) and
    the int64 labels.
    """
    rng = np.random.default_rng(seed)
    n = sum(n_per_file)
    labels = rng.integers(0, 2, size=n)
    files: dict[str, bytes] = {}
    expected = []
    for i, k in enumerate(n_per_file):
        if dtype == "uint8":
            arr = rng.integers(0, 256, size=(k, 64, 64, 3), dtype=np.uint8)
            expected.append(arr)
        elif dtype == "float":
            arr = rng.random(size=(k, 64, 64, 3))
            arr[..., 0, 0, 0] = 1.0  # the extremes round-trip too
            arr[..., 0, 1, 0] = 0.0
            expected.append((arr * 255).astype(np.uint8))
        else:
            raise ValueError(f"dtype: expected 'uint8' or 'float', found {dtype!r}")
        files[lsbg_image_name(i)] = npy_bytes(arr)
    files["y_labels.npy"] = npy_bytes(labels.astype(np.float64))
    images = np.concatenate(expected) if expected else np.empty((0, 64, 64, 3), np.uint8)
    return files, images, labels.astype(np.int64)


def lsbg_spec(server: FileServer, files: dict[str, bytes], **extra: Any) -> dict[str, Any]:
    """An ``lsbg-npy`` spec (git-sha1 checksums) for ``files``, which ``server`` then serves.

    Images are the ``X_data_*.npy`` names in numeric order; labels ``y_labels.npy``.
    """
    images = sorted((f for f in files if f.startswith("X_data_")),
                    key=lambda f: int(f[len("X_data_"):-len(".npy")]))
    entries = {}
    for fname, data in files.items():
        entries[fname] = {"url": server.add(fname, data), "checksum": f"git-sha1:{git_sha1(data)}"}
    return {"format": "lsbg-npy", "images": images, "labels": "y_labels.npy",
            "files": entries, **extra}


def galaxy_gz_bytes(images: np.ndarray, labels: np.ndarray) -> bytes:
    """gzip(HDF5 with datasets ``images`` and ``labels``) of arbitrary arrays."""
    import h5py

    buf = io.BytesIO()
    with h5py.File(buf, "w") as fh:
        fh.create_dataset("images", data=images)
        fh.create_dataset("labels", data=labels)
    return gzip.compress(buf.getvalue(), compresslevel=1, mtime=0)


def make_galaxy_mnist_gz(n: int, *, seed: int = 0) -> tuple[bytes, np.ndarray, np.ndarray]:
    """A GalaxyMNIST-format ``.hdf5.gz`` of ``n`` images; returns (gz, images, labels)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 64, 64, 3), dtype=np.uint8)
    labels = rng.integers(0, 4, size=n).astype(np.uint8)
    return galaxy_gz_bytes(images, labels), images, labels


def galaxy_spec(server: FileServer, gz_bytes: bytes, *, file: str = "train_dataset.hdf5.gz",
                **extra: Any) -> dict[str, Any]:
    """A ``galaxy-mnist-hdf5-gz`` spec (md5 checksum) for ``gz_bytes``, which ``server`` then serves."""
    return {"format": "galaxy-mnist-hdf5-gz", "file": file,
            "files": {file: {"url": server.add(file, gz_bytes),
                             "checksum": f"md5:{hashlib.md5(gz_bytes).hexdigest()}"}},
            **extra}
