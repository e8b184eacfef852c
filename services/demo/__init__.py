"""The demo dataset: a fictional county to try the service with, loaded through the services."""
