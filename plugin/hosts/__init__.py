"""Editor adapters: thin over the core, one package per host."""
