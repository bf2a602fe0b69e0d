"""Atomic output: everything is written into a temporary directory next to --out and renamed
into place at the end, so a failed export leaves nothing in --out (and an existing export is
replaced only by a complete one)."""
import os
import shutil
import tempfile

from .errors import ExportError


class Staging:
    def __init__(self, out: str, force: bool):
        self.out = os.path.abspath(out)
        if os.path.lexists(self.out) and not os.path.isdir(self.out):
            raise ExportError(f"--out {out} exists and is not a directory: choose another path")
        if os.path.isdir(self.out) and os.listdir(self.out) and not force:
            raise ExportError(f"--out {out} exists and is not empty: pass --force to replace "
                              "it, or choose another directory")
        parent = os.path.dirname(self.out)
        try:
            os.makedirs(parent, exist_ok=True)
            self.dir = tempfile.mkdtemp(prefix=f".{os.path.basename(self.out)}.tmp-", dir=parent)
        except OSError as e:
            raise ExportError(f"--out {out}: cannot write next to it: {e.strerror}") from e

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def commit(self) -> None:
        old = None
        if os.path.isdir(self.out):
            if os.listdir(self.out):  # --force: swap, then drop the old export
                old = tempfile.mkdtemp(prefix=f".{os.path.basename(self.out)}.old-",
                                       dir=os.path.dirname(self.out))
                os.rename(self.out, os.path.join(old, "export"))
            else:
                os.rmdir(self.out)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.dir, 0o777 & ~umask)  # mkdtemp made it private; an export is not
        os.rename(self.dir, self.out)
        if old:
            shutil.rmtree(old, ignore_errors=True)

    def abort(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
