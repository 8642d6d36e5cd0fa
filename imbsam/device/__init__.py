"""The device a stage runs on: which one and how (target.py: resolution, the checks a host gets before any work,
MindSpore's setup), and which of a host's devices a run takes when several run side by side (claims.py).

Claims change which device a run uses, never what it computes, so no stage depends on claims.py (it is on
tests/test_dvc_deps.py's exempt list). This file re-exports nothing for that reason.
"""
