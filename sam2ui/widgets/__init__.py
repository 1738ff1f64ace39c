"""Notebook widgets (not written yet); only this package imports ipywidgets and anywidget."""
