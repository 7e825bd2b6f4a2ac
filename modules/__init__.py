"""One file per model family of the book. The file name is the family's name in params.yaml;
`MODEL` is its LightningModule, whose keyword-only constructor arguments are its config."""
