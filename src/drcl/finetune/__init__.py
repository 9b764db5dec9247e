"""Fine-tuning torchvision detectors: the runner that reads the config and drives the engine."""
