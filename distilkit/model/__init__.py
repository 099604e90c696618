"""The network and its checkpoint folders: sentence-transformers modules, model cards."""
