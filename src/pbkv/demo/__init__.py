"""``pbkv demo``: a scripted walk through the failures of primary-backup replication.

``runner.run_demo`` brings up a cluster (``pbkv.cluster``), runs a recorded workload
(``workload``), walks through the scenarios (``scenarios``, helpers in ``context``), narrates
(``narration``) what the view service does (``watch``), verifies the outcome (``verify``) and
writes the Markdown evidence (``report``).
"""
