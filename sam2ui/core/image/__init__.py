"""Still images: the prompted image predictor, mask upsampling at the image size, and the
automatic mask generator with its grid, crop and filtering parts. Public names are re-exported
by :mod:`sam2ui.core`."""
