"""The console holds no models of its own: it is the UI over the other apps."""
