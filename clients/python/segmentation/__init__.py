"""The generated gRPC stubs of the service, built from proto/ (`clients/python/setup.py`)."""
