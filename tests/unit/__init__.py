"""The fast tests. A package, so that a module here may share its file name with the slow tests of the same code
beside it in tests/ (unit.test_train and test_train), as pytest's default import mode needs."""
