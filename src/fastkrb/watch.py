"""A file's identity for change detection: what the keytab and the group map are reloaded on.

Inode, size and both timestamps, so a replacement by rename, an edit in place and a copy over the file
all count as a change, and a missing file is None (keep what is loaded).
"""

from __future__ import annotations

import os

__all__ = ["file_signature"]

FileSignature = tuple[int, int, int, int]


def file_signature(path: str) -> FileSignature | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
