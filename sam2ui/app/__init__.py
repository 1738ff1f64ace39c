"""The Gradio app (not written yet); only this package imports gradio."""
