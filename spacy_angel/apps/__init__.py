"""What users run on top of the pipeline: the CLI, record I/O, Ray corpus linking, displaCy HTML, model cards."""
