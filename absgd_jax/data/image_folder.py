"""Image-folder data sets, from a directory or a zip of ``<class>/<file>`` images, decoded once
and cached as ``.npy`` arrays.

Layout: every image sits in a folder named after its class (``airplane/0000.jpg``); the class
folders may sit below a common prefix (``train/airplane/0000.jpg``). Labels follow the sorted
order of the class-folder names, which for the CIFAR-10 JPEG copy in
``shared/data/cifar10-jpeg`` is the standard CIFAR-10 label order. Files are taken in sorted
order within a class, so the arrays are the same on every machine. Images are converted to RGB
(grey levels repeated, alpha dropped) and must all have one size unless ``image_size`` resizes
them.

Cache. Decoding 50,000 JPEGs takes seconds, so the arrays are saved under
``cache_dir/<name>-<key>/`` (``images.npy``, ``labels.npy``, ``meta.json``) and read back on
the next call. The key is the SHA-256 of the zip's bytes, or for a directory of the sorted list
of (relative path, size, modification time) of its images, so a changed source is decoded
again. The cache entry is written in a temporary directory next to it and moved into place with
one ``os.replace``: a reader sees the whole entry or none of it, and a failed decode (e.g. a
corrupt image) leaves nothing behind. The default cache directory is ``$ABSGD_CACHE`` or else
``~/.cache/absgd_jax``.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from absgd_jax.data.dataset import ArrayDataset

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset(
  {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".ppm", ".tif", ".tiff"}
)
_FORMATS = {
  ".jpg": ["JPEG"],
  ".jpeg": ["JPEG"],
  ".png": ["PNG"],
  ".bmp": ["BMP"],
  ".gif": ["GIF"],
  ".webp": ["WEBP"],
  ".ppm": ["PPM"],
  ".tif": ["TIFF"],
  ".tiff": ["TIFF"],
}
# Bumped whenever the cached arrays would change for the same source, to invalidate old entries.
_CACHE_FORMAT = 1
_CHUNK = 512  # Images per decode task: large enough to amortise the pool's overhead.


def default_cache_dir() -> Path:
  """``$ABSGD_CACHE`` if set, else ``~/.cache/absgd_jax``."""
  env = os.environ.get("ABSGD_CACHE")
  return Path(env).expanduser() if env else Path.home() / ".cache" / "absgd_jax"


def _split_member(name: str) -> tuple[str, str] | None:
  """``(class folder, name)`` of an image member, or ``None`` for anything else.

  Plain string operations: this runs once per file, 50,000 times for CIFAR-10.
  """
  parts = name.split("/")
  base = parts[-1]
  # Skip macOS resource forks and hidden files, which zips made on a Mac carry along.
  if base.startswith(".") or "__MACOSX" in parts:
    return None
  if os.path.splitext(base)[1].lower() not in IMAGE_EXTENSIONS:
    return None
  return (parts[-2] if len(parts) >= 2 else ""), name


def _sha256_file(path: Path) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


class _Source:
  """The images of a zip or a directory: sorted member names, a fingerprint and a reader."""

  def __init__(self, path: Path):
    self.path = path
    if path.is_dir():
      self.kind = "dir"
    elif path.is_file():
      if not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is neither a directory nor a zip file.")
      self.kind = "zip"
    else:
      raise FileNotFoundError(f"no such image folder or zip: {path}")
    self._names: list[str] | None = None

  def scan(self) -> None:
    """Lists the images (done lazily: a zip's cache hit needs only the zip's hash)."""
    if self._names is not None:
      return
    if self.kind == "dir":
      found = list(self.path.rglob("*"))
      files = [f.relative_to(self.path).as_posix() for f in found if f.is_file()]
      dirs = {f.relative_to(self.path).as_posix() for f in found if f.is_dir()}
    else:
      with zipfile.ZipFile(self.path) as z:
        infos = z.infolist()
      files = [i.filename for i in infos if not i.is_dir()]
      dirs = {i.filename.rstrip("/") for i in infos if i.is_dir()}
    entries = sorted(e for e in map(_split_member, files) if e is not None)
    if not entries:
      raise ValueError(f"{self.path} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))}).")
    if not entries[0][0]:  # "" sorts first: images outside any class folder.
      raise ValueError(
        f"image {entries[0][1]!r} in {self.path} is not inside a class folder; "
        "expected <class>/<file>."
      )
    _check_no_empty_class(self.path, [n for _, n in entries], files, dirs)
    self.class_names = tuple(sorted({c for c, _ in entries}))
    index = {c: i for i, c in enumerate(self.class_names)}
    self._names = [n for _, n in entries]
    self.labels = np.asarray([index[c] for c, _ in entries], dtype=np.int32)

  @property
  def names(self) -> list[str]:
    self.scan()
    return self._names

  def fingerprint(self) -> str:
    if self.kind == "zip":
      return _sha256_file(self.path)
    h = hashlib.sha256()
    for n in self.names:  # Stat only: hashing every file's bytes would cost a decode's I/O.
      st = (self.path / n).stat()
      h.update(f"{n}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()

  def reader(self) -> tuple[Callable[[str], bytes], Callable[[], None]]:
    if self.kind == "zip":
      z = zipfile.ZipFile(self.path)
      return z.read, z.close
    return (lambda n: (self.path / n).read_bytes()), (lambda: None)


def _check_no_empty_class(
  source: Path, images: list[str], files: list[str], dirs: set[str]
) -> None:
  """Raises naming a class folder without images beside the class folders that have some.

  Labels follow the sorted folder names, so an empty class would silently shift every later
  class's label by one (and leave the data set a class short).
  """
  parent = lambda p: p.rpartition("/")[0]
  class_dirs = {parent(n) for n in images}
  roots = {parent(d) for d in class_dirs}  # Where the class folders sit ("" at the top).
  every = set(dirs)
  for f in files:  # A zip need not list its folders: they show in the members' paths.
    d = parent(f)
    while d:
      every.add(d)
      d = parent(d)
  empty = sorted(
    d
    for d in every - class_dirs
    if parent(d) in roots
    and not d.rpartition("/")[2].startswith(".")
    and "__MACOSX" not in d.split("/")
    and not any(c.startswith(d + "/") for c in class_dirs)
  )
  if empty:
    raise ValueError(
      f"class folder(s) {empty} in {source} hold no images "
      f"({', '.join(sorted(IMAGE_EXTENSIONS))}): add their images or remove "
      "them. An empty class would shift the labels of the classes after it."
    )


def _decode(name: str, data: bytes, source: Path, size: tuple[int, int] | None) -> np.ndarray:
  """One image as ``uint8 [H, W, 3]``; any decoding failure becomes a ValueError naming it."""
  from PIL import Image  # Pillow is part of the training extra.

  # Telling Pillow the format skips probing every plugin, a fifth of the time for 32x32 JPEGs
  # (Pillow's header parsing, in Python, costs more than the decoding itself).
  hint = _FORMATS.get(os.path.splitext(name)[1].lower())
  try:
    try:
      im = Image.open(io.BytesIO(data), formats=hint)
    except Exception:
      if hint is None:
        raise
      im = Image.open(io.BytesIO(data))  # Misnamed file (a PNG called .jpg): probe them all.
    with im:
      im.load()
      if im.mode != "RGB":
        im = im.convert("RGB")
      if size is not None and im.size != (size[1], size[0]):
        im = im.resize((size[1], size[0]), Image.Resampling.BILINEAR)
      return np.asarray(im, dtype=np.uint8)
  except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError... for bad files.
    raise ValueError(f"cannot decode image {name!r} in {source}: {type(e).__name__}: {e}") from e


def _decode_all(src: _Source, size: tuple[int, int] | None, num_workers: int) -> np.ndarray:
  names = src.names
  read_member, close = src.reader()

  def read(name: str) -> bytes:
    try:
      return read_member(name)
    except Exception as e:  # E.g. zipfile.BadZipFile for a member whose CRC is wrong.
      raise ValueError(f"cannot read image {name!r} in {src.path}: {type(e).__name__}: {e}") from e

  try:
    first = _decode(names[0], read(names[0]), src.path, size)
    shape = first.shape
    images = np.empty((len(names),) + shape, dtype=np.uint8)
    images[0] = first

    def decode_chunk(start: int, blobs: Sequence[bytes]) -> None:
      for k, data in enumerate(blobs):
        name = names[start + k]
        img = _decode(name, data, src.path, size)
        if img.shape != shape:
          raise ValueError(
            f"image {name!r} in {src.path} is {img.shape[1]}x{img.shape[0]}, unlike the "
            f"{shape[1]}x{shape[0]} of {names[0]!r}; pass image_size=(H, W) to resize."
          )
        images[start + k] = img

    # Pillow releases the GIL while decoding, so threads overlap the decoding of chunks while
    # this thread reads the next chunk's bytes (zip members are read by one thread only).
    pool = concurrent.futures.ThreadPoolExecutor(num_workers)
    try:
      futures = []
      for start in range(1, len(names), _CHUNK):
        blobs = [read(n) for n in names[start : start + _CHUNK]]
        futures.append(pool.submit(decode_chunk, start, blobs))
      for f in futures:
        f.result()  # Re-raises the first failing chunk's error, in file order.
    finally:
      pool.shutdown(wait=True, cancel_futures=True)  # After an error, skip the chunks left.
  finally:
    close()
  return images


def _load_entry(entry: Path, digest: str) -> tuple[np.ndarray, np.ndarray, dict] | None:
  try:
    meta = json.loads((entry / "meta.json").read_text())
    if meta.get("sha256") != digest or meta.get("format") != _CACHE_FORMAT:
      return None
    # A read-only memory map: only the rows a run uses are read from disk (a long-tailed
    # subset, a smoke test's few hundred), not the whole decoded set on every start.
    images = np.load(entry / "images.npy", mmap_mode="r")
    labels = np.load(entry / "labels.npy")
    meta["class_names"] = list(meta["class_names"])
  except (OSError, ValueError, EOFError, KeyError, TypeError) as e:
    logger.warning("ignoring unreadable cache entry %s: %s", entry, e)
    return None
  if len(images) != len(labels) or len(labels) != meta.get("num_images"):
    return None
  return images, labels, meta


def _write_entry(
  entry: Path, images: np.ndarray, labels: np.ndarray, meta: dict, *, replace_stale: bool
) -> None:
  """Writes the entry in a temporary directory beside it, then moves it into place at once.

  An entry that exists by then is kept (another process wrote the same arrays first) unless
  ``replace_stale``: this call found it unreadable, so it is moved aside and deleted first.
  """
  entry.parent.mkdir(parents=True, exist_ok=True)
  tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.tmp-", dir=entry.parent))
  try:
    np.save(tmp / "images.npy", images)
    np.save(tmp / "labels.npy", labels)
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    if replace_stale and entry.exists():
      trash = Path(tempfile.mkdtemp(prefix=f".{entry.name}.stale-", dir=entry.parent))
      os.replace(entry, trash / "entry")  # One rename: readers see the old entry or none.
      shutil.rmtree(trash, ignore_errors=True)
    try:
      os.replace(tmp, entry)  # Fails if another process has committed a (non-empty) entry.
    except OSError:
      if not (entry / "meta.json").exists():
        raise
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def load_image_folder(
  path: str | os.PathLike,
  *,
  cache_dir: str | os.PathLike | None = None,
  use_cache: bool = True,
  image_size: tuple[int, int] | None = None,
  num_workers: int | None = None,
) -> ArrayDataset:
  """Reads a folder or zip of ``<class>/<image>`` files as ``uint8 [N, H, W, 3]`` arrays.

  Args:
    path: a directory, or a zip file, of class folders of images.
    cache_dir: where decoded arrays are cached; default :func:`default_cache_dir`.
    use_cache: ``False`` decodes and writes nothing to disk.
    image_size: ``(H, W)`` to resize every image to (bilinear); by default all images must
      share the size of the first one.
    num_workers: decoding threads; default ``min(8, os.cpu_count())``.

  Returns:
    An :class:`ArrayDataset` whose ``meta`` holds ``source``, ``sha256`` (the cache key),
    ``cache_hit``, ``cache_entry`` (or ``None``), ``decode_seconds`` (the one-time decode,
    also on a cache hit) and ``load_seconds`` (this call). On a cache hit the images are a
    read-only memory map of the cache file (copy them to change them).

  Raises:
    FileNotFoundError: if ``path`` does not exist.
    ValueError: for a source without images, an image outside a class folder, an image that
      cannot be decoded or has another size (naming the file); nothing is cached then.

  Examples:
    >>> import tempfile, zipfile, io, numpy as np
    >>> from PIL import Image
    >>> tmp = tempfile.mkdtemp()
    >>> with zipfile.ZipFile(f"{tmp}/toy.zip", "w") as z:
    ...   for i, cls in enumerate(["cat", "dog", "cat"]):
    ...     buf = io.BytesIO()
    ...     Image.new("RGB", (4, 3), (i, 0, 0)).save(buf, "PNG")
    ...     z.writestr(f"{cls}/{i}.png", buf.getvalue())
    >>> ds = load_image_folder(f"{tmp}/toy.zip", cache_dir=tmp)
    >>> ds.images.shape, ds.labels.tolist(), ds.class_names, ds.meta["cache_hit"]
    ((3, 3, 4, 3), [0, 0, 1], ('cat', 'dog'), False)
    >>> load_image_folder(f"{tmp}/toy.zip", cache_dir=tmp).meta["cache_hit"]
    True
  """
  t0 = time.perf_counter()
  path = Path(path).expanduser()
  src = _Source(path)
  if image_size is not None:
    image_size = (int(image_size[0]), int(image_size[1]))
  digest = src.fingerprint()
  entry, stale = None, False
  if use_cache:
    suffix = "" if image_size is None else f"-{image_size[0]}x{image_size[1]}"
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    entry = root / f"{path.stem}-{digest[:16]}{suffix}"
    stale = entry.exists()
    cached = _load_entry(entry, digest) if stale else None
    if cached is not None:
      images, labels, meta = cached
      load_s = time.perf_counter() - t0
      logger.info(
        "loaded %d images of %s from the cache %s in %.2f s", len(labels), path, entry, load_s
      )
      return ArrayDataset(
        images,
        labels,
        len(meta["class_names"]),
        tuple(meta["class_names"]),
        {
          "source": str(path),
          "sha256": digest,
          "cache_hit": True,
          "cache_entry": str(entry),
          "decode_seconds": meta["decode_seconds"],
          "load_seconds": load_s,
        },
      )

  src.scan()
  workers = num_workers or min(8, os.cpu_count() or 1)
  t_dec = time.perf_counter()
  images = _decode_all(src, image_size, workers)
  decode_s = time.perf_counter() - t_dec
  logger.info("decoded %d images of %s in %.2f s", len(images), path, decode_s)
  if entry is not None:
    meta = {
      "format": _CACHE_FORMAT,
      "source": str(path),
      "sha256": digest,
      "num_images": len(images),
      "shape": list(images.shape[1:]),
      "class_names": list(src.class_names),
      "decode_seconds": decode_s,
    }
    try:
      _write_entry(entry, images, src.labels, meta, replace_stale=stale)
    except OSError as e:  # A read-only or full disk costs the cache, not the data.
      warnings.warn(f"could not write the cache entry {entry}: {e}", stacklevel=2)
      entry = None
  return ArrayDataset(
    images,
    src.labels,
    len(src.class_names),
    src.class_names,
    {
      "source": str(path),
      "sha256": digest,
      "cache_hit": False,
      "cache_entry": None if entry is None else str(entry),
      "decode_seconds": decode_s,
      "load_seconds": time.perf_counter() - t0,
    },
  )
