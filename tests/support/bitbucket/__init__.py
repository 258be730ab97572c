"""A local Bitbucket for tests: real git repositories served over the Cloud REST 2.0 and Data
Center REST 1.0 routes a Git-source client uses, with credentials, rate limits, injected faults
and a request log. See :class:`BitbucketEmulator` and :class:`GitRepo`."""

from ._git import CommitInfo, FileChange, GitRepo, TreeEntry
from ._server import BitbucketEmulator
from ._state import Fault, RequestRecord
from .webhooks import make_push_delivery, sign

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
