"""Recipes: the type (recipe.py), text to recipes (overrides.py), the ladder's stages as data (stages.py),
users' recipe and network files (userfile.py), and the `fastmnist recipes` command (recipes.py)."""
