"""Files that running services re-read: how a change is noticed, and how a file is replaced so that a
reader sees the old contents or the new, never a part (keytabs, the group map)."""

from __future__ import annotations

import os
import tempfile

__all__ = ["file_signature", "replace_file"]

FileSignature = tuple[int, int, int, int]


def file_signature(path: str) -> FileSignature | None:
    """Inode, size and both timestamps: a rename over the file, an edit in place and a copy over it all count
    as a change; a missing file is None (keep what is loaded)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def replace_file(path: str | os.PathLike[str], data: bytes, *, mode: int | None = None,
                 keep_owner: bool = False, prefix: str = ".fastkrb-") -> None:
    """Write ``data`` to a temporary file in ``path``'s directory, fsync it, rename it over ``path``, fsync the
    directory. ``mode`` None keeps the file's mode (0600 for a new file); ``keep_owner`` also keeps its owner
    and group (a root tool rotating a service's keytab must not take it away from the service)."""
    target = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(target))
    try:
        st: os.stat_result | None = os.stat(target)
    except FileNotFoundError:
        st = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=prefix, dir=directory)
    except OSError as exc:   # name the file the caller asked for, not the temporary one
        raise OSError(exc.errno, exc.strerror, target) from exc
    try:
        os.fchmod(fd, mode if mode is not None else (st.st_mode & 0o7777) if st is not None else 0o600)
        if keep_owner and st is not None and (st.st_uid != os.geteuid() or st.st_gid != os.getegid()):
            os.fchown(fd, st.st_uid, st.st_gid)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:   # a directory we may not open: the rename is done, only its durability is not forced
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)
