"""The data: the archive's download (download.py), the long-tailed split made from it (split.py), reading the split
back (loading.py) and the training batches' augmentation (augment.py).

Each stage imports only the modules it uses, and DVC tracks them per stage: the download's retries are no
dependency of training. This file re-exports nothing for that reason.
"""
