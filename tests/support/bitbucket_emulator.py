"""The local Bitbucket emulator for tests; the code lives in :mod:`tests.support.bitbucket`.

Import from either module: ``from tests.support.bitbucket_emulator import BitbucketEmulator``.
"""

from tests.support.bitbucket import (
    BitbucketEmulator,
    CommitInfo,
    Fault,
    FileChange,
    GitRepo,
    RequestRecord,
    TreeEntry,
    make_push_delivery,
    sign,
)

__all__ = [
    "BitbucketEmulator",
    "CommitInfo",
    "Fault",
    "FileChange",
    "GitRepo",
    "RequestRecord",
    "TreeEntry",
    "make_push_delivery",
    "sign",
]
