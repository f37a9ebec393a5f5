"""Publishing on the device: the model store, by name and version (store.py), in the same
version-folder layout that `edge-export train` writes (versions.py)."""
