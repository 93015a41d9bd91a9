"""The gRPC edge: each call's lifecycle, the conversion between wire and internal types, the
status each error ends a call with, and authentication. The wire types stop here."""
