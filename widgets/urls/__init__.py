"""URL lists of the widgets app, one module per audience (see widgets/views/)."""
