"""The local stand-in for S3: `s3://bucket/key` lives at `<state>/s3/bucket/key`."""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import urlparse

from mlops_core.config import state_dir
from mlops_core.files import write_atomic


class StoreError(ValueError):
    """A URI that the local store cannot map."""


class LocalStore:
    def __init__(self, root: Path | None = None):
        self.root = Path(root or state_dir() / "s3")

    def path(self, uri: str) -> Path:
        """The local path of an `s3://bucket/key` URI (file or prefix)."""
        parsed = urlparse(uri)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise StoreError(f"not an s3:// URI: {uri!r}")
        key = parsed.path.lstrip("/")
        if ".." in Path(key).parts:
            raise StoreError(f"'..' is not allowed in a key: {uri!r}")
        return self.root / parsed.netloc / key

    def exists(self, uri: str) -> bool:
        return self.path(uri).exists()

    def put_bytes(self, uri: str, data: bytes) -> str:
        write_atomic(self.path(uri), data)
        return uri

    def put_file(self, source: Path, uri: str) -> str:
        return self.put_bytes(uri, Path(source).read_bytes())

    def upload_dir(self, source: Path, uri: str) -> str:
        """Copy a directory's files under a prefix, replacing what was there."""
        target = self.path(uri)
        staging = target.with_name(target.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(source, staging)
        shutil.rmtree(target, ignore_errors=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging.replace(target)
        return uri

    def download(self, uri: str, destination: Path) -> Path:
        """Copy an object, or every object under a prefix, into a local directory."""
        source = self.path(uri)
        destination = Path(destination)
        destination.mkdir(parents=True, exist_ok=True)
        if source.is_file():
            shutil.copy2(source, destination / source.name)
        elif source.is_dir():
            shutil.copytree(source, destination, dirs_exist_ok=True)
        else:
            raise StoreError(f"nothing in the local store at {uri}")
        return destination

    def list(self, uri: str) -> list[str]:
        """Every object URI under a prefix, sorted."""
        base = self.path(uri)
        if base.is_file():
            return [uri]
        if not base.is_dir():
            return []
        bucket_root = self.root / urlparse(uri).netloc
        return sorted(
            f"s3://{urlparse(uri).netloc}/{p.relative_to(bucket_root).as_posix()}"
            for p in base.rglob("*")
            if p.is_file()
        )

