"""callsense: call-center speech-emotion analytics stream processor."""

__version__ = "0.1.0"
