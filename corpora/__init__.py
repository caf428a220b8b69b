"""The recipes of the named corpora, as data (recipes.toml); charrnn/recipes.py reads them."""
