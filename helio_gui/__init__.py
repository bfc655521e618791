"""HelioVision Operator: operator console (GUI) and headless vision runtime."""

__version__ = "0.1.0"

# The version of the runtime's HTTP API. The engine refuses to start a device image whose
# `io.heliovision.runtime-api` label carries a different major version.
RUNTIME_API_VERSION = "1.0"
