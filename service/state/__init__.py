"""Durable state of the models: snapshots, write-ahead log, recovery, the data directory.

No gRPC and no TF graph code here: the state is numpy arrays and log records; the
server's model sessions apply them to the models.
"""
