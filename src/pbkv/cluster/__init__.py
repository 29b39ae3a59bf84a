"""``pbkv cluster``: a local cluster of real processes and every fault as a command.

``manager`` starts, stops and signals processes recorded in a state file (``state``, OS side in
``processes``); ``faults`` partitions and degrades the network through each process's loopback
admin port; ``status`` and ``logs`` read the cluster back; ``rpc`` asks a node one question;
``render`` prints it for people and scripts. The same functions are the Python API for tests::

    from pbkv.cluster import manager, faults
    state = manager.up(manager.ClusterConfig(directory=tmp_path, base_port=0))
    faults.partition(state, "primary", "viewserver")
    manager.down(tmp_path)
"""
