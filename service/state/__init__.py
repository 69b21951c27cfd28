"""Durable state of the models: the journal hook, snapshots, write-ahead log, recovery.

No gRPC and no TF graph code here.
"""

from service.state.journal import Journal, NullJournal

__all__ = ["Journal", "NullJournal"]
