"""The directory ``_tree_join`` puts in front of a debugged program's ``PYTHONPATH``.

Its ``sitecustomize.py`` runs at the start of every Python process the
program starts; see ``dapper_trio._tree_join``.
"""
