"""Training from configs: LightningCLI, the config lookup, callbacks, loggers, fit-then-test."""
