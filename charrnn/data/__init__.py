"""The text a run trains on: corpora from files, folders and recipes, encoded and cached."""
