"""One module per framework; each is imported only when that framework is used."""
